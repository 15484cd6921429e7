"""The TuningJob tuneform sends for a request: a pure function of the request and where it runs.

Kept apart from the calls that send it so it can be read and tested on its own: what the spec says becomes these
fields of ``aiplatform_v1beta1.TuningJob`` (P-tuning-job in ``catalogue/sources.yaml``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneform.backends.base import BackendError, TuningRequest
from tuneform.backends.vertex._api import (
    MANAGED_BY_LABEL,
    NAME_LABEL,
    SPEC_HASH_LABEL,
    VERSION_LABEL,
    label_value,
)

if TYPE_CHECKING:
    from google.cloud import aiplatform_v1beta1

__all__ = ["ADAPTER_SIZES", "build_tuning_job", "job_labels", "output_uri", "vertex_base_model"]

ADAPTER_SIZES = {1: "ADAPTER_SIZE_ONE", 2: "ADAPTER_SIZE_TWO", 4: "ADAPTER_SIZE_FOUR", 8: "ADAPTER_SIZE_EIGHT",
                 16: "ADAPTER_SIZE_SIXTEEN", 32: "ADAPTER_SIZE_THIRTY_TWO"}  # fmt: skip
"""By enum *name*: the numbers are not the sizes (ADAPTER_SIZE_TWO is 6 in the proto). Which sizes a model takes is
the catalogue's ``adapterSizes``, checked by the spec loader; a test keeps every one of them named here."""


def vertex_base_model(base_model: str) -> tuple[str, bool]:
    """Check a base model name and say whether it is an open (publisher) model.

    Gemini models are bare ids (``gemini-3.5-flash``); open models use ``publisher/model@version``
    (``google/gemma3@gemma-3-27b-it``), which is what the API requires.

    Raises:
        BackendError: For an open-model name without ``@version``, which the API refuses.
    """
    if "/" in base_model:
        if "@" not in base_model:
            raise BackendError(
                f"base model {base_model!r}: open models need the `publisher/model@version` form, "
                f"e.g. `google/gemma3@gemma-3-27b-it`"
            )
        return base_model, True
    return base_model, False


def job_labels(request: TuningRequest, version: int) -> dict[str, str]:
    """The spec's labels plus tuneform's own: spec hash, name, tuneform's version number, ``managed-by``."""
    return {
        **request.labels,
        SPEC_HASH_LABEL: request.spec_hash[:63],
        NAME_LABEL: label_value(request.name),
        VERSION_LABEL: str(version),
        MANAGED_BY_LABEL: "tuneform",
    }


def output_uri(bucket: str, request: TuningRequest) -> str:
    """Where an open-model job writes its weights: one folder per run, named by spec hash."""
    return f"gs://{bucket}/tuning-output/{label_value(request.name)}/{request.spec_hash}"


def build_tuning_job(
    request: TuningRequest,
    *,
    bucket: str,
    version: int,
    pre_tuned_model: str | None = None,
    kms_key_name: str | None = None,
    service_account: str | None = None,
) -> aiplatform_v1beta1.TuningJob:
    """The job to create for ``request``.

    Args:
        request: What to tune.
        bucket: The dataset bucket; open-model weights go under ``tuning-output/`` in it.
        version: tuneform's version number of this run (label ``tuneform-version``).
        pre_tuned_model: A tuned model version to continue from (``projects/…/models/ID@N``), checked by the caller;
            ``None`` starts from the base model (a new registry model at version 1).
        kms_key_name: CMEK key for everything the job creates.
        service_account: Runs the job (default: Vertex's tuning service agent).

    Returns:
        The job message (not yet created).

    Raises:
        BackendError: For full tuning of a Gemini model, which Vertex cannot express.
    """
    from google.cloud import aiplatform_v1beta1 as v1b

    base, is_open = vertex_base_model(request.base_model)
    if request.mode == "full" and not is_open:
        raise BackendError(f"{request.name}: Gemini models tune adapters only; set `mode: adapter`")
    # Built as plain dicts (enums by name) and converted once: proto-plus copies a message assigned into another,
    # so fields set on a sub-message after assignment would silently be lost.
    hp = request.hyperparameters
    hyper: dict[str, Any] = {}
    if hp.get("epochs") is not None:
        hyper["epoch_count"] = int(hp["epochs"])
    if request.adapter_size is not None:
        hyper["adapter_size"] = ADAPTER_SIZES[request.adapter_size]
    spec: dict[str, Any] = {"training_dataset_uri": request.train.uri, "hyper_parameters": hyper}
    if request.validation is not None:
        spec["validation_dataset_uri"] = request.validation.uri
    job: dict[str, Any] = {
        "supervised_tuning_spec": spec,
        "tuned_model_display_name": request.name,
        "description": request.description,
        "labels": job_labels(request, version),
    }
    if is_open:
        spec["tuning_mode"] = "TUNING_MODE_FULL" if request.mode == "full" else "TUNING_MODE_PEFT_ADAPTER"
        if hp.get("learningRate") is not None:
            hyper["learning_rate"] = float(hp["learningRate"])
        if hp.get("batchSize") is not None:
            hyper["batch_size"] = int(hp["batchSize"])
        job["output_uri"] = output_uri(bucket, request)
        job["base_model"] = base
    else:
        if hp.get("learningRateMultiplier") is not None:
            hyper["learning_rate_multiplier"] = float(hp["learningRateMultiplier"])
        # Each intermediate checkpoint is deployed to an endpoint of its own (V-checkpoints): only on request.
        spec["export_last_checkpoint_only"] = not request.intermediate_checkpoints
        if pre_tuned_model:
            job["pre_tuned_model"] = {"tuned_model_name": pre_tuned_model}
        else:
            job["base_model"] = base
    if kms_key_name:
        job["encryption_spec"] = {"kms_key_name": kms_key_name}
    if service_account:
        job["service_account"] = service_account
    return v1b.TuningJob(job)
