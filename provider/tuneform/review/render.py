"""The change plan as text (terminal) and as GitHub Markdown (one pull-request comment).

A comment must stay under GitHub's 65,536 characters however big the change. The Markdown is built from pieces in
order of importance (headline and totals, one table row per changed model, then each model's reasons, evaluation,
chart and dataset samples); a piece that would cross the budget is left out with everything after it, and a last
line says how many models were left out and how to see them all.

Per model, where the stack's state (or the local registry) holds evaluations, the details show the serving
version's evaluation and a small Mermaid chart (which GitHub renders) of the base model against the tuned model on
the judged metric across versions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tuneform.datasets.tokens import describe_method
from tuneform.review.changes import ChangePlan, DatasetChange, FieldChange, ModelChange
from tuneform.review.datasets import Sample

__all__ = ["COMMENT_LIMIT", "DEFAULT_BUDGET", "render_change_markdown", "render_change_text"]

COMMENT_LIMIT = 65_536
"""GitHub's limit on the body of an issue or pull-request comment, in characters."""

DEFAULT_BUDGET = 60_000
"""What the plan may use of a comment on its own; the review comment gives it what failures and previews leave."""

_UNCHANGED_NAMES = 20
_CHART_VERSIONS = 10
"""Most versions a chart shows (the latest ones)."""
_SHOWN_METRICS = 4


def _value(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _field(change: FieldChange) -> str:
    return f"{change.field}: {_value(change.old)} -> {_value(change.new)}"


def _counts(plan: ChangePlan, target: str) -> str:
    parts = [f"{plan.count(status, target)} {status}" for status in ("re-tuned", "created", "updated in place")]  # type: ignore[arg-type]
    parts += [f"{plan.count('removed', target)} removed", f"{plan.count('unchanged', target)} unchanged"]  # type: ignore[arg-type]
    return ", ".join(parts)


def _total_cost(plan: ChangePlan, target: str) -> str:
    totals = plan.totals[target]  # type: ignore[index]
    text = f"${totals.cost:,.2f}"
    if totals.unknown_cost:
        noun = "model" if totals.unknown_cost == 1 else "models"
        text += f" + {totals.unknown_cost} {noun} of unknown cost"
    return text


def _grand_total(plan: ChangePlan) -> str:
    tokens = sum(t.training_tokens for t in plan.totals.values())
    cost = sum(t.cost for t in plan.totals.values())
    unknown = sum(t.unknown_cost for t in plan.totals.values())
    text = f"{tokens:,} training tokens, estimated cost ${cost:,.2f}"
    if unknown:
        text += f" + {unknown} {'model' if unknown == 1 else 'models'} of unknown cost"
    return text


def _tokens(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def _v(number: str) -> str:
    return f"v{number}" if number.isdigit() else number


def _version(change: ModelChange) -> str:
    if change.current_version == change.new_version:
        return _v(change.current_version)
    return f"{_v(change.current_version)} → {_v(change.new_version)}"


def _score(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"


def evaluation_text(change: ModelChange) -> str:
    """The serving version's evaluation in one line (``v3: exactMatch 0.984 (base 0.000), ...``); "" without one."""
    version = change.serving_version
    metrics = change.version_metrics.get(str(version)) if version is not None else None
    if not metrics:
        return ""
    names = [k for k in metrics if not k.startswith("base")]
    names.sort(key=lambda k: (k != change.metric, k))
    parts = []
    for name in names[:_SHOWN_METRICS]:
        base = metrics.get("base" + name[:1].upper() + name[1:])
        parts.append(f"{name} {_score(metrics[name])}" + (f" (base {_score(base)})" if base is not None else ""))
    return f"v{version}: " + ", ".join(parts)


def chart(change: ModelChange) -> str:
    """A Mermaid ``xychart-beta`` of the judged metric, base model (bars) vs tuned (line), across versions.

    Returns:
        The fenced block, or "" when fewer than one version has both figures.
    """
    metric = change.metric
    base_key = "base" + metric[:1].upper() + metric[1:]
    points = sorted(
        (int(version), values[base_key], values[metric])
        for version, values in change.version_metrics.items()
        if version.isdigit() and metric in values and base_key in values
    )[-_CHART_VERSIONS:]
    if not points:
        return ""
    top = max(1.0, *(max(b, t) for _, b, t in points))
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            f'    title "{change.name}: {metric}, base model (bars) vs tuned (line)"',
            "    x-axis [" + ", ".join(f"v{v}" for v, _, _ in points) + "]",
            f'    y-axis "{metric}" 0 --> {top:g}',
            "    bar [" + ", ".join(f"{b:.3f}" for _, b, _ in points) + "]",
            "    line [" + ", ".join(f"{t:.3f}" for _, _, t in points) + "]",
            "```",
        ]
    )


def _methods(plan: ChangePlan, target: str) -> str:
    methods = plan.token_methods.get(target) or ()  # type: ignore[call-overload]
    known = [describe_method(m) for m in methods if m != "unavailable"]
    if "unavailable" in methods:
        known.append("not counted for some models (see their details)")
    return "; ".join(known)


def _dataset_line(change: DatasetChange) -> str:
    where = change.after or change.before
    moved = f" (was {change.before})" if change.before and change.after and change.before != change.after else ""
    diff = change.diff
    if change.after is None:
        return f"dataset {change.split} `{change.before}`: no longer declared"
    if diff is None:
        return f"dataset {change.split} `{where}`{moved}: not read (remote file); compared by name only"
    if diff.identical:
        return (
            f"dataset {change.split} `{where}`{moved}: identical, {diff.examples_after:,} examples, "
            f"{diff.tokens_after:,} tokens"
        )
    if change.before is None:
        head = f"new file, {diff.examples_after:,} examples"
    else:
        head = f"+{diff.added:,} added, -{diff.removed:,} removed, {diff.changed:,} changed"
        if diff.reformatted:
            head += f", {diff.reformatted:,} reformatted (same content)"
        if diff.reordered:
            head += ", reordered"
        head += f"; {diff.examples_before:,} -> {diff.examples_after:,} examples"
    return f"dataset {change.split} `{where}`{moved}: {head}, {diff.tokens_before:,} -> {diff.tokens_after:,} tokens"


def _sample(sample: Sample) -> str:
    return f"{sample.prompt} => {sample.answer}"


def _sample_lines(change: DatasetChange) -> list[str]:
    diff = change.diff
    if diff is None:
        return []
    lines = [f"+ {_sample(s)}" for s in diff.added_samples]
    lines += [f"- {_sample(s)}" for s in diff.removed_samples]
    for before, after in diff.changed_samples:
        lines += [f"  {before.prompt}", f"-   => {before.answer}", f"+   => {after.answer}"]
    return lines


def _detail_lines(change: ModelChange) -> list[str]:
    lines = [f"- {_field(f)} (re-tunes)" for f in change.reasons]
    lines += [f"- {_field(f)} (in place)" for f in change.updates]
    lines += [f"- {_dataset_line(d)}" for d in change.datasets if change.status != "unchanged"]
    return lines


def render_change_text(plan: ChangePlan) -> str:
    """The change plan for a terminal: every model, every reason, a few sample examples.

    Args:
        plan: From ``build_change_plan``.

    Returns:
        The text, ending with a newline.
    """
    out = [f"Changes since {plan.base_ref} ({plan.base_commit[:12]})", ""]
    for target in plan.targets:
        out.append(
            f"{target} target: {_counts(plan, target)}; {plan.totals[target].training_tokens:,} training tokens, "
            f"estimated cost {_total_cost(plan, target)}"
        )
        source = plan.version_sources.get(target)
        if source:
            out.append(f"  ({source})")
        methods = _methods(plan, target)
        if methods:
            out.append(f"  (tokens: {methods})")
        for change in (c for c in plan.changes if c.target == target):
            out.append(f"  {change.name} ({change.source}): {change.status}, version {_version(change)}")
            if change.status in ("created", "re-tuned"):
                out.append(
                    f"    training tokens {_tokens(change.training_tokens)} (epochs {change.epochs_text}), "
                    f"estimated cost {change.cost_text}"
                )
            if change.tokens_note:
                out.append(f"    {change.tokens_note}")
            evaluation = evaluation_text(change)
            if evaluation:
                out.append(f"    serving {evaluation}")
            out.extend("    " + line[2:] for line in _detail_lines(change))
            for dataset in change.datasets:
                if change.status != "unchanged":
                    out.extend("      " + line for line in _sample_lines(dataset))
        out.append("")
    if len(plan.targets) > 1:
        out.extend([f"all targets: {_grand_total(plan)}", ""])
    out.extend(f"note: {note}" for note in plan.notes)
    return "\n".join(out).rstrip("\n") + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _fence(lines: Iterable[str]) -> str:
    # A sample may itself contain backticks; three in a row would end the block early.
    body = "\n".join(line.replace("```", "'''") for line in lines)
    return f"```diff\n{body}\n```"


def render_change_markdown(plan: ChangePlan, *, budget: int = DEFAULT_BUDGET, command: str | None = None) -> str:
    """The change plan as one GitHub-flavoured Markdown comment of at most ``budget`` characters.

    Args:
        plan: From ``build_change_plan``.
        budget: Most characters to use (default leaves room under GitHub's limit for failures and previews).
        command: The command to show in the truncation note (default ``tuneform plan --base <ref>``).

    Returns:
        The Markdown, ending with a newline.
    """
    command = command or f"tuneform plan --base {plan.base_ref}"
    head = [f"### tuneform plan: changes since `{plan.base_ref}` (`{plan.base_commit[:12]}`)", ""]
    for target in plan.targets:
        totals = plan.totals[target]
        methods = _methods(plan, target)
        head.append(
            f"- **{target}**: {_counts(plan, target)}; **{totals.training_tokens:,}** training tokens"
            + (f" ({methods})" if methods else "")
            + f", estimated cost **{_total_cost(plan, target)}**"
        )
    if len(plan.targets) > 1:
        head.append(f"- **all targets**: {_grand_total(plan)}")
    head.append("")
    pieces: list[tuple[str, str | None]] = [("\n".join(head), None)]
    for target in plan.targets:
        changed = [c for c in plan.changes if c.target == target and c.status != "unchanged"]
        unchanged = [c.name for c in plan.changes if c.target == target and c.status == "unchanged"]
        source = plan.version_sources.get(target)
        if changed:
            table = [f"#### {target} target", ""]
            if source:
                table += [f"_{_cell(source)}_", ""]
            # The serving version's evaluation, where the stack's state has one.
            evaluations = [evaluation_text(c) for c in changed]
            serving = any(evaluations)
            table += [
                "| Model | Change | Version | Training tokens | Estimated cost |"
                + (" Serving now |" if serving else ""),
                "|---|---|---|---:|---|" + ("---|" if serving else ""),
            ]
            pieces.append(("\n".join(table), None))
            for c, evaluation in zip(changed, evaluations, strict=True):
                cells = [f"`{c.name}`", c.status, _version(c), _tokens(c.training_tokens), _cell(c.cost_text)]
                if serving:
                    cells.append(_cell(evaluation) or "-")
                row = "| " + " | ".join(cells) + " |"
                pieces.append((row, c.name))
            pieces.append(("", None))
        if unchanged:
            names = ", ".join(f"`{n}`" for n in unchanged[:_UNCHANGED_NAMES])
            if len(unchanged) > _UNCHANGED_NAMES:
                names += f" and {len(unchanged) - _UNCHANGED_NAMES:,} more"
            pieces.append((f"Unchanged on {target}: {names}.\n", None))
    for c in plan.changes:
        if c.status == "unchanged":
            continue
        detail = [f"**`{c.name}`** on {c.target}: {c.status}, version {_version(c)} (`{c.source}`)", ""]
        if c.status in ("created", "re-tuned"):
            detail.append(
                f"- trains on {_tokens(c.training_tokens)} tokens (epochs {c.epochs_text}), estimated cost "
                f"{c.cost_text}"
            )
        if c.tokens_note:
            detail.append(f"- {c.tokens_note}")
        evaluation = evaluation_text(c)
        if evaluation:
            detail.append(f"- serving now {evaluation}")
        detail += _detail_lines(c)
        drawn = chart(c)
        if drawn:
            detail += ["", drawn]
        samples = [line for d in c.datasets for line in _sample_lines(d)]
        if samples:
            detail += ["", "<details><summary>sample examples</summary>", "", _fence(samples), "", "</details>"]
        detail.append("")
        pieces.append(("\n".join(detail), c.name))
    pieces += [(f"note: {note}\n", None) for note in plan.notes]
    tail = "Training tokens = tokens per epoch x epochs, counted as each target's line above says.\n"
    out: list[str] = []
    used = len(tail)
    reserve = 300
    left_out: set[str] = set()
    truncated = False
    for text, model in pieces:
        if truncated or used + len(text) + 1 + reserve > budget:
            truncated = True
            if model is not None:
                left_out.add(model)
            continue
        out.append(text)
        used += len(text) + 1
    if truncated:
        what = f"details of {len(left_out):,} models" if left_out else "some notes"
        out.append(
            f"\n_Truncated to stay within the comment limit: {what} not shown. Run `{command}` for the full plan._\n"
        )
    out.append(tail)
    return "\n".join(out)
