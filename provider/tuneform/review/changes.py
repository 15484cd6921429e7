"""The change plan: per tuned model and target, what a pull request does to it compared with a base commit.

The base commit's specs are read from git (``git cat-file``), written to a temporary directory together with empty
stand-ins for the files they point at (datasets, local model files), and loaded with the same ``load_specs`` as the
working tree, so both sides are resolved by the same rules. Datasets are compared by streaming the base blob from
git and the working-tree file from disk (``tuneform.review.datasets``).

A change of a training input (``ResolvedSpec.training_inputs``, the dataset contents; the inputs the ``TuningJob``
resource replaces on, ``TRAINING_INPUTS``) means a new tuning run and a new model version: *re-tuned*. A change of
``metadata.description``/``labels``, the endpoint settings or ``retain`` alone is applied to the existing resources:
*updated in place*.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tuneform.datasets.tokens import ESTIMATE_METHOD
from tuneform.review.datasets import DatasetDiff, diff_dataset
from tuneform.review.git import GitTree, blob_id_of_file
from tuneform.spec.errors import SpecErrors
from tuneform.spec.loader import SPEC_DIR, find_spec_files, load_specs
from tuneform.spec.model import TARGETS, ResolvedSpec, Target, TunedModelDocument
from tuneform.spec.plan import build_plan

__all__ = ["STATUSES", "ChangePlan", "DatasetChange", "FieldChange", "ModelChange", "Status", "build_change_plan"]

Status = Literal["created", "re-tuned", "updated in place", "unchanged", "removed"]
STATUSES: tuple[Status, ...] = ("re-tuned", "created", "updated in place", "removed", "unchanged")
"""In the order plans list them: what costs money first."""

# Stand-ins are written for these files so that the loader's existence checks pass on the base commit's specs.
_STAND_IN_SUFFIXES = (".jsonl", ".gguf", ".json", ".safetensors")


@dataclass(frozen=True)
class FieldChange:
    """One spec field that differs between the base and the working tree."""

    field: str
    """Dotted spec path, e.g. ``hyperparameters.epochs``."""
    old: Any
    new: Any


@dataclass(frozen=True)
class DatasetChange:
    """One dataset split of a model, compared."""

    split: str
    """``train`` or ``validation``."""
    before: str | None
    """Repository-relative path (or ``gs://`` URI) at the base; ``None`` when the split was not declared."""
    after: str | None
    diff: DatasetDiff | None
    """``None`` when the file could not be read (``gs://``) or the split is gone."""

    @property
    def changed(self) -> bool:
        """Whether this split makes the model re-tune."""
        if self.diff is not None and self.diff.content_changed:
            return True
        if self.before != self.after and (self.diff is None or self.before is None or self.after is None):
            return True
        # The same examples in a different order are a different training file (and dataset hash).
        return self.diff is not None and self.diff.reordered


@dataclass(frozen=True)
class ModelChange:
    """ModelChange is what a pull request does to one tuned model on one target."""

    name: str
    target: Target
    status: Status
    source: str
    """``file:line`` of ``metadata.name`` (in the working tree; at the base for a removed model)."""
    base_model: str
    reasons: tuple[FieldChange, ...]
    """Training inputs that changed (each one alone makes a re-tune)."""
    updates: tuple[FieldChange, ...]
    """Fields applied in place."""
    datasets: tuple[DatasetChange, ...]
    epochs_text: str
    training_tokens: int | None
    """Tokens the new run trains on; 0 when nothing is tuned, ``None`` when unknown."""
    cost: float | None
    """Estimated USD of the new run; 0.0 when nothing is tuned, ``None`` when unknown."""
    cost_text: str
    current_version: str
    """``3``; ``none`` when the local registry has no version of the model; ``unknown`` without a local registry
    (always on the vertex target)."""
    new_version: str
    """The latest version after ``pulumi up``: ``4`` after a re-tune of 3, the same when nothing is tuned."""


@dataclass(frozen=True)
class TargetTotals:
    """Sums over one target's models."""

    training_tokens: int
    cost: float
    unknown_cost: int
    """Models that tune but whose cost is unknown (price or tokens)."""


@dataclass(frozen=True)
class ChangePlan:
    """ChangePlan is everything ``tuneform plan --base`` shows."""

    base_ref: str
    base_commit: str
    targets: tuple[Target, ...]
    changes: tuple[ModelChange, ...]
    totals: Mapping[Target, TargetTotals]
    notes: tuple[str, ...] = field(default=())
    """Things the reviewer should know that are not changes (base specs that did not load, unread files)."""

    def count(self, status: Status, target: Target | None = None) -> int:
        """How many models (of one target, or of all) have ``status``."""
        return sum(1 for c in self.changes if c.status == status and (target is None or c.target == target))


@dataclass(frozen=True)
class _Summary:
    """The part of a dataset summary ``build_plan`` reads."""

    examples: int
    tokens_total: int
    token_method: str = ESTIMATE_METHOD


class _Side:
    """One side (base or working tree) of the comparison: documents and how to name and read their files."""

    def __init__(self, docs: Sequence[TunedModelDocument], root: Path, display: Callable[[str], str]) -> None:
        self.docs = {doc.name: doc for doc in docs}
        self.root = root
        self.display = display

    def relative(self, path: str | None, written: str | None) -> str | None:
        if path is None:
            return written
        return os.path.relpath(path, self.root)


def _load_base(tree: GitTree, say: Callable[[str], None]) -> tuple[list[TunedModelDocument], list[str], str]:
    """Load the base commit's specs from a temporary copy; return the docs, notes and the copy's root."""
    prefix = SPEC_DIR + "/"
    spec_paths = [
        path
        for path in tree.files
        if path.startswith(prefix)
        and path.endswith((".yaml", ".yml"))
        and "datasets" not in Path(path).relative_to(SPEC_DIR).parts
    ]
    say(f"reading {len(spec_paths)} spec files at {tree.ref} ({tree.commit[:12]})")
    contents = tree.read_many(spec_paths)
    root = Path(tempfile.mkdtemp(prefix="tuneform-base-")).resolve()
    for path in tree.files:
        if path.endswith(_STAND_IN_SUFFIXES) and path not in contents:
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    for path, data in contents.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (root / "Pulumi.yaml").touch()
    docs: list[TunedModelDocument] = []
    notes: list[str] = []
    for path in sorted(contents):
        try:
            docs.extend(load_specs([root / path], repo_root=root))
        except SpecErrors as errors:
            first = str(errors.problems[0]).replace(str(root) + os.sep, "").rstrip(".")
            more = len(errors.problems) - 1
            also = f" (and {more} more {'problem' if more == 1 else 'problems'})" if more else ""
            notes.append(f"{path} does not load at {tree.ref}, so its models count as created: {first}{also}.")
    return docs, notes, str(root)


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, child in value.items():
            flat.update(_flatten(child, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _field_changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[FieldChange, ...]:
    a, b = _flatten(old, ""), _flatten(new, "")
    keys = list(dict.fromkeys([*a, *b]))
    return tuple(FieldChange(key, a.get(key), b.get(key)) for key in keys if a.get(key) != b.get(key))


def _training_fields(spec: ResolvedSpec) -> dict[str, Any]:
    inputs = spec.training_inputs()
    inputs.pop("target")
    return inputs


def _in_place_fields(spec: ResolvedSpec) -> dict[str, Any]:
    endpoint = spec.endpoint
    return {
        "description": spec.description,
        "labels": dict(spec.labels),
        "endpoint": {"deploy": endpoint.deploy, "traffic": endpoint.traffic, "promote": endpoint.promote},
        "retain": spec.retain,
    }


def _split_path(side: _Side, spec: ResolvedSpec | None, split: str) -> str | None:
    """A split's file, repository-relative (or its gs:// URI); ``None`` when the spec or the split is absent."""
    if spec is None:
        return None
    if split == "train":
        return side.relative(spec.dataset.train_path, spec.dataset.train)
    return side.relative(spec.dataset.validation_path, spec.dataset.validation)


class _Planner:
    def __init__(
        self, repo: Path, tree: GitTree, *, base: _Side, head: _Side, say: Callable[[str], None], samples: int
    ) -> None:
        self.repo = repo
        self.tree = tree
        self.base = base
        self.head = head
        self.say = say
        self.samples = samples
        self._diffs: dict[tuple[str | None, str | None, str], DatasetDiff | None] = {}
        self._registry: Any = None
        registry_root = repo / ".tuneform"
        if (registry_root / "models").is_dir():
            from tuneform.registry import Registry

            self._registry = Registry(registry_root)

    def dataset_diff(self, before: str | None, after: str | None, format: str) -> DatasetDiff | None:
        key = (before, after, format)
        if key not in self._diffs:
            self._diffs[key] = self._compute_diff(before, after, format)
        return self._diffs[key]

    def _compute_diff(self, before: str | None, after: str | None, format: str) -> DatasetDiff | None:
        base_file = before if before is not None and before in self.tree.files else None
        new_path = self.repo / after if after is not None and not after.startswith("gs://") else None
        if new_path is None and base_file is None:
            return None
        if base_file is not None and new_path is not None and self._same_blob(base_file, new_path):
            # Counted by `counted` only if the model tunes: an unchanged model's data is not read at all.
            return DatasetDiff(0, 0, 0, 0, added=0, removed=0, changed=0, reformatted=0, identical=True)
        tree = self.tree
        old: Callable[[], Iterable[bytes]] | None = None
        new: Callable[[], Iterable[bytes]] | None = None
        if base_file is not None:
            old = lambda: tree.stream_lines(base_file)  # noqa: E731 - read twice, so a factory
        if new_path is not None:
            new = lambda: open(new_path, "rb")  # noqa: E731 - diff_dataset closes it
        return diff_dataset(old, new, format, samples=self.samples, progress=self.say, name=str(after or before))

    def _same_blob(self, before: str, new_path: Path) -> bool:
        return blob_id_of_file(self.repo, new_path) == self.tree.files[before].blob

    def counted(self, change: DatasetChange, format: str) -> DatasetChange:
        """``change`` with the examples and tokens of an identical file filled in (one streaming pass, cached)."""
        if change.diff is None or not change.diff.identical or change.after is None:
            return change
        key = (None, change.after, format)
        if key not in self._diffs:
            path = self.repo / change.after
            self._diffs[key] = diff_dataset(
                None, lambda: open(path, "rb"), format, name=change.after, progress=self.say
            )
        counted = self._diffs[key]
        assert counted is not None
        diff = DatasetDiff(
            examples_before=counted.examples_after,
            examples_after=counted.examples_after,
            tokens_before=counted.tokens_after,
            tokens_after=counted.tokens_after,
            added=0,
            removed=0,
            changed=0,
            reformatted=0,
            identical=True,
        )
        return DatasetChange(change.split, change.before, change.after, diff)

    def versions(self, name: str, target: Target, status: Status) -> tuple[str, str]:
        """(current, after ``pulumi up``) version numbers as shown; the registry only knows the local target."""
        if target != "local" or self._registry is None:
            if status == "re-tuned":
                return "unknown", "current + 1"
            return "unknown", "1" if status == "created" else "unknown"
        latest = self._registry.latest(name)
        current = latest.number if latest is not None else 0
        shown = str(current) if current else "none"
        if status in ("created", "re-tuned"):
            return shown, str(current + 1)
        return shown, shown

    def datasets(self, old: ResolvedSpec | None, new: ResolvedSpec | None) -> tuple[DatasetChange, ...]:
        found = []
        for split in ("train", "validation"):
            before = _split_path(self.base, old, split)
            after = _split_path(self.head, new, split)
            if before is None and after is None:
                continue
            format = (new or old).dataset.format  # type: ignore[union-attr]
            diff = self.dataset_diff(before, after, format) if after is not None else None
            found.append(DatasetChange(split, before, after, diff))
        return tuple(found)

    def change(self, name: str, target: Target) -> ModelChange | None:
        old_doc, new_doc = self.base.docs.get(name), self.head.docs.get(name)
        old = old_doc.resolved.get(target) if old_doc is not None else None
        new = new_doc.resolved.get(target) if new_doc is not None else None
        if old is None and new is None:
            return None
        self.say(f"comparing {name} ({target})")
        datasets = self.datasets(old, new)
        reasons: tuple[FieldChange, ...] = ()
        updates: tuple[FieldChange, ...] = ()
        if new is None:
            status: Status = "removed"
        elif old is None:
            status = "created"
        else:
            reasons = _field_changes(_training_fields(old), _training_fields(new))
            updates = _field_changes(_in_place_fields(old), _in_place_fields(new))
            if reasons or any(d.changed for d in datasets):
                status = "re-tuned"
            elif updates:
                status = "updated in place"
            else:
                status = "unchanged"
        doc = new_doc if new is not None else old_doc
        assert doc is not None
        spec = new if new is not None else old
        assert spec is not None
        side = self.head if new is not None else self.base
        source = f"{side.display(doc.source.file)}:{doc.source.line}"
        current, upcoming = self.versions(name, target, status)
        tokens: int | None = 0
        cost: float | None = 0.0
        cost_text = "$0.00 (nothing to tune)"
        epochs_text = "-"
        if status in ("created", "re-tuned") and new_doc is not None and new is not None:
            datasets = tuple(self.counted(d, new.dataset.format) for d in datasets)
            summaries: dict[str, _Summary] = {}
            train = next((d for d in datasets if d.split == "train"), None)
            if train is not None and train.diff is not None:
                summaries[new.dataset.train_path or new.dataset.train] = _Summary(
                    train.diff.examples_after, train.diff.tokens_after
                )
            item = build_plan([new_doc], target, summaries).items[0]
            tokens, cost, cost_text, epochs_text = item.training_tokens, item.cost, item.cost_text, item.epochs_text
        return ModelChange(
            name=name,
            target=target,
            status=status,
            source=source,
            base_model=spec.base_model,
            reasons=reasons,
            updates=updates,
            datasets=datasets,
            epochs_text=epochs_text,
            training_tokens=tokens,
            cost=cost,
            cost_text=cost_text,
            current_version=current,
            new_version=upcoming,
        )


def build_change_plan(
    repo: str | Path,
    base_ref: str,
    *,
    targets: Sequence[Target] = TARGETS,
    samples: int = 3,
    progress: Callable[[str], None] | None = None,
) -> ChangePlan:
    """Compare the specs and datasets of ``base_ref`` with the working tree of ``repo``.

    Args:
        repo: The repository root (holds ``tuning_specs/`` and ``.git``).
        base_ref: The commit to compare with, e.g. ``origin/main`` or ``HEAD~1``.
        targets: The targets to plan for; a model appears once per target its base model runs on.
        samples: Sample examples to show per kind of dataset change.
        progress: Receives a line per step (files read, datasets hashed).

    Returns:
        The change plan.

    Raises:
        SpecErrors: If the working tree's specs have problems (the base commit's are only noted).
        GitError: If ``repo`` is not a git repository or ``base_ref`` names no commit.
    """
    say = progress or (lambda _line: None)
    repo = Path(repo).resolve()
    tree = GitTree(repo, base_ref)
    head_docs = load_specs(find_spec_files(repo), repo_root=repo)
    base_docs, notes, base_root = _load_base(tree, say)
    try:
        base = _Side(base_docs, Path(base_root), lambda shown: os.path.relpath(shown, base_root))
        head = _Side(head_docs, repo, lambda shown: os.path.relpath(Path(shown).resolve(), repo))
        planner = _Planner(repo, tree, base=base, head=head, say=say, samples=samples)
        names = sorted({*base.docs, *head.docs})
        changes = [
            change for target in targets for name in names if (change := planner.change(name, target)) is not None
        ]
    finally:
        import shutil

        shutil.rmtree(base_root, ignore_errors=True)
    changes.sort(key=lambda c: (targets.index(c.target), STATUSES.index(c.status), c.name))
    totals = {}
    for target in targets:
        tuned = [c for c in changes if c.target == target and c.status in ("created", "re-tuned")]
        totals[target] = TargetTotals(
            training_tokens=sum(c.training_tokens or 0 for c in tuned),
            cost=sum(c.cost or 0.0 for c in tuned),
            unknown_cost=sum(1 for c in tuned if c.cost is None),
        )
    return ChangePlan(base_ref, tree.commit, tuple(targets), tuple(changes), totals, tuple(notes))
