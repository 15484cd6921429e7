"""``build_plan`` and its renderers: tokens x epochs, the catalogue's prices, the documented epoch defaults."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuneform.plan import PRICE_UNKNOWN, build_plan, render_markdown, render_text
from tuneform.spec import load_specs

ROW = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "yo"}]}]}


@dataclass(frozen=True)
class Summary:
    """The fields of ``DatasetSummary`` that a plan reads."""

    examples: int
    tokens_total: int
    token_method: str = "estimate:test"


def _spec(name: str, base: str, extra: str = "") -> str:
    return (
        f"apiVersion: tuneform/v1\nkind: TunedModel\nmetadata: {{name: {name}}}\n"
        f"spec:\n  baseModel: {base}\n{extra}  dataset:\n    train: datasets/train.jsonl\n"
        "    validation: datasets/validation.jsonl\n"
        "  targets:\n    local: {baseModel: smollm2-135m-instruct}\n"
    )


def _docs(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "Pulumi.yaml").write_text("name: t\n")
    (tmp_path / "datasets").mkdir()
    for split in ("train", "validation"):
        (tmp_path / "datasets" / f"{split}.jsonl").write_text(json.dumps(ROW) + "\n")
    gemini = tmp_path / "gemini.yaml"
    gemini.write_text(_spec("router", "gemini-3.5-flash", "  adapterSize: 4\n"))
    llama = tmp_path / "llama.yaml"
    llama.write_text(_spec("extractor", "meta/llama3_1@llama-3.1-8b-instruct", "  hyperparameters: {epochs: 2}\n"))
    local_only = tmp_path / "local.yaml"
    local_only.write_text(
        _spec("tiny", "smollm2-135m-instruct").replace(
            "  targets:\n    local: {baseModel: smollm2-135m-instruct}\n", ""
        )
    )
    summaries = {
        str(tmp_path / "datasets" / "train.jsonl"): Summary(examples=300, tokens_total=12_000),
        str(tmp_path / "datasets" / "validation.jsonl"): Summary(examples=60, tokens_total=2_400),
    }
    return load_specs([gemini, llama, local_only]), summaries


def test_vertex_plan_uses_epochs_defaults_and_unknown_prices(tmp_path: Path) -> None:
    docs, summaries = _docs(tmp_path)
    plan = build_plan(docs, "vertex", summaries)
    router, extractor = plan.items
    assert (router.name, router.tunes, router.train_examples, router.validation_examples) == (
        "router",
        "an adapter of size 4",
        300,
        60,
    )
    # Gemini leaves epochs to the service: the plan assumes the catalogue's unconfirmed planEpochs and says so.
    assert (router.epochs, router.epochs_text) == (4, "auto (plan assumes 4, unconfirmed)")
    assert router.training_tokens == 48_000
    assert (router.cost, router.cost_text) == (None, PRICE_UNKNOWN)
    assert (extractor.epochs_text, extractor.training_tokens) == ("2", 24_000)
    assert extractor.tunes == "an adapter of size 16"
    assert plan.skipped == (("tiny", "its base model does not run on the vertex target"),)
    assert (plan.total_training_tokens, plan.unknown_cost) == (72_000, 2)


def test_local_plan_costs_nothing_and_uses_the_local_default_epochs(tmp_path: Path) -> None:
    docs, summaries = _docs(tmp_path)
    plan = build_plan(docs, "local", summaries)
    assert [item.name for item in plan.items] == ["router", "extractor", "tiny"]
    tiny = plan.items[2]
    assert (tiny.epochs_text, tiny.training_tokens, tiny.cost_text) == (
        "3 (default)",
        36_000,
        "$0.00 (runs on this machine)",
    )
    assert (plan.total_training_tokens, plan.total_cost, plan.unknown_cost) == (36_000 + 24_000 + 36_000, 0.0, 0)


def test_missing_summary_makes_tokens_unknown_not_zero(tmp_path: Path) -> None:
    docs, _ = _docs(tmp_path)
    plan = build_plan(docs, "local", {})
    assert all(item.training_tokens is None for item in plan.items)
    assert plan.items[0].cost_text == "unknown: dataset tokens unknown"
    assert "training tokens   unknown" in render_text(plan)


def test_renderers_show_every_model_and_the_totals(tmp_path: Path) -> None:
    docs, summaries = _docs(tmp_path)
    plan = build_plan(docs, "vertex", summaries)
    text = render_text(plan)
    assert text.startswith("Plan for the vertex target: 2 tuned models\n")
    assert "  tokens per epoch  12,000 (estimate by tuneform's documented rule, which errs high)\n" in text
    assert "skipped tiny: its base model does not run on the vertex target" in text
    assert text.rstrip().endswith(
        "Total: 2 models, 72,000 training tokens, estimated cost $0.00 + 2 models of unknown cost"
    )
    markdown = render_markdown(plan)
    rows = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert rows[0] == (
        "| `router` | `gemini-3.5-flash` | an adapter of size 4 | 300 train, 60 validation | 12,000 (estimate by "
        "tuneform's documented rule, which errs high) | auto (plan assumes 4, unconfirmed) | 48,000 | unknown: price "
        "unconfirmed |"
    )
    assert len(rows) == 2


def test_plan_and_program_agree_on_tokens_and_cost_for_each_target(tmp_path: Path) -> None:
    """`tuneform plan` and the Pulumi program (prepare) share one count and one estimate: the same figures."""
    import shutil

    from tuneform.cli import run_validation
    from tuneform.prepare import prepare
    from tuneform.spec import find_spec_files

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "tuning_specs", tmp_path / "tuning_specs")
    (tmp_path / "Pulumi.yaml").write_text("name: t\n")
    for target in ("local", "vertex"):
        validation = run_validation(find_spec_files(tmp_path / "tuning_specs"), target=target, repo_root=tmp_path)
        assert validation.problems == []
        plan = {item.name: item for item in build_plan(validation.docs, target, validation.summaries).items}
        prepared = {model.spec.name: model for model in prepare(tmp_path, target)}
        assert set(plan) == set(prepared)
        for name, model in prepared.items():
            assert plan[name].training_tokens == model.training_tokens, (target, name)
            assert plan[name].cost == model.estimated_cost, (target, name)
            assert plan[name].token_method == model.train.token_method, (target, name)
            expected = "exact:SmolLM2-135M-Instruct.Q4_1" if target == "local" else "estimate"
            assert model.train.token_method.startswith(expected), (target, name)


def test_a_local_model_given_by_path_plans_the_trainers_default_epochs(tmp_path: Path) -> None:
    from tuneform.plan import estimate_run
    from tuneform.training.trainer import TrainConfig

    docs, _ = _docs(tmp_path)
    tiny = docs[2].resolved["local"]
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    from dataclasses import replace

    by_path = replace(tiny, base_model=str(model_dir))
    run = estimate_run(by_path, 1_000)
    assert (run.epochs, run.epochs_text, run.training_tokens) == (3, "3 (default)", 3_000)
    # The plan and the trainer read the one default, the catalogue's.
    assert TrainConfig.epochs == run.epochs
