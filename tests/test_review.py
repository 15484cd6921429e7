"""``tuneform plan --base`` and ``scripts/pr-review.sh`` on real temporary git repositories.

The main scenario is the one of the review issue: a second commit edits one hyperparameter, adds 20 examples to
one dataset and adds a new spec; the comment must name exactly those changes with the right counts, tokens and
costs. Expected figures come from the dataset checker (``check_dataset``), not from the code under test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pulumi_cli import REPO_ROOT
from tuneform.datasets.check import DatasetLimits, check_dataset
from tuneform.review import (
    COMMENT_LIMIT,
    ChangePlan,
    ModelChange,
    TargetTotals,
    build_change_plan,
    diff_dataset,
    render_change_markdown,
    render_change_text,
)

pytestmark = pytest.mark.timeout(120)

SCRIPT = REPO_ROOT / "scripts" / "pr-review.sh"
TUNEFORM = REPO_ROOT / ".venv" / "bin" / "tuneform"

ROUTER = """\
apiVersion: tuneform/v1
kind: TunedModel
metadata:
  name: router
  description: Routes tickets
  labels: {team: support}
spec:
  baseModel: gemini-2.5-flash
  adapterSize: 4
  hyperparameters:
    epochs: 3
    learningRateMultiplier: 1.0
  dataset:
    train: datasets/router/train.jsonl
  targets:
    local:
      baseModel: smollm2-135m-instruct
      hyperparameters: {learningRate: 0.0002}
"""

EXTRACTOR = """\
apiVersion: tuneform/v1
kind: TunedModel
metadata:
  name: extractor
  labels: {team: finance}
spec:
  baseModel: smollm2-135m-instruct
  hyperparameters: {epochs: 2}
  dataset:
    format: openai-chat
    train: datasets/extractor/train.jsonl
"""

SUMMARIZER = """\
apiVersion: tuneform/v1
kind: TunedModel
metadata:
  name: summarizer
spec:
  baseModel: smollm2-135m-instruct
  dataset:
    train: datasets/summarizer/train.jsonl
"""

QUEUES = ("billing", "technical", "account", "shipping", "returns", "sales")


def gemini_line(index: int, answer: str | None = None) -> str:
    queue = QUEUES[index % len(QUEUES)]
    example = {
        "systemInstruction": {"role": "system", "parts": [{"text": "Route the ticket to one queue."}]},
        "contents": [
            {"role": "user", "parts": [{"text": f"Ticket {index}: my order {1000 + index} needs help with {queue}."}]},
            {"role": "model", "parts": [{"text": answer or queue}]},
        ],
    }
    return json.dumps(example) + "\n"


def openai_line(index: int, answer: str | None = None) -> str:
    example = {
        "messages": [
            {"role": "system", "content": "Extract the invoice number."},
            {"role": "user", "content": f"Invoice INV-{index:04d} from Acme, total {index * 7}.50 EUR."},
            {"role": "assistant", "content": answer or json.dumps({"invoice": f"INV-{index:04d}"})},
        ]
    }
    return json.dumps(example) + "\n"


def git(repo: Path, *args: str) -> str:
    # Fixed identities and dates make the commit ids, hence the rendered plan, the same on every run.
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    env.update(GIT_AUTHOR_DATE="2026-11-02T10:00:00Z", GIT_COMMITTER_DATE="2026-11-02T10:00:00Z")
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True)
    return done.stdout


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def scenario_repo(root: Path) -> Path:
    """Two commits: the second edits one hyperparameter, adds 20 examples to one dataset, adds a new spec."""
    repo = root / "repo"
    specs = repo / "tuning_specs"
    write(repo / "Pulumi.yaml", "name: review-test\n")
    write(specs / "router.yaml", ROUTER)
    write(specs / "extractor.yaml", EXTRACTOR)
    write(specs / "datasets/router/train.jsonl", "".join(gemini_line(i) for i in range(40)))
    write(specs / "datasets/extractor/train.jsonl", "".join(openai_line(i) for i in range(30)))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    write(specs / "router.yaml", ROUTER.replace("    epochs: 3\n", "    epochs: 5\n"))
    with open(specs / "datasets/extractor/train.jsonl", "a") as handle:
        handle.writelines(openai_line(i) for i in range(30, 50))
    write(specs / "summarizer.yaml", SUMMARIZER)
    write(specs / "datasets/summarizer/train.jsonl", "".join(gemini_line(i, "summary") for i in range(16)))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "tune: epochs 5, 20 more invoices, summarizer")
    return repo


def tokens_of(path: Path, format: str) -> tuple[int, int]:
    """(examples, tokens) as the dataset checker counts them: the reference the plan must agree with."""
    summary, problems = check_dataset(path, format=format, limits=DatasetLimits())  # type: ignore[arg-type]
    assert not problems, problems
    return summary.examples, summary.tokens_total


def at_commit(repo: Path, ref: str, path: str, tmp: Path) -> Path:
    out = tmp / f"{ref.replace('~', '_')}-{Path(path).name}"
    out.write_bytes(
        subprocess.run(["git", "-C", str(repo), "show", f"{ref}:{path}"], capture_output=True, check=True).stdout
    )
    return out


def run_review(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--base", "HEAD~1", "--skip-preview", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def test_pr_review_comment_names_exactly_the_changes(tmp_path: Path) -> None:
    repo = scenario_repo(tmp_path)
    extractor = "tuning_specs/datasets/extractor/train.jsonl"
    _, extractor_before = tokens_of(at_commit(repo, "HEAD~1", extractor, tmp_path), "openai-chat")
    examples_after, extractor_after = tokens_of(repo / extractor, "openai-chat")
    _, router_tokens = tokens_of(repo / "tuning_specs/datasets/router/train.jsonl", "gemini")
    _, summarizer_tokens = tokens_of(repo / "tuning_specs/datasets/summarizer/train.jsonl", "gemini")
    assert examples_after == 50

    result = run_review(repo, "--out", str(tmp_path / "comment.md"))
    assert result.returncode == 0, result.stderr
    comment = (tmp_path / "comment.md").read_text()

    local_total = extractor_after * 2 + router_tokens * 5 + summarizer_tokens * 3
    expected_lines = [
        "<!-- tuneform-review -->",
        "Validation passed: ok: 3 specs, 3 datasets",
        "- **local**: 2 re-tuned, 1 created, 0 updated in place, 0 removed, 0 unchanged; "
        f"**{local_total:,}** training tokens, estimated cost **$0.00**",
        # Only the router runs on Vertex AI: the other two use a local base model.
        "- **vertex**: 1 re-tuned, 0 created, 0 updated in place, 0 removed, 0 unchanged; "
        f"**{router_tokens * 5:,}** training tokens, estimated cost **$0.00 + 1 model of unknown cost**",
        f"- **all targets**: {local_total + router_tokens * 5:,} training tokens, estimated cost $0.00 + 1 model of "
        "unknown cost",
        f"| `extractor` | re-tuned | unknown -> current + 1 | {extractor_after * 2:,} | $0.00 (runs on this machine) "
        "|",
        f"| `router` | re-tuned | unknown -> current + 1 | {router_tokens * 5:,} | $0.00 (runs on this machine) |",
        f"| `summarizer` | created | unknown -> 1 | {summarizer_tokens * 3:,} | $0.00 (runs on this machine) |",
        f"| `router` | re-tuned | unknown -> current + 1 | {router_tokens * 5:,} | unknown: price unconfirmed |",
        f"- dataset train `{extractor}`: +20 added, -0 removed, 0 changed; 30 -> 50 examples, "
        f"{extractor_before:,} -> {extractor_after:,} tokens",
        "- hyperparameters.epochs: 3 -> 5 (re-tunes)",
        "- dataset train `tuning_specs/datasets/router/train.jsonl`: identical, 40 examples, "
        f"{router_tokens:,} tokens",
        f"- dataset train `tuning_specs/datasets/summarizer/train.jsonl`: new file, 16 examples, 0 -> "
        f"{summarizer_tokens:,} tokens",
        '+ Invoice INV-0030 from Acme, total 210.50 EUR. => {"invoice": "INV-0030"}',
    ]
    lines = comment.splitlines()
    for line in expected_lines:
        assert line in lines, f"missing line {line!r} in:\n{comment}"
    # One hyperparameter changed, nothing else: no other field is named as a reason.
    assert sum("(re-tunes)" in line for line in lines) == 2  # router on local and on vertex
    assert "(in place)" not in comment


class FakeGitHub:
    """A stand-in for the `gh` CLI that keeps a pull request's comments in a JSON file and logs every call."""

    SCRIPT = textwrap.dedent(
        """\
        #!{python}
        import json, sys
        state_file = {state!r}
        state = json.load(open(state_file))
        args = sys.argv[1:]
        state["calls"].append(args)
        method = args[args.index("--method") + 1] if "--method" in args else "GET"
        path = next(a for a in args[1:] if a.startswith("repos/"))
        if method == "GET":
            marker = "<!-- tuneform-review -->"
            for comment in state["comments"]:
                if comment["body"].startswith(marker):
                    print(comment["id"])
        else:
            body = json.load(sys.stdin)["body"]
            if method == "POST":
                state["comments"].append({{"id": 100 + len(state["comments"]), "body": body}})
            else:
                number = int(path.rsplit("/", 1)[1])
                next(c for c in state["comments"] if c["id"] == number)["body"] = body
        json.dump(state, open(state_file, "w"))
        """
    )

    def __init__(self, root: Path) -> None:
        self.state = root / "github.json"
        self.state.write_text(json.dumps({"calls": [], "comments": [{"id": 7, "body": "LGTM"}]}))
        self.bin = root / "fake-bin"
        self.bin.mkdir()
        gh = self.bin / "gh"
        gh.write_text(self.SCRIPT.format(python=sys.executable, state=str(self.state)))
        gh.chmod(0o755)

    def read(self) -> dict[str, Any]:
        return json.loads(self.state.read_text())


def test_pr_review_posts_one_comment_and_edits_it_afterwards(tmp_path: Path) -> None:
    repo = scenario_repo(tmp_path)
    github = FakeGitHub(tmp_path)
    env = {"PATH": f"{github.bin}:{os.environ['PATH']}", "PR_NUMBER": "42", "GITHUB_REPOSITORY": "acme/models"}

    first = run_review(repo, "--post", "--out", str(tmp_path / "first.md"), env=env)
    assert first.returncode == 0, first.stderr
    (repo / "tuning_specs/router.yaml").write_text(ROUTER.replace("    epochs: 3\n", "    epochs: 6\n"))
    second = run_review(repo, "--post", "--out", str(tmp_path / "second.md"), env=env)
    assert second.returncode == 0, second.stderr

    state = github.read()
    methods = [call[call.index("--method") + 1] if "--method" in call else "GET" for call in state["calls"]]
    assert methods == ["GET", "POST", "GET", "PATCH"]
    assert state["calls"][3][3] == "repos/acme/models/issues/comments/101"
    assert [c["id"] for c in state["comments"]] == [7, 101]
    assert state["comments"][1]["body"] == (tmp_path / "second.md").read_text()
    assert "hyperparameters.epochs: 3 -> 6 (re-tunes)" in state["comments"][1]["body"]


@pytest.mark.cli
@pytest.mark.timeout(300)
def test_pr_review_previews_each_stack_with_the_policy_pack(tmp_path: Path, pulumi_engine: Path) -> None:
    """The real program and the real CLI: the local stack's policy config refuses the change, then allows it."""
    repo = scenario_repo(tmp_path)
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(REPO_ROOT / name, repo / name)
    (repo / "stacks").mkdir()
    shutil.copy(REPO_ROOT / "stacks" / "Pulumi.local.yaml", repo / "stacks" / "Pulumi.local.yaml")
    (repo / ".venv").symlink_to(REPO_ROOT / ".venv")
    (repo / "policy").mkdir()
    config = repo / "policy" / "config.local.json"
    config.write_text(json.dumps({"tuneform-required-labels": {"requiredLabels": ["team", "cost-center"]}}))
    env = {
        "TUNEFORM_STACKS": "local",
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
        "PULUMI_CONFIG_PASSPHRASE": "tuneform-local",
    }
    (tmp_path / "state").mkdir()

    def review(out: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), "--base", "HEAD~1", "--out", str(tmp_path / out)],
            cwd=repo,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=240,
            check=False,
        )

    refused = review("refused.md")
    comment = (tmp_path / "refused.md").read_text()
    assert refused.returncode == 1, refused.stderr
    assert "<summary>pulumi preview, stack <code>local</code>: **failed**</summary>" in comment
    for name, labels in (("router", "team: support"), ("extractor", "team: finance"), ("summarizer", "none")):
        assert (
            f"{name}: metadata.labels.cost-center: expected a value (requiredLabels: team, cost-center), got no "
            f"label cost-center (labels: {labels}). Add `cost-center: ...` under metadata.labels."
        ) in comment
    assert "Traceback" not in comment

    config.write_text(json.dumps({"tuneform-max-epochs": {"maxEpochs": 10}}))
    allowed = review("allowed.md")
    assert allowed.returncode == 0, allowed.stderr + (tmp_path / "allowed.md").read_text()
    assert (
        "<summary>pulumi preview, stack <code>local</code>: passed</summary>" in (tmp_path / "allowed.md").read_text()
    )


def test_invalid_working_tree_fails_the_review_with_the_problems(tmp_path: Path) -> None:
    repo = scenario_repo(tmp_path)
    (repo / "tuning_specs/router.yaml").write_text(ROUTER.replace("epochs: 3", "epochs: 0"))
    result = run_review(repo, "--out", str(tmp_path / "comment.md"))
    comment = (tmp_path / "comment.md").read_text()
    assert result.returncode == 1
    assert "**Validation failed.**" in comment
    assert "router.yaml:11:13: spec.hyperparameters.epochs: expected" in comment
    assert "Traceback" not in comment + result.stderr


def test_unknown_base_ref_is_a_clear_error(tmp_path: Path) -> None:
    repo = scenario_repo(tmp_path)
    result = subprocess.run(
        [str(TUNEFORM), "plan", "--base", "origin/nowhere"], cwd=repo, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "--base: expected a commit, got 'origin/nowhere'" in result.stderr
    assert "Traceback" not in result.stderr


def test_updated_in_place_removed_and_unchanged(tmp_path: Path) -> None:
    repo = scenario_repo(tmp_path)
    git(repo, "rm", "-q", "tuning_specs/summarizer.yaml")
    extractor = (repo / "tuning_specs/extractor.yaml").read_text()
    (repo / "tuning_specs/extractor.yaml").write_text(extractor.replace("team: finance", "team: finance-ops"))
    plan = build_change_plan(repo, "HEAD", targets=("local",))
    by_name = {c.name: c for c in plan.changes}
    assert by_name["summarizer"].status == "removed"
    assert by_name["router"].status == "unchanged"
    assert by_name["extractor"].status == "updated in place"
    assert [(f.field, f.old, f.new) for f in by_name["extractor"].updates] == [
        ("labels.team", "finance", "finance-ops")
    ]
    assert by_name["extractor"].training_tokens == 0
    assert plan.totals["local"].training_tokens == 0
    text = render_change_text(plan).splitlines()
    assert text[2] == (
        "local target: 0 re-tuned, 0 created, 1 updated in place, 1 removed, 1 unchanged; 0 training tokens, "
        "estimated cost $0.00"
    )
    assert "  extractor (tuning_specs/extractor.yaml:4): updated in place, version unknown" in text
    assert "    labels.team: finance -> finance-ops (in place)" in text
    assert "  summarizer (tuning_specs/summarizer.yaml:4): removed, version unknown" in text


def test_registry_versions_give_current_and_next(tmp_path: Path) -> None:
    from tuneform.registry import Registry

    repo = scenario_repo(tmp_path)
    registry = Registry(repo / ".tuneform")
    weights = tmp_path / "adapter"
    weights.mkdir()
    (weights / "adapter_config.json").write_text("{}")
    artifact = registry.store.put_dir(weights)
    data = registry.store.put_file(repo / "tuning_specs/datasets/router/train.jsonl")
    for number in (1, 2):
        registry.add_version(
            "router",
            spec_hash=f"{number:064x}",
            dataset_sha256=data,
            validation_sha256=None,
            base_model="smollm2-135m-instruct",
            mode="adapter",
            hyperparameters={"epochs": 3},
            artifact_sha256=artifact,
            artifact_kind="adapter",
            metrics={},
        )
    plan = build_change_plan(repo, "HEAD~1", targets=("local",))
    router = next(c for c in plan.changes if c.name == "router")
    summarizer = next(c for c in plan.changes if c.name == "summarizer")
    assert (router.current_version, router.new_version) == ("2", "3")
    assert (summarizer.current_version, summarizer.new_version) == ("none", "1")


# --- Dataset diffs ----------------------------------------------------------------------------------------------


def lines_of(text: str) -> Any:
    return lambda: iter(text.encode().splitlines(keepends=True))


def test_dataset_diff_tells_added_removed_changed_reformatted_apart() -> None:
    old = "".join(gemini_line(i) for i in range(10))
    reformatted = json.dumps(json.loads(gemini_line(3)), indent=None, separators=(", ", ":"), sort_keys=True)
    new_lines = [gemini_line(i) for i in range(10) if i not in (2, 3, 7)]
    new_lines += [gemini_line(7, "sales-escalation"), reformatted + "\n", gemini_line(11), "\n"]
    diff = diff_dataset(lines_of(old), lines_of("".join(new_lines)), "gemini")
    assert (diff.added, diff.removed, diff.changed, diff.reformatted) == (1, 1, 1, 1)
    assert (diff.examples_before, diff.examples_after) == (10, 10)
    assert not diff.reordered
    ((before, after),) = diff.changed_samples
    assert before.prompt == after.prompt == "Ticket 7: my order 1007 needs help with technical."
    assert (before.answer, after.answer) == ("technical", "sales-escalation")
    assert [s.prompt for s in diff.removed_samples] == ["Ticket 2: my order 1002 needs help with account."]


def test_dataset_diff_sees_a_reordering() -> None:
    lines = [gemini_line(i) for i in range(5)]
    diff = diff_dataset(lines_of("".join(lines)), lines_of("".join(reversed(lines))), "gemini")
    assert diff.reordered and not diff.content_changed


@pytest.mark.parametrize(("format", "make"), [("gemini", gemini_line), ("openai-chat", openai_line)])
def test_dataset_diff_tokens_equal_the_checker(tmp_path: Path, format: str, make: Any) -> None:
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text("".join(make(i) for i in range(25)))
    new.write_text("".join(make(i) for i in range(5, 40)))
    diff = diff_dataset(lambda: open(old, "rb"), lambda: open(new, "rb"), format)
    assert (diff.examples_before, diff.tokens_before) == tokens_of(old, format)
    assert (diff.examples_after, diff.tokens_after) == tokens_of(new, format)
    assert (diff.added, diff.removed) == (15, 5)


# --- Size of the comment ------------------------------------------------------------------------------------------


def test_markdown_stays_under_the_comment_limit_with_thousands_of_models() -> None:
    changes = tuple(
        ModelChange(
            name=f"model-{i:05d}",
            target="local",
            status="created",
            source=f"tuning_specs/model-{i:05d}.yaml:4",
            base_model="smollm2-135m-instruct",
            reasons=(),
            updates=(),
            datasets=(),
            epochs_text="3 (default)",
            training_tokens=1000,
            cost=0.0,
            cost_text="$0.00 (runs on this machine)",
            current_version="none",
            new_version="1",
        )
        for i in range(5000)
    )
    plan = ChangePlan("origin/main", "0" * 40, ("local",), changes, {"local": TargetTotals(5_000_000, 0.0, 0)})
    markdown = render_change_markdown(plan)
    assert len(markdown) <= 60_000 < COMMENT_LIMIT
    assert "- **local**: 0 re-tuned, 5000 created" in markdown
    assert "_Truncated to stay within the comment limit: details of " in markdown
    assert "Run `tuneform plan --base origin/main` for the full plan._" in markdown


# --- docs/review.md -----------------------------------------------------------------------------------------------

DOC = REPO_ROOT / "docs" / "review.md"
BEGIN, END = "<!-- BEGIN GENERATED by tests/test_review.py: scenario comment -->", "<!-- END GENERATED -->"


def generated_doc(tmp_path: Path) -> str:
    """docs/review.md with its example block replaced by the comment pr-review.sh writes for the scenario."""
    repo = scenario_repo(tmp_path)
    result = run_review(repo, "--out", str(tmp_path / "comment.md"))
    assert result.returncode == 0, result.stderr
    comment = (tmp_path / "comment.md").read_text().rstrip("\n")
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{comment}\n{END}{tail}"


def test_docs_show_the_comment_the_scenario_produces(tmp_path: Path) -> None:
    """Regenerate with `TUNEFORM_WRITE_DOCS=1 .venv/bin/pytest tests/test_review.py -k docs`."""
    expected = generated_doc(tmp_path)
    if os.environ.get("TUNEFORM_WRITE_DOCS") == "1":
        DOC.write_text(expected)
    assert DOC.read_text() == expected, "docs/review.md is stale: rerun this test with TUNEFORM_WRITE_DOCS=1"


def test_workflow_runs_the_tested_script() -> None:
    """The workflow calls what the tests drive: bootstrap, scripts/pr-review.sh with --post, the policy pack."""
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "tuneform.yml").read_text())
    review, deploy = workflow["jobs"]["review"], workflow["jobs"]["deploy"]
    review_runs = [step.get("run", "") for step in review["steps"]]
    assert "make bootstrap" in review_runs
    assert any(
        run.startswith('scripts/pr-review.sh --base "origin/${{ github.base_ref }}" --post') for run in review_runs
    )
    assert review["permissions"]["pull-requests"] == "write"
    assert (
        next(s for s in review["steps"] if s.get("uses", "").startswith("actions/checkout"))["with"]["fetch-depth"]
        == 0
    )
    deploy_script = "\n".join(step.get("run", "") for step in deploy["steps"])
    assert "pulumi up --stack" in deploy_script and "args=(--policy-pack policy)" in deploy_script
    assert os.access(SCRIPT, os.X_OK) and (REPO_ROOT / "policy" / "PulumiPolicy.yaml").is_file()


def test_a_base_spec_that_does_not_load_is_noted_and_its_model_counts_as_created(tmp_path: Path) -> None:
    repo = scenario_repo(tmp_path)
    (repo / "tuning_specs/router.yaml").write_text(ROUTER.replace("epochs: 3", "epochs: zero"))
    git(repo, "commit", "-qam", "broken router")
    (repo / "tuning_specs/router.yaml").write_text(ROUTER)
    plan = build_change_plan(repo, "HEAD", targets=("local",))
    assert {c.name: c.status for c in plan.changes} == {
        "router": "created",
        "extractor": "unchanged",
        "summarizer": "unchanged",
    }
    (note,) = plan.notes
    assert note.startswith(
        "tuning_specs/router.yaml does not load at HEAD, so its models count as created: "
        "tuning_specs/router.yaml:11:13: spec.hyperparameters.epochs: expected"
    )
