"""The policy pack with the real Pulumi CLI: each rule refuses its ruled-out change and lets an allowed one through.

One throwaway project declares tuneform's real resource classes (``TuningJob``, ``Endpoint``) with hand-written
inputs read from a JSON file, so ``pulumi preview`` needs no training: preview only checks and diffs. Each test
declares a model that breaks one rule (``bad``) next to one that keeps it (``good``) and checks that the preview
fails with exactly the rule's message for ``bad`` and says nothing about ``good``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pulumi_cli import REPO_ROOT, PulumiCLI

pytestmark = [pytest.mark.cli, pytest.mark.timeout(300)]

PACK = REPO_ROOT / "policy"

PROGRAM = '''
import inspect
import json
import os

import pulumi

from tuneform.resources._provider import BackendSettings
from tuneform.resources.endpoint import Endpoint, EndpointProvider
from tuneform.resources.tuning_job import TuningJob, _camel


class EndpointWithMetrics(Endpoint, module="tuneform", name="Endpoint"):
    """The real Endpoint resource type, with the evaluation inputs the promotion rule reads."""

    def __init__(self, name, settings, props):
        pulumi.dynamic.Resource.__init__(self, EndpointProvider(settings), name, props)


for entry in json.load(open(os.environ["TUNEFORM_POLICY_RESOURCES"])):
    settings = BackendSettings(target=entry["props"].get("target", "local"), repo_root=os.getcwd())
    if entry["kind"] == "TuningJob":
        # The resource's keyword arguments are the snake_case of its props (resources/tuning_job.py `_camel`).
        # Inputs a case leaves out are None: the policy rules only read what each case sets.
        wanted = [k for k in inspect.signature(TuningJob.__init__).parameters if k not in ("self", "resource_name",
                                                                                         "settings", "opts")]
        kwargs = {key: entry["props"].get(_camel(key)) for key in wanted}
        TuningJob(entry["props"]["name"] + "-tuning", settings, **kwargs)
    else:
        EndpointWithMetrics(entry["props"]["name"] + "-endpoint", settings, entry["props"])
'''


def job(name: str, **overrides: Any) -> dict[str, Any]:
    """A tuning job's inputs as the program declares them, within every limit of ``LIMITS``."""
    props: dict[str, Any] = {
        "name": name,
        "target": "vertex",
        "region": "us-central1",
        "baseModel": "gemini-2.5-flash",
        "mode": "adapter",
        "adapterSize": 4,
        "hyperparameters": {"epochs": 3, "learningRateMultiplier": 1.0},
        "labels": {"team": "support", "cost-center": "sup-1"},
        "estimatedTrainingTokens": 90_000,
        "estimatedCost": 0.72,
    }
    props.update(overrides)
    return {"kind": "TuningJob", "props": props}


def endpoint(name: str, **overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "name": name,
        "modelName": name,
        "traffic": {"3": 90, "4": 10},
        "versions": {"3": f"{name}@3", "4": f"{name}@4"},
        "port": None,
        "servingVersion": 3,
        "versionMetrics": {"3": {"exactMatch": 0.61}, "4": {"exactMatch": 0.74}},
    }
    props.update(overrides)
    return {"kind": "Endpoint", "props": props}


LIMITS: dict[str, dict[str, Any]] = {
    "tuneform-allowed-base-models": {"allowedBaseModels": ["gemini-2.5-flash", "smollm2-135m-instruct"]},
    "tuneform-allowed-regions": {"allowedRegions": ["us-central1", "europe-west4"]},
    "tuneform-max-epochs": {"maxEpochs": 10},
    "tuneform-max-training-tokens": {"maxTrainingTokens": 1_000_000},
    "tuneform-max-training-cost": {"maxTrainingCost": 100},
    "tuneform-required-labels": {"requiredLabels": ["team", "cost-center"]},
    "tuneform-no-full-tuning-in-production": {"production": True},
    "tuneform-promote-only-better": {"metric": "exactMatch", "minImprovement": 0.02},
}


@pytest.fixture(scope="module")
def project(pulumi_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[PulumiCLI, Path]:
    root = tmp_path_factory.mktemp("policy-project")
    (root / "Pulumi.yaml").write_text(
        f"name: policy-test\nruntime:\n  name: python\n  options:\n    virtualenv: {REPO_ROOT / '.venv'}\n"
    )
    (root / "__main__.py").write_text(PROGRAM)
    cli = PulumiCLI(root, root / "state", bin_dir=pulumi_engine)
    cli.stack_init("test")
    return cli, root


def preview(project: tuple[PulumiCLI, Path], resources: list[dict[str, Any]], config: dict[str, Any]) -> Any:
    cli, root = project
    (root / "resources.json").write_text(json.dumps(resources))
    (root / "policy-config.json").write_text(json.dumps(config))
    return cli.preview(
        "--policy-pack",
        str(PACK),
        "--policy-pack-config",
        str(root / "policy-config.json"),
        env={"TUNEFORM_POLICY_RESOURCES": str(root / "resources.json")},
        check=False,
    )


def test_allowed_changes_pass_every_rule(project: tuple[PulumiCLI, Path]) -> None:
    result = preview(project, [job("good"), endpoint("good")], LIMITS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tuneform-guardrails" in result.stdout
    assert "[mandatory]" not in result.stdout


def test_unconfigured_limits_do_not_apply(project: tuple[PulumiCLI, Path]) -> None:
    result = preview(project, [job("free", baseModel="gemini-2.5-pro", mode="full", labels={})], {})
    assert result.returncode == 0, result.stdout + result.stderr


RULES = [
    (
        "tuneform-allowed-base-models",
        job("bad", baseModel="gemini-2.5-pro"),
        "bad: spec.baseModel: expected one of gemini-2.5-flash, smollm2-135m-instruct (allowedBaseModels), got "
        "gemini-2.5-pro. Use an allowed base model, or add this one to allowedBaseModels in the stack's policy "
        "config.",
    ),
    (
        "tuneform-allowed-regions",
        job("bad", region="asia-east1"),
        "bad: tuneform:region: expected one of us-central1, europe-west4 (allowedRegions), got asia-east1. "
        "Set `pulumi config set tuneform:region us-central1` on this stack.",
    ),
    (
        "tuneform-max-epochs",
        job("bad", hyperparameters={"epochs": 12}),
        "bad: spec.hyperparameters.epochs: expected at most 10 (maxEpochs), got 12. Lower `epochs`, or raise "
        "maxEpochs in the stack's policy config.",
    ),
    (
        "tuneform-max-training-tokens",
        # The count says how it was made (the program passes tokenMethod): the same words as the plan and comment.
        job("bad", estimatedTrainingTokens=1_500_000, tokenMethod="exact:SmolLM2-135M-Instruct.Q4_1"),
        "bad: training tokens (dataset tokens x spec.hyperparameters.epochs): expected at most 1,000,000 "
        "(maxTrainingTokens), got 1,500,000 (exact, SmolLM2-135M-Instruct.Q4_1 tokenizer). Trim the dataset or "
        "lower `epochs`.",
    ),
    (
        "tuneform-max-training-cost",
        job("bad", estimatedCost=240.5, estimatedTrainingTokens=30_062_500, tokenMethod="estimate:rule"),
        "bad: estimated training cost: expected at most $100.00 (maxTrainingCost), got $240.50 for 30,062,500 "
        "training tokens (estimate by tuneform's documented rule, which errs high). Trim the dataset or lower "
        "`epochs`.",
    ),
    (
        "tuneform-required-labels",
        job("bad", labels={"team": "support"}),
        "bad: metadata.labels.cost-center: expected a value (requiredLabels: team, cost-center), got no label "
        "cost-center (labels: team: support). Add `cost-center: ...` under metadata.labels.",
    ),
    (
        "tuneform-no-full-tuning-in-production",
        job("bad", mode="full", adapterSize=None, baseModel="smollm2-135m-instruct", target="local"),
        "bad: spec.mode: expected adapter on a production stack (production: true), got full. Set `mode: adapter`, "
        "or tune fully on a non-production stack first.",
    ),
    (
        "tuneform-promote-only-better",
        endpoint("bad", versionMetrics={"3": {"exactMatch": 0.61}, "4": {"exactMatch": 0.62}}),
        "bad: spec.endpoint.traffic: expected version 4 to beat serving version 3 on exactMatch by at least 0.02 "
        "(minImprovement) before it gets traffic, got 0.62 vs 0.61 with 10% of traffic. Keep the traffic on "
        "version 3 or improve the model.",
    ),
]


@pytest.mark.parametrize(("rule", "bad", "message"), RULES, ids=[rule for rule, _, _ in RULES])
def test_rule_refuses_the_ruled_out_change(
    project: tuple[PulumiCLI, Path], rule: str, bad: dict[str, Any], message: str
) -> None:
    good = endpoint("good") if bad["kind"] == "Endpoint" else job("good")
    result = preview(project, [bad, good], {rule: LIMITS[rule]})
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"[mandatory]  {rule}" in output
    assert message in output
    assert "good:" not in output
    # The engine stops the program after the violation; the language host does so without a KeyboardInterrupt.
    assert "Traceback" not in output
