"""``TuningJob``: one supervised tuning run (adapter or full) that yields a new version of a tuned model.

Jobs are immutable: any change to a training input replaces the resource, and ``replaces`` names the inputs that
changed, which is what ``pulumi preview`` shows a reviewer. Description and labels update in place. ``create`` waits
for a terminal state with tuneform's own deadline (Pulumi's custom timeouts never reach dynamic providers) and is
idempotent: the backend first adopts a run carrying the same spec hash, so a killed ``pulumi up`` (which leaves a
pending create and no id in state) never starts a second paid job.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from tuneform.resources._provider import (
    BackendSettings,
    build_backend,
    diff_inputs,
    progress_printer,
    unwrap_pickler_patch,
    whole_numbers,
)
from tuneform.spec.model import camel as _camel

_COUNTS = ("trainExamples", "trainTokens", "validationExamples", "testExamples", "estimatedTrainingTokens")

TRAINING_INPUTS = (
    "baseModel",
    "mode",
    "adapterSize",
    "hyperparameters",
    "lora",
    "trainSha256",
    "validationSha256",
    "target",
    "continueFrom",
    "intermediateCheckpoints",
    "generation",
)
IN_PLACE_INPUTS = ("description", "labels")


class TuningJobProvider(ResourceProvider):
    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """Refuse, at preview time, a new run whose cost exceeds the stack's ``maxTrainingCost`` or is unknown.

        A cap that an unknown price lets through would be worse than none: with ``maxTrainingCost`` set, a run whose
        price per token is not known is refused with how to set the price.
        """
        limit, cost = news.get("maxTrainingCost"), news.get("estimatedCost")
        rerun = not _olds or _olds.get("specHash") != news.get("specHash")
        if rerun and limit is not None and cost is None and not news.get("adopt"):
            reason = (
                f"{news['name']}: tuneform:maxTrainingCost is ${float(limit):,.2f}, but the price of tuning "
                f"{news['baseModel']} is not known, so the cost of {news.get('estimatedTrainingTokens', 0):,} "
                "training tokens cannot be checked against it. Set the price you pay per 1M training tokens with "
                f"`pulumi config set --path 'tuneform:trainingPrices[\"{news['baseModel']}\"]' <usd>` (see Google's "
                "Vertex AI pricing page), or remove the cap with `pulumi config rm tuneform:maxTrainingCost`."
            )
            return CheckResult(news, [CheckFailure("estimatedCost", reason)])
        if rerun and limit is not None and cost is not None and float(cost) > float(limit):
            reason = (
                f"{news['name']}: estimated training cost ${float(cost):,.2f} "
                f"({news.get('estimatedTrainingTokens', 0):,} training tokens) exceeds the stack's maxTrainingCost "
                f"${float(limit):,.2f}. Lower epochs or the dataset size, or raise it with "
                f"`pulumi config set tuneform:maxTrainingCost <usd>`."
            )
            return CheckResult(news, [CheckFailure("estimatedCost", reason)])
        return CheckResult(news, [])

    def create(self, props: dict[str, Any]) -> CreateResult:
        from tuneform.backends.base import DatasetArtifact, TuningRequest

        props = whole_numbers(props, _COUNTS)
        props["hyperparameters"] = whole_numbers(dict(props.get("hyperparameters") or {}), ("epochs", "batchSize"))

        validation = None
        if props.get("validationUri"):
            validation = DatasetArtifact(
                props["validationSha256"], props["validationUri"], props["validationExamples"], 0
            )
        request = TuningRequest(
            name=props["name"],
            spec_hash=props["specHash"],
            base_model=props["baseModel"],
            mode=props["mode"],
            adapter_size=props.get("adapterSize"),
            hyperparameters=dict(props.get("hyperparameters") or {}),
            train=DatasetArtifact(
                props["trainSha256"], props["trainUri"], props["trainExamples"], props["trainTokens"]
            ),
            validation=validation,
            description=props.get("description", ""),
            labels=dict(props.get("labels") or {}),
            lora=props.get("lora"),
            adopt=props.get("adopt"),
            continue_from=props.get("continueFrom"),
            intermediate_checkpoints=bool(props.get("intermediateCheckpoints")),
            test=DatasetArtifact(props["testSha256"], props["testUri"], props.get("testExamples") or 0, 0)
            if props.get("testUri")
            else None,
            generation=props.get("generation"),
            weights_hash=props.get("weightsHash") or "",
        )
        emit = progress_printer(props["name"])
        emit(
            f"tuning {props['baseModel']} ({props['mode']}) on {props['trainExamples']} examples, "
            f"~{props.get('estimatedTrainingTokens', 0):,} training tokens"
        )
        outcome = build_backend(self.settings).tune(request, emit)
        emit(f"{outcome.state}: {outcome.model}" + (" (reused, no training)" if outcome.reused else ""))
        return CreateResult(id_=outcome.job_id, outs={**props, **_outcome_outputs(outcome)})

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(olds, news, replace_on=TRAINING_INPUTS, update_on=IN_PLACE_INPUTS)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        build_backend(self.settings).update_metadata(id_, news.get("description", ""), dict(news.get("labels") or {}))
        computed = {key: olds[key] for key in _OUTCOME_KEYS if key in olds}
        return UpdateResult(outs={**news, **computed})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        outcome = build_backend(self.settings).tuning_status(id_)
        if outcome is None:
            return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs={**props, **_outcome_outputs(outcome)})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        # A running job is cancelled; a finished one is history (the tuning API has no delete, and the local
        # registry keeps every version until retention removes it).
        build_backend(self.settings).cancel(id_)


_OUTCOME_KEYS = ("jobId", "state", "modelName", "version", "metrics", "tunedEndpoint", "reused")


def _outcome_outputs(outcome: Any) -> dict[str, Any]:
    data = asdict(outcome)
    return {
        "jobId": data["job_id"],
        "state": data["state"],
        "modelName": data["model"],
        "version": data["version"],
        "metrics": data["metrics"],
        "tunedEndpoint": data["endpoint"],
        "reused": data["reused"],
    }


class TuningJob(Resource, module="tuneform", name="TuningJob"):
    """A supervised tuning run of one tuned model."""

    jobId: pulumi.Output[str]
    state: pulumi.Output[str]
    modelName: pulumi.Output[str]
    version: pulumi.Output[int]
    metrics: pulumi.Output[dict]
    tunedEndpoint: pulumi.Output[str]
    reused: pulumi.Output[bool]

    def __init__(
        self,
        resource_name: str,
        settings: BackendSettings,
        *,
        name: str,
        target: str,
        spec_hash: str,
        base_model: str,
        mode: str,
        adapter_size: int | None,
        hyperparameters: dict[str, Any],
        lora: dict[str, Any] | None,
        train_sha256: str,
        train_uri: pulumi.Input[str],
        train_examples: int,
        train_tokens: int,
        validation_sha256: str | None,
        validation_uri: pulumi.Input[str] | None,
        validation_examples: int,
        description: str = "",
        labels: dict[str, str] | None = None,
        adopt: str | None = None,
        continue_from: str | None = None,
        intermediate_checkpoints: bool | None = None,
        test_sha256: str | None = None,
        test_uri: str | None = None,
        test_examples: int | None = None,
        generation: dict[str, Any] | None = None,
        estimated_training_tokens: int = 0,
        token_method: str = "",
        estimated_cost: float | None = None,
        max_training_cost: float | None = None,
        region: str | None = None,
        weights_hash: str = "",
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        # The inputs cross to the provider under their camelCase names: the one mapping of this boundary, and
        # the names the policy pack and `pulumi preview` show.
        arguments = {key: value for key, value in locals().items() if key not in _NOT_INPUTS}
        props = {_camel(key): value for key, value in arguments.items()}
        unwrap_pickler_patch()
        super().__init__(TuningJobProvider(settings), resource_name, {**props, **dict.fromkeys(_OUTCOME_KEYS)}, opts)


_NOT_INPUTS = ("self", "resource_name", "settings", "opts", "__class__")
