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
    "region",
    "remoteData",
)
IN_PLACE_INPUTS = ("description", "labels")

_ADDED_LATER = ("region", "remoteData")
"""Training inputs a job created before they existed does not record: compared once both sides have them, so
upgrading tuneform re-tunes nothing."""


def _over_cap(news: dict[str, Any], limit: float) -> str | None:
    """Why a new run may not start under a cost cap of ``limit`` USD, or ``None`` when it may."""
    cap = f"{news['name']}: tuneform:maxTrainingCost is ${limit:,.2f}, but"
    remove = "or remove the cap with `pulumi config rm tuneform:maxTrainingCost`."
    cost, tokens = news.get("estimatedCost"), news.get("estimatedTrainingTokens", 0)
    if str(news.get("tokenMethod", "")).startswith("unknown"):
        return (
            f"{cap} the training data is not in the repository (a gs:// dataset), so its tokens and the run's cost "
            f"cannot be counted here. Keep the dataset in the repository (tuneform uploads it), {remove}"
        )
    if news.get("epochsAssumed"):
        return (
            f"{cap} the spec leaves epochs to Vertex AI, which chooses them from the dataset, so the plan's "
            f"assumption bounds nothing. Set `spec.hyperparameters.epochs`, {remove}"
        )
    if cost is None:
        return (
            f"{cap} the price of tuning {news['baseModel']} is not known, so the cost of {tokens:,} training tokens "
            "cannot be checked against it. Set the price you pay per 1M training tokens with `pulumi config set "
            f"--path 'tuneform:trainingPrices[\"{news['baseModel']}\"]' <usd>` (see Google's Vertex AI pricing "
            f"page), {remove}"
        )
    if float(cost) > limit:
        return (
            f"{news['name']}: estimated training cost ${float(cost):,.2f} ({tokens:,} training tokens) exceeds the "
            f"stack's maxTrainingCost ${limit:,.2f}. Lower epochs or the dataset size, or raise it with "
            "`pulumi config set tuneform:maxTrainingCost <usd>`."
        )
    return None


def replaced_by(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    """The training inputs whose change makes a new run (what ``diff`` replaces on)."""
    return [
        key
        for key in TRAINING_INPUTS
        if olds.get(key) != news.get(key) and not (key in _ADDED_LATER and key not in olds)
    ]


class TuningJobProvider(ResourceProvider):
    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """Refuse, at preview time, a new run whose cost exceeds the stack's ``maxTrainingCost`` or is unknown.

        A cap that an unknown figure lets through would be worse than none: with ``maxTrainingCost`` set, a run whose
        price, tokens (a gs:// dataset) or epochs (left to Vertex AI) are not known is refused, saying what to set.
        """
        limit = news.get("maxTrainingCost")
        rerun = not _olds or bool(replaced_by(_olds, news))
        if rerun and limit is not None and not news.get("adopt"):
            refused = _over_cap(news, float(limit))
            if refused is not None:
                return CheckResult(news, [CheckFailure("estimatedCost", refused)])
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
        return diff_inputs(olds, news, replace_on=tuple(replaced_by(olds, news)), update_on=IN_PLACE_INPUTS)

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
        remote_data: list[str] | None = None,
        epochs_assumed: bool | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        # The inputs cross to the provider under their camelCase names: the one mapping of this boundary, and
        # the names the policy pack and `pulumi preview` show.
        arguments = {key: value for key, value in locals().items() if key not in _NOT_INPUTS}
        props = {_camel(key): value for key, value in arguments.items()}
        unwrap_pickler_patch()
        super().__init__(TuningJobProvider(settings), resource_name, {**props, **dict.fromkeys(_OUTCOME_KEYS)}, opts)


_NOT_INPUTS = ("self", "resource_name", "settings", "opts", "__class__")
