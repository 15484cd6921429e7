"""What ``tuneform plan`` (and ``pulumi preview``, and the pull-request review) show: per model, what would be
tuned, on how many tokens, for how much.

``build_plan`` is a pure function of the loaded specs and the dataset summaries, so every surface computes the same
figures; ``render_text`` and ``render_markdown`` only format them.

Training tokens are dataset tokens x epochs (the fact sheet's billing rule, §5). When a spec leaves ``epochs`` unset
the plan uses the catalogue's ``defaultEpochs`` (3 for open models and the local target); Gemini models have no
documented default (Vertex AI adjusts it to the dataset), so the plan assumes the catalogue's ``planEpochs`` (4, the
unofficial figure of Google's cost notebook) and says so.

``estimate_run`` is the one place where epochs, training tokens and cost are worked out: ``build_plan``, the Pulumi
program (``tuneform.prepare``, so ``pulumi preview`` and the policy pack) and the pull-request review all call it,
with tokens counted by ``tuneform.datasets.tokens.counting_for``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tuneform import catalogue
from tuneform.catalogue import ModelInfo
from tuneform.spec.model import ResolvedSpec, Target, TunedModelDocument

__all__ = [
    "Plan",
    "PlanItem",
    "RunEstimate",
    "SummaryLike",
    "build_plan",
    "estimate_run",
    "render_markdown",
    "render_text",
]

PRICE_UNKNOWN = "unknown: price unconfirmed"


class SummaryLike(Protocol):
    """The part of ``tuneform.datasets.summary.DatasetSummary`` a plan reads."""

    @property
    def examples(self) -> int: ...

    @property
    def tokens_total(self) -> int: ...

    @property
    def token_method(self) -> str: ...


@dataclass(frozen=True)
class PlanItem:
    """PlanItem is one tuned model in a plan."""

    name: str
    source: str
    """``file:line`` of ``metadata.name``."""
    base_model: str
    mode: str
    tunes: str
    """What would be tuned, in words (``an adapter of size 4``, ``every weight``)."""
    train_examples: int | None
    validation_examples: int | None
    tokens_per_epoch: int | None
    """Tokens in one pass over the training set; ``None`` when the dataset was not read (gs:// or unchecked)."""
    token_method: str
    epochs: int | None
    """Epochs the estimate uses."""
    epochs_text: str
    """How the epochs were chosen: ``3``, ``3 (default)``, ``auto (plan assumes 4, unconfirmed)``."""
    training_tokens: int | None
    cost: float | None
    """Estimated USD; ``None`` when the price or the tokens are unknown."""
    cost_text: str


@dataclass(frozen=True)
class Plan:
    """Plan is what ``tuneform plan`` shows for one target."""

    target: Target
    items: tuple[PlanItem, ...]
    skipped: tuple[tuple[str, str], ...]
    """``(name, reason)`` of specs whose base model cannot run on this target."""
    total_training_tokens: int
    """Sum over the items whose tokens are known."""
    total_cost: float
    """Sum over the items whose cost is known."""
    unknown_cost: int
    """How many items have no cost estimate."""


def _info(spec: ResolvedSpec) -> ModelInfo:
    return catalogue.get(spec.base_model) or catalogue.local_path_info(spec.base_model)


def _epochs(spec: ResolvedSpec, info: ModelInfo) -> tuple[int, str, bool]:
    """Epochs, how they were chosen, and whether they are only the plan's assumption (left to the service)."""
    if spec.hyperparameters.epochs is not None:
        return spec.hyperparameters.epochs, str(spec.hyperparameters.epochs), False
    if info.default_epochs is not None:
        # Every local model has one (its catalogue entry's, or the `localPath` entry's): what the trainer runs.
        return info.default_epochs, f"{info.default_epochs} (default)", False
    note = ", unconfirmed" if info.plan_epochs.unconfirmed else ""
    return info.estimate_epochs, f"auto (plan assumes {info.estimate_epochs}{note})", True


def _cost(info: ModelInfo, training_tokens: int | None, stack_price: float | None = None) -> tuple[float | None, str]:
    # The stack's own price, when it states one, replaces the catalogue's (which may be unknown).
    catalogued = info.price
    price = catalogued.value if stack_price is None else stack_price
    if price is None:
        return None, PRICE_UNKNOWN
    if training_tokens is None:
        return None, "unknown: dataset tokens unknown"
    # Rounded to cents here, once, so a plan, a preview and a policy limit compare the very same figure.
    cost = round(training_tokens * float(price) / 1_000_000, 2)
    if stack_price is not None:
        return cost, f"${cost:,.2f} (the stack's trainingPrices)"
    if price == 0:
        return cost, "$0.00 (runs on this machine)"
    return cost, f"${cost:,.2f}" + (" (price unconfirmed)" if catalogued.unconfirmed else "")


@dataclass(frozen=True)
class RunEstimate:
    """What one tuning run of a spec is estimated to train on and cost."""

    epochs: int
    epochs_text: str
    """How the epochs were chosen: ``3``, ``3 (default)``, ``auto (plan assumes 4, unconfirmed)``."""
    training_tokens: int | None
    """Tokens per epoch x epochs; ``None`` when the dataset's tokens are unknown."""
    cost: float | None
    """USD, rounded to cents; ``None`` when the price or the tokens are unknown."""
    cost_text: str
    price_confirmed: bool
    epochs_assumed: bool = False
    """The spec leaves epochs to the service and no catalogue default says how many: ``epochs`` is the plan's
    assumption, which bounds nothing (a cost cap refuses it)."""


def estimate_run(spec: ResolvedSpec, tokens_per_epoch: int | None, *, stack_price: float | None = None) -> RunEstimate:
    """Epochs, training tokens and cost of one run of ``spec``: the one estimate every surface shows.

    Args:
        spec: The resolved spec (its target decides the epoch default).
        tokens_per_epoch: The training set's tokens, counted by ``counting_for(spec.target, spec.base_model)``;
            ``None`` when unknown (a ``gs://`` dataset, or no tokenizer on this machine).
        stack_price: USD per 1M training tokens the stack states for this base model (``tuneform:trainingPrices``),
            which replaces the catalogue's price.

    Returns:
        The estimate.
    """
    info = _info(spec)
    epochs, epochs_text, assumed = _epochs(spec, info)
    training_tokens = tokens_per_epoch * epochs if tokens_per_epoch is not None else None
    cost, cost_text = _cost(info, training_tokens, stack_price)
    confirmed = stack_price is not None or info.price_confirmed
    return RunEstimate(epochs, epochs_text, training_tokens, cost, cost_text, confirmed, assumed)


def _item(doc: TunedModelDocument, spec: ResolvedSpec, summaries: Mapping[str, SummaryLike]) -> PlanItem:
    train = summaries.get(spec.dataset.train_path or spec.dataset.train)
    validation = None
    if spec.dataset.validation is not None:
        validation = summaries.get(spec.dataset.validation_path or spec.dataset.validation)
    tokens = train.tokens_total if train is not None else None
    run = estimate_run(spec, tokens)
    if spec.mode == "full":
        tunes = "every weight"
    elif spec.adapter_size is not None:
        tunes = f"an adapter of size {spec.adapter_size}"
    else:
        tunes = "an adapter (size chosen by the service)"
    return PlanItem(
        name=spec.name,
        source=f"{doc.source.file}:{doc.source.line}",
        base_model=spec.base_model,
        mode=spec.mode,
        tunes=tunes,
        train_examples=train.examples if train is not None else None,
        validation_examples=validation.examples if validation is not None else None,
        tokens_per_epoch=tokens,
        token_method=train.token_method if train is not None else "",
        epochs=run.epochs,
        epochs_text=run.epochs_text,
        training_tokens=run.training_tokens,
        cost=run.cost,
        cost_text=run.cost_text,
    )


def build_plan(
    docs: Sequence[TunedModelDocument], target: Target, dataset_summaries: Mapping[str, SummaryLike]
) -> Plan:
    """Compute the plan of every document for one target.

    Args:
        docs: Documents from ``load_specs``.
        target: ``"local"`` or ``"vertex"``.
        dataset_summaries: Dataset summaries keyed by the resolved spec's ``train_path``/``validation_path``
            (or the ``gs://`` URI as written); a missing entry makes that model's tokens and cost unknown.

    Returns:
        The plan, with totals over what is known.
    """
    items = []
    skipped = []
    for doc in docs:
        spec = doc.resolved.get(target)
        if spec is None:
            skipped.append((doc.name, f"its base model does not run on the {target} target"))
            continue
        items.append(_item(doc, spec, dataset_summaries))
    return Plan(
        target=target,
        items=tuple(items),
        skipped=tuple(skipped),
        total_training_tokens=sum(item.training_tokens or 0 for item in items),
        total_cost=sum(item.cost or 0.0 for item in items),
        unknown_cost=sum(1 for item in items if item.cost is None),
    )


def _count(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def _examples(item: PlanItem) -> str:
    text = f"{_count(item.train_examples)} train"
    if item.validation_examples is not None:
        text += f", {item.validation_examples:,} validation"
    return text


def _method(item: PlanItem) -> str:
    from tuneform.datasets.tokens import describe_method

    return f" ({describe_method(item.token_method)})" if item.token_method.startswith(("estimate", "exact")) else ""


def _total_cost(plan: Plan) -> str:
    text = f"${plan.total_cost:,.2f}"
    if plan.unknown_cost:
        noun = "model" if plan.unknown_cost == 1 else "models"
        text += f" + {plan.unknown_cost} {noun} of unknown cost"
    return text


def render_text(plan: Plan) -> str:
    """The plan as plain text for a terminal.

    Args:
        plan: From ``build_plan``.

    Returns:
        The text, ending with a newline.
    """
    noun = "model" if len(plan.items) == 1 else "models"
    lines = [f"Plan for the {plan.target} target: {len(plan.items)} tuned {noun}", ""]
    for item in plan.items:
        rows = [
            ("base model", item.base_model),
            ("mode", item.mode),
            ("tunes", item.tunes),
            ("examples", _examples(item)),
            ("tokens per epoch", _count(item.tokens_per_epoch) + _method(item)),
            ("epochs", item.epochs_text),
            ("training tokens", _count(item.training_tokens)),
            ("estimated cost", item.cost_text),
        ]
        lines.append(f"{item.name} ({item.source})")
        lines.extend(f"  {label:<17} {value}" for label, value in rows)
        lines.append("")
    for name, reason in plan.skipped:
        lines.append(f"skipped {name}: {reason}")
    if plan.skipped:
        lines.append("")
    lines.append(
        f"Total: {len(plan.items)} {noun}, {plan.total_training_tokens:,} training tokens, "
        f"estimated cost {_total_cost(plan)}"
    )
    return "\n".join(lines) + "\n"


def render_markdown(plan: Plan) -> str:
    """The plan as a GitHub-flavoured Markdown table, for pull-request comments.

    Args:
        plan: From ``build_plan``.

    Returns:
        The Markdown, ending with a newline.
    """
    lines = [
        f"### tuneform plan: {plan.target} target",
        "",
        "| Model | Base model | Tunes | Examples | Tokens / epoch | Epochs | Training tokens | Estimated cost |",
        "|---|---|---|---|---:|---|---:|---|",
    ]
    for item in plan.items:
        cells = [
            f"`{item.name}`",
            f"`{item.base_model}`",
            item.tunes,
            _examples(item),
            _count(item.tokens_per_epoch) + _method(item),
            item.epochs_text,
            _count(item.training_tokens),
            item.cost_text,
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines.append(f"| **Total** | | | | | | **{plan.total_training_tokens:,}** | **{_total_cost(plan)}** |")
    if plan.skipped:
        lines.append("")
        lines.extend(f"- skipped `{name}`: {reason}" for name, reason in plan.skipped)
    lines.append("")
    lines.append(
        "Training tokens = tokens per epoch x epochs. Prices marked unconfirmed are not from Google's price list."
    )
    return "\n".join(lines) + "\n"
