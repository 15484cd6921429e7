"""Specs and datasets, checked and converted, ready to become Pulumi resources (or a plan).

This is the whole of "validation passes" for the program: every spec problem and every dataset problem of every
model is collected into one ``SpecErrors`` before a single resource is declared.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tuneform.spec.model import ResolvedSpec

if TYPE_CHECKING:
    from tuneform.catalogue import ModelInfo
    from tuneform.datasets import DatasetSummary, TokenCounter

DEFAULT_LOCAL_EPOCHS = 3
"""Epochs the local trainer runs when a spec leaves ``hyperparameters.epochs`` unset."""


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
    return repo_root / ".tuneform" / "cache"


def prepare(
    repo_root: Path,
    target: str,
    *,
    paths: list[Path] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[PreparedModel]:
    """Load, resolve and check every spec for ``target``; check and convert every local dataset once.

    Raises:
        SpecErrors: with every problem found, spec and dataset alike.
    """
    from tuneform import catalogue
    from tuneform.spec.loader import Problem, SpecErrors, find_spec_files, load_specs, resolve

    say = progress or (lambda _line: None)
    files = paths if paths is not None else find_spec_files(repo_root / "tuning_specs")
    documents = load_specs(files, repo_root=repo_root)
    problems: list[Problem] = []
    resolved: list[ResolvedSpec] = []
    for document in documents:
        try:
            resolved.append(resolve(document, target))  # type: ignore[arg-type]
        except SpecErrors as errors:
            problems.extend(errors.problems)
    prepared: list[PreparedModel] = []
    counters: dict[str, TokenCounter | None] = {}
    for spec in resolved:
        if spec.base_model not in counters:
            counters[spec.base_model] = _local_tokenizer(spec.base_model) if target == "local" else None
        counter = counters[spec.base_model]
        train = _prepare_dataset(repo_root, spec, "train", problems, say, counter=counter)
        validation = _prepare_dataset(repo_root, spec, "validation", problems, say, counter=counter)
        if train is None:
            continue
        entry = catalogue.get_model(spec.base_model)
        epochs = spec.hyperparameters.epochs or _default_epochs(target, entry)
        training_tokens = train.tokens * epochs
        price = entry.price_per_1m_training_tokens if entry is not None else None
        prepared.append(
            PreparedModel(
                spec=spec,
                train=train,
                validation=validation,
                epochs=epochs,
                training_tokens=training_tokens,
                estimated_cost=None if price is None else round(training_tokens / 1_000_000 * price, 2),
                price_confirmed=bool(entry is not None and entry.price_confirmed),
                spec_hash=spec.spec_hash(train.sha256 + ":" + (validation.sha256 if validation else "")),
            )
        )
    if problems:
        raise SpecErrors(problems)
    return prepared


def _local_tokenizer(base_model: str) -> TokenCounter | None:
    """Exact token counts with the base model's own tokenizer, when its converted copy is already cached.

    The first preview on a new machine uses the documented estimate (which errs high) rather than spend 20 s
    dequantising a GGUF file just to count; every run after the first `pulumi up` counts exactly.
    """
    from tuneform.backends.local import default_cache_dir
    from tuneform.datasets import tokenizer_counter
    from tuneform.training.base_model import cached_base_model_dir

    directory = cached_base_model_dir(base_model, cache_dir=default_cache_dir())
    if directory is None or not (directory / "tokenizer.json").is_file():
        return None
    return tokenizer_counter(directory)


def _default_epochs(target: str, entry: ModelInfo | None) -> int:
    if target == "local":
        return DEFAULT_LOCAL_EPOCHS
    # The same assumption as `tuneform plan`, so preview and plan show the same tokens and cost.
    return entry.estimate_epochs if entry is not None else DEFAULT_LOCAL_EPOCHS


def _prepare_dataset(
    repo_root: Path,
    spec: ResolvedSpec,
    split: Literal["train", "validation"],
    problems: list[Any],
    say: Callable[[str], None],
    *,
    counter: TokenCounter | None = None,
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
            [str(path), stat.st_size, stat.st_mtime_ns, spec.dataset.format, repr(limits), counter and counter.name]
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
        count_tokens=counter,
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
