"""Specs and datasets, checked and converted, ready to become Pulumi resources (or a plan).

This is the whole of "validation passes" for the program: every spec problem and every dataset problem of every
model is collected into one ``SpecErrors`` before a single resource is declared.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tuneform.plan import estimate_run
from tuneform.spec.model import ResolvedSpec
from tuneform.workspace import state_root

if TYPE_CHECKING:
    from tuneform.catalogue import ModelLimits
    from tuneform.datasets import DatasetSummary
    from tuneform.datasets.tokens import TokenCounting

__all__ = ["PreparedDataset", "PreparedModel", "cache_root", "prepare"]

Split = Literal["train", "validation", "test"]
"""A dataset split of a spec; the test set is checked with the validation set's limits (:func:`_limits`)."""


@dataclass(frozen=True)
class PreparedDataset:
    split: str
    source: str
    """As the user wrote it (relative to the spec file) or the ``gs://`` URI."""
    sha256: str
    examples: int
    tokens: int
    token_method: str
    converted_path: str
    """Absolute path of the converted Gemini-format JSONL in the local cache ("" for ``gs://`` sources)."""


@dataclass(frozen=True)
class PreparedModel:
    spec: ResolvedSpec
    train: PreparedDataset
    validation: PreparedDataset | None
    epochs: int
    training_tokens: int
    """Tokens of one pass over the training set times epochs: what tuning is billed on."""
    estimated_cost: float | None
    """USD, from the catalogue's price per 1M training tokens; ``None`` when the price is unknown."""
    price_confirmed: bool
    spec_hash: str
    test: PreparedDataset | None = None
    """Local target: checked and converted like the validation set, scored after tuning, never trained on."""
    weights_hash: str = ""
    """``ResolvedSpec.weights_hash``: versions with this hash have the same weights."""
    epochs_assumed: bool = False
    """The spec leaves epochs to Vertex AI: the cost rests on the plan's assumption (no bound for a cost cap)."""


def _identity(data: PreparedDataset) -> str:
    return data.sha256 or data.source


def cache_root(repo_root: Path) -> Path:
    return state_root(repo_root) / "cache"


def prepare(
    repo_root: Path,
    target: str,
    *,
    paths: list[Path] | None = None,
    progress: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    prices: Mapping[str, float] | None = None,
) -> list[PreparedModel]:
    """Load, resolve and check every spec for ``target``; check and convert every local dataset once.

    ``prices`` are the stack's own (``tuneform.spec.stack.training_prices``: USD per 1M training tokens by base
    model), which replace the catalogue's in the cost estimate, as the review does.

    Raises:
        SpecErrors: with every problem found, spec and dataset alike.
    """
    from tuneform.datasets.tokens import counting_for
    from tuneform.spec.loader import Problem, SpecErrors, find_spec_files, load_specs, resolve

    say = progress or (lambda _line: None)
    files = paths if paths is not None else find_spec_files(repo_root / "tuning_specs")
    documents = load_specs(files, repo_root=repo_root)
    for document in documents:
        for warning in document.warnings:
            (warn or say)(str(warning))
    problems: list[Problem] = []
    resolved: list[ResolvedSpec] = []
    for document in documents:
        try:
            resolved.append(resolve(document, target))  # type: ignore[arg-type]
        except SpecErrors as errors:
            problems.extend(errors.problems)
    prepared: list[PreparedModel] = []
    for spec in resolved:
        counting = counting_for(spec.target, spec.base_model)
        if not counting.available:
            # No count at all rather than another one: a token limit must not depend on the machine.
            where = spec.source
            problems.append(
                Problem(
                    where.file if where else "?",
                    where.line if where else 1,
                    where.column if where else 1,
                    "spec.baseModel",
                    f"expected the tokenizer of {spec.base_model} on this machine to count training tokens, got "
                    f"none: {counting.missing}.",
                )
            )
            continue
        train = _prepare_dataset(repo_root, spec, "train", problems, say, counting=counting)
        validation = _prepare_dataset(repo_root, spec, "validation", problems, say, counting=counting)
        test = _prepare_dataset(repo_root, spec, "test", problems, say, counting=counting)
        if train is None:
            continue
        # A gs:// training set is not counted here: its tokens are unknown, not 0 (a cost cap must not pass it).
        counted = train.tokens if train.sha256 else None
        run = estimate_run(spec, counted, stack_price=(prices or {}).get(spec.base_model))
        prepared.append(
            PreparedModel(
                spec=spec,
                train=train,
                validation=validation,
                epochs=run.epochs,
                training_tokens=run.training_tokens or 0,
                estimated_cost=run.cost,
                price_confirmed=run.price_confirmed,
                # A gs:// object's name stands for its content, which nothing here can read.
                spec_hash=spec.spec_hash(
                    data_hash := _identity(train) + ":" + (_identity(validation) if validation else "")
                ),
                weights_hash=spec.weights_hash(data_hash),
                test=test,
                epochs_assumed=run.epochs_assumed,
            )
        )
    if problems:
        raise SpecErrors(problems)
    return prepared


def _local_path(spec: ResolvedSpec, split: Split) -> str | None:
    """The local file of a split of ``spec``; ``None`` when the split is absent or remote (``gs://``)."""
    if split == "train":
        return spec.dataset.train_path
    if split == "validation":
        return spec.dataset.validation_path
    return spec.dataset.test_path


def _limits(spec: ResolvedSpec, split: Split) -> ModelLimits:
    """The dataset limits of a split of ``spec``."""
    from tuneform import catalogue

    # A test set is only answered, never trained on: the validation set's limits fit it.
    return catalogue.limits_for(spec.base_model, "train" if split == "train" else "validation")


def check_local_dataset(
    spec: ResolvedSpec,
    split: Split,
    counting: TokenCounting,
    say: Callable[[str], None],
    *,
    cache: Path | None = None,
) -> tuple[DatasetSummary | None, list[Any]]:
    """Check one local dataset file of ``spec`` against its base model's limits, counting tokens as ``counting`` says.

    The one dataset step of every surface: ``tuneform validate`` and ``tuneform plan`` call it without ``cache``,
    the Pulumi program (``prepare``) with one, which also converts the file to canonical Gemini JSONL and keeps the
    summary, keyed by the file's path, size, mtime, format, limits and counting, so an unchanged file is not read
    again. Where no tokenizer is available no token limit applies (an estimate could refuse what the exact count
    allows); the caller decides whether a missing count is a problem (the program) or a note (validate, plan).

    Returns:
        The summary (``None`` when the split is absent or remote) and the problems found.
    """
    from tuneform.datasets import DatasetLimits, check_dataset, read_summary, write_summary

    local = _local_path(spec, split)
    if local is None:
        return None, []
    path = Path(local)
    limits = _limits(spec, split)
    if not counting.available:
        limits = replace(limits, max_tokens_per_example=None)
    display = os.path.relpath(path, Path.cwd())
    summary_path = converted = None
    if cache is not None:
        stat = path.stat()
        identity = [str(path), stat.st_size, stat.st_mtime_ns, spec.dataset.format, repr(limits), counting.method]
        key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
        summary_path = cache / "summaries" / f"{key}.json"
        if summary_path.exists():
            summary = read_summary(summary_path)
            if summary.converted_path and Path(summary.converted_path).exists():
                for warning in summary.warnings:  # an estimate over a token limit: said on every run
                    say(warning)
                return summary, []
        converted = cache / "converted" / f"{key}.jsonl"
        converted.parent.mkdir(parents=True, exist_ok=True)
    say(f"checking {display} ({split} set for {spec.base_model}, tokens: {counting.label})")
    summary, problems = check_dataset(
        path,
        format=spec.dataset.format,
        limits=DatasetLimits(**asdict(limits)),
        count_tokens=counting.counter,
        convert_to=converted,
        display_path=display,
        progress=say,
    )
    for warning in summary.warnings:
        say(warning)
    if not problems and summary_path is not None:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        write_summary(summary, summary_path)
    return summary, problems


def _prepare_dataset(
    repo_root: Path,
    spec: ResolvedSpec,
    split: Split,
    problems: list[Any],
    say: Callable[[str], None],
    *,
    counting: TokenCounting,
) -> PreparedDataset | None:
    written = {"train": spec.dataset.train, "validation": spec.dataset.validation}.get(split, spec.dataset.test)
    if written is None:
        return None
    if _local_path(spec, split) is None:
        # gs:// data is checked by the tuning service itself; we cannot stream it without credentials here.
        return PreparedDataset(split, written, "", 0, 0, "unknown: remote file", "")
    summary, found = check_local_dataset(spec, split, counting, say, cache=cache_root(repo_root))
    if found or summary is None:
        problems.extend(found)
        return None
    return _from_summary(split, written, summary)


def _from_summary(split: str, written: str, summary: DatasetSummary) -> PreparedDataset:
    return PreparedDataset(
        split=split,
        # `./datasets/a.jsonl` and `datasets/a.jsonl` are one file: writing it either way changes no resource.
        source=os.path.normpath(written),
        sha256=summary.sha256,
        examples=summary.examples,
        tokens=summary.tokens_total,
        token_method=summary.token_method,
        converted_path=summary.converted_path or "",
    )
