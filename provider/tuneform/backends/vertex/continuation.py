"""Continuous tuning: which tuned version a run continues from, checked against Google's restrictions first.

Vertex AI continues a tuned model's weights (``preTunedModel``) only for models tuned on or after 2025-07-11, with the
same customer-managed key as the model's job, from a base model that offers it (sources.yaml: V-continuous). Each is
checked before a job is created, so a refused continuation costs nothing.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from tuneform.backends.base import BackendError, Progress, TuningRequest
from tuneform.backends.vertex._api import state_name
from tuneform.backends.vertex.jobs import source_base

if TYPE_CHECKING:
    from google.cloud import aiplatform_v1beta1

    from tuneform.backends.vertex.registry import ModelRegistry

__all__ = ["CONTINUOUS_TUNING_SINCE", "continuation_source"]

CONTINUOUS_TUNING_SINCE = datetime.date(2025, 7, 11)
"""Only models tuned on or after this day can be continued (sources.yaml: V-continuous)."""


def continuation_source(
    request: TuningRequest,
    jobs: list[aiplatform_v1beta1.TuningJob],
    registry: ModelRegistry,
    kms_key_name: str | None,
    progress: Progress,
) -> str | None:
    """The tuned version to continue from, after checking continuous tuning's documented restrictions.

    Raises:
        BackendError: When the source is gone, too old, tuned from another base model, or under another key.
    """
    wanted = request.continue_from
    if not wanted:
        return None
    base_model = request.base_model
    if wanted == "previous":
        for job in jobs:
            tuned = str(job.tuned_model.model)
            if state_name(job) != "JOB_STATE_SUCCEEDED" or not tuned or source_base(job) != base_model:
                continue
            model = registry.get(tuned)
            if model is not None:
                _check_source(request, model, kms_key_name, base_model)
                return tuned
        progress(f"vertex: {request.name} has no earlier tuned version of {base_model}; tuning the base model")
        return None
    model = registry.get(wanted)
    if model is None:
        raise BackendError(
            f"{request.name}: continueFrom {wanted} does not exist in Model Registry; set it to an existing "
            "tuned model version, or remove `continueFrom` to tune from the base model"
        )
    source_job = next((j for j in jobs if str(j.tuned_model.model).split("@")[0] == model.name), None)
    if source_job is not None:
        _check_source(request, model, kms_key_name, source_base(source_job))
    else:
        _check_source(request, model, kms_key_name, None)
        progress(f"vertex: {wanted} was not tuned by tuneform; Vertex checks that it was tuned from {base_model}")
    return f"{model.name}@{model.version_id}"


def _check_source(request: TuningRequest, model: Any, kms_key_name: str | None, base: str | None) -> None:
    name = f"{model.name}@{model.version_id}"
    created = model.version_create_time or model.create_time
    if created and created.date() < CONTINUOUS_TUNING_SINCE:
        raise BackendError(
            f"{request.name}: continueFrom {name} was tuned on {created.date()}; Vertex AI continues only models "
            f"tuned on or after {CONTINUOUS_TUNING_SINCE}. Remove `continueFrom` to tune from the base model."
        )
    source_key = model.encryption_spec.kms_key_name or ""
    if source_key != (kms_key_name or ""):
        raise BackendError(
            f"{request.name}: continueFrom {name} is encrypted with {source_key or 'no customer-managed key'}, "
            f"this stack with {kms_key_name or 'none'}; a continuous tuning job must use the key of the "
            "model it continues. Set `tuneform:kmsKeyName` to match, or tune from the base model."
        )
    if base is not None and base != request.base_model:
        raise BackendError(
            f"{request.name}: continueFrom {name} was tuned from {base}, but the spec's baseModel is "
            f"{request.base_model}. Set `baseModel: {base}`, or remove `continueFrom`."
        )
