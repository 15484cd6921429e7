"""The ``tuneform`` console script, run for real as a subprocess on throwaway repositories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tuneform import cli

TUNEFORM = shutil.which("tuneform", path=str(Path(sys.executable).parent)) or "tuneform"
ROW = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "yo"}]}]}
SPEC = """\
# yaml-language-server: $schema=x
apiVersion: tuneform/v1
kind: TunedModel
metadata:
  name: router
spec:
  baseModel: gemini-3.5-flash
  dataset:
    train: datasets/router/train.jsonl
  targets:
    local: {baseModel: smollm2-135m-instruct}
"""


def _repo(tmp_path: Path, spec: str = SPEC, rows: list[object] | None = None) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: t\n")
    data = tmp_path / "tuning_specs" / "datasets" / "router"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows or [ROW, ROW]))
    (tmp_path / "tuning_specs" / "router.yaml").write_text(spec)
    return tmp_path


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TUNEFORM, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_validate_accepts_a_good_repository(tmp_path: Path) -> None:
    done = _run(_repo(tmp_path), "validate")
    assert (done.returncode, done.stdout) == (0, "ok: 1 spec, 1 datasets\n")
    assert "checking tuning_specs/datasets/router/train.jsonl" in done.stderr


def test_validate_lists_every_problem_without_a_traceback(tmp_path: Path) -> None:
    bad = SPEC.replace("gemini-3.5-flash", "gemini-3.5-flsh").replace("name: router", "name: Router")
    done = _run(_repo(tmp_path, bad), "validate", "tuning_specs/router.yaml")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "2 problems in 1 file:",
        "tuning_specs/router.yaml:5:9: metadata.name: expected lower-case letters, digits and '-', starting with a "
        "letter, not ending with '-', at most 63 characters, got \"Router\". Write `name: router`.",
        "tuning_specs/router.yaml:7:14: spec.baseModel: expected a model from the catalogue or, for the local target, "
        'a local model directory or .gguf file, got "gemini-3.5-flsh". Did you mean `baseModel: gemini-3.5-flash`?',
    ]


def test_validate_reports_dataset_problems_through_the_dataset_checker(tmp_path: Path) -> None:
    row_without_answer = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    done = _run(_repo(tmp_path, rows=[ROW, row_without_answer]), "validate")
    assert done.returncode == 1
    assert "tuning_specs/datasets/router/train.jsonl:2:" in done.stderr
    assert "Traceback" not in done.stderr


def test_validate_strict_target(tmp_path: Path) -> None:
    repo = _repo(tmp_path, SPEC.replace("  targets:\n    local: {baseModel: smollm2-135m-instruct}\n", ""))
    assert _run(repo, "validate").returncode == 0
    strict = _run(repo, "validate", "--target", "local")
    assert strict.returncode == 1
    assert "spec.baseModel: expected a model that runs on the local target" in strict.stderr


def test_plan_text_and_markdown(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    text = _run(repo, "plan", "--target", "vertex")
    assert text.returncode == 0, text.stderr
    assert "router (tuning_specs/router.yaml:5)" in text.stdout
    assert "  examples          2 train" in text.stdout
    assert "estimated cost    unknown: price unconfirmed" in text.stdout
    markdown = _run(repo, "plan", "--format", "markdown")
    assert markdown.returncode == 0, markdown.stderr
    assert markdown.stdout.startswith("### tuneform plan: local target\n")
    assert "| `router` | `smollm2-135m-instruct` |" in markdown.stdout


def test_models_lists_the_catalogue(tmp_path: Path) -> None:
    done = _run(tmp_path, "models", "--target", "local")
    assert done.returncode == 0
    assert done.stdout.split()[0] == "smollm2-135m-instruct"


def test_unexpected_errors_become_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cli, "read_specs", broken)
    monkeypatch.chdir(_repo(tmp_path))
    assert cli.main(["validate"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.startswith("tuneform: internal error: RuntimeError: disk on fire. This is a bug in tuneform")
    assert "Traceback" not in err


def _run_on(cwd: Path, *args: str, today: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TUNEFORM_TODAY": today}
    return subprocess.run([TUNEFORM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_retired_base_model_is_refused_with_its_replacements(tmp_path: Path) -> None:
    repo = _repo(tmp_path, SPEC.replace("gemini-3.5-flash", "gemini-2.5-flash"))
    done = _run(repo, "validate")
    assert done.returncode == 1
    assert (
        "tuning_specs/router.yaml:7:14: spec.baseModel: expected a model Google still offers for tuning, got "
        'gemini-2.5-flash, retired on 2026-10-20 (Google\'s "Model versions and lifecycle" page). Did you mean '
        "`baseModel: gemini-3.5-flash-lite` or `baseModel: gemini-3.1-flash-lite`?"
    ) in done.stderr
    # Followed through retired replacements: 1.5 Flash -> 2.5 Flash-Lite (retired) -> 3.1 Flash-Lite.
    (tmp_path / "old").mkdir()
    old = _run(_repo(tmp_path / "old", SPEC.replace("gemini-3.5-flash", "gemini-1.5-flash-002")), "validate")
    assert "Did you mean `baseModel: gemini-3.1-flash-lite`?" in old.stderr
    # The same spec on the day before 2.5 Flash retired: valid, with a warning about the coming date.
    before = _run_on(repo, "validate", today="2026-09-01")
    assert before.returncode == 0, before.stderr
    assert (
        "tuning_specs/router.yaml:7:14: spec.baseModel: warning: gemini-2.5-flash retires on 2026-10-20, in 49 days"
    ) in before.stderr


def test_a_model_retiring_within_90_days_warns_in_validate_and_plan(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    quiet = _run_on(repo, "validate", today="2027-02-17")  # 91 days before 2027-05-19
    assert quiet.returncode == 0 and "warning" not in quiet.stderr
    for command in (("validate",), ("plan", "--target", "vertex")):
        done = _run_on(repo, *command, today="2027-02-19")
        assert done.returncode == 0, done.stderr
        assert "spec.baseModel: warning: gemini-3.5-flash retires on 2027-05-19, in 89 days" in done.stderr


def test_validate_with_a_stack_checks_region_and_cmek(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "Pulumi.yaml").write_text("name: t\nstackConfigDir: stacks\n")
    (repo / "stacks").mkdir()
    (repo / "stacks" / "Pulumi.prod.yaml").write_text(
        "config:\n  tuneform:target: vertex\n  tuneform:region: us-east1\n"
        "  tuneform:kmsKeyName: projects/p/locations/us-east1/keyRings/r/cryptoKeys/k\n"
        "  tuneform:trainingPrices: {gemini-9: 3}\n"
    )
    done = _run(repo, "validate", "--stack", "prod")
    assert done.returncode == 1
    problems = [line for line in done.stderr.splitlines() if line.startswith("stacks/")]
    assert problems == [
        "stacks/Pulumi.prod.yaml:3:20: config.tuneform:region: expected a region where gemini-3.5-flash can be tuned "
        "(us-central1, europe-west4), got us-east1, for router (tuning_specs/router.yaml:5:9). Set "
        "`tuneform:region: us-central1`, or choose a base model tuned in us-east1.",
        "stacks/Pulumi.prod.yaml:4:24: config.tuneform:kmsKeyName: expected no customer-managed key for "
        "gemini-3.5-flash (Google's supervised tuning page: CMEK not supported), got one, for router "
        "(tuning_specs/router.yaml:5:9). Remove `tuneform:kmsKeyName` from this stack, or tune a model that supports "
        "CMEK in a stack of its own.",
        "stacks/Pulumi.prod.yaml:5:28: config.tuneform:trainingPrices: expected catalogue model ids as keys, got "
        "'gemini-9'. See `tuneform models`.",
    ]
    assert _run(repo, "validate", "--stack", "nope").returncode == 1


def test_models_shows_lifecycle(tmp_path: Path) -> None:
    done = _run(tmp_path, "models", "--target", "vertex")
    first = done.stdout.splitlines()[0]
    assert first.startswith("gemini-3.5-flash ") and first.endswith("GA, available until 2027-05-19 or later")
    assert "gemini-2.5-flash " not in done.stdout
    every = _run(tmp_path, "models", "--target", "vertex", "--all").stdout
    assert any(
        line.startswith("gemini-2.5-flash ")
        and line.endswith("retired 2026-10-20; use gemini-3.5-flash-lite or gemini-3.1-flash-lite")
        for line in every.splitlines()
    )
