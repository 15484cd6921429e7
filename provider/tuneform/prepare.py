"""Specs and datasets, checked and converted, ready to become Pulumi resources (or a plan).

This is the whole of "validation passes" for the program: every spec problem and every dataset problem of every
model is collected into one ``SpecErrors`` before a single resource is declared.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tuneform.spec.model import ResolvedSpec
from tuneform.spec.plan import estimate_run

if TYPE_CHECKING:
    from tuneform.datasets import DatasetSummary
    from tuneform.datasets.tokens import TokenCounting

__all__ = ["PreparedDataset", "PreparedModel", "cache_root", "prepare"]


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


def cache_root(repo_root: Path) -> Path:
    from tuneform.registry import registry_root

    return registry_root(repo_root) / "cache"


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

    ``prices`` are the stack's own (``tuneform:trainingPrices``, USD per 1M training tokens by base model), which
    replace the catalogue's in the cost estimate, as the review does.

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
        if train is None:
            continue
        price: Any = (prices or {}).get(spec.base_model)
        # A malformed price is the stack rules' to report (spec/stack.py); here it is simply not used.
        usable = isinstance(price, int | float) and not isinstance(price, bool)
        run = estimate_run(spec, train.tokens, stack_price=float(price) if usable else None)
        prepared.append(
            PreparedModel(
                spec=spec,
                train=train,
                validation=validation,
                epochs=run.epochs,
                training_tokens=run.training_tokens or 0,
                estimated_cost=run.cost,
                price_confirmed=run.price_confirmed,
                spec_hash=spec.spec_hash(train.sha256 + ":" + (validation.sha256 if validation else "")),
            )
        )
    if problems:
        raise SpecErrors(problems)
    return prepared


def _prepare_dataset(
    repo_root: Path,
    spec: ResolvedSpec,
    split: Literal["train", "validation"],
    problems: list[Any],
    say: Callable[[str], None],
    *,
    counting: TokenCounting,
) -> PreparedDataset | None:
    from tuneform import catalogue
    from tuneform.datasets import DatasetLimits, check_dataset, read_summary, write_summary

    written = spec.dataset.train if split == "train" else spec.dataset.validation
    local = spec.dataset.train_path if split == "train" else spec.dataset.validation_path
    if written is None:
        return None
    if local is None:
        # gs:// data is checked by the tuning service itself; we cannot stream it without credentials here.
        return PreparedDataset(split, written, "", 0, 0, "unknown: remote file", "")
    path = Path(local)
    limits = DatasetLimits(**asdict(catalogue.limits_for(spec.base_model, split)))
    stat = path.stat()
    key = hashlib.sha256(
        json.dumps(
            [str(path), stat.st_size, stat.st_mtime_ns, spec.dataset.format, repr(limits), counting.method]
        ).encode()
    ).hexdigest()
    cache = cache_root(repo_root)
    summary_path = cache / "summaries" / f"{key}.json"
    display = os.path.relpath(path, Path.cwd())
    if summary_path.exists():
        summary = read_summary(summary_path)
        if summary.converted_path and Path(summary.converted_path).exists():
            return _from_summary(split, written, summary)
    say(f"checking {display} ({stat.st_size / 1e6:.1f} MB)")
    converted = cache / "converted" / f"{key}.jsonl"
    converted.parent.mkdir(parents=True, exist_ok=True)
    summary, dataset_problems = check_dataset(
        path,
        format=spec.dataset.format,
        limits=limits,
        count_tokens=counting.counter,
        convert_to=converted,
        display_path=display,
    )
    if dataset_problems:
        problems.extend(dataset_problems)
        return None
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    write_summary(summary, summary_path)
    return _from_summary(split, written, summary)


def _from_summary(split: str, written: str, summary: DatasetSummary) -> PreparedDataset:
    return PreparedDataset(
        split=split,
        source=written,
        sha256=summary.sha256,
        examples=summary.examples,
        tokens=summary.tokens_total,
        token_method=summary.token_method,
        converted_path=summary.converted_path or "",
    )
