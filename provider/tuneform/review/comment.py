"""The pull-request comment of ``scripts/pr-review.sh``: failures first, then the plan, then the previews.

A reviewer must see in ten seconds whether the change can merge, so the comment opens with a verdict line and, when
something fails, every failure as one list item that names the model, the field, the limit and the value (policy
violations from ``pulumi preview --policy-pack``, validation problems, previews that could not run), wrapped as
prose instead of cut inside a code block. The change plan (``render_change_markdown``: table, then details with
the serving version's evaluation and a chart) follows, then one row per stack previewed or skipped and why.

``scripts/pr-review.sh`` leaves what it ran in a work directory and calls ``python -m tuneform.review.comment``:

- ``validate.status`` (exit status), ``validate.out``, ``validate.err``: ``tuneform validate``;
- ``plan.json`` (``tuneform plan --base REF --format json``), or ``plan.err`` when the plan failed;
- ``previews/<stack>.status``: ``passed``, ``failed`` or ``skipped``; ``previews/<stack>.target``;
  ``previews/<stack>.note`` (why skipped); ``previews/<stack>.json``: ``pulumi preview --json`` run with
  ``PULUMI_ENABLE_STREAMING_JSON_PREVIEW=1`` (one engine event per line: steps, policy events, diagnostics);
- ``notes``: lines for the reviewer (e.g. why no stack was previewed).

The comment stays within GitHub's 65,536 characters: failures take at most a third of it, the previews a sixth, and
the plan what is left (it truncates itself, saying what it left out).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneform.review.changes import ChangePlan, plan_from_json
from tuneform.review.render import COMMENT_LIMIT, render_change_markdown
from tuneform.spec.source import read_documents

__all__ = ["MARKER", "Failure", "PreviewResult", "build_comment", "main", "read_preview"]

MARKER = "<!-- tuneform-review -->"
"""The comment's first line: ``--post`` edits the comment that starts with it instead of adding another."""

BUDGET = COMMENT_LIMIT - 536
"""Characters the whole comment may use: GitHub's limit less a margin for what GitHub itself counts differently."""

_STEP_SYMBOLS = {
    "create": "+",
    "update": "~",
    "replace": "+-",
    "create-replacement": "++",
    "delete-replaced": "--",
    "delete": "-",
}


@dataclass(frozen=True)
class Failure:
    """One thing that stops the change: a policy violation, a validation problem, a preview that failed."""

    kind: str
    """``policy``, ``validation`` or ``preview``."""
    where: str
    """The policy and stack, the file location, or the stack."""
    message: str
    """``model: field: expected <limit>, got <value>. <fix>`` (policies), the problem line (validation)."""
    model: str = ""


@dataclass(frozen=True)
class PreviewResult:
    """What ``pulumi preview`` said for one stack, or why it did not run."""

    stack: str
    target: str
    status: str
    """``passed``, ``failed`` or ``skipped``."""
    note: str = ""
    changes: dict[str, int] = field(default_factory=dict)
    """Resource operation -> count (``create``: 16)."""
    steps: tuple[str, ...] = ()
    """One line per resource step that changes something."""
    violations: tuple[Failure, ...] = ()
    """Mandatory policy violations."""
    advisories: tuple[Failure, ...] = ()
    errors: tuple[str, ...] = ()
    """Error diagnostics other than the engine's closing ``preview failed``."""


def _short_type(kind: str) -> str:
    return kind.rsplit(":", 1)[-1]


def _violation(event: dict[str, Any], stack: str) -> Failure:
    # The engine sends the policy's description, a newline, then the violation message.
    message = str(event.get("message", "")).strip()
    text = message.split("\n", 1)[1].strip() if "\n" in message else message
    text = " ".join(text.split())
    model = text.split(":", 1)[0] if ":" in text else ""
    where = f"`{event.get('policyName', 'policy')}` on stack `{stack}`"
    return Failure("policy", where, text, model)


def read_preview(
    stack: str, target: str, status: str, events: Iterable[str], *, note: str = "", stderr: str = ""
) -> PreviewResult:
    """Summarise one stack's streaming ``pulumi preview --json`` events.

    Args:
        stack: The stack.
        target: Its target.
        status: ``passed`` or ``failed`` (the command's exit status), or ``skipped``.
        events: The output lines, one JSON engine event each (other lines are ignored).
        note: Why the preview was skipped, or anything else to say about it.
        stderr: What the command wrote to stderr: the error of a preview that failed before the engine ran
            (a wrong passphrase, a missing stack), which no event carries.

    Returns:
        The summary.
    """
    steps: list[str] = []
    violations: list[Failure] = []
    advisories: list[Failure] = []
    errors: list[str] = []
    changes: dict[str, int] = {}
    for line in events:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if "policyEvent" in event:
            policy = event["policyEvent"]
            found = _violation(policy, stack)
            (violations if policy.get("enforcementLevel") == "mandatory" else advisories).append(found)
        elif "diagnosticEvent" in event:
            diagnostic = event["diagnosticEvent"]
            text = str(diagnostic.get("message", "")).strip()
            if diagnostic.get("severity") == "error" and text and text != "preview failed":
                errors.append(text)
        elif "resourcePreEvent" in event:
            meta = event["resourcePreEvent"].get("metadata") or {}
            op = str(meta.get("op", ""))
            kind = str(meta.get("type", ""))
            if op in ("same", "read", "refresh", "") or kind == "pulumi:pulumi:Stack":
                continue
            name = str(meta.get("urn", "")).rsplit("::", 1)[-1]
            keys = meta.get("keys") or meta.get("diffs") or []
            why = f" (changed: {', '.join(map(str, keys))})" if keys and op != "create" else ""
            steps.append(f"{_STEP_SYMBOLS.get(op, op):>2} {op:<18} {_short_type(kind):<12} {name}{why}")
        elif "summaryEvent" in event:
            changes = {
                str(k): int(v) for k, v in (event["summaryEvent"].get("resourceChanges") or {}).items() if k != "same"
            }
    if status == "failed" and not errors and not violations:
        said = [line.strip() for line in stderr.splitlines() if line.strip()]
        errors = [" ".join(said[-3:]).removeprefix("error: ")] if said else []
    return PreviewResult(
        stack, target, status, note, changes, tuple(steps), tuple(violations), tuple(advisories), tuple(errors)
    )


def _outside_code(text: str) -> str:
    """``text`` with ``<`` and ``>`` escaped outside backtick spans: GitHub would take them for HTML tags."""
    parts = text.split("`")
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


_LOCATION = re.compile(r"^(?P<file>[^:\s][^:]*):(?P<line>\d+)(?::(?P<col>\d+))?: (?P<rest>.*)$")


def spec_models(repo: Path) -> dict[str, list[str]]:
    """Repository-relative spec and dataset files -> the tuned models declared in or trained on them.

    Read loosely (plain YAML, no validation), so that a validation problem can name its model even when the
    spec does not validate.
    """
    owners: dict[str, list[str]] = {}
    for spec_file in sorted((repo / "tuning_specs").rglob("*.y*ml")):
        if "datasets" in spec_file.relative_to(repo / "tuning_specs").parts:
            continue
        # The bounded reader: a pull request's spec may be hostile (a 50 MB file, an alias bomb), and its problems
        # are validation's to report.
        documents = [source.data for source in read_documents(spec_file, empty=None)[0]]
        for document in documents:
            if not isinstance(document, dict):
                continue
            name = _mapping(document.get("metadata")).get("name")
            if not isinstance(name, str):
                continue
            owners.setdefault(str(spec_file.relative_to(repo)), []).append(name)
            spec = _mapping(document.get("spec"))
            overrides = [_mapping(o) for o in _mapping(spec.get("targets")).values()]
            for part in (spec, *overrides):
                dataset = _mapping(part.get("dataset"))
                for value in (dataset.get("train"), dataset.get("validation")):
                    if isinstance(value, str) and not value.startswith("gs://"):
                        path = (spec_file.parent / value).resolve()
                        if path.is_relative_to(repo.resolve()):
                            key = str(path.relative_to(repo.resolve()))
                            if name not in owners.setdefault(key, []):
                                owners[key].append(name)
    return owners


def validation_failures(lines: Iterable[str], owners: dict[str, list[str]]) -> list[Failure]:
    """``tuneform validate``'s problem lines (its stderr) as failures naming their models where known."""
    found = []
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip() or line.startswith("tuneform: ") or re.match(r"^\d+ problems? in \d+ files?:$", line):
            continue
        match = _LOCATION.match(line)
        if match is None:
            found.append(Failure("validation", "", line))
            continue
        where = f"{match['file']}:{match['line']}" + (f":{match['col']}" if match["col"] else "")
        models = owners.get(match["file"], [])
        found.append(Failure("validation", where, match["rest"], ", ".join(models)))
    return found


def _failure_item(failure: Failure) -> str:
    if failure.kind == "policy":
        return f"- **policy** {failure.where}: {_outside_code(failure.message)}"
    if failure.kind == "validation":
        model = f" (**{failure.model}**)" if failure.model else ""
        where = f" `{failure.where}`" if failure.where else ""
        return f"- **validation**{where}{model}: {_outside_code(failure.message)}"
    return f"- **{failure.kind}** {failure.where}: {_outside_code(failure.message)}"


def _limited(items: Sequence[str], budget: int, more: str) -> list[str]:
    out: list[str] = []
    used = 0
    for index, item in enumerate(items):
        if used + len(item) + 1 > budget:
            out.append(more.format(count=len(items) - index))
            break
        out.append(item)
        used += len(item) + 1
    return out


def _preview_row(result: PreviewResult) -> str:
    if result.status == "skipped":
        verdict = f"skipped: {result.note}"
    elif result.status == "passed":
        verdict = "passed" + (f" ({len(result.advisories)} advisory)" if result.advisories else "")
    else:
        count = len(result.violations)
        reason = f"{count} policy violation{'s' if count != 1 else ''}" if count else "error"
        verdict = f"**failed**: {reason}"
    changes = ", ".join(f"{count} to {op}" for op, count in sorted(result.changes.items())) or "-"
    return f"| `{result.stack}` | {result.target} | {_outside_code(verdict).replace('|', '/')} | {changes} |"


def build_comment(
    *,
    plan: ChangePlan | None,
    plan_error: str = "",
    validation_ok: bool,
    validation_summary: str = "",
    validation: Sequence[Failure] = (),
    previews: Sequence[PreviewResult] = (),
    notes: Sequence[str] = (),
    budget: int = BUDGET,
) -> str:
    """The review comment: verdict, failures, plan, previews; at most ``budget`` characters.

    Args:
        plan: The change plan, or ``None`` when it could not be made (``plan_error`` says why).
        plan_error: What ``tuneform plan --base`` said when it failed.
        validation_ok: Whether ``tuneform validate`` passed.
        validation_summary: Its last line when it passed (``ok: 3 specs, 3 datasets``).
        validation: Its problems as failures.
        previews: One result per configured stack.
        notes: Lines for the reviewer.
        budget: Most characters to use.

    Returns:
        The Markdown, starting with :data:`MARKER` and ending with a newline.
    """
    violations = [v for p in previews for v in p.violations]
    preview_errors = [
        Failure("preview", f"stack `{p.stack}`", error)
        for p in previews
        if p.status == "failed"
        for error in (p.errors or (() if p.violations else ("the preview failed; see the workflow log",)))
    ]
    if plan is None and (validation_ok or not validation):
        # With validation problems listed, a plan that failed on the same specs adds nothing.
        preview_errors.append(Failure("plan", "`tuneform plan --base`", plan_error or "the plan could not be made"))
    failures = [*violations, *validation, *preview_errors]
    advisories = [a for p in previews for a in p.advisories]
    ran = [p for p in previews if p.status != "skipped"]
    if failures:
        parts = []
        if violations:
            parts.append(f"{len(violations)} policy violation{'s' if len(violations) != 1 else ''}")
        if validation:
            parts.append(f"{len(validation)} validation problem{'s' if len(validation) != 1 else ''}")
        other = len(preview_errors)
        if other:
            parts.append(f"{other} other failure{'s' if other != 1 else ''}")
        headline = f"## ❌ tuneform: {', '.join(parts)}"
    else:
        if ran:
            checked = f"{len(ran)} stack{'s' if len(ran) != 1 else ''} previewed with the policy pack"
        else:
            checked = "no stack previewed (see Previews)"
        headline = f"## ✅ tuneform: validation passed, {checked}"
    head = [MARKER, headline, ""]
    if failures:
        items = [_failure_item(f) for f in failures]
        head += ["**Fix before merging:**", ""]
        head += _limited(items, budget // 3, "- … and {count} more: see the workflow log, or run `tuneform validate`")
        head.append("")
    elif validation_summary:
        head += [f"Validation: {validation_summary}.", ""]
    if advisories:
        items = [_failure_item(a) for a in advisories]
        head += ["**Advisory policies** (not blocking):", "", *_limited(items, budget // 12, "- … and {count} more")]
        head.append("")
    if not validation_ok and not validation:
        head += ["Validation failed; see the workflow log.", ""]
    tail = ["#### Previews", ""]
    if previews:
        tail += ["| Stack | Target | Result | Changes |", "|---|---|---|---|"]
        tail += [_preview_row(p) for p in previews]
        tail.append("")
    tail += [f"- {_outside_code(note)}" for note in notes]
    for result in ran:
        if result.steps:
            shown = _limited(list(result.steps), budget // (12 * max(1, len(ran))), "… and {count} more steps")
            tail += [
                "",
                f"<details><summary>preview of stack <code>{result.stack}</code>: resource steps</summary>",
                "",
                "```diff",
                *(line.replace("```", "'''") for line in shown),
                "```",
                "",
                "</details>",
            ]
    head_text = "\n".join(head) + "\n"
    tail_text = "\n".join(tail).rstrip("\n") + "\n"
    room = budget - len(head_text) - len(tail_text) - 2
    if plan is not None:
        body = render_change_markdown(plan, budget=max(room, 2_000))
    else:
        body = "### tuneform plan\n\nNo plan: it needs specs that load (see the failures above).\n"
    comment = f"{head_text}\n{body}\n{tail_text}"
    if len(comment) > budget:
        # Only reachable with a pathological number of previews: keep the verdict and failures.
        comment = comment[: budget - 120] + "\n\n_Comment truncated to stay within GitHub's limit._\n"
    return comment


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def comment_from_work_dir(work: Path, repo: Path) -> tuple[str, bool]:
    """Build the comment from ``scripts/pr-review.sh``'s work directory (see the module docstring).

    Returns:
        The comment, and whether everything passed.
    """
    validation_status = _read(work / "validate.status").strip() or "0"
    validation_ok = validation_status == "0"
    summary_lines = _read(work / "validate.out").strip().splitlines()
    validation = validation_failures(_read(work / "validate.err").splitlines(), spec_models(repo))
    plan: ChangePlan | None = None
    plan_error = ""
    plan_json = _read(work / "plan.json")
    if plan_json.strip():
        plan = plan_from_json(plan_json)
    else:
        said = [line for line in _read(work / "plan.err").splitlines() if line and not line.startswith("tuneform: ")]
        plan_error = " ".join(said[-5:]) or "tuneform plan --base failed"
    previews = []
    directory = work / "previews"
    for status_file in sorted(directory.glob("*.status")) if directory.is_dir() else []:
        stack = status_file.stem
        events = _read(directory / f"{stack}.json").splitlines()
        previews.append(
            read_preview(
                stack,
                _read(directory / f"{stack}.target").strip() or "?",
                _read(status_file).strip(),
                events,
                note=_read(directory / f"{stack}.note").strip(),
                stderr=_read(directory / f"{stack}.err"),
            )
        )
    notes = [line for line in _read(work / "notes").splitlines() if line.strip()]
    comment = build_comment(
        plan=plan,
        plan_error=plan_error,
        validation_ok=validation_ok,
        validation_summary=summary_lines[-1] if summary_lines else "",
        validation=validation if not validation_ok else (),
        previews=previews,
        notes=notes,
    )
    passed = validation_ok and plan is not None and all(p.status != "failed" for p in previews)
    return comment, passed


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tuneform.review.comment WORK_DIR [--repo DIR] [--out FILE]``: write the review comment.

    Returns:
        0 when validation, the plan and every preview passed; 1 otherwise (the comment is written either way).
    """
    parser = argparse.ArgumentParser(prog="python -m tuneform.review.comment")
    parser.add_argument("work", type=Path, help="scripts/pr-review.sh's work directory")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the repository under review")
    parser.add_argument("--out", type=Path, help="write the comment here (default: stdout)")
    args = parser.parse_args(argv)
    comment, passed = comment_from_work_dir(args.work, args.repo)
    if args.out:
        args.out.write_text(comment, encoding="utf-8")
    else:
        sys.stdout.write(comment)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
