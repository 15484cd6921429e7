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

from pulumi_cli import REPO_ROOT
from tuneform.datasets.check import DatasetLimits, check_dataset
from tuneform.datasets.tokens import counting_for
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
  baseModel: gemini-3.5-flash
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


SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1"
EXACT = f"exact, {SMOLLM2} tokenizer"
ESTIMATE = "estimate by tuneform's documented rule, which errs high"


def tokens_of(path: Path, format: str, target: str = "vertex") -> tuple[int, int]:
    """(examples, tokens) as the dataset checker counts them for a target: the reference the plan must agree with.

    The local target counts with SmolLM2's own tokenizer, Vertex AI with the documented estimate.
    """
    counter = counting_for(target, "smollm2-135m-instruct").counter if target == "local" else None
    summary, problems = check_dataset(path, format=format, limits=DatasetLimits(), count_tokens=counter)  # type: ignore[arg-type]
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
    router = "tuning_specs/datasets/router/train.jsonl"
    _, extractor_before = tokens_of(at_commit(repo, "HEAD~1", extractor, tmp_path), "openai-chat", "local")
    examples_after, extractor_after = tokens_of(repo / extractor, "openai-chat", "local")
    _, router_local = tokens_of(repo / router, "gemini", "local")
    _, router_vertex = tokens_of(repo / router, "gemini", "vertex")
    _, summarizer_tokens = tokens_of(repo / "tuning_specs/datasets/summarizer/train.jsonl", "gemini", "local")
    assert examples_after == 50
    # The two targets count differently (exact here, the estimate on Vertex AI), and the comment says so.
    assert router_local < router_vertex

    result = run_review(repo, "--out", str(tmp_path / "comment.md"))
    assert result.returncode == 0, result.stderr
    comment = (tmp_path / "comment.md").read_text()

    local_total = extractor_after * 2 + router_local * 5 + summarizer_tokens * 3
    expected_lines = [
        "<!-- tuneform-review -->",
        "## ✅ tuneform: validation passed, no stack previewed (see Previews)",
        "Validation: ok: 3 specs, 3 datasets.",
        "- **local**: 2 re-tuned, 1 created, 0 updated in place, 0 removed, 0 unchanged; "
        f"**{local_total:,}** training tokens ({EXACT}), estimated cost **$0.00**",
        # Only the router runs on Vertex AI: the other two use a local base model.
        "- **vertex**: 1 re-tuned, 0 created, 0 updated in place, 0 removed, 0 unchanged; "
        f"**{router_vertex * 5:,}** training tokens ({ESTIMATE}), estimated cost **$0.00 + 1 model of unknown cost**",
        f"- **all targets**: {local_total + router_vertex * 5:,} training tokens, estimated cost $0.00 + 1 model of "
        "unknown cost",
        f"| `extractor` | re-tuned | unknown → current + 1 | {extractor_after * 2:,} | $0.00 (runs on this machine) |",
        f"| `router` | re-tuned | unknown → current + 1 | {router_local * 5:,} | $0.00 (runs on this machine) |",
        f"| `summarizer` | created | unknown → v1 | {summarizer_tokens * 3:,} | $0.00 (runs on this machine) |",
        f"| `router` | re-tuned | unknown → current + 1 | {router_vertex * 5:,} | unknown: price unconfirmed |",
        f"- dataset train `{extractor}`: +20 added, -0 removed, 0 changed; 30 -> 50 examples, "
        f"{extractor_before:,} -> {extractor_after:,} tokens",
        "- hyperparameters.epochs: 3 -> 5 (re-tunes)",
        f"- dataset train `{router}`: identical, 40 examples, {router_local:,} tokens",
        f"- dataset train `{router}`: identical, 40 examples, {router_vertex:,} tokens",
        f"- dataset train `tuning_specs/datasets/summarizer/train.jsonl`: new file, 16 examples, 0 -> "
        f"{summarizer_tokens:,} tokens",
        '+ Invoice INV-0030 from Acme, total 210.50 EUR. => {"invoice": "INV-0030"}',
        "_versions unknown: no vertex stack configured (`--stack NAME`, or the TUNEFORM_STACKS variable) whose state "
        "to read_",
    ]
    lines = comment.splitlines()
    for line in expected_lines:
        assert line in lines, f"missing line {line!r} in:\n{comment}"
    # One hyperparameter changed, nothing else: no other field is named as a reason.
    assert sum("(re-tunes)" in line for line in lines) == 2  # router on local and on vertex
    assert "(in place)" not in comment
    assert "No stacks are configured for review" in comment


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


def program_repo(root: Path, config: dict[str, Any]) -> Path:
    """The scenario with the real program, the shipped local stack and a policy config for it."""
    repo = scenario_repo(root)
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(REPO_ROOT / name, repo / name)
    (repo / "stacks").mkdir()
    shutil.copy(REPO_ROOT / "stacks" / "Pulumi.local.yaml", repo / "stacks" / "Pulumi.local.yaml")
    (repo / ".venv").symlink_to(REPO_ROOT / ".venv")
    (repo / "policy").mkdir()
    (repo / "policy" / "config.local.json").write_text(json.dumps(config))
    (root / "state").mkdir()
    return repo


def preview_env(root: Path, **extra: str) -> dict[str, str]:
    return {
        "TUNEFORM_STACKS": "local",
        "PULUMI_BACKEND_URL": f"file://{root / 'state'}",
        "PULUMI_HOME": str(root / "pulumi-home"),
        "PULUMI_CONFIG_PASSPHRASE": "tuneform-local",
        **extra,
    }


@pytest.mark.cli
@pytest.mark.timeout(300)
def test_pr_review_previews_each_stack_with_the_policy_pack(tmp_path: Path, pulumi_engine: Path) -> None:
    """The real program and the real CLI: the local stack's policy config refuses the change, then allows it."""
    repo = program_repo(tmp_path, {"tuneform-required-labels": {"requiredLabels": ["team", "cost-center"]}})
    env = preview_env(tmp_path)

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
    lines = comment.splitlines()
    # Failures first: the verdict, then every violation, before the plan.
    assert lines[:4] == [
        "<!-- tuneform-review -->",
        "## ❌ tuneform: 4 policy violations",
        "",
        "**Fix before merging:**",
    ]
    assert comment.index("**policy**") < comment.index("### tuneform plan")
    for name, labels, missing in (
        ("router", "team: support", "cost-center"),
        ("extractor", "team: finance", "cost-center"),
        ("summarizer", "none", "team"),
        ("summarizer", "none", "cost-center"),
    ):
        assert (
            f"- **policy** `tuneform-required-labels` on stack `local`: {name}: metadata.labels.{missing}: expected a "
            f"value (requiredLabels: team, cost-center), got no label {missing} (labels: {labels}). Add "
            f"`{missing}: ...` under metadata.labels."
        ) in lines
    assert "| `local` | local | **failed**: 4 policy violations | 16 to create |" in lines
    # The local stack's (empty) state is reachable: versions are real numbers.
    assert "_versions from stack `local` (file:// backend)_" in lines
    assert any(line.startswith("| `router` | re-tuned | none → v1 |") for line in lines)
    assert "Traceback" not in comment

    (repo / "policy" / "config.local.json").write_text(json.dumps({"tuneform-max-epochs": {"maxEpochs": 10}}))
    allowed = review("allowed.md")
    comment = (tmp_path / "allowed.md").read_text()
    assert allowed.returncode == 0, allowed.stderr + comment
    assert comment.splitlines()[1] == "## ✅ tuneform: validation passed, 1 stack previewed with the policy pack"
    assert "| `local` | local | passed | 16 to create |" in comment.splitlines()


@pytest.mark.cli
@pytest.mark.timeout(300)
def test_a_token_limit_gives_the_plans_count_on_every_surface(tmp_path: Path, pulumi_engine: Path) -> None:
    """maxTrainingTokens: the preview's policy, the plan's table and the failure all use the same exact count."""
    _, router_local = tokens_of(
        scenario_repo(tmp_path / "reference") / "tuning_specs/datasets/router/train.jsonl", "gemini", "local"
    )
    limit = router_local * 5 - 1
    repo = program_repo(tmp_path, {"tuneform-max-training-tokens": {"maxTrainingTokens": limit}})
    result = subprocess.run(
        [str(SCRIPT), "--base", "HEAD~1", "--out", str(tmp_path / "comment.md")],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **preview_env(tmp_path)},
        timeout=240,
        check=False,
    )
    comment = (tmp_path / "comment.md").read_text()
    assert result.returncode == 1, result.stderr
    lines = comment.splitlines()
    assert (
        "- **policy** `tuneform-max-training-tokens` on stack `local`: router: training tokens (dataset tokens x "
        f"spec.hyperparameters.epochs): expected at most {limit:,} (maxTrainingTokens), got {router_local * 5:,} "
        f"({EXACT}). Trim the dataset or lower `epochs`."
    ) in lines
    assert any(line.startswith(f"| `router` | re-tuned | none → v1 | {router_local * 5:,} |") for line in lines)
    # Only the router is over the limit: the others' exact counts are below it.
    assert sum("tuneform-max-training-tokens" in line for line in lines) == 1


def test_skip_preview_skips_the_previews_even_with_an_engine_on_path(tmp_path: Path) -> None:
    """`--skip-preview` used to be ignored whenever `pulumi` was on PATH (`a || b && c` is `(a || b) && c`)."""
    repo = scenario_repo(tmp_path)
    (repo / "stacks").mkdir()
    shutil.copy(REPO_ROOT / "stacks" / "Pulumi.local.yaml", repo / "stacks" / "Pulumi.local.yaml")
    (tmp_path / "state").mkdir()
    result = run_review(repo, "--out", str(tmp_path / "comment.md"), env=preview_env(tmp_path))
    assert result.returncode == 0, result.stderr
    comment = (tmp_path / "comment.md").read_text()
    assert "| `local` | local | skipped: previews skipped (--skip-preview) | - |" in comment.splitlines()
    assert "pulumi preview" not in result.stderr
    # No stack was selected or created in the backend (reading the state for versions only looked).
    assert not (tmp_path / "state" / ".pulumi" / "stacks").exists()


def test_invalid_working_tree_fails_the_review_with_the_problems(tmp_path: Path) -> None:
    repo = scenario_repo(tmp_path)
    (repo / "tuning_specs/router.yaml").write_text(ROUTER.replace("epochs: 3", "epochs: 0"))
    result = run_review(repo, "--out", str(tmp_path / "comment.md"))
    comment = (tmp_path / "comment.md").read_text()
    assert result.returncode == 1
    lines = comment.splitlines()
    assert lines[1] == "## ❌ tuneform: 1 validation problem"
    # The problem names its file, line, model and field, wrapped as prose rather than cut inside a code block.
    (problem,) = [line for line in lines if line.startswith("- **validation**")]
    assert problem.startswith(
        "- **validation** `tuning_specs/router.yaml:11:13` (**router**): spec.hyperparameters.epochs: expected"
    )
    assert problem.endswith(".")
    assert "No plan: it needs specs that load (see the failures above)." in lines
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


def many_changes(count: int, target: Any, status: Any, cost: float | None, cost_text: str) -> tuple[ModelChange, ...]:
    """``count`` models of one target that all change the same way, each on 1,000 training tokens."""
    return tuple(
        ModelChange(
            name=f"model-{i:05d}",
            target=target,
            status=status,
            source=f"tuning_specs/model-{i:05d}.yaml:4",
            base_model="smollm2-135m-instruct" if target == "local" else "gemini-3.5-flash",
            reasons=(),
            updates=(),
            datasets=(),
            epochs_text="3",
            training_tokens=1000,
            cost=cost,
            cost_text=cost_text,
            current_version="none" if status == "created" else "3",
            new_version="1" if status == "created" else "4",
        )
        for i in range(count)
    )


def test_markdown_stays_under_the_comment_limit_with_thousands_of_models() -> None:
    changes = many_changes(5000, "local", "created", 0.0, "$0.00 (runs on this machine)")
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


# --- Versions from the stack's state -------------------------------------------------------------------------------

STACK_URN = "urn:pulumi:local::tuneform::"
MAGIC = (
    "7dff0d166258e7f1d265e8e044021ea087795d58a0c6415ab6fe8b7c790e447f"  # sha256 of "v3.260.0", as the engine writes
)


def deployment(router_version: int, metrics: dict[str, dict[str, float]], serving: str) -> dict[str, Any]:
    """A stack's state as `pulumi up` leaves it for the router: its tuning job, its endpoint, their provider."""
    provider = f"{STACK_URN}pulumi:providers:pulumi-python::default"
    parent = f"{STACK_URN}tuneform:index:TunedModel$"

    def custom(kind: str, name: str, outputs: dict[str, Any]) -> dict[str, Any]:
        return {
            "urn": f"{parent}pulumi-python:dynamic/tuneform:{kind}::{name}",
            "custom": True,
            "id": f"{name}-id",
            "type": f"pulumi-python:dynamic/tuneform:{kind}",
            "inputs": {"name": "router"},
            "outputs": {"name": "router", **outputs},
            "provider": f"{provider}::p1",
        }

    return {
        "version": 3,
        "deployment": {
            "manifest": {"time": "2026-11-01T00:00:00Z", "magic": MAGIC, "version": "v3.260.0"},
            "resources": [
                {
                    "urn": f"{STACK_URN}pulumi:pulumi:Stack::tuneform-local",
                    "custom": False,
                    "type": "pulumi:pulumi:Stack",
                },
                {"urn": provider, "custom": True, "id": "p1", "type": "pulumi:providers:pulumi-python"},
                custom(
                    "TuningJob", "router-tuning", {"version": router_version, "metrics": metrics[str(router_version)]}
                ),
                custom("Endpoint", "router-endpoint", {"servedTraffic": {serving: 100}, "versionMetrics": metrics}),
            ],
        },
    }


METRICS = {
    "1": {"exactMatch": 0.5, "baseExactMatch": 0.0, "validationLoss": 0.9, "baseValidationLoss": 6.5},
    "2": {"exactMatch": 0.8, "baseExactMatch": 0.0, "validationLoss": 0.3, "baseValidationLoss": 6.5},
    "3": {"exactMatch": 0.95, "baseExactMatch": 0.0, "validationLoss": 0.1, "baseValidationLoss": 6.5},
}


def stack_with_state(root: Path, pulumi_engine: Path) -> tuple[Path, dict[str, str]]:
    """The scenario repository with a `local` stack whose state (imported through the real CLI) holds router v3."""
    repo = scenario_repo(root)
    (repo / "Pulumi.yaml").write_text("name: tuneform\nruntime: python\nstackConfigDir: stacks\n")
    (repo / "stacks").mkdir()
    shutil.copy(REPO_ROOT / "stacks" / "Pulumi.local.yaml", repo / "stacks" / "Pulumi.local.yaml")
    (root / "state").mkdir()
    env = {
        **os.environ,
        "PATH": f"{pulumi_engine}:{os.environ['PATH']}",
        "PULUMI_BACKEND_URL": f"file://{root / 'state'}",
        "PULUMI_HOME": str(root / "pulumi-home"),
        "PULUMI_CONFIG_PASSPHRASE": "tuneform-local",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    (root / "state.json").write_text(json.dumps(deployment(3, METRICS, "3")))
    for args in (
        ["stack", "init", "local"],
        ["stack", "import", "--stack", "local", "--file", str(root / "state.json")],
    ):
        subprocess.run(["pulumi", *args, "--non-interactive"], cwd=repo, env=env, check=True, capture_output=True)
    return repo, env


@pytest.mark.cli
def test_versions_evaluation_and_chart_come_from_the_stacks_state(tmp_path: Path, pulumi_engine: Path) -> None:
    repo, env = stack_with_state(tmp_path, pulumi_engine)
    # No passphrase is needed to read versions: `pulumi stack export` without --show-secrets decrypts nothing.
    env.pop("PULUMI_CONFIG_PASSPHRASE")
    result = subprocess.run(
        [str(TUNEFORM), "plan", "--base", "HEAD~1", "--target", "local", "--stack", "local", "--format", "markdown"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "_versions from stack `local` (file:// backend)_" in lines
    router = next(line for line in lines if line.startswith("| `router` |"))
    assert router.startswith("| `router` | re-tuned | v3 → v4 |")
    assert router.endswith("| v3: exactMatch 0.950 (base 0.000), validationLoss 0.100 (base 6.500) |"), router
    assert next(line for line in lines if line.startswith("| `summarizer` |")).startswith(
        "| `summarizer` | created | none → v1 |"
    )
    assert "- serving now v3: exactMatch 0.950 (base 0.000), validationLoss 0.100 (base 6.500)" in lines
    chart = result.stdout.split("```mermaid\n", 1)[1].split("```", 1)[0].splitlines()
    assert chart == [
        "xychart-beta",
        '    title "router: exactMatch, base model (bars) vs tuned (line)"',
        "    x-axis [v1, v2, v3]",
        '    y-axis "exactMatch" 0 --> 1',
        "    bar [0.000, 0.000, 0.000]",
        "    line [0.500, 0.800, 0.950]",
    ]


@pytest.mark.cli
def test_versions_from_a_file_backend_without_the_cli(
    tmp_path: Path, pulumi_engine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `pulumi` on PATH, a file:// backend's checkpoint is read directly, with the same result."""
    repo, env = stack_with_state(tmp_path, pulumi_engine)
    monkeypatch.setenv("PULUMI_BACKEND_URL", env["PULUMI_BACKEND_URL"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    plan = build_change_plan(repo, "HEAD~1", targets=("local",), stacks=["local"])
    router = next(c for c in plan.changes if c.name == "router")
    assert (router.current_version, router.new_version, router.serving_version) == ("3", "4", 3)
    assert router.version_metrics["2"]["exactMatch"] == 0.8
    assert plan.version_sources["local"] == "versions from stack `local` (file:// backend)"


def test_unreachable_state_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = scenario_repo(tmp_path)
    (repo / "Pulumi.yaml").write_text("name: review-test\nstackConfigDir: stacks\n")
    (repo / "stacks").mkdir()
    (repo / "stacks" / "Pulumi.prod.yaml").write_text("config:\n  tuneform:target: vertex\n")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("PULUMI_BACKEND_URL", "gs://team-bucket/pulumi")
    plan = build_change_plan(repo, "HEAD~1", targets=("vertex",), stacks=["prod"])
    assert plan.version_sources["vertex"] == (
        "versions unknown: the state of stack `prod` could not be read (no pulumi CLI on PATH to read the gs:// "
        "backend)"
    )
    router = next(c for c in plan.changes if c.name == "router")
    assert (router.current_version, router.new_version) == ("unknown", "current + 1")
    monkeypatch.delenv("PULUMI_BACKEND_URL")
    plan = build_change_plan(repo, "HEAD~1", targets=("vertex",), stacks=["prod"])
    assert plan.version_sources["vertex"].endswith(
        "(PULUMI_BACKEND_URL is not set, so the stacks' shared state is unknown)"
    )


def test_the_json_plan_reads_back_as_the_same_plan(tmp_path: Path) -> None:
    from tuneform.review import plan_from_json, plan_to_json

    plan = build_change_plan(scenario_repo(tmp_path), "HEAD~1")
    assert plan_from_json(plan_to_json(plan)) == plan


# --- The review comment -------------------------------------------------------------------------------------------


def engine_event(kind: str, **body: Any) -> str:
    return json.dumps({"sequence": 1, "timestamp": 0, kind: body})


def test_preview_events_become_failures_steps_and_counts() -> None:
    from tuneform.review.comment import read_preview

    job = "urn:pulumi:prod::tuneform::tuneform:index:TunedModel$pulumi-python:dynamic/tuneform:TuningJob::a-tuning"
    events = [
        engine_event(
            "resourcePreEvent",
            metadata={
                "op": "replace",
                "urn": job,
                "type": "pulumi-python:dynamic/tuneform:TuningJob",
                "keys": ["mode"],
            },
        ),
        engine_event("resourcePreEvent", metadata={"op": "same", "urn": job, "type": "x"}),
        engine_event(
            "policyEvent",
            message="Tuning jobs run at most maxEpochs epochs.\na: spec.hyperparameters.epochs: expected at most 10 "
            "(maxEpochs), got 12. Lower `epochs`.\n",
            policyName="tuneform-max-epochs",
            enforcementLevel="mandatory",
        ),
        engine_event("policyEvent", message="Labels.\na: labels.team: expected a value.", enforcementLevel="advisory"),
        engine_event("diagnosticEvent", message="preview failed\n", severity="error"),
        engine_event("summaryEvent", resourceChanges={"replace": 1, "same": 5}),
        "not json",
    ]
    result = read_preview("prod", "vertex", "failed", events)
    assert result.steps == ("+- replace            TuningJob    a-tuning (changed: mode)",)
    assert result.changes == {"replace": 1}
    ((violation,), (advisory,)) = result.violations, result.advisories
    assert violation.message == (
        "a: spec.hyperparameters.epochs: expected at most 10 (maxEpochs), got 12. Lower `epochs`."
    )
    assert (violation.model, violation.where) == ("a", "`tuneform-max-epochs` on stack `prod`")
    assert advisory.message == "a: labels.team: expected a value."
    assert result.errors == ()
    # A preview that fails before the engine runs (a wrong passphrase) carries its error on stderr only.
    early = read_preview("prod", "vertex", "failed", [], stderr="error: incorrect passphrase\n")
    assert early.errors == ("incorrect passphrase",)


def test_a_huge_review_stays_under_githubs_limit_with_failures_first() -> None:
    from tuneform.review.comment import MARKER, Failure, PreviewResult, build_comment

    changes = many_changes(3000, "vertex", "re-tuned", None, "unknown: price unconfirmed")
    plan = ChangePlan("origin/main", "0" * 40, ("vertex",), changes, {"vertex": TargetTotals(3_000_000, 0.0, 3000)})
    violations = tuple(
        Failure(
            "policy",
            "`tuneform-max-epochs` on stack `prod`",
            f"model-{i:05d}: spec.hyperparameters.epochs: "
            "expected at most 10 (maxEpochs), got 12. Lower `epochs`, or raise maxEpochs <in the config>.",
        )
        for i in range(3000)
    )
    preview = PreviewResult(
        "prod",
        "vertex",
        "failed",
        changes={"replace": 3000},
        violations=violations,
        steps=tuple(f"+- replace TuningJob model-{i:05d}-tuning" for i in range(3000)),
    )
    comment = build_comment(plan=plan, validation_ok=True, previews=[preview])
    assert len(comment) <= COMMENT_LIMIT - 500
    lines = comment.splitlines()
    assert lines[:2] == [MARKER, "## ❌ tuneform: 3000 policy violations"]
    assert lines[5].startswith("- **policy** `tuneform-max-epochs` on stack `prod`: model-00000: spec.hyperparameters")
    # Prose, not a code block: `<` outside backticks is escaped so GitHub does not take it for a tag.
    assert lines[5].endswith("Lower `epochs`, or raise maxEpochs &lt;in the config&gt;.")
    assert any(line.startswith("- … and ") and "more: see the workflow log" in line for line in lines)
    assert comment.index("### tuneform plan") < comment.index("#### Previews")
    assert "| `prod` | vertex | **failed**: 3000 policy violations | 3000 to replace |" in lines
    assert "_Truncated to stay within the comment limit: details of " in comment


def test_a_stacks_own_training_price_is_the_plans_price_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tuneform:trainingPrices` prices the preview's runs; the review of that stack prices them the same way."""
    repo = scenario_repo(tmp_path)
    (repo / "Pulumi.yaml").write_text("name: review-test\nstackConfigDir: stacks\n")
    (repo / "stacks").mkdir()
    (repo / "stacks" / "Pulumi.prod.yaml").write_text(
        "config:\n  tuneform:target: vertex\n  tuneform:trainingPrices: {gemini-3.5-flash: 2.5}\n"
    )
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    _, tokens = tokens_of(repo / "tuning_specs/datasets/router/train.jsonl", "gemini", "vertex")
    plan = build_change_plan(repo, "HEAD~1", targets=("vertex",), stacks=["prod"])
    router = next(c for c in plan.changes if c.name == "router")
    cost = round(tokens * 5 * 2.5 / 1_000_000, 2)
    assert (router.cost, router.cost_text) == (cost, f"${cost:,.2f} (the stack's trainingPrices)")


def test_a_fork_pull_request_is_planned_and_says_why_nothing_was_previewed(tmp_path: Path) -> None:
    """What GitHub gives a fork's run: no TUNEFORM_STACKS, no backend URL, no passphrase."""
    repo = scenario_repo(tmp_path)
    env = {"GITHUB_ACTIONS": "true", "PR_FROM_FORK": "true", "TUNEFORM_STACKS": "", "PULUMI_CONFIG_PASSPHRASE": ""}
    env["PULUMI_BACKEND_URL"] = ""
    result = subprocess.run(
        [str(SCRIPT), "--base", "HEAD~1", "--out", str(tmp_path / "comment.md")],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "comment.md").read_text().splitlines()
    assert lines[1] == "## ✅ tuneform: validation passed, no stack previewed (see Previews)"
    assert (
        "- This pull request comes from a fork, and GitHub gives such runs no secrets or variables: it is validated "
        "and planned, but no stack was previewed and current versions are unknown."
    ) in lines
    assert any(line.startswith("| `router` | re-tuned | unknown → current + 1 |") for line in lines)


def test_moving_off_a_retired_base_model_is_a_retune_and_a_coming_retirement_is_noted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base commit may name a model retired since: its specs still load as history, so the pull request that
    moves to the replacement reads as a re-tune with the base model named, not as a new model."""
    repo = scenario_repo(tmp_path)
    (repo / "tuning_specs/router.yaml").write_text(ROUTER.replace("gemini-3.5-flash", "gemini-2.5-flash"))
    git(repo, "commit", "-qam", "an old router")
    (repo / "tuning_specs/router.yaml").write_text(ROUTER)
    monkeypatch.setenv("TUNEFORM_TODAY", "2027-03-01")  # 3.5 Flash retires on 2027-05-19: within 90 days
    plan = build_change_plan(repo, "HEAD", targets=("vertex",))
    router = next(c for c in plan.changes if c.name == "router")
    assert router.status == "re-tuned"
    assert [(r.field, r.old, r.new) for r in router.reasons] == [("baseModel", "gemini-2.5-flash", "gemini-3.5-flash")]
    assert any(
        "spec.baseModel: warning: gemini-3.5-flash retires on 2027-05-19, in 79 days" in note for note in plan.notes
    )


@pytest.mark.parametrize("model", ["../models/tiny", "../models/tiny.gguf"])
def test_a_base_spec_on_a_local_model_in_the_repository_loads(tmp_path: Path, model: str) -> None:
    # The base commit is read from stand-ins; a local model's config.json is read for real and a .gguf stand-in
    # carries the magic bytes, so the spec rules that glance at them pass and the model is re-tuned, not created.
    repo = tmp_path / "repo"
    write(repo / "Pulumi.yaml", "name: review-test\n")
    write(repo / "models/tiny/config.json", '{"model_type": "llama"}')
    (repo / "models/tiny.gguf").write_bytes(b"GGUF" + bytes(60))
    spec = ROUTER.replace("baseModel: smollm2-135m-instruct", f"baseModel: {model}")
    write(repo / "tuning_specs/router.yaml", spec)
    write(repo / "tuning_specs/datasets/router/train.jsonl", "".join(gemini_line(i) for i in range(8)))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    write(repo / "tuning_specs/router.yaml", spec.replace("learningRate: 0.0002", "learningRate: 0.001"))
    plan = build_change_plan(repo, "HEAD", targets=("local",))
    assert not plan.notes, plan.notes
    assert [(c.name, c.status) for c in plan.changes] == [("router", "re-tuned")]


def test_a_change_of_the_decoding_defaults_alone_trains_nothing(tmp_path: Path) -> None:
    # The local backend gives such a version the weights of the one tuned from the same inputs and re-scores it.
    repo = tmp_path / "repo"
    write(repo / "Pulumi.yaml", "name: review-test\n")
    local = "      endpoint: {generation: {temperature: 0, maxOutputTokens: 8}}\n"
    write(repo / "tuning_specs/router.yaml", ROUTER + local)
    write(repo / "tuning_specs/datasets/router/train.jsonl", "".join(gemini_line(i) for i in range(8)))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    write(repo / "tuning_specs/router.yaml", ROUTER + local.replace("maxOutputTokens: 8", "maxOutputTokens: 4"))
    plan = build_change_plan(repo, "HEAD", targets=("local",))
    (change,) = plan.changes
    assert (change.status, change.training_tokens) == ("updated in place", 0)
    assert [(f.field, f.old, f.new) for f in change.updates] == [("endpoint.generation.maxOutputTokens", 8, 4)]
