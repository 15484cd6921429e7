"""``ModelVersion``: the tuned model version a tuning job produced, as a registry entry the stack holds on to.

Its lifetime is the registry's, not the job's: ``pulumi destroy`` releases the stack's hold on the version but only
deletes it when the spec says ``retain: false`` (on Vertex the model in Model Registry; locally the registry entry,
which retention would otherwise keep until it falls out of the last N versions).
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from tuneform.resources._provider import BackendSettings, build_backend, diff_inputs, unwrap_pickler_patch


class ModelVersionProvider(ResourceProvider):
    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=props["modelName"], outs=props)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(olds, news, replace_on=("modelName", "jobId"), update_on=("metrics", "retain"))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=news)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        outcome = build_backend(self.settings).tuning_status(props["jobId"])
        if outcome is None:
            return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs={**props, "metrics": outcome.metrics or props.get("metrics")})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        if props.get("retain", True):
            return
        build_backend(self.settings).delete_version(props["model"], int(props["version"]))


class ModelVersion(Resource, module="tuneform", name="ModelVersion"):
    """One version of a tuned model (``<name>@N`` locally, ``projects/.../models/ID@N`` on Vertex)."""

    modelName: pulumi.Output[str]
    version: pulumi.Output[int]
    metrics: pulumi.Output[dict]

    def __init__(
        self,
        resource_name: str,
        settings: BackendSettings,
        *,
        model: str,
        job_id: pulumi.Input[str],
        model_name: pulumi.Input[str],
        version: pulumi.Input[int],
        metrics: pulumi.Input[dict],
        retain: bool,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "model": model,
            "jobId": job_id,
            "modelName": model_name,
            "version": version,
            "metrics": metrics,
            "retain": retain,
        }
        unwrap_pickler_patch()
        super().__init__(ModelVersionProvider(settings), resource_name, props, opts)
