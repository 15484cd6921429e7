"""``Endpoint``: serves a tuned model's versions, with a traffic split between them.

Locally it is a background HTTP server that outlives ``pulumi up`` (stopped by ``pulumi destroy``); ``read`` (that
is, ``pulumi refresh``) records whether it still answers, and a dead server makes the next ``pulumi up`` start it
again. The bearer key is generated once at creation, kept across updates, and is a Pulumi secret output.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from tuneform.resources._provider import (
    BackendSettings,
    build_backend,
    diff_inputs,
    progress_printer,
    unwrap_pickler_patch,
)

_UPDATE_ON = ("traffic", "modelName", "port", "versions", "promote", "candidateVersion")


def gate(props: dict[str, Any], olds: dict[str, Any] | None) -> tuple[dict[str, int], dict[str, Any] | None]:
    """The evaluation gate of ``spec.endpoint.promote``: which traffic to serve, and why.

    A new version only takes the traffic the spec gives it if its score on ``metric`` beats the version serving now
    by at least ``minImprovement``; otherwise the endpoint keeps serving what it served. A missing score holds too:
    promotion must be earned, never assumed.
    """
    wanted = {str(version): int(percent) for version, percent in (props.get("traffic") or {}).items()}
    promote = props.get("promote")
    served = {str(v): int(p) for v, p in ((olds or {}).get("servedTraffic") or {}).items()}
    candidate = props.get("candidateVersion")
    if not promote or not served or candidate is None or str(int(candidate)) in served:
        return wanted, None
    candidate = str(int(candidate))
    metric = str(promote.get("metric", "exactMatch"))
    margin = float(promote.get("minImprovement", 0.0))
    serving = max(served, key=lambda version: served[version])
    known = _metrics_seen(props, olds)
    candidate_score = known.get(candidate, {}).get(metric)
    serving_score = known.get(serving, {}).get(metric)
    promoted = candidate_score is not None and serving_score is not None and candidate_score >= serving_score + margin
    outcome = {
        "outcome": "promoted" if promoted else "held",
        "metric": metric,
        "minImprovement": margin,
        "candidate": {"version": int(candidate), "score": candidate_score},
        "serving": {"version": int(serving), "score": serving_score},
    }
    return (wanted if promoted else served), outcome


def _request(props: dict[str, Any], traffic: dict[str, int], api_key: str | None) -> Any:
    from tuneform.backends.base import EndpointRequest

    settings = {"port": props.get("port"), "versions": props.get("versions") or {}}
    if api_key:
        settings["api_key"] = api_key
    split = {int(version): int(percent) for version, percent in traffic.items()}
    return EndpointRequest(name=props["name"], model=props["modelName"], traffic=split, settings=settings)


def _metrics_seen(props: dict[str, Any], olds: dict[str, Any] | None) -> dict[str, Any]:
    seen = {**((olds or {}).get("versionMetrics") or {}), **(props.get("versionMetrics") or {})}
    if props.get("candidateVersion") is not None:
        seen[str(int(props["candidateVersion"]))] = props.get("candidateMetrics") or {}
    return seen


def _state_outputs(state: Any) -> dict[str, Any]:
    return {
        "endpointId": state.endpoint_id,
        "url": state.url,
        "healthy": state.healthy,
        "apiKey": state.api_key,
        "servedTraffic": {str(version): percent for version, percent in state.traffic.items()},
        "client": dict(state.client) or None,
    }


class EndpointProvider(ResourceProvider):
    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._deploy(props, None, None)
        return CreateResult(id_=outs["endpointId"], outs=outs)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # A server found dead by `pulumi refresh` is restarted by the next `pulumi up`.
        return diff_inputs(
            olds, news, replace_on=("name",), update_on=_UPDATE_ON, force_update=not olds.get("healthy")
        )

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._deploy(news, olds, id_))

    def _deploy(self, props: dict[str, Any], olds: dict[str, Any] | None, existing: str | None) -> dict[str, Any]:
        """Serve what the evaluation gate allows; a first deployment has nothing to gate against."""
        emit = progress_printer(f"{props['name']}/endpoint")
        traffic, promotion = gate(props, olds)
        if promotion is not None:
            emit(
                f"evaluation gate: {promotion['outcome']} version {promotion['candidate']['version']} "
                f"({promotion['metric']} {promotion['candidate']['score']} vs serving version "
                f"{promotion['serving']['version']} at {promotion['serving']['score']}, "
                f"required improvement {promotion['minImprovement']})"
            )
        # The key made at creation is kept across updates.
        api_key = (olds or {}).get("apiKey")
        state = build_backend(self.settings).deploy(_request(props, traffic, api_key), existing, emit)
        return {**props, **_state_outputs(state), "promotion": promotion, "versionMetrics": _metrics_seen(props, olds)}

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
    promotion: pulumi.Output[dict]
    client: pulumi.Output[dict]

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
        promote: dict[str, Any] | None = None,
        candidate_version: pulumi.Input[int] | None = None,
        candidate_metrics: pulumi.Input[dict] | None = None,
        serving_version: int | None = None,
        version_metrics: dict[str, dict[str, float]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "name": name,
            "modelName": model_name,
            "traffic": traffic,
            "versions": versions,
            "port": port,
            "promote": promote,
            "candidateVersion": candidate_version,
            "candidateMetrics": candidate_metrics,
            # Known before the update (the local registry): lets policies judge a traffic shift at preview time.
            "servingVersion": serving_version,
            "versionMetrics": version_metrics,
            "promotion": None,
            "endpointId": None,
            "url": None,
            "healthy": None,
            "apiKey": None,
            "servedTraffic": None,
            "client": None,
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["apiKey"]))
        unwrap_pickler_patch()
        super().__init__(EndpointProvider(settings), resource_name, props, opts)
