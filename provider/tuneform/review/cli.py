"""``tuneform plan --base <ref>``: the command-line face of the change plan."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tuneform.review.changes import build_change_plan, plan_to_json
from tuneform.review.git import GitError
from tuneform.review.render import render_change_markdown, render_change_text
from tuneform.spec.loader import find_repo_root
from tuneform.spec.model import TARGETS, Target

__all__ = ["plan_against_base"]


def plan_against_base(
    base: str,
    *,
    target: Target | None = None,
    format: str = "text",
    paths: Sequence[str] = (),
    repo: Path | None = None,
    progress: Callable[[str], None] | None = None,
    stacks: Sequence[str] = (),
) -> int:
    """Print the change plan against ``base`` to stdout; problems go to stderr.

    Args:
        base: A git commit-ish, e.g. ``origin/main``.
        target: One target, or ``None`` for both.
        format: ``text``, ``markdown`` or ``json`` (read back by ``plan_from_json``; the review comment uses it).
        paths: Spec paths given on the command line; refused, because the plan compares whole repositories.
        repo: The repository root (default: found from the working directory).
        progress: Receives progress lines (default: none).
        stacks: Stacks whose state gives each target's current versions (see ``build_change_plan``).

    Returns:
        0 when the plan was printed, 1 when the working tree's specs have problems or git cannot read ``base``.
    """
    from tuneform.spec.errors import SpecErrors

    if paths:
        print(
            f"tuneform: plan --base: expected no spec paths (the whole repository is compared), got "
            f"{' '.join(paths)}. Remove them, or drop --base to plan those files alone.",
            file=sys.stderr,
        )
        return 1
    root = repo or find_repo_root(Path.cwd())
    try:
        plan = build_change_plan(
            root, base, targets=(target,) if target else TARGETS, progress=progress, stacks=stacks
        )
    except GitError as error:
        print(f"tuneform: {error}", file=sys.stderr)
        return 1
    except SpecErrors as errors:
        lines = list(dict.fromkeys(str(problem) for problem in errors.problems))
        noun = "problem" if len(lines) == 1 else "problems"
        print(f"{len(lines)} {noun} in the working tree's specs:", file=sys.stderr)
        for line in lines:
            print(line, file=sys.stderr)
        return 1
    renderers = {"markdown": render_change_markdown, "json": plan_to_json}
    sys.stdout.write(renderers.get(format, render_change_text)(plan))
    return 0
