"""The change plan: per tuned model and target, what a pull request does to it compared with a base commit.

Size (~600 lines): the comparison of the two sides is one decision per field and reads best in one place;
git, datasets, stack state and rendering are their own modules.

The base commit's specs are read from git (``git cat-file``), written to a temporary directory together with empty
stand-ins for the files they point at (datasets, local model files), and loaded with the same ``load_specs`` as the
working tree, so both sides are resolved by the same rules. Datasets are compared by streaming the base blob from
git and the working-tree file from disk (``tuneform.review.datasets``).

A change of a training input (``ResolvedSpec.training_inputs``, the dataset contents; the inputs the ``TuningJob``
resource replaces on, ``TRAINING_INPUTS``) means a new tuning run and a new model version: *re-tuned*. A change of
``metadata.description``/``labels``, the endpoint settings or ``retain`` alone is applied to the existing resources:
*updated in place*; so is ``endpoint.generation`` alone, which on the local target makes a version with the same
weights, re-scored without training.

Tokens, epochs and cost come from the same two functions as ``tuneform plan`` and the Pulumi program
(``tuneform.datasets.tokens.counting_for`` and ``tuneform.plan.estimate_run``), so the review, the preview and
the policy pack agree. Versions come from the state of the stack reviewed for each target (``tuneform.review.state``),
else, on the local target, from the local registry; otherwise the plan says why they are unknown.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import os
import tempfile
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tuneform.datasets.tokens import TokenCounting, counting_for
from tuneform.plan import estimate_run
from tuneform.review.datasets import DatasetDiff, diff_dataset
from tuneform.review.git import GitTree, blob_id_of_file
from tuneform.review.state import ModelState, StackState, read_stack, settings_target
from tuneform.spec.errors import SpecErrors
from tuneform.spec.loader import SPEC_DIR, find_spec_files, load_specs
from tuneform.spec.model import TARGETS, ResolvedSpec, Target, TunedModelDocument, camel
from tuneform.spec.stack import read_stack as read_stack_settings
from tuneform.spec.stack import training_prices

__all__ = [
    "STATUSES",
    "ChangePlan",
    "DatasetChange",
    "FieldChange",
    "ModelChange",
    "Status",
    "build_change_plan",
    "plan_from_json",
    "plan_to_json",
]

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
    """``3``; ``none`` when the stack (or local registry) has no version of the model; ``unknown`` when no state
    was reachable (``ChangePlan.version_sources`` says why)."""
    new_version: str
    """The latest version after ``pulumi up``: ``4`` after a re-tune of 3, the same when nothing is tuned."""
    token_method: str = ""
    """How ``training_tokens`` were counted: ``exact:<tokenizer>``, the estimate's rule, or ``unavailable``."""
    tokens_note: str = ""
    """Why the tokens are unknown, when they are."""
    serving_version: int | None = None
    """The version serving most traffic now, from the stack's state."""
    version_metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Version -> evaluation metrics, from the stack's state (or the local registry)."""
    metric: str = ""
    """The metric the model is judged on: ``spec.endpoint.promote.metric``, else ``exactMatch``."""


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
    version_sources: Mapping[Target, str] = field(default_factory=dict)
    """Per target, where the current versions come from, or why they are unknown."""
    token_methods: Mapping[Target, tuple[str, ...]] = field(default_factory=dict)
    """Per target, how the tokens of its tuned models were counted (``exact:<tokenizer>``, the estimate's rule)."""

    def count(self, status: Status, target: Target | None = None) -> int:
        """How many models (of one target, or of all) have ``status``."""
        return sum(1 for c in self.changes if c.status == status and (target is None or c.target == target))


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
    # A local model's config.json is read for what it is (the spec rules glance at it); it is small.
    configs = [path for path in tree.files if Path(path).name == "config.json"]
    contents = tree.read_many(spec_paths + configs)
    root = Path(tempfile.mkdtemp(prefix="tuneform-base-")).resolve()
    for path in tree.files:
        if path.endswith(_STAND_IN_SUFFIXES) and path not in contents:
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            # A .gguf stand-in starts with the magic bytes the spec rules check for.
            target.write_bytes(b"GGUF" if path.endswith(".gguf") else b"")
    for path, data in contents.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (root / "Pulumi.yaml").touch()
    docs: list[TunedModelDocument] = []
    notes: list[str] = []
    for path in sorted(spec_paths):
        try:
            # The base commit's specs are history: a base model retired since must not make them unreadable, or a
            # pull request moving to its replacement would show the model as created instead of re-tuned.
            docs.extend(load_specs([root / path], repo_root=root, lifecycle=False))
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
    # The decoding defaults change no weights: a version with the same weights is re-scored, not tuned again.
    inputs.pop("generation", None)
    for group in ("hyperparameters", "lora"):
        if isinstance(inputs.get(group), dict):
            inputs[group] = {camel(key): value for key, value in inputs[group].items()}
    return inputs


def _in_place_fields(spec: ResolvedSpec) -> dict[str, Any]:
    endpoint = spec.endpoint
    return {
        "description": spec.description,
        "labels": dict(spec.labels),
        "endpoint": {
            "deploy": endpoint.deploy,
            "traffic": endpoint.traffic,
            "promote": endpoint.promote,
            "generation": endpoint.generation.to_json() if endpoint.generation else None,
        },
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
        self,
        repo: Path,
        tree: GitTree,
        *,
        base: _Side,
        head: _Side,
        say: Callable[[str], None],
        samples: int,
        states: Mapping[str, StackState],
        prices: Mapping[str, dict[str, float]],
    ) -> None:
        self.repo = repo
        self.tree = tree
        self.base = base
        self.head = head
        self.say = say
        self.samples = samples
        self.states = states
        # Per target, the prices its reviewed stack states (tuneform:trainingPrices), which its preview uses too.
        self.prices = prices
        self._diffs: dict[tuple[str | None, str | None, str, str], DatasetDiff | None] = {}
        self._registry: Any = None
        from tuneform.registry import registry_root

        root = registry_root(repo)
        if (root / "models").is_dir():
            from tuneform.registry import Registry

            self._registry = Registry(root)

    def version_source(self, target: Target) -> str:
        state = self.states.get(target)
        if state is not None:
            if state.reachable:
                return f"versions from {state.source}"
            return f"versions unknown: the state of stack `{state.stack}` could not be read ({state.source})"
        if target == "local" and self._registry is not None:
            return "versions from the local registry (`.tuneform/`): no stack configured for this target"
        return (
            f"versions unknown: no {target} stack configured (`--stack NAME`, or the TUNEFORM_STACKS variable) "
            "whose state to read"
        )

    def dataset_diff(
        self, before: str | None, after: str | None, format: str, counting: TokenCounting
    ) -> DatasetDiff | None:
        key = (before, after, format, counting.method)
        if key not in self._diffs:
            self._diffs[key] = self._compute_diff(before, after, format, counting)
        return self._diffs[key]

    def _compute_diff(
        self, before: str | None, after: str | None, format: str, counting: TokenCounting
    ) -> DatasetDiff | None:
        base_file = before if before is not None and before in self.tree.files else None
        new_path = self.repo / after if after is not None and not after.startswith("gs://") else None
        if new_path is None and base_file is None:
            return None
        if base_file is not None and new_path is not None and self._same_blob(base_file, new_path):
            # Counted by `counted` only if the model tunes: an unchanged model's data is not read at all.
            return DatasetDiff(
                0, 0, 0, 0, added=0, removed=0, changed=0, reformatted=0, identical=True, token_method=counting.method
            )
        tree = self.tree
        old: Callable[[], Iterable[bytes]] | None = None
        new: Callable[[], Iterable[bytes]] | None = None
        if base_file is not None:
            old = lambda: tree.stream_lines(base_file)  # noqa: E731 - read twice, so a factory
        if new_path is not None:
            new = lambda: open(new_path, "rb")  # noqa: E731 - diff_dataset closes it
        return diff_dataset(
            old, new, format, samples=self.samples, progress=self.say, name=str(after or before), counting=counting
        )

    def _same_blob(self, before: str, new_path: Path) -> bool:
        return blob_id_of_file(self.repo, new_path) == self.tree.files[before].blob

    def counted(self, change: DatasetChange, format: str, counting: TokenCounting) -> DatasetChange:
        """``change`` with the examples and tokens of an identical file filled in (one streaming pass, cached)."""
        if change.diff is None or not change.diff.identical or change.after is None:
            return change
        key = (None, change.after, format, counting.method)
        if key not in self._diffs:
            path = self.repo / change.after
            self._diffs[key] = diff_dataset(
                None, lambda: open(path, "rb"), format, name=change.after, progress=self.say, counting=counting
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
            token_method=counted.token_method,
        )
        return DatasetChange(change.split, change.before, change.after, diff)

    def model_state(self, name: str, target: Target) -> ModelState | None:
        """What the stack (or, on the local target without a stack, the local registry) holds of ``name``."""
        state = self.states.get(target)
        if state is not None:
            return (state.models or {}).get(name)
        if target != "local" or self._registry is None:
            return None
        versions = self._registry.versions(name)
        if not versions:
            return None
        serving = self._registry.serving(name)
        metrics = {str(v.number): dict(v.metrics) for v in versions if v.metrics}
        return ModelState(name, versions[-1].number, max(serving) if serving else None, metrics)

    def known(self, target: Target) -> bool:
        state = self.states.get(target)
        if state is not None:
            return state.reachable
        return target == "local" and self._registry is not None

    def versions(self, target: Target, status: Status, held: ModelState | None) -> tuple[str, str]:
        """(current, after ``pulumi up``) version numbers as shown; ``held`` is :meth:`model_state` of the model."""
        if not self.known(target):
            if status == "re-tuned":
                return "unknown", "current + 1"
            return "unknown", "1" if status == "created" else "unknown"
        current = held.version if held is not None and held.version else 0
        shown = str(current) if current else "none"
        if status in ("created", "re-tuned"):
            return shown, str(current + 1)
        return shown, shown

    def datasets(
        self, old: ResolvedSpec | None, new: ResolvedSpec | None, counting: TokenCounting
    ) -> tuple[DatasetChange, ...]:
        found = []
        for split in ("train", "validation"):
            before = _split_path(self.base, old, split)
            after = _split_path(self.head, new, split)
            if before is None and after is None:
                continue
            format = (new or old).dataset.format  # type: ignore[union-attr]
            diff = self.dataset_diff(before, after, format, counting) if after is not None else None
            found.append(DatasetChange(split, before, after, diff))
        return tuple(found)

    def change(self, name: str, target: Target) -> ModelChange | None:
        old_doc, new_doc = self.base.docs.get(name), self.head.docs.get(name)
        old = old_doc.resolved.get(target) if old_doc is not None else None
        new = new_doc.resolved.get(target) if new_doc is not None else None
        if old is None and new is None:
            return None
        self.say(f"comparing {name} ({target})")
        counted_spec = new if new is not None else old
        assert counted_spec is not None
        counting = counting_for(target, counted_spec.base_model)
        datasets = self.datasets(old, new, counting)
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
        held = self.model_state(name, target)
        current, upcoming = self.versions(target, status, held)
        tokens: int | None = 0
        cost: float | None = 0.0
        cost_text = "$0.00 (nothing to tune)"
        epochs_text = "-"
        tokens_note = ""
        if status in ("created", "re-tuned") and new_doc is not None and new is not None:
            datasets = tuple(self.counted(d, new.dataset.format, counting) for d in datasets)
            train = next((d for d in datasets if d.split == "train"), None)
            per_epoch = train.diff.tokens_after if train is not None and train.diff is not None else None
            if not counting.available:
                per_epoch, tokens_note = None, f"tokens not counted: {counting.missing}"
            elif per_epoch is None:
                tokens_note = "tokens unknown: the training set is not in the repository"
            run = estimate_run(new, per_epoch, stack_price=self.prices.get(target, {}).get(new.base_model))
            tokens, cost, cost_text, epochs_text = run.training_tokens, run.cost, run.cost_text, run.epochs_text
        promote = spec.endpoint.promote or {}
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
            token_method=counting.method,
            tokens_note=tokens_note,
            serving_version=held.serving if held is not None else None,
            version_metrics=dict(held.metrics) if held is not None else {},
            metric=str(promote.get("metric") or "exactMatch"),
        )


def build_change_plan(
    repo: str | Path,
    base_ref: str,
    *,
    targets: Sequence[Target] = TARGETS,
    samples: int = 3,
    progress: Callable[[str], None] | None = None,
    stacks: Sequence[str] = (),
) -> ChangePlan:
    """Compare the specs and datasets of ``base_ref`` with the working tree of ``repo``.

    Args:
        repo: The repository root (holds ``tuning_specs/`` and ``.git``).
        base_ref: The commit to compare with, e.g. ``origin/main`` or ``HEAD~1``.
        targets: The targets to plan for; a model appears once per target its base model runs on.
        samples: Sample examples to show per kind of dataset change.
        progress: Receives a line per step (files read, datasets hashed).
        stacks: The stacks under review; the first one of each target is where that target's current versions
            are read (its state, through ``PULUMI_BACKEND_URL``).

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
    notes = [*(str(w) for doc in head_docs for w in doc.warnings), *notes]
    try:
        base = _Side(base_docs, Path(base_root), lambda shown: os.path.relpath(shown, base_root))
        head = _Side(head_docs, repo, lambda shown: os.path.relpath(Path(shown).resolve(), repo))
        states: dict[str, StackState] = {}
        prices: dict[str, dict[str, float]] = {}
        for stack in stacks:
            settings = read_stack_settings(repo, stack)
            target = settings_target(settings)
            if target is not None and target in targets and target not in states:
                say(f"reading the state of stack {stack}")
                states[target] = read_stack(repo, stack, target=target)
                prices[target] = training_prices(settings)
        planner = _Planner(repo, tree, base=base, head=head, say=say, samples=samples, states=states, prices=prices)
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
    methods = {
        target: tuple(
            dict.fromkeys(
                c.token_method for c in changes if c.target == target and c.status in ("created", "re-tuned")
            )
        )
        for target in targets
    }
    sources = {target: planner.version_source(target) for target in targets}
    return ChangePlan(base_ref, tree.commit, tuple(targets), tuple(changes), totals, tuple(notes), sources, methods)


def plan_to_json(plan: ChangePlan) -> str:
    """The change plan as JSON (``tuneform plan --base --format json``), read back by :func:`plan_from_json`."""
    return json.dumps(dataclasses.asdict(plan), indent=1, sort_keys=True, default=str) + "\n"


def _decode(kind: Any, value: Any) -> Any:
    """``value`` (parsed JSON) as the type ``kind`` of a change plan field."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: _decode(hints[f.name], value[f.name]) for f in dataclasses.fields(kind)})
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        (inner,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return _decode(inner, value)
    if origin is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], item) for item in value)
        return tuple(_decode(arg, item) for arg, item in zip(args, value, strict=True))
    if origin in (Mapping, dict, collections.abc.Mapping):
        _, inner = typing.get_args(kind)
        return {key: _decode(inner, item) for key, item in value.items()}
    return value


def plan_from_json(text: str) -> ChangePlan:
    """A change plan from :func:`plan_to_json`'s output.

    Raises:
        ValueError: If ``text`` is not such a plan.
    """
    try:
        decoded: ChangePlan = _decode(ChangePlan, json.loads(text))
    except (KeyError, TypeError) as error:
        raise ValueError(f"expected a change plan from `tuneform plan --base --format json`, got {error!r}") from None
    return decoded
