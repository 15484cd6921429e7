"""The review job end to end, as .github/workflows/tuneform.yml runs it, on a fresh clone with the core install.

A throwaway upstream repository holds this checkout's files on `main`, plus a Vertex AI stack that names its own
bucket (so it previews with no cloud and no pulumi-gcp plugin) and that stack's policy config. A clone of it gets a
pull-request branch and then, like the workflow: `scripts/bootstrap.sh --profile core` (no torch),
`scripts/pr-review.sh --base origin/main --out ...` with the workflow's environment (GITHUB_ACTIONS, a state backend
URL, the passphrase, TUNEFORM_STACKS), and `scripts/post-comment.sh` as the workflow_run job calls it, with a
stand-in `gh` on PATH that records the comment. Three pushes: a passing change, a policy failure, an invalid spec.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pulumi_cli import REPO_ROOT
from test_review import FakeGitHub, tokens_of

pytestmark = [pytest.mark.cli, pytest.mark.timeout(600)]

ROUTER_DATA = "tuning_specs/datasets/ticket-router/train.jsonl"
REVIEW_STACK = """\
config:
  tuneform:target: vertex
  gcp:project: review-project
  gcp:region: us-central1
  tuneform:region: us-central1
  tuneform:bucket: review-bucket
"""


def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t"}
    identity["GIT_COMMITTER_EMAIL"] = "t@example.com"
    done = subprocess.run(
        list(args), cwd=cwd, env={**os.environ, **identity, **(env or {})}, capture_output=True, text=True, check=False
    )
    if check:
        assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def upstream(root: Path) -> Path:
    """This checkout's files (as they are, the way a clone would have them) committed on `main`."""
    repo = root / "upstream"
    listed = run(REPO_ROOT, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file() and not source.is_symlink():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    (repo / "stacks" / "Pulumi.review.yaml").write_text(REVIEW_STACK)
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "base")
    return repo


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_the_review_job_on_a_fresh_clone_without_torch(tmp_path: Path, pulumi_engine: Path) -> None:
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(upstream(tmp_path)), str(clone))
    run(clone, "git", "checkout", "-q", "-b", "change")

    # The workflow's install: the core profile. uv works from its cache (the full profile pinned the same wheels).
    bootstrap = run(clone, "scripts/bootstrap.sh", "--profile", "core", env={"UV_OFFLINE": "1"})
    assert "core profile" in bootstrap.stderr
    for module in ("torch", "transformers", "peft", "trl"):
        missing = run(clone, ".venv/bin/python", "-c", f"import {module}", check=False)
        assert missing.returncode == 1 and "ModuleNotFoundError" in missing.stderr, module

    (tmp_path / "state").mkdir()
    env = {
        "GITHUB_ACTIONS": "true",
        "TUNEFORM_STACKS": "local review",
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "tuneform-local",  # the shipped local stack's encryptionsalt
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
    }
    github = FakeGitHub(tmp_path)
    post_env = {"PATH": f"{github.bin}:{os.environ['PATH']}", "PR_NUMBER": "7", "GITHUB_REPOSITORY": "acme/models"}
    spec = clone / "tuning_specs" / "ticket-router.yaml"

    def review(message: str) -> tuple[int, str]:
        run(clone, "git", "commit", "-qam", message)
        out = tmp_path / "review" / "comment.md"
        out.parent.mkdir(exist_ok=True)
        done = run(clone, "scripts/pr-review.sh", "--base", "origin/main", "--out", str(out), env=env, check=False)
        assert "Traceback" not in done.stderr + out.read_text()
        # What tuneform-comment.yml's job runs on the artifact.
        run(clone, "scripts/post-comment.sh", str(out), env=post_env)
        posted = [c for c in github.read()["comments"] if c["body"].startswith("<!-- tuneform-review -->")]
        assert len(posted) == 1 and posted[0]["body"] == out.read_text()
        return done.returncode, posted[0]["body"]

    local_tokens = tokens_of(REPO_ROOT / ROUTER_DATA, "gemini", "local")[1]
    vertex_tokens = tokens_of(REPO_ROOT / ROUTER_DATA, "gemini", "vertex")[1]
    exact = "exact, SmolLM2-135M-Instruct.Q4_1 tokenizer"
    estimate = "estimate by tuneform's documented rule, which errs high"

    # 1. A passing change: one more local epoch. The local stack previews; the Vertex stack has nothing to do.
    edit(spec, "hyperparameters: {epochs: 1,", "hyperparameters: {epochs: 2,")
    status, comment = review("two local epochs")
    lines = comment.splitlines()
    assert status == 0, comment
    assert lines[1] == "## ✅ tuneform: validation passed, 1 stack previewed with the policy pack", comment
    assert any(line.startswith(f"| `ticket-router` | re-tuned | none → v1 | {local_tokens * 2:,} |") for line in lines)
    assert (
        f"- **local**: 1 re-tuned, 0 created, 0 updated in place, 0 removed, 1 unchanged; **{local_tokens * 2:,}**"
        f" training tokens ({exact}), estimated cost **$0.00**" in lines
    )
    assert "| `local` | local | passed | 12 to create |" in lines
    assert "| `review` | vertex | skipped: no tuning changes on the vertex target | - |" in lines

    # 2. A policy failure: Vertex epochs 3 -> 5 against the review stack's token limit. Failures come first.
    limit = vertex_tokens * 4
    (clone / "policy" / "config.review.json").write_text(
        json.dumps({"tuneform-max-training-tokens": {"maxTrainingTokens": limit}})
    )
    run(clone, "git", "add", "policy/config.review.json")
    edit(spec, "    epochs: 3\n", "    epochs: 5\n")
    status, comment = review("five vertex epochs")
    lines = comment.splitlines()
    assert status == 1
    assert lines[1:4] == ["## ❌ tuneform: 1 policy violation", "", "**Fix before merging:**"]
    assert lines[5] == (
        "- **policy** `tuneform-max-training-tokens` on stack `review`: ticket-router: training tokens (dataset "
        f"tokens x spec.hyperparameters.epochs): expected at most {limit:,} (maxTrainingTokens), got "
        f"{vertex_tokens * 5:,} ({estimate}). Trim the dataset or lower `epochs`."
    )
    # The plan shows the very number the policy judged.
    assert any(
        line.startswith(f"| `ticket-router` | re-tuned | none → v1 | {vertex_tokens * 5:,} |") for line in lines
    )
    assert "| `review` | vertex | **failed**: 1 policy violation | 12 to create |" in lines

    # 3. An invalid spec: validation fails with the located problem, before any preview.
    edit(spec, "    epochs: 5\n", "    epochs: 0\n")
    status, comment = review("zero epochs")
    lines = comment.splitlines()
    assert status == 1
    assert lines[1] == "## ❌ tuneform: 1 validation problem"
    assert lines[5].startswith("- **validation** `tuning_specs/ticket-router.yaml:")
    assert "(**ticket-router**): spec.hyperparameters.epochs: expected integer from 1 to 100, got 0." in lines[5]
    assert "| `review` | vertex | skipped: no plan to preview (it failed) | - |" in lines

    # One comment, edited on every push.
    methods = [call[call.index("--method") + 1] for call in github.read()["calls"] if "--method" in call]
    assert methods == ["POST", "PATCH", "PATCH"]
