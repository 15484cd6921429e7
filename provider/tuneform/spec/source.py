"""Reading spec files: YAML documents plus the line and column of every key and value.

PyYAML's composer keeps a ``start_mark`` on every node; the constructed Python data does not. We compose each
document, record the marks by field path, then construct it with the same SafeLoader, so every later message can
point at ``file:line:col``.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuneform.spec.errors import Problem

__all__ = ["FieldPath", "SourceDocument", "display_name", "dotted", "read_documents"]

FieldPath = tuple[Any, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"

# PyYAML's problem texts for the commonest slips, with the fix a person needs.
_SYNTAX_FIXES = {
    "found character '\\t' that cannot start any token": "Indent with spaces, not tabs.",
    "mapping values are not allowed here": "Put a space after each `key:` and quote values that contain ': '.",
    "could not find expected ':'": "Write each field as `key: value`.",
    "did not find expected key": "Align this line with the other keys of its mapping.",
    "did not find expected node content": "Give the key a value or remove the stray character.",
    "found unexpected end of stream": "Close the quote or bracket that is still open.",
    "did not find expected ',' or ']'": "Close the list with `]` or separate its items with `,`.",
    "did not find expected ',' or '}'": "Close the mapping with `}` or separate its entries with `,`.",
    "expected ',' or '}'": "Close the mapping with `}` or separate its entries with `,`.",
    "expected ',' or ']'": "Close the list with `]` or separate its items with `,`.",
    "found undefined alias": "Define the anchor (`&name`) before using the alias (`*name`).",
    "found duplicate anchor": "Give each anchor (`&name`) a different name.",
    "could not determine a constructor for the tag": "Remove the tag: specs use plain YAML values only.",
    "found unhashable key": "Use a plain string as the key.",
}


def display_name(path: Path) -> str:
    """How a file is named in messages: relative to the working directory when it is inside it."""
    absolute = path.absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def dotted(path: FieldPath) -> str:
    """``("spec", "hyperparameters", "epochs")`` -> ``spec.hyperparameters.epochs``; ``()`` -> ``document``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "document"


@dataclass
class SourceDocument:
    """One YAML document of a spec file, with the position of every key and value."""

    file: str
    """Display name of the file."""
    path: Path
    """Absolute path of the file."""
    index: int
    """0-based position of the document in its file."""
    data: Any
    start: tuple[int, int]
    """1-based (line, column) where the document's content starts."""
    values: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)

    def value_at(self, path: FieldPath) -> tuple[int, int]:
        """Position of the value at ``path``, or of its nearest written ancestor."""
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path, self.start)

    def key_at(self, path: FieldPath) -> tuple[int, int]:
        """Position of the key that introduces ``path`` (the document start for the root)."""
        if path in self.keys:
            return self.keys[path]
        return self.value_at(path)

    def problem(
        self, path: FieldPath, message: str, *, at_key: bool = False, shown: FieldPath | None = None
    ) -> Problem:
        """A problem located at ``path`` (its key with ``at_key``), shown with ``shown`` as field path."""
        line, column = self.key_at(path) if at_key else self.value_at(path)
        return Problem(self.file, line, column, dotted(path if shown is None else shown), message)


def _position(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _record(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: FieldPath,
    doc: SourceDocument,
    *,
    problems: list[Problem],
    active: set[int],
) -> None:
    doc.values.setdefault(path, _position(node))
    # Aliases may point back at an ancestor; walking it again would never end.
    if id(node) in active:
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Hashable, tuple[int, int]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            try:
                key = loader.construct_object(key_node, deep=True)
                hash(key)
            except (yaml.YAMLError, TypeError):
                continue
            child = (*path, key)
            if key in seen:
                line, _ = seen[key]
                line_now, column_now = _position(key_node)
                problems.append(
                    Problem(
                        doc.file,
                        line_now,
                        column_now,
                        dotted(child),
                        f"expected each key once per mapping, got `{key}` again (first at line {line}). "
                        "Remove one of them: YAML would silently keep only the last.",
                    )
                )
                continue
            seen[key] = _position(key_node)
            doc.keys[child] = _position(key_node)
            _record(loader, value_node, child, doc, problems=problems, active=active)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record(loader, item, (*path, index), doc, problems=problems, active=active)
    active.discard(id(node))


def _syntax_problem(file: str, error: yaml.MarkedYAMLError) -> Problem:
    mark = error.problem_mark or error.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    what = (error.problem or "invalid YAML").strip()
    fix = next((text for start, text in _SYNTAX_FIXES.items() if what.startswith(start)), "Fix the YAML syntax here.")
    context = f" ({error.context.strip()})" if error.context else ""
    return Problem(file, line, column, "yaml", f"expected valid YAML, got a syntax error: {what}{context}. {fix}")


def read_documents(path: Path) -> tuple[list[SourceDocument], list[Problem]]:
    """Read every YAML document of a spec file with the marks of its keys and values.

    Args:
        path: The spec file.

    Returns:
        The non-empty documents, and the problems found while reading (unreadable file, YAML syntax, duplicate
        keys, a file with no document). Never raises for a user's mistake.
    """
    file = display_name(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], [Problem(file, 1, 1, "document", "expected a spec file, got no such file. Check the path.")]
    except IsADirectoryError:
        return [], [Problem(file, 1, 1, "document", "expected a spec file, got a directory. Name the .yaml file.")]
    except UnicodeDecodeError as error:
        return [], [
            Problem(
                file,
                1,
                1,
                "document",
                f"expected UTF-8 text, got undecodable bytes at offset {error.start}. Save the file as UTF-8.",
            )
        ]
    except OSError as error:
        return [], [Problem(file, 1, 1, "document", f"expected a readable file, got {error.strerror}.")]

    if _FAST_LOADER is not None:
        try:
            return _compose(file, path, text, _FAST_LOADER)
        except yaml.YAMLError:
            # libyaml words its errors differently; the pure-Python parser gives the messages users see.
            pass
    return _compose(file, path, text, yaml.SafeLoader)


# libyaml composes about 5x faster, which `pulumi preview` of a repository with many specs notices.
_FAST_LOADER: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)


def _compose(
    file: str, path: Path, text: str, loader_class: type[yaml.SafeLoader]
) -> tuple[list[SourceDocument], list[Problem]]:
    documents: list[SourceDocument] = []
    problems: list[Problem] = []
    loader = loader_class(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            doc = SourceDocument(file=file, path=path.absolute(), index=index, data=None, start=_position(node))
            _record(loader, node, (), doc, problems=problems, active=set())
            doc.data = loader.construct_document(node)
            if doc.data is not None:
                documents.append(doc)
            index += 1
    except yaml.MarkedYAMLError as error:
        if loader_class is not yaml.SafeLoader:
            raise
        problems.append(_syntax_problem(file, error))
        return documents, problems
    except yaml.YAMLError as error:
        if loader_class is not yaml.SafeLoader:
            raise
        problems.append(Problem(file, 1, 1, "yaml", f"expected valid YAML, got {error}."))
        return documents, problems
    finally:
        loader.dispose()
    if not documents and not problems:
        problems.append(
            Problem(
                file,
                1,
                1,
                "document",
                "expected at least one TunedModel document, got an empty file. "
                "Start it with `apiVersion: tuneform/v1` and `kind: TunedModel`, or delete the file.",
            )
        )
    return documents, problems
