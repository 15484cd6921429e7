"""Specs, stack files and dataset references the way people write them by hand, through ``tuneform validate``.

Each case is a slip seen in a review of hand-written input: the promise is one located line per problem with its fix,
every problem at once, exit status 1, and never an internal error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tuneform import cli
from tuneform.spec.loader import load_specs

ROW = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "yo"}]}]}
SPEC = """\
apiVersion: tuneform/v1
kind: TunedModel
metadata:
  name: router
spec:
  baseModel: smollm2-135m-instruct
  hyperparameters:
    epochs: 1
    learningRate: 0.0002
  dataset:
    train: datasets/router/train.jsonl
"""


def _repo(tmp_path: Path, spec: str = SPEC, *, name: str = "router.yaml", stack: str | None = None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "Pulumi.yaml").write_text("name: t\nstackConfigDir: stacks\n")
    data = tmp_path / "tuning_specs" / "datasets" / "router"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text(json.dumps(ROW) + "\n" + json.dumps(ROW) + "\n")
    (tmp_path / "tuning_specs" / name).write_text(spec, encoding="utf-8")
    if stack is not None:
        (tmp_path / "stacks").mkdir(exist_ok=True)
        (tmp_path / "stacks" / "Pulumi.dev.yaml").write_text(stack, encoding="utf-8")
    return tmp_path


def _validate(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, list[str]]:
    monkeypatch.chdir(repo)
    code = cli.main(["validate", *args])
    err = capsys.readouterr().err
    assert "internal error" not in err and "Traceback" not in err, err
    return code, [line for line in err.splitlines() if not line.startswith("tuneform: checking")]


def test_dates_stay_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # YAML 1.1 reads 2024-02-30 as a date (a crash: no such day) and 2024-02-28 as a date no text field takes.
    spec = SPEC.replace(
        "  name: router\n", "  name: router\n  description: 2024-02-30\n  labels: {release: 2024-02-28}\n"
    )
    code, lines = _validate(_repo(tmp_path, spec), monkeypatch, capsys)
    assert code == 0, lines


def test_a_tag_that_cannot_read_its_value_is_located_and_other_files_still_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path, SPEC.replace("epochs: 1", "epochs: !!int"))
    other = SPEC.replace("name: router", "name: other").replace("epochs: 1", "epochs: 0")
    (repo / "tuning_specs" / "other.yaml").write_text(other)
    code, lines = _validate(repo, monkeypatch, capsys)
    assert code == 1
    assert lines[1].startswith("tuning_specs/other.yaml:8:13: spec.hyperparameters.epochs: expected integer")
    assert lines[2].startswith(
        'tuning_specs/router.yaml:8:13: spec.hyperparameters.epochs: expected a value the `!!int` tag can read, got ""'
    )
    assert lines[2].endswith("Remove the `!!int` tag: specs need no tags.")


def test_exponent_numbers_are_numbers(tmp_path: Path) -> None:
    # Editors (YAML 1.2) read 2e-3 as a number; so does tuneform, and 1.0 for an integer is that integer.
    spec = SPEC.replace("learningRate: 0.0002", "learningRate: 2e-3").replace("epochs: 1", "epochs: 1.0")
    (doc,) = load_specs([_repo(tmp_path, spec) / "tuning_specs" / "router.yaml"])
    hp = doc.resolved["local"].hyperparameters
    assert (hp.learning_rate, hp.epochs, type(hp.epochs)) == (0.002, 1, int)


def test_an_integer_written_as_a_float_does_not_change_the_spec_hash(tmp_path: Path) -> None:
    lora = "  targets:\n    local:\n      lora: {rank: RANK, alpha: 8}\n"
    hashes = []
    for rank in ("4", "4.0"):
        repo = _repo(tmp_path / rank, SPEC + lora.replace("RANK", rank))
        (doc,) = load_specs([repo / "tuning_specs" / "router.yaml"])
        hashes.append(doc.resolved["local"].spec_hash("data"))
    assert hashes[0] == hashes[1]


def test_keys_that_are_not_text_and_numbers_that_are_not_finite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = (
        SPEC.replace("  name: router\n", "  name: router\n  labels: {on: call, team: yes}\n")
        .replace("learningRate: 0.0002", "learningRate: .nan")
        .replace(
            "train: datasets/router/train.jsonl",
            "train: datasets/router/train.jsonl\n  endpoint:\n    traffic: {1: 100}",
        )
    )
    code, lines = _validate(_repo(tmp_path, spec), monkeypatch, capsys)
    assert code == 1
    assert lines[1:] == [
        "tuning_specs/router.yaml:5:12: metadata.labels.on: expected a text key, got `on`, which YAML reads as a "
        'boolean unquoted. Quote it: `"on": ...`.',
        'tuning_specs/router.yaml:5:28: metadata.labels.team: expected a string, got true. Quote it: `team: "yes"`.',
        "tuning_specs/router.yaml:10:19: spec.hyperparameters.learningRate: expected a finite number, got .nan. "
        "Write the number you mean.",
        "tuning_specs/router.yaml:14:15: spec.endpoint.traffic.1: expected a version label v1, v2, ... or latest, "
        "got the number 1. Write `v1: ...`.",
    ]


def test_a_line_separator_is_refused_where_an_editor_sees_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = SPEC.replace("  name: router\n", '  name: router\n  description: "Routes\u2028tickets"\n')
    code, lines = _validate(_repo(tmp_path, spec), monkeypatch, capsys)
    assert code == 1
    assert lines[1].startswith("tuning_specs/router.yaml:5:23: yaml: expected ordinary text, got U+2028")


def test_latin1_bytes_are_located(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path)
    text = SPEC.replace("  name: router\n", "  name: router\n  description: café\n").encode("latin-1")
    (repo / "tuning_specs" / "router.yaml").write_bytes(text)
    code, lines = _validate(repo, monkeypatch, capsys)
    assert code == 1
    assert lines[1].startswith("tuning_specs/router.yaml:5:19: document: expected UTF-8 text, got the byte 0xe9")


def test_spec_problems_do_not_hide_another_specs_dataset_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path, SPEC.replace("epochs: 1", "epochs: 0"))
    (repo / "tuning_specs" / "datasets" / "bad.jsonl").write_text('{"contents": [{"role": "User", "parts": []}]}\n')
    other = SPEC.replace("name: router", "name: other").replace("datasets/router/train.jsonl", "datasets/bad.jsonl")
    (repo / "tuning_specs" / "other.yaml").write_text(other)
    code, lines = _validate(repo, monkeypatch, capsys)
    assert code == 1
    assert any(line.startswith("tuning_specs/router.yaml:8:13: spec.hyperparameters.epochs") for line in lines)
    assert any('Roles are lower-case: write "user".' in line for line in lines), lines


def test_a_wrong_api_version_hides_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = SPEC.replace("tuneform/v1", "tuneform/v1beta").replace("train.jsonl", "missing.jsonl")
    code, lines = _validate(_repo(tmp_path, spec), monkeypatch, capsys)
    assert code == 1
    assert [line.split(": ", 2)[1] for line in lines[1:]] == ["apiVersion", "spec.dataset.train"]


def test_the_learning_rate_fix_names_the_target_that_swaps_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = (
        SPEC.replace("smollm2-135m-instruct", "gemini-3.5-flash").replace(
            "learningRate: 0.0002", "learningRateMultiplier: 2.0"
        )
        + "  targets:\n    local:\n      baseModel: smollm2-135m-instruct\n"
    )
    repo = _repo(tmp_path, spec)
    code, lines = _validate(repo, monkeypatch, capsys)
    assert code == 1
    assert lines[1].endswith(
        "Add `targets: {local: {hyperparameters: {learningRate: 0.0002}}}`: a target's own learning-rate knob "
        "replaces the spec's."
    )
    fixed = spec + "      hyperparameters: {learningRate: 0.0002}\n"
    (repo / "tuning_specs" / "router.yaml").write_text(fixed)
    assert _validate(repo, monkeypatch, capsys)[0] == 0


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("datasets/loop.jsonl", "expected a readable file path"),
        ("datasets/" + "a" * 300 + ".jsonl", "expected a readable file path"),
        ('"datasets/a\\0b.jsonl"', "which holds a NUL character"),
        ("datasets/router", "which is a directory"),
        ("datasets/router/train.jsonl/x.jsonl", "expected a readable file path"),
    ],
)
def test_odd_dataset_paths_are_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], written: str, expected: str
) -> None:
    repo = _repo(tmp_path, SPEC.replace("datasets/router/train.jsonl", written))
    os.symlink("loop.jsonl", repo / "tuning_specs" / "datasets" / "loop.jsonl")
    code, lines = _validate(repo, monkeypatch, capsys)
    assert code == 1
    assert lines[1].startswith("tuning_specs/router.yaml:11:12: spec.dataset.train: ") and expected in lines[1]


def test_a_corrupt_local_model_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path, SPEC.replace("smollm2-135m-instruct", "../models/fake.gguf"))
    (repo / "models").mkdir()
    (repo / "models" / "fake.gguf").write_text("garbage")
    code, lines = _validate(repo, monkeypatch, capsys)
    assert code == 1
    assert "does not start with the GGUF magic bytes" in lines[1]


def test_capped_problems_are_counted_in_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path)
    (repo / "tuning_specs" / "datasets" / "router" / "train.jsonl").write_text("not json\n" * 150)
    code, lines = _validate(repo, monkeypatch, capsys)
    assert code == 1
    assert lines[0] == "150 problems in 1 file:"
    assert lines[-1].endswith("... and 50 more problems")


def test_spec_files_are_found_whatever_the_case_of_their_extension(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path, name="Router.YAML")
    assert _validate(repo, monkeypatch, capsys) == (0, [])
    (repo / "empty").mkdir()
    monkeypatch.chdir(repo)
    assert cli.main(["validate", "empty"]) == cli.EXIT_PROBLEMS
    assert "expected spec files (*.yaml, *.yml) in empty, got none" in capsys.readouterr().err


STACK = "config:\n  tuneform:target: vertex\n  tuneform:region: us-central1\n"


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        (STACK.replace("us-central1", "[us-central1"), "stacks/Pulumi.dev.yaml:4:1: yaml: expected valid YAML"),
        (
            "config:\n\ttuneform:target: vertex\n",
            "stacks/Pulumi.dev.yaml:2:1: yaml: expected valid YAML, got a syntax",
        ),
        (STACK + "---\nconfig: {}\n", "stacks/Pulumi.dev.yaml:5:1: document: expected one YAML document"),
        (STACK + "# caf\xe9\n", "stacks/Pulumi.dev.yaml:4:6: document: expected UTF-8 text"),
        (
            STACK.replace("tuneform:region", "tuneform:regoin"),
            "stacks/Pulumi.dev.yaml:3:3: config.tuneform:regoin: expected a tuneform setting (target, project, ",
        ),
        (
            STACK.replace("tuneform:region: us-central1", "gcp:region: us-east1"),
            "stacks/Pulumi.dev.yaml:3:15: config.gcp:region: expected a region where gemini-3.5-flash can be tuned",
        ),
        (
            STACK.replace("vertex", "Vertex"),
            "stacks/Pulumi.dev.yaml:2:20: config.tuneform:target: expected `local` or",
        ),
        (STACK + "  tuneform:trainingPrices: {gemini-3.5-flash: .nan}\n", "expected a number of USD per 1M"),
        (STACK + "  tuneform:maxTrainingCost: .nan\n", "config.tuneform:maxTrainingCost: expected an amount in USD"),
        (STACK + "  tuneform:endpointPort: http\n", "config.tuneform:endpointPort: expected a port from 1 to 65535"),
    ],
)
def test_stack_files_written_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stack: str, expected: str
) -> None:
    spec = SPEC.replace("smollm2-135m-instruct", "gemini-3.5-flash").replace(
        "learningRate: 0.0002", "learningRateMultiplier: 1.0"
    )
    repo = _repo(tmp_path, spec, stack=stack)
    if "caf\xe9" in stack:
        (repo / "stacks" / "Pulumi.dev.yaml").write_bytes(stack.encode("latin-1"))
    code, lines = _validate(repo, monkeypatch, capsys, "--stack", "dev")
    assert code == 1
    assert any(expected in line for line in lines), lines


def test_stack_problems_show_even_when_a_spec_is_invalid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path, SPEC.replace("epochs: 1", "epochs: 0"), stack=STACK.replace("vertex", "gcp"))
    code, lines = _validate(repo, monkeypatch, capsys, "--stack", "dev")
    assert code == 1
    assert sorted(line.split(": ", 2)[1] for line in lines[1:]) == [
        "config.tuneform:target",
        "spec.hyperparameters.epochs",
    ]


def test_secret_settings_are_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = STACK.replace("us-central1", "\n    secure: AAABAKx")
    spec = SPEC.replace("smollm2-135m-instruct", "gemini-3.5-flash").replace(
        "learningRate: 0.0002", "learningRateMultiplier: 1.0"
    )
    assert _validate(_repo(tmp_path, spec, stack=stack), monkeypatch, capsys, "--stack", "dev")[0] == 0


def test_a_today_that_is_not_a_date_is_the_users_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TUNEFORM_TODAY", "tomorrow")
    code, lines = _validate(_repo(tmp_path), monkeypatch, capsys)
    assert (code, lines) == (1, ["tuneform: $TUNEFORM_TODAY: expected a date YYYY-MM-DD, got 'tomorrow'. Unset it."])


def test_a_dataset_path_written_with_dot_slash_is_the_same_dataset(tmp_path: Path) -> None:
    from tuneform.prepare import prepare

    sources = []
    for written in ("datasets/router/train.jsonl", "./datasets/router/train.jsonl"):
        repo = _repo(tmp_path / written.replace("/", "_"), SPEC.replace("datasets/router/train.jsonl", written))
        (model,) = prepare(repo, "local")
        sources.append(model.train.source)
    assert sources == ["datasets/router/train.jsonl"] * 2


def test_labels_leave_room_and_names_for_tuneforms_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GCP takes at most 64 labels on a resource, and tuneform sets 6 of its own (managed-by, tuneform-*).
    many = ", ".join(f"l{i}: x" for i in range(60))
    spec = SPEC.replace("  name: router\n", f"  name: router\n  labels: {{managed-by: me, {many}}}\n")
    code, lines = _validate(_repo(tmp_path, spec), monkeypatch, capsys)
    assert code == 1
    assert any("expected at most 58 labels, got 61" in line for line in lines), lines
    assert any("metadata.labels.managed-by: expected a label key of your own" in line for line in lines), lines


def test_a_gs_training_set_has_unknown_tokens_and_its_uri_names_the_run(tmp_path: Path) -> None:
    from tuneform.prepare import prepare

    spec = SPEC.replace("smollm2-135m-instruct", "gemini-3.5-flash").replace(
        "learningRate: 0.0002", "learningRateMultiplier: 1.0"
    )
    prepared = []
    for uri in ("gs://bkt-a/team/tickets-2026-10.jsonl", "gs://bkt-a/team/tickets-2026-11.jsonl"):
        repo = _repo(tmp_path / uri.rsplit("/", 1)[1], spec.replace("datasets/router/train.jsonl", uri))
        (model,) = prepare(repo, "vertex", prices={"gemini-3.5-flash": 5.0})
        prepared.append(model)
    assert prepared[0].spec_hash != prepared[1].spec_hash
    assert [(m.training_tokens, m.estimated_cost) for m in prepared] == [(0, None), (0, None)]


def test_epochs_left_to_vertex_are_an_assumption(tmp_path: Path) -> None:
    from tuneform.prepare import prepare

    gemini = SPEC.replace("smollm2-135m-instruct", "gemini-3.5-flash").replace(
        "learningRate: 0.0002", "learningRateMultiplier: 1.0"
    )
    (chosen,) = prepare(_repo(tmp_path / "set", gemini), "vertex")
    (left,) = prepare(_repo(tmp_path / "left", gemini.replace("    epochs: 1\n", "")), "vertex")
    (local,) = prepare(_repo(tmp_path / "local", SPEC.replace("    epochs: 1\n", "")), "local")
    assert (chosen.epochs_assumed, left.epochs_assumed, local.epochs_assumed) == (False, True, False)
