"""tuneform's guardrails: a CrossGuard policy pack over the inputs of tuneform's dynamic resources.

Each policy reads its limit from the pack's config (``--policy-pack-config policy/config.<stack>.json``, see
``config.example.json``); a policy without its limit configured does not apply. Violations name the tuned model
(``metadata.name``), the spec field, the limit and the value, in the house format
``<model>: <field>: expected <limit>, got <value>. <fix>``.

Inputs read (what ``tuneform.program`` declares):

- ``TuningJob``: ``name``, ``target``, ``baseModel``, ``mode``, ``hyperparameters.epochs``, ``labels``,
  ``estimatedTrainingTokens`` with ``tokenMethod`` (how they were counted: the same count ``tuneform plan`` and the
  review show, exact on the local target and the documented estimate on Vertex AI, so a limit never depends on
  the machine), ``estimatedCost`` and, on Vertex AI stacks, ``region``.
- ``Endpoint``: ``name``, ``traffic`` (version -> percent) and, where evaluations exist, ``versionMetrics``
  (version -> {metric: value}) and ``servingVersion`` (the version serving before this update).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from tuneform.datasets.tokens import describe_method

TUNING_JOB = "pulumi-python:dynamic/tuneform:TuningJob"
ENDPOINT = "pulumi-python:dynamic/tuneform:Endpoint"

Check = Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]]


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,}"


def _list(values: Any) -> str:
    return ", ".join(str(v) for v in values)


def allowed_base_models(props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """A tuning job's base model must be one the team allows."""
    allowed = list(config.get("allowedBaseModels") or [])
    model = props.get("baseModel")
    if not allowed or model in allowed:
        return []
    return [
        f"{props.get('name')}: spec.baseModel: expected one of {_list(allowed)} (allowedBaseModels), got {model}. "
        "Use an allowed base model, or add this one to allowedBaseModels in the stack's policy config."
    ]


def allowed_regions(props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """A Vertex AI tuning job must run in an allowed region (the stack's ``tuneform:region``)."""
    allowed = list(config.get("allowedRegions") or [])
    if not allowed or props.get("target") != "vertex":
        return []
    region = props.get("region")
    if region in allowed:
        return []
    got = region if region else "no region"
    return [
        f"{props.get('name')}: tuneform:region: expected one of {_list(allowed)} (allowedRegions), got {got}. "
        f"Set `pulumi config set tuneform:region {allowed[0]}` on this stack."
    ]


def max_epochs(props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """A tuning job may not run more epochs than the stack allows."""
    limit = config.get("maxEpochs")
    epochs = (props.get("hyperparameters") or {}).get("epochs")
    if limit is None or epochs is None or epochs <= limit:
        return []
    return [
        f"{props.get('name')}: spec.hyperparameters.epochs: expected at most {_number(limit)} (maxEpochs), got "
        f"{_number(epochs)}. Lower `epochs`, or raise maxEpochs in the stack's policy config."
    ]


def _counted(props: Mapping[str, Any]) -> str:
    """How the training tokens were counted, in the words of ``tuneform plan`` and the review comment."""
    method = props.get("tokenMethod")
    return f" ({describe_method(method)})" if method else ""


def max_training_tokens(props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """A tuning run may not train on more tokens (dataset tokens x epochs) than the stack allows."""
    limit = config.get("maxTrainingTokens")
    tokens = props.get("estimatedTrainingTokens")
    if limit is None or tokens is None or tokens <= limit:
        return []
    return [
        f"{props.get('name')}: training tokens (dataset tokens x spec.hyperparameters.epochs): expected at most "
        f"{_number(limit)} (maxTrainingTokens), got {_number(tokens)}{_counted(props)}. Trim the dataset or lower "
        "`epochs`."
    ]


def max_training_cost(props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """A tuning run may not cost more (estimated USD) than the stack allows per update."""
    limit = config.get("maxTrainingCost")
    cost = props.get("estimatedCost")
    if limit is None or cost is None or cost <= limit:
        return []
    return [
        f"{props.get('name')}: estimated training cost: expected at most ${limit:,.2f} (maxTrainingCost), got "
        f"${cost:,.2f} for {_number(props.get('estimatedTrainingTokens') or 0)} training tokens{_counted(props)}. "
        "Trim the dataset or lower `epochs`."
    ]


def required_labels(props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Every tuned model carries the labels the stack requires (e.g. team, cost-center)."""
    required = list(config.get("requiredLabels") or [])
    labels = props.get("labels") or {}
    missing = [key for key in required if not labels.get(key)]
    if not missing:
        return []
    present = ", ".join(f"{k}: {v}" for k, v in sorted(labels.items())) or "none"
    return [
        f"{props.get('name')}: metadata.labels.{key}: expected a value (requiredLabels: {_list(required)}), got "
        f"no label {key} (labels: {present}). Add `{key}: ...` under metadata.labels."
        for key in missing
    ]


def no_full_tuning_in_production(props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """A stack marked production tunes adapters only: full tuning replaces every weight and costs the most."""
    if not config.get("production") or props.get("mode") != "full":
        return []
    return [
        f"{props.get('name')}: spec.mode: expected adapter on a production stack (production: true), got full. "
        "Set `mode: adapter`, or tune fully on a non-production stack first."
    ]


def _version(value: Any) -> str:
    # Numbers cross the engine as floats: 3 arrives as 3.0.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def promote_only_better(props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """No traffic moves to a version whose evaluation did not beat the serving version's."""
    metric = str(config.get("metric") or "exactMatch")
    margin = float(config.get("minImprovement") or 0.0)
    metrics = {_version(k): v for k, v in (props.get("versionMetrics") or {}).items()}
    serving = _version(props.get("servingVersion")) if props.get("servingVersion") is not None else None
    if serving is None or not metrics:
        return []
    serving_score = (metrics.get(serving) or {}).get(metric)
    if serving_score is None:
        return []
    found = []
    for key, percent in (props.get("traffic") or {}).items():
        version = _version(key)
        if version == serving or not percent:
            continue
        score = (metrics.get(version) or {}).get(metric)
        if score is None or score >= serving_score + margin and score > serving_score:
            continue
        found.append(
            f"{props.get('name')}: spec.endpoint.traffic: expected version {version} to beat serving version "
            f"{serving} on {metric} by at least {margin:g} (minImprovement) before it gets traffic, got "
            f"{score:g} vs {serving_score:g} with {_number(percent)}% of traffic. Keep the traffic on version "
            f"{serving} or improve the model."
        )
    return found


def _policy(
    name: str, description: str, resource_type: str, check: Check, properties: dict[str, dict[str, Any]]
) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type != resource_type:
            return
        for message in check(args.props, args.get_config()):
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        config_schema=PolicyConfigSchema(properties=properties),
    )


_STRINGS = {"type": "array", "items": {"type": "string"}}

POLICIES: list[Policy] = [
    _policy(
        "tuneform-allowed-base-models",
        "Tuning jobs use an allowed base model.",
        TUNING_JOB,
        allowed_base_models,
        {"allowedBaseModels": _STRINGS},
    ),
    _policy(
        "tuneform-allowed-regions",
        "Vertex AI tuning jobs run in an allowed region.",
        TUNING_JOB,
        allowed_regions,
        {"allowedRegions": _STRINGS},
    ),
    _policy(
        "tuneform-max-epochs",
        "Tuning jobs run at most maxEpochs epochs.",
        TUNING_JOB,
        max_epochs,
        {"maxEpochs": {"type": "integer", "minimum": 1}},
    ),
    _policy(
        "tuneform-max-training-tokens",
        "A tuning run trains on at most maxTrainingTokens tokens.",
        TUNING_JOB,
        max_training_tokens,
        {"maxTrainingTokens": {"type": "integer", "minimum": 0}},
    ),
    _policy(
        "tuneform-max-training-cost",
        "A tuning run costs at most maxTrainingCost USD (estimate).",
        TUNING_JOB,
        max_training_cost,
        {"maxTrainingCost": {"type": "number", "minimum": 0}},
    ),
    _policy(
        "tuneform-required-labels",
        "Tuned models carry the required labels.",
        TUNING_JOB,
        required_labels,
        {"requiredLabels": _STRINGS},
    ),
    _policy(
        "tuneform-no-full-tuning-in-production",
        "Stacks marked production tune adapters only.",
        TUNING_JOB,
        no_full_tuning_in_production,
        {"production": {"type": "boolean"}},
    ),
    _policy(
        "tuneform-promote-only-better",
        "Traffic moves only to versions whose evaluation beats the serving version.",
        ENDPOINT,
        promote_only_better,
        {"metric": {"type": "string"}, "minImprovement": {"type": "number", "minimum": 0}},
    ),
]

if __name__ == "__main__":
    PolicyPack(name="tuneform-guardrails", policies=POLICIES, enforcement_level=EnforcementLevel.MANDATORY)
