"""What a Vertex tuning job means for tuneform: its version number, its outcome, why it failed.

Pure functions of an ``aiplatform_v1beta1.TuningJob`` (read, never sent), kept apart from the calls that fetch jobs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneform.backends.base import TuningOutcome
from tuneform.backends.vertex._api import VERSION_LABEL, short, state_name

if TYPE_CHECKING:
    from google.cloud import aiplatform_v1beta1

__all__ = ["failure_message", "outcome", "source_base", "tuneform_version"]


def _registry_version(model: str) -> int:
    _, _, version = model.rpartition("@")
    return int(version) if version.isdigit() else 1


def tuneform_version(job: Any) -> int:
    """tuneform's version number of a job: its ``tuneform-version`` label, else (older jobs) the registry's."""
    label = job.labels.get(VERSION_LABEL, "")
    if label.isdigit():
        return int(label)
    return _registry_version(str(job.tuned_model.model)) if job.tuned_model.model else 0


def source_base(job: Any) -> str:
    """The base model a job tuned (through its pre-tuned model for a continuation)."""
    return str(job.base_model or job.pre_tuned_model.base_model)


def failure_message(job: aiplatform_v1beta1.TuningJob, name: str) -> str:
    """Why a job did not succeed, with the dataset statistics that usually explain it."""
    state = short(state_name(job))
    parts = [f"{name}: tuning job {job.name} ended {state}"]
    if job.error.message:
        parts[0] += f": {job.error.message}"
    stats = job.tuning_data_stats.supervised_tuning_data_stats
    if stats.tuning_dataset_example_count:
        parts.append(f"{stats.tuning_dataset_example_count} training examples")
    if stats.total_truncated_example_count:
        shown = ", ".join(str(i) for i in list(stats.truncated_example_indices)[:10])
        parts.append(f"{stats.total_truncated_example_count} truncated (0-based lines {shown})")
    if stats.dropped_example_reasons:
        reasons = "; ".join(list(stats.dropped_example_reasons)[:5])
        parts.append(f"{len(stats.dropped_example_reasons)} dropped: {reasons}")
    if state == "PARTIALLY_SUCCEEDED" and job.tuned_model.model:
        parts.append(f"partial model {job.tuned_model.model} is not recorded")
    return "; ".join(parts)


def outcome(job: aiplatform_v1beta1.TuningJob, reused: bool) -> TuningOutcome:
    """What a job means for the stack: state, registry name, tuneform's version, Vertex's own figures."""
    stats = job.tuning_data_stats.supervised_tuning_data_stats
    metrics = {
        key: float(value)
        for key, value in (
            ("billable_tokens", stats.total_billable_token_count),
            ("examples", stats.tuning_dataset_example_count),
            ("tuning_steps", stats.tuning_step_count),
        )
        if value
    }
    model = str(job.tuned_model.model)
    if not model and job.output_uri:
        # Open-model jobs register no model: their result is the final checkpoint's directory (V-oss).
        model = f"{job.output_uri}/postprocess/node-0/checkpoints/final"
    return TuningOutcome(
        job_id=job.name,
        state=short(state_name(job)),
        model=model,
        version=tuneform_version(job) or 1,
        metrics=metrics,
        endpoint=str(job.tuned_model.endpoint) or None,
        reused=reused,
    )
