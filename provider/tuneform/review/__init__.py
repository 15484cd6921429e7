"""Reviewing tuning changes: what a pull request does to each tuned model, compared with a base commit.

``build_change_plan(repo, "origin/main")`` reads the base commit's specs and datasets from git, compares them with
the working tree, and says per model and target: created, re-tuned (and why), updated in place, unchanged or
removed, with dataset changes, training tokens, estimated cost and versions. ``render_change_markdown`` turns it into
one pull-request comment that stays under GitHub's size limit; ``plan_against_base`` is ``tuneform plan --base``.
"""

from tuneform.review.changes import (
    STATUSES,
    ChangePlan,
    DatasetChange,
    FieldChange,
    ModelChange,
    Status,
    TargetTotals,
    build_change_plan,
    plan_from_json,
    plan_to_json,
)
from tuneform.review.cli import plan_against_base
from tuneform.review.datasets import DatasetDiff, Sample, diff_dataset
from tuneform.review.git import GitError, GitTree
from tuneform.review.render import COMMENT_LIMIT, DEFAULT_BUDGET, render_change_markdown, render_change_text

__all__ = [
    "COMMENT_LIMIT",
    "DEFAULT_BUDGET",
    "STATUSES",
    "ChangePlan",
    "DatasetChange",
    "DatasetDiff",
    "FieldChange",
    "GitError",
    "GitTree",
    "ModelChange",
    "Sample",
    "Status",
    "TargetTotals",
    "build_change_plan",
    "diff_dataset",
    "plan_against_base",
    "plan_from_json",
    "plan_to_json",
    "render_change_markdown",
    "render_change_text",
]
