"""``Endpoint``: serves a tuned model's versions, with a traffic split between them.

Locally it is a background HTTP server that outlives ``pulumi up`` (stopped by ``pulumi destroy``); ``read`` (that
is, ``pulumi refresh``) records whether it still answers, and a dead server makes the next ``pulumi up`` start it
again. The bearer key is generated once at creation, kept across updates, and is a Pulumi secret output.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from tuneform.resources._provider import BackendSettings, build_backend, diff_inputs, progress_printer

_UPDATE_ON = ("traffic", "modelName", "port", "versions")


def _request(props: dict[str, Any], api_key: str | None) -> Any:
    from tuneform.backends.base import EndpointRequest

    settings = {"port": props.get("port"), "versions": props.get("versions") or {}}
    if api_key:
        settings["api_key"] = api_key
    traffic = {int(version): int(percent) for version, percent in (props.get("traffic") or {}).items()}
    return EndpointRequest(name=props["name"], model=props["modelName"], traffic=traffic, settings=settings)


def _state_outputs(state: Any) -> dict[str, Any]:
    return {
        "endpointId": state.endpoint_id,
        "url": state.url,
        "healthy": state.healthy,
        "apiKey": state.api_key,
        "servedTraffic": {str(version): percent for version, percent in state.traffic.items()},
    }


class EndpointProvider(ResourceProvider):
    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings

    def create(self, props: dict[str, Any]) -> CreateResult:
        emit = progress_printer(f"{props['name']}/endpoint")
        state = build_backend(self.settings).deploy(_request(props, None), None, emit)
        return CreateResult(id_=state.endpoint_id, outs={**props, **_state_outputs(state)})

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # A server found dead by `pulumi refresh` is restarted by the next `pulumi up`.
        return diff_inputs(
            olds, news, replace_on=("name",), update_on=_UPDATE_ON, force_update=not olds.get("healthy")
        )

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        emit = progress_printer(f"{news['name']}/endpoint")
        state = build_backend(self.settings).deploy(_request(news, olds.get("apiKey")), id_, emit)
        return UpdateResult(outs={**news, **_state_outputs(state)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        state = build_backend(self.settings).endpoint_status(id_)
        if state is None:
            return ReadResult(id_=id_, outs={**props, "healthy": False})
        # Keep the key from state: the status call does not return it.
        return ReadResult(id_=id_, outs={**props, **_state_outputs(state), "apiKey": props.get("apiKey")})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        build_backend(self.settings).undeploy(id_)


class Endpoint(Resource, module="tuneform", name="Endpoint"):
    """The serving endpoint of one tuned model."""

    endpointId: pulumi.Output[str]
    url: pulumi.Output[str]
    healthy: pulumi.Output[bool]
    apiKey: pulumi.Output[str]
    servedTraffic: pulumi.Output[dict]

    def __init__(
        self,
        resource_name: str,
        settings: BackendSettings,
        *,
        name: str,
        model_name: pulumi.Input[str],
        traffic: pulumi.Input[dict],
        versions: pulumi.Input[dict],
        port: int | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "name": name,
            "modelName": model_name,
            "traffic": traffic,
            "versions": versions,
            "port": port,
            "endpointId": None,
            "url": None,
            "healthy": None,
            "apiKey": None,
            "servedTraffic": None,
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["apiKey"]))
        super().__init__(EndpointProvider(settings), resource_name, props, opts)
