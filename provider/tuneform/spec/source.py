"""Reading spec files: YAML documents plus the line and column of every key and value.

PyYAML's composer keeps a ``start_mark`` on every node; the constructed Python data does not. We compose each
document, record the marks by field path, then construct it with the same SafeLoader, so every later message can
point at ``file:line:col``.

A spec file is input from anyone who can open a pull request, so what reading it may cost is bounded before PyYAML
composes it (measured figures in ``docs/spec.md``, "Hostile input"):

- at most :data:`MAX_SPEC_BYTES` per file, checked before the file is read;
- nesting at most :data:`MAX_DEPTH` levels: libyaml's composer recurses in C and crashes the process on about
  100,000 nested ``[`` (200 KB), and every later walk of the data recurses in Python;
- aliases that expand to at most :data:`MAX_ALIAS_NODES` nodes in all: nine anchors of nine aliases each (about
  1 KB) expand to 9^7 nodes, which every walk of the constructed data (records, schema, rules) would visit, and a
  merge key (``<<: *a``) copies the merged pairs. An alias inside its own anchor (a value that contains itself) is
  refused too;
- at most :data:`MAX_NODES` nodes in all, aliases expanded: composing and walking a node costs about 600 bytes.

The last three are measured on the YAML event stream (:func:`_bounds_problem`), which libyaml produces without
recursion and which gives each alias its own position, so the message points at the alias that crossed the line.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuneform.problems import MAX_PROBLEMS_PER_FILE, more_problems
from tuneform.spec.errors import Problem

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_SPEC_BYTES",
    "FieldPath",
    "SourceDocument",
    "SpecLoader",
    "display_name",
    "dotted",
    "read_documents",
]

MAX_SPEC_BYTES = 1 << 20
"""Largest spec file read (1 MiB): the shipped specs are 1-3 KB, the largest plausible one (every field, 64 labels,
both targets) under 10 KB."""

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists in a spec file; a spec needs 6 (``spec.targets.local.lora.targetModules``)."""

MAX_NODES = 100_000
"""Most YAML nodes (keys, values, lists, mappings) in a spec file, aliases expanded: a spec has a few hundred. A 1 MiB
file can hold 500,000 (``[a,a,a,...]``), which took 3.3 s and 330 MiB to compose and walk."""

MAX_ALIAS_NODES = 10_000
"""Nodes that aliases may add to a spec file in all (each use of an alias adds the nodes of its anchor, expanded):
sharing a block of hyperparameters or labels between a few documents takes tens to hundreds."""

FieldPath = tuple[Any, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"

# YAML 1.2 (what editors read specs as, through the schema's yaml-language-server comment) takes `1e-4` for a number;
# PyYAML's YAML 1.1 resolver wants `1.0e-4` and reads `1e-4` as text, which the schema then refuses as a string.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")

# Characters YAML 1.1 counts as line breaks and editors do not: a message's line number would be off by their count.
_ODD_BREAKS = {
    "\x85": "U+0085 (NEXT LINE)",
    "\u2028": "U+2028 (LINE SEPARATOR)",
    "\u2029": "U+2029 (PARAGRAPH SEPARATOR)",
}


_ODD_BREAK = re.compile("[" + "".join(_ODD_BREAKS) + "]")


def _spec_loader(base: type[yaml.SafeLoader]) -> type[yaml.SafeLoader]:
    """``base`` with the implicit types a spec needs: numbers with an exponent read as numbers (YAML 1.2), and
    dates left as text. A spec has no date field, and YAML 1.1 would turn `description: 2024-02-30` into a crash
    (no such day) and `release: 2024-02-28` into a ``date`` that no text field takes."""
    resolvers = {
        first: [(tag, regexp) for tag, regexp in entries if tag != _TIMESTAMP_TAG]
        for first, entries in base.yaml_implicit_resolvers.items()
    }
    loader: type[yaml.SafeLoader] = type(f"Spec{base.__name__}", (base,), {"yaml_implicit_resolvers": resolvers})
    loader.add_implicit_resolver(_FLOAT_TAG, _EXPONENT_FLOAT, list("-+0123456789."))
    return loader


SpecLoader = _spec_loader(yaml.SafeLoader)
"""The loader of spec and stack files (pure Python: its error messages are the ones users read)."""

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
    texts: dict[FieldPath, str] = field(default_factory=dict)
    """The text of every scalar value as written (``yes`` for the ``True`` it became), for fixes that quote it."""
    key_texts: dict[FieldPath, str] = field(default_factory=dict)
    """The same for keys, by the path the key introduces."""

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


def _construct(loader: yaml.SafeLoader, node: yaml.Node, doc: SourceDocument, path: FieldPath) -> Problem | None:
    """Construct a scalar once, here, so a value its tag cannot read (`!!float` with no value, `!!int abc`) is a
    located problem instead of an exception from ``construct_document``; such a node is then read as text."""
    deep = loader.deep_construct
    try:
        loader.construct_object(node, deep=True)
    except Exception as error:  # noqa: BLE001 - PyYAML's constructors raise ValueError, IndexError, KeyError...
        # A failed construction leaves the node marked as in progress; the next one would call it recursive.
        loader.recursive_objects.pop(node, None)
        loader.deep_construct = deep
        tag = str(node.tag).rsplit(":", 1)[-1]
        node.tag = _STR_TAG
        line, column = _position(node)
        reason = str(getattr(error, "problem", None) or error) or type(error).__name__
        return Problem(
            doc.file,
            line,
            column,
            dotted(path),
            f"expected a value the `!!{tag}` tag can read, got {json.dumps(node.value, ensure_ascii=False)} "
            f"({reason.strip()}). Remove the `!!{tag}` tag: specs need no tags.",
        )
    return None


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
    if isinstance(node, yaml.ScalarNode):
        doc.texts.setdefault(path, node.value)
        failed = _construct(loader, node, doc, path)
        if failed is not None:
            problems.append(failed)
    elif isinstance(node, yaml.MappingNode):
        # Keyed by type too: `on` (true) and `1` are equal to Python, not to the person who wrote them.
        seen: dict[tuple[type, Hashable], tuple[int, int]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if isinstance(key_node, yaml.ScalarNode):
                failed = _construct(loader, key_node, doc, path)
                if failed is not None:
                    problems.append(failed)
            try:
                key = loader.construct_object(key_node, deep=True)
                hash(key)
            except (yaml.YAMLError, TypeError):
                continue
            child = (*path, key)
            if (type(key), key) in seen:
                line, _ = seen[type(key), key]
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
            seen[type(key), key] = _position(key_node)
            # setdefault: `on:` (true) and `1:` make equal paths; the first written is the one to point at.
            doc.keys.setdefault(child, _position(key_node))
            if isinstance(key_node, yaml.ScalarNode):
                doc.key_texts.setdefault(child, key_node.value)
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


_EMPTY_SPEC = (
    "expected at least one TunedModel document, got an empty file. "
    "Start it with `apiVersion: tuneform/v1` and `kind: TunedModel`, or delete the file."
)


def _undecodable(file: str, error: UnicodeDecodeError) -> Problem:
    """Where the first byte that is not UTF-8 is, as an editor counts lines and columns."""
    data, start = error.object, error.start
    line_start = data.rfind(b"\n", 0, start) + 1
    line = data.count(b"\n", 0, start) + 1
    column = len(data[line_start:start].decode("utf-8", "replace")) + 1
    return Problem(
        file,
        line,
        column,
        "document",
        f"expected UTF-8 text, got the byte 0x{data[start]:02x}, which is not UTF-8 (the file was saved as Latin-1 "
        "or Windows-1252?). Save the file as UTF-8.",
    )


def _odd_breaks(file: str, text: str) -> list[Problem]:
    """A problem for each character that YAML would count as a line break and an editor would not."""
    problems: list[Problem] = []
    found = [match.start() for match in _ODD_BREAK.finditer(text)]  # a regex scan, not a Python loop per character
    for index in found[:MAX_PROBLEMS_PER_FILE]:
        line = text.count("\n", 0, index) + 1
        column = index - text.rfind("\n", 0, index)
        name = _ODD_BREAKS[text[index]]
        problems.append(
            Problem(
                file,
                line,
                column,
                "yaml",
                f"expected ordinary text, got {name}, which YAML reads as a line break and editors do not (every "
                f"later line number would be off). Delete it, or write it as `\\u{ord(text[index]):04x}` inside "
                "double quotes.",
            )
        )
    if len(found) > MAX_PROBLEMS_PER_FILE:
        problems.append(more_problems(file, len(found) - MAX_PROBLEMS_PER_FILE))
    return problems


def read_documents(path: Path, *, empty: str | None = _EMPTY_SPEC) -> tuple[list[SourceDocument], list[Problem]]:
    """Read every YAML document of a spec file with the marks of its keys and values.

    Args:
        path: The spec file (or a stack file: the same reading, the same bounds).
        empty: The problem's message for a file with no document; ``None`` when an empty file is fine.

    Returns:
        The non-empty documents, and the problems found while reading (unreadable file, YAML syntax, duplicate
        keys, a file with no document). Never raises for a user's mistake.
    """
    file = display_name(path)
    try:
        text = _read_bounded(file, path)
        if isinstance(text, Problem):
            return [], [text]
    except FileNotFoundError:
        return [], [Problem(file, 1, 1, "document", "expected a spec file, got no such file. Check the path.")]
    except IsADirectoryError:
        return [], [Problem(file, 1, 1, "document", "expected a spec file, got a directory. Name the .yaml file.")]
    except UnicodeDecodeError as error:
        return [], [_undecodable(file, error)]
    except OSError as error:
        return [], [Problem(file, 1, 1, "document", f"expected a readable file, got {error.strerror}.")]

    odd = _odd_breaks(file, text)
    if odd:
        return [], odd
    bounds = _bounds_problem(file, text)
    if bounds is not None:
        return [], [bounds]
    if _FAST_LOADER is not None:
        try:
            return _compose(file, path, text, _FAST_LOADER, empty)
        except yaml.YAMLError:
            # libyaml words its errors differently; the pure-Python parser gives the messages users see.
            pass
    return _compose(file, path, text, SpecLoader, empty)


# libyaml composes about 5x faster, which `pulumi preview` of a repository with many specs notices.
_FAST_LOADER: type[yaml.SafeLoader] | None = (
    _spec_loader(yaml.CSafeLoader) if getattr(yaml, "CSafeLoader", None) is not None else None  # type: ignore[arg-type]
)


def _size(count: int) -> str:
    if count >= 1 << 20:
        return f"{count / (1 << 20):.1f} MiB ({count} bytes)"
    return f"{count / 1024:.1f} KiB ({count} bytes)"


def _read_bounded(file: str, path: Path) -> str | Problem:
    """The text of a spec file, or the problem that keeps it from being read: too big, or not a regular file.

    The size is checked before reading (and again on what was read, for a file that grows meanwhile), so a 50 MB
    file costs one ``stat``. A FIFO would block ``read`` forever and a device could stream without end.
    """
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else "a special file"
        return Problem(file, 1, 1, "document", f"expected a regular spec file, got {kind}. Name the .yaml file.")
    limit = f"{MAX_SPEC_BYTES >> 20} MiB"
    fix = "Split it into smaller spec files (a spec is a few kilobytes), or remove what it does not need."
    if info.st_size > MAX_SPEC_BYTES:
        return Problem(
            file, 1, 1, "document", f"expected a spec file of at most {limit}, got {_size(info.st_size)}. {fix}"
        )
    with open(path, "rb") as handle:
        data = handle.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        return Problem(
            file, 1, 1, "document", f"expected a spec file of at most {limit}, got more while reading it. {fix}"
        )
    # The same text read_text gives: universal newlines, so marks count lines as before.
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def _event_position(event: yaml.Event) -> tuple[int, int]:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _bounds_problem(file: str, text: str) -> Problem | None:
    """The problem of a YAML text nested deeper than :data:`MAX_DEPTH` or whose aliases expand past
    :data:`MAX_ALIAS_NODES`, located at the collection or alias that crosses the line; ``None`` when within bounds.

    Walks the event stream once, keeping the expanded size of every anchored node (its nodes, its aliases
    expanded), so an alias costs what walking its anchor again would. Syntax errors are left to the composer,
    which reports them with PyYAML's words.
    """
    loader = (_FAST_LOADER or yaml.SafeLoader)(text)
    sizes: dict[str, int] = {}
    # One frame per open collection: [expanded nodes so far, its anchor].
    frames: list[list[Any]] = []
    added = nodes = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.NodeEvent) and not isinstance(event, yaml.AliasEvent):
                nodes += 1
                if nodes + added > MAX_NODES:
                    line, column = _event_position(event)
                    message = (
                        f"expected a spec file of at most {MAX_NODES:,} YAML nodes (keys, values, lists, mappings; "
                        "aliases expanded), got more by here. A spec has a few hundred: remove what it does not need."
                    )
                    return Problem(file, line, column, "yaml", message)
            if isinstance(event, yaml.CollectionStartEvent):
                if len(frames) >= MAX_DEPTH:
                    line, column = _event_position(event)
                    message = (
                        f"expected YAML nested at most {MAX_DEPTH} levels deep, got deeper here. Flatten it: a "
                        "spec nests a few levels only."
                    )
                    return Problem(file, line, column, "yaml", message)
                frames.append([1, event.anchor])
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                size, anchor = frames.pop()
            elif isinstance(event, yaml.AliasEvent):
                line, column = _event_position(event)
                if any(frame[1] == event.anchor for frame in frames):
                    message = (
                        f"expected an alias outside its own anchor, got *{event.anchor} inside &{event.anchor}: the "
                        "value would contain itself. Remove the alias."
                    )
                    return Problem(file, line, column, "yaml", message)
                size, anchor = sizes.get(str(event.anchor), 1), None
                added += size
                if added > MAX_ALIAS_NODES or nodes + added > MAX_NODES:
                    message = (
                        f"expected YAML whose aliases add at most {MAX_ALIAS_NODES:,} nodes, got more at this alias "
                        f"(*{event.anchor}, {size:,} nodes): aliases of aliases multiply. Write the values out, or "
                        "alias only small blocks."
                    )
                    return Problem(file, line, column, "yaml", message)
            elif isinstance(event, yaml.ScalarEvent):
                size, anchor = 1, event.anchor
            else:
                continue
            if anchor is not None:
                sizes[anchor] = size
            if frames:
                frames[-1][0] += size
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()
    return None


def _compose(
    file: str, path: Path, text: str, loader_class: type[yaml.SafeLoader], empty: str | None
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
            index += 1
            try:
                doc.data = loader.construct_document(node)
            except yaml.YAMLError:
                raise
            except Exception as error:  # noqa: BLE001 - whatever else a constructor raises is the file's fault
                loader.constructed_objects = {}
                problems.append(
                    Problem(file, *doc.start, "document", f"expected a document YAML can read, got {error}.")
                )
                continue
            if doc.data is not None:
                documents.append(doc)
    except yaml.MarkedYAMLError as error:
        if loader_class is not SpecLoader:
            raise
        problems.append(_syntax_problem(file, error))
        return documents, problems
    except yaml.YAMLError as error:
        if loader_class is not SpecLoader:
            raise
        problems.append(Problem(file, 1, 1, "yaml", f"expected valid YAML, got {error}."))
        return documents, problems
    finally:
        loader.dispose()
    if not documents and not problems and empty is not None:
        problems.append(Problem(file, 1, 1, "document", empty))
    return documents, problems
