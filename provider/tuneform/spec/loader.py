"""Load tuning specs: YAML -> schema check -> per-target resolution -> catalogue-driven cross-field rules.

Public API (used by the Pulumi program and the CLI): ``find_spec_files``, ``load_specs`` and ``resolve``. Every
user mistake becomes a ``Problem``; all problems of all files are raised together in one ``SpecErrors``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneform import catalogue
from tuneform.problems import cap_per_file
from tuneform.spec.errors import Problem, SpecErrors
from tuneform.spec.model import (
    TARGETS,
    Location,
    ResolvedSpec,
    Target,
    TunedModelDocument,
)
from tuneform.spec.rules import LR_KNOBS, RuleContext, resolve_target
from tuneform.spec.schema import got, sanitized, schema_problems, whole_numbers
from tuneform.spec.source import FieldPath, SourceDocument, read_documents

__all__ = ["LoadedDocument", "find_repo_root", "find_spec_files", "load_specs", "read_specs", "resolve"]

SPEC_DIR = "tuning_specs"


@dataclass(frozen=True)
class LoadedDocument(TunedModelDocument):
    """A ``TunedModelDocument`` that also remembers why it cannot run on some targets (for ``resolve``)."""

    unavailable: dict[str, Problem] = field(default_factory=dict)
    """Target -> the problem that ``resolve(doc, target)`` raises."""


def find_spec_files(root: str | Path) -> list[Path]:
    """Every spec file of a repository: ``*.yaml``/``*.yml`` under ``tuning_specs/``, except below ``datasets/``.

    Args:
        root: The repository root, or the ``tuning_specs`` directory itself.

    Returns:
        The files, sorted.
    """
    base = Path(root)
    if (base / SPEC_DIR).is_dir():
        base = base / SPEC_DIR
    found = [
        path
        for path in base.rglob("*")
        if path.suffix.lower() in (".yaml", ".yml")
        and path.is_file()
        and "datasets" not in path.relative_to(base).parts
    ]
    return sorted(found)


def find_repo_root(start: Path) -> Path:
    """The repository root for a spec file: the nearest parent with ``Pulumi.yaml``, else with ``.git``.

    Args:
        start: A spec file or directory.

    Returns:
        The root; the spec file's own directory when no parent qualifies.
    """
    start = start.absolute()
    base = start if start.is_dir() else start.parent
    for marker in ("Pulumi.yaml", ".git"):
        for parent in (base, *base.parents):
            if (parent / marker).exists():
                return parent
    return base


def _walk_paths(value: Any, prefix: FieldPath) -> list[FieldPath]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths.extend(_walk_paths(child, (*prefix, key)))
    return paths


def _merge(
    base: dict[str, Any], override: dict[str, Any], base_at: FieldPath, over_at: FieldPath
) -> tuple[dict[str, Any], dict[FieldPath, FieldPath]]:
    """Deep-merge ``override`` over ``base`` and remember where each merged value was written.

    Mappings merge, scalars and lists replace. Within ``hyperparameters`` an override that names one learning-rate
    knob drops the other, because a target override usually swaps a Gemini model for an open one.
    """
    merged: dict[str, Any] = {}
    origin: dict[FieldPath, FieldPath] = {(): base_at}
    for key, value in base.items():
        if key == "targets":
            continue
        merged[key] = copy.deepcopy(value)
        for sub in _walk_paths(value, (key,)):
            origin[sub] = base_at + sub
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            inner, inner_origin = _merge(merged[key], value, base_at + (key,), over_at + (key,))
            if key == "hyperparameters":
                for knob, other in (LR_KNOBS, LR_KNOBS[::-1]):
                    if knob in value and other not in value:
                        inner.pop(other, None)
                        inner_origin.pop((other,), None)
            merged[key] = inner
            for sub, where in inner_origin.items():
                origin[(key, *sub)] = where
            # _merge recorded the base's position for the mapping itself; the override wrote it too.
            origin[(key,)] = base_at + (key,)
        else:
            merged[key] = copy.deepcopy(value)
            for sub in list(origin):
                if sub[:1] == (key,):
                    del origin[sub]
            for sub in _walk_paths(value, (key,)):
                origin[sub] = over_at + sub
    return merged, origin


def _unavailable(doc: SourceDocument, target: Target, base_model: str, at: FieldPath) -> Problem:
    if target == "local":
        message = (
            f"expected a model that runs on the local target (smollm2-135m-instruct, a local Hugging Face "
            f"directory or a .gguf file), got {base_model}. Add `targets: {{local: {{baseModel: "
            f"smollm2-135m-instruct}}}}`."
        )
    else:
        message = (
            f"expected a Vertex AI catalogue model for the vertex target, got {base_model}. Add "
            f"`targets: {{vertex: {{baseModel: {catalogue.suggested('vertex')}}}}}`."
        )
    return doc.problem(at, message)


def _document(
    doc: SourceDocument, repo_root: Path, problems: list[Problem], today: datetime.date | None
) -> LoadedDocument | None:
    raw: dict[str, Any] = doc.data
    spec: dict[str, Any] = raw["spec"]
    resolved: dict[str, ResolvedSpec] = {}
    unavailable: dict[str, Problem] = {}
    warnings: list[Problem] = []
    before = len(problems)
    for target in TARGETS:
        override = spec.get("targets", {}).get(target, {})
        merged, origin = _merge(spec, override, ("spec",), ("spec", "targets", target))
        ctx = RuleContext(
            doc, target, merged, origin, repo_root, problems, str(raw["metadata"]["name"]), warnings, today
        )
        errors_before = len(problems)
        result = resolve_target(ctx, raw["metadata"])
        if result is not None:
            resolved[target] = result
        elif len(problems) == errors_before:
            unavailable[target] = _unavailable(doc, target, merged["baseModel"], ctx.at(("baseModel",)))
    if len(problems) > before:
        return None
    line, column = doc.value_at(("metadata", "name"))
    return LoadedDocument(
        name=raw["metadata"]["name"],
        source=Location(doc.file, line, column),
        raw=raw,
        resolved=resolved,
        warnings=tuple(sorted(set(warnings))),
        unavailable=unavailable,
    )


def load_specs(
    paths: Sequence[str | Path], *, repo_root: Path | None = None, lifecycle: bool = True
) -> list[TunedModelDocument]:
    """Load, validate and resolve every TunedModel document in ``paths``: :func:`read_specs`, all or nothing.

    Raises:
        SpecErrors: With every problem of every file, when anything is wrong.
    """
    documents, problems = read_specs(paths, repo_root=repo_root, lifecycle=lifecycle)
    if problems:
        raise SpecErrors(problems)
    return documents


def read_specs(
    paths: Sequence[str | Path], *, repo_root: Path | None = None, lifecycle: bool = True
) -> tuple[list[TunedModelDocument], list[Problem]]:
    """Load, validate and resolve every TunedModel document in ``paths``.

    Args:
        paths: Spec files (see ``find_spec_files``).
        repo_root: The repository root that dataset paths must stay inside; by default, per file, the nearest
            parent with ``Pulumi.yaml`` (else ``.git``).
        lifecycle: Judge base models by today's date (``tuneform.catalogue.today``): refuse retired ones and warn
            about those retiring soon (``TunedModelDocument.warnings``). A review turns it off for the base commit,
            whose specs are history.

    Returns:
        One document per valid TunedModel, resolved for every target its base model can run on, and every problem
        of every file: ``tuneform validate`` goes on to check the datasets of the valid documents.
    """
    problems: list[Problem] = []
    documents: list[TunedModelDocument] = []
    today = catalogue.today() if lifecycle else None
    first_seen: dict[str, tuple[SourceDocument, Location]] = {}
    for given in paths:
        path = Path(given)
        sources, read_problems = read_documents(path)
        problems.extend(read_problems)
        root = repo_root if repo_root is not None else find_repo_root(path)
        for source in sources:
            found = schema_problems(source)
            metadata = source.data.get("metadata") if isinstance(source.data, dict) else None
            name = metadata.get("name") if isinstance(metadata, dict) else None
            if isinstance(name, str):
                line, column = source.value_at(("metadata", "name"))
                if name in first_seen:
                    first = first_seen[name][1]
                    found.append(
                        source.problem(
                            ("metadata", "name"),
                            f"expected a name unique in the repository, got {got(name)}, already used at {first}. "
                            "Rename one of them.",
                        )
                    )
                else:
                    first_seen[name] = (source, Location(source.file, line, column))
            if found:
                problems.extend(found)
                clean = sanitized(source.data)
                if clean is not None:
                    # Also run the cross-field rules on what the schema accepted, so one run shows everything.
                    _document(dataclasses.replace(source, data=clean), root, problems, today)
                continue
            document = _document(dataclasses.replace(source, data=whole_numbers(source.data)), root, problems, today)
            if document is not None:
                documents.append(document)
    return documents, cap_per_file(problems)


def resolve(doc: TunedModelDocument, target: Target) -> ResolvedSpec:
    """The spec of ``doc`` for one target (``targets.<target>`` merged over ``spec``, validated for it).

    Args:
        doc: A document from ``load_specs``.
        target: ``"local"`` or ``"vertex"``.

    Returns:
        The resolved spec.

    Raises:
        SpecErrors: If the document's base model cannot run on ``target``.
    """
    if target in doc.resolved:
        return doc.resolved[target]
    reason = getattr(doc, "unavailable", {}).get(target)
    if reason is None:
        reason = Problem(
            doc.source.file,
            doc.source.line,
            doc.source.column,
            "spec.targets",
            f"expected a target tuneform knows (local, vertex), got {got(target)}.",
        )
    raise SpecErrors([reason])
