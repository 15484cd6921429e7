"""The spec loader on real files: shipped examples, target resolution, merge rules, locations, repository bounds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tuneform import catalogue
from tuneform.spec import Problem, SpecErrors, find_repo_root, find_spec_files, load_specs, resolve
from tuneform.spec.schema import schema

REPO = Path(__file__).resolve().parents[1]

TRAIN_ROW = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "yo"}]}]}


def _repo(tmp_path: Path, spec: str, name: str = "model.yaml") -> Path:
    """A throwaway repository with one spec under tuning_specs/ and a small dataset beside it."""
    (tmp_path / "Pulumi.yaml").write_text("name: t\nruntime: python\n")
    data = tmp_path / "tuning_specs" / "datasets" / "m"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text(json.dumps(TRAIN_ROW) + "\n")
    spec_file = tmp_path / "tuning_specs" / name
    spec_file.write_text(spec)
    return spec_file


BASE = """\
apiVersion: tuneform/v1
kind: TunedModel
metadata:
  name: m
spec:
  baseModel: gemini-3.5-flash
  dataset:
    train: datasets/m/train.jsonl
"""


def _problems(paths: list[Path], **kwargs: object) -> list[str]:
    with pytest.raises(SpecErrors) as caught:
        load_specs(paths, **kwargs)  # type: ignore[arg-type]
    return [str(problem) for problem in caught.value.problems]


def test_shipped_examples_load_and_resolve_on_both_targets() -> None:
    files = find_spec_files(REPO)
    assert {f.name for f in files} >= {"ticket-router.yaml", "invoice-fields.yaml"}
    docs = {doc.name: doc for doc in load_specs(files)}

    router_local = resolve(docs["ticket-router"], "local")
    assert router_local.base_model == "smollm2-135m-instruct"
    # The override's learningRate replaces the Gemini learningRateMultiplier instead of colliding with it.
    assert router_local.hyperparameters.learning_rate == 0.002
    assert (router_local.adapter_size, router_local.hyperparameters.epochs) == (8, 1)
    assert router_local.hyperparameters.learning_rate_multiplier is None
    assert router_local.dataset.train_path == str(REPO / "tuning_specs/datasets/ticket-router/train.jsonl")

    router_vertex = resolve(docs["ticket-router"], "vertex")
    assert (router_vertex.base_model, router_vertex.adapter_size) == ("gemini-3.1-flash-lite", 4)
    assert router_vertex.hyperparameters.learning_rate_multiplier == 1.0
    assert router_vertex.labels == {"team": "support"}

    invoice = resolve(docs["invoice-fields"], "local")
    assert invoice.dataset.format == "openai-chat"
    assert invoice.lora is not None and invoice.lora.target_modules == ("q_proj", "v_proj")
    assert resolve(docs["invoice-fields"], "vertex").lora is None


def test_shipped_examples_point_editors_at_the_schema() -> None:
    for path in find_spec_files(REPO):
        first = path.read_text().splitlines()[0]
        target = first.removeprefix("# yaml-language-server: $schema=")
        assert target != first, path
        assert (path.parent / target).resolve() == REPO / "provider/tuneform/spec/tuneform-v1.schema.json"


def test_every_schema_property_is_described() -> None:
    missing = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if "description" not in sub and "$ref" not in sub:
                    missing.append(f"{where}.{name}")
                walk(sub, f"{where}.{name}")
            for key in ("$defs", "additionalProperties", "items"):
                child = node.get(key)
                if key == "$defs" and isinstance(child, dict):
                    for name, sub in child.items():
                        if "description" not in sub:
                            missing.append(f"$defs.{name}")
                        walk(sub, f"$defs.{name}")
                elif isinstance(child, dict):
                    walk(child, f"{where}.{key}")

    walk(schema(), "")
    assert missing == []


def test_find_spec_files_skips_datasets_and_takes_yml(tmp_path: Path) -> None:
    spec = _repo(tmp_path, BASE)
    (spec.parent / "sub").mkdir()
    (spec.parent / "sub" / "other.yml").write_text(BASE)
    (spec.parent / "datasets" / "m" / "notes.yaml").write_text("not a spec\n")
    found = find_spec_files(tmp_path)
    assert found == [spec, spec.parent / "sub" / "other.yml"]
    assert find_spec_files(tmp_path / "tuning_specs") == found


def test_repo_root_is_the_nearest_parent_with_pulumi_yaml(tmp_path: Path) -> None:
    spec = _repo(tmp_path, BASE)
    assert find_repo_root(spec) == tmp_path


def test_unavailable_target_is_only_an_error_when_asked_for(tmp_path: Path) -> None:
    spec = _repo(tmp_path, BASE)
    (doc,) = load_specs([spec])
    assert list(doc.resolved) == ["vertex"]
    with pytest.raises(SpecErrors) as caught:
        resolve(doc, "local")
    (problem,) = caught.value.problems
    assert (problem.line, problem.column, problem.path) == (6, 14, "spec.baseModel")
    assert "Add `targets: {local: {baseModel: smollm2-135m-instruct}}`" in problem.message


def test_override_merges_mappings_and_replaces_scalars_and_lists(tmp_path: Path) -> None:
    text = BASE.replace("gemini-3.5-flash", "smollm2-135m-instruct") + (
        "  hyperparameters: {epochs: 2, batchSize: 4}\n"
        "  targets:\n"
        "    local:\n"
        "      hyperparameters: {epochs: 5}\n"
        "      lora: {rank: 4, targetModules: [q_proj]}\n"
    )
    (doc,) = load_specs([_repo(tmp_path, text)])
    local = resolve(doc, "local")
    assert (local.hyperparameters.epochs, local.hyperparameters.batch_size) == (5, 4)
    assert local.lora is not None and local.lora.target_modules == ("q_proj",)
    assert local.adapter_size == catalogue.get("smollm2-135m-instruct").default_adapter_size  # type: ignore[union-attr]


def test_problems_from_overrides_point_at_the_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = BASE + "  targets:\n    local:\n      baseModel: smollm2-135m-instruct\n      adapterSize: 3\n"
    spec = _repo(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    assert _problems([spec]) == [
        "tuning_specs/model.yaml:12:20: spec.targets.local.adapterSize: expected one of 1, 2, 4, 8, 16, 32 for "
        "smollm2-135m-instruct, got 3. Set `adapterSize: 4`."
    ]


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    spec = _repo(tmp_path, BASE.replace("name: m", "name: M"))
    other = spec.parent / "other.yaml"
    other.write_text(BASE.replace("gemini-3.5-flash", "gemini-9"))
    with pytest.raises(SpecErrors) as caught:
        load_specs([spec, other])
    assert len(caught.value.problems) == 2
    assert str(caught.value).splitlines()[0] == "2 problems in 2 files:"


def test_symlinks_inside_the_repository_are_fine_and_outside_ones_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "train.jsonl").write_text(json.dumps(TRAIN_ROW) + "\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    spec = _repo(repo, BASE.replace("datasets/m/train.jsonl", "datasets/inside.jsonl"))
    os.symlink(spec.parent / "datasets" / "m" / "train.jsonl", spec.parent / "datasets" / "inside.jsonl")
    (doc,) = load_specs([spec])
    assert doc.resolved["vertex"].dataset.train_path == str(spec.parent / "datasets" / "m" / "train.jsonl")

    # A symlinked directory escapes as surely as a symlinked file.
    os.symlink(outside, spec.parent / "datasets" / "escape")
    spec.write_text(BASE.replace("datasets/m/train.jsonl", "datasets/escape/train.jsonl"))
    (problem,) = _problems([spec])
    assert f"a symlink to {outside / 'train.jsonl'} outside it" in problem


def test_explicit_repo_root_bounds_dataset_paths(tmp_path: Path) -> None:
    spec = _repo(tmp_path, BASE)
    (tmp_path / "elsewhere").mkdir()
    (problem,) = _problems([spec], repo_root=tmp_path / "elsewhere")
    assert "expected a path that stays inside the repository" in problem


def test_local_model_directory_as_base_model(tmp_path: Path) -> None:
    text = BASE + "  targets:\n    local:\n      baseModel: ../models/tiny\n"
    spec = _repo(tmp_path, text)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "config.json").write_text('{"model_type": "llama"}')
    (doc,) = load_specs([spec])
    local = resolve(doc, "local")
    assert local.base_model == str(tmp_path / "models" / "tiny")
    info = catalogue.get_model(local.base_model)
    assert info is not None and info.price_per_1m_training_tokens == 0 and "full" in info.modes
    assert catalogue.limits_for(local.base_model, "train").modalities == frozenset({"text"})
    assert resolve(doc, "vertex").base_model == "gemini-3.5-flash"


def test_problem_format_and_header() -> None:
    problem = Problem("a.yaml", 3, 5, "spec.mode", 'expected one of adapter, full, got "x".')
    assert str(problem) == 'a.yaml:3:5: spec.mode: expected one of adapter, full, got "x".'
    errors = SpecErrors([problem, problem])
    assert str(errors) == '1 problem in 1 file:\na.yaml:3:5: spec.mode: expected one of adapter, full, got "x".'


def test_catalogue_figures_carry_sources_and_unconfirmed_prices_stay_null() -> None:
    models = catalogue.all_models()
    assert {"gemini-3.5-flash", "smollm2-135m-instruct", "meta/llama3_1@llama-3.1-8b-instruct"} <= set(models)
    for info in models.values():
        assert all(fact.source for fact in info.facts.values()), info.id
        if info.provider == "vertex":
            assert info.price.value is None and info.price.unconfirmed, info.id
    local = models["smollm2-135m-instruct"]
    assert (local.provider, local.modes, local.learning_rate_knob, local.price.value) == (
        "local",
        ("adapter", "full"),
        "learningRate",
        0,
    )
    path = catalogue.local_file("smollm2-135m-instruct")
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    limits = catalogue.limits_for("gemini-3.5-flash", "validation")
    assert (limits.max_examples, limits.max_tokens_per_example) == (5000, 131072)
    assert "image" in limits.modalities
    assert catalogue.limits_for("meta/llama3_1@llama-3.1-8b-instruct", "train").modalities == frozenset({"text"})


def test_catalogue_limits_convert_to_the_dataset_checkers_type() -> None:
    from dataclasses import asdict

    from tuneform.datasets.check import MODALITIES, DatasetLimits

    limits = catalogue.limits_for("gemini-3.5-flash", "train")
    assert DatasetLimits(**asdict(limits)).max_file_bytes == 1_000_000_000
    # Training-set sizes per model and modality (V-sft): 3.x 10M text-only / 300K multimodal, the 2.5-era page 1M.
    assert (limits.max_examples, limits.max_examples_multimodal) == (10_000_000, 300_000)
    older = catalogue.limits_for("gemini-2.5-flash", "train")
    assert (older.max_examples, older.max_examples_multimodal) == (1_000_000, 300_000)
    assert catalogue.limits_for("gemini-3.5-flash", "validation").max_examples_multimodal is None
    for info in catalogue.all_models().values():
        assert info.modalities <= MODALITIES, info.id


def test_docs_describe_every_schema_field() -> None:
    docs = (REPO / "docs" / "spec.md").read_text()
    defs = schema()["$defs"]
    names: set[str] = set()

    def walk(node: dict[str, object]) -> None:
        node = defs[str(node["$ref"]).rsplit("/", 1)[1]] if "$ref" in node else node
        for name, sub in dict(node.get("properties", {})).items():  # type: ignore[call-overload]
            if name not in names:
                names.add(name)
                walk(sub)

    walk(schema())
    walk(defs["lora"])
    missing = sorted(name for name in names if f"{name}` |" not in docs)
    assert missing == []


def test_mangled_specs_never_escape_as_anything_but_spec_errors(tmp_path: Path) -> None:
    """Random edits of the corpus files: every outcome is a list of problems or a loaded spec, never a crash."""
    import random

    corpus = REPO / "tests" / "corpus" / "specs"
    seeds = [path.read_text() for path in sorted(corpus.glob("*.yaml"))]
    pieces = ["", " ", ":", "- ", "{", "}", "[", "]", "null", "~", "0", "-1", "true", "\t", "'", '"', "&a", "*a", "? "]
    pieces += ["\n", "---\n", "full", "gs://b/x.jsonl", "../../x.jsonl", "smollm2-135m-instruct", "!!str ", "1e9"]
    rng = random.Random(20261125)
    target = tmp_path / "mangled.yaml"
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(400):
        text = rng.choice(seeds)
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, len(text))
            cut = rng.randint(0, 8) if rng.random() < 0.5 else 0
            text = text[:at] + (rng.choice(pieces) if cut == 0 else "") + text[at + cut :]
        target.write_text(text)
        try:
            load_specs([target], repo_root=corpus)
            outcomes["loaded"] += 1
        except SpecErrors as errors:
            assert errors.problems and all(p.line >= 1 and p.column >= 1 for p in errors.problems)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 300


def test_shipped_examples_and_their_datasets_pass_on_both_targets() -> None:
    from tuneform.cli import run_validation

    result = run_validation(find_spec_files(REPO), target="all")
    assert [str(problem) for problem in result.problems] == []
    assert (len(result.docs), result.datasets) == (2, 4)
    assert all(summary.examples > 0 for summary in result.summaries.values())


# --- hostile and odd files (the memory-bounded cases are in test_hostile_input.py) --------------------------------


def test_a_fifo_spec_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    problems = _problems([fifo], repo_root=tmp_path)
    assert len(problems) == 1
    assert problems[0].endswith(
        "pipe.yaml:1:1: document: expected a regular spec file, got a FIFO (named pipe). Name the .yaml file."
    )


@pytest.mark.parametrize(("kind", "make"), [("a directory", Path.mkdir), ("a FIFO (named pipe)", os.mkfifo)])
def test_a_dataset_path_that_is_a_directory_or_fifo_says_what_it_is(tmp_path: Path, kind: str, make: object) -> None:
    spec = _repo(tmp_path, BASE.replace("datasets/m/train.jsonl", "datasets/m/odd.jsonl"))
    make(tmp_path / "tuning_specs" / "datasets" / "m" / "odd.jsonl")  # type: ignore[operator]
    problems = _problems([spec], repo_root=tmp_path)
    assert [problem.split(": ", 2)[2] for problem in problems] == [
        f'expected a regular file, got "datasets/m/odd.jsonl", which is {kind} (looked at '
        f"{tmp_path / 'tuning_specs/datasets/m/odd.jsonl'}). Point it at the .jsonl file itself."
    ]


def test_spec_errors_list_100_problems_per_file_and_count_the_rest() -> None:
    problems = [Problem("a.yaml", line, 1, "spec", "expected x, got y.") for line in range(1, 151)]
    problems += [Problem("b.yaml", 1, 1, "spec", "expected x, got y.")]
    listed = SpecErrors(problems).problems
    assert [str(problem) for problem in listed[99:]] == [
        "a.yaml:100:1: spec: expected x, got y.",
        "a.yaml: ... and 50 more problems",
        "b.yaml:1:1: spec: expected x, got y.",
    ]
