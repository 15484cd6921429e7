"""Tuned model versions in Model Registry and the endpoints Vertex deployed them to.

Rules this module follows, from ``model_service.proto`` (sources.yaml: P-model-service) and the checkpoints page
(V-checkpoints):

- UpdateModel with a versioned name (``models/ID@N``) updates version fields only (``version_description``,
  labels); with ``models/ID`` model fields only (``description``, labels). One request cannot mix them.
- A version cannot be deleted while any DeployedModel was made from it, the only version of a model cannot be deleted
  (DeleteModel instead), and a model cannot be deleted while deployed anywhere.
- Every exported checkpoint of a tuned Gemini model is deployed to an endpoint of its own; all of them must be
  undeployed before the version can go, and each emptied endpoint is deleted so none is left behind.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tuneform.backends.base import BackendError, EndpointState
from tuneform.backends.vertex._api import VERSION_LABEL, Hosts, Retry, location_of, stderr

if TYPE_CHECKING:
    from google.cloud import aiplatform_v1beta1

__all__ = ["ModelRegistry"]


class ModelRegistry:
    """Model Registry and endpoint calls, each sent to the host of the resource's own location."""

    def __init__(self, hosts: Hosts, retry: Retry) -> None:
        self.hosts = hosts
        self.retry = retry

    def get(self, versioned: str) -> aiplatform_v1beta1.Model | None:
        """The model version ``projects/…/models/ID@N`` (or the default version without ``@``); ``None`` if gone."""
        from google.api_core import exceptions

        client = self.hosts.models(location_of(versioned))
        try:
            return self.retry.call(client.get_model, name=versioned)
        except exceptions.NotFound:
            return None

    def update_metadata(self, versioned: str, description: str, labels: dict[str, str]) -> None:
        """New description and labels on the model and on its version, in two requests (they cannot be mixed).

        Args:
            versioned: ``projects/…/models/ID@N``.
            description: Becomes the model's ``description`` and the version's ``version_description``.
            labels: The full label set (tuneform's own included), on both the model and the version.
        """
        from google.cloud import aiplatform_v1beta1 as v1b
        from google.protobuf import field_mask_pb2

        client = self.hosts.models(location_of(versioned))
        base = versioned.split("@", 1)[0]
        self.retry.call(
            client.update_model,
            model=v1b.Model(name=base, description=description, labels=labels),
            update_mask=field_mask_pb2.FieldMask(paths=["description", "labels"]),
        )
        self.retry.call(
            client.update_model,
            model=v1b.Model(name=versioned, version_description=description, labels=labels),
            update_mask=field_mask_pb2.FieldMask(paths=["version_description", "labels"]),
        )

    def delete_version(self, versioned: str, endpoints: Iterable[str] = ()) -> None:
        """Undeploy a tuned version everywhere, delete the endpoints that held only it, then the version or model.

        Args:
            versioned: ``projects/…/models/ID@N``.
            endpoints: Endpoints the tuning job reported (its ``tunedModel.endpoint`` and every checkpoint's), checked
                along with the deployments the model itself lists, so a checkpoint endpoint is not left behind.

        Raises:
            BackendError: When Vertex refuses a step; the message says which and why.
        """
        from google.api_core import exceptions

        base_name, _, version = versioned.partition("@")
        model = self.get(versioned)
        if model is None:
            stderr(f"vertex: {versioned} is already gone")
            return
        where = {ref.endpoint for ref in model.deployed_models} | {e for e in endpoints if e}
        try:
            for endpoint in sorted(where):
                self._release(endpoint, base_name, version)
            client = self.hosts.models(location_of(base_name))
            versions = list(self.retry.call(client.list_model_versions, name=base_name))
            others = [m for m in versions if m.version_id != version]
            if not others:
                self.retry.call(client.delete_model, name=base_name).result(timeout=self.retry.timeout)
                stderr(f"vertex: deleted {base_name} (version {version} was its last)")
                return
            this = next((m for m in versions if m.version_id == version), None)
            if this is not None and "default" in this.version_aliases:
                # Not documented as required, but a registry that refused to delete the default version would
                # otherwise stop the whole delete: move the alias to the newest other version first.
                newest = max(others, key=lambda m: int(m.version_id))
                self.retry.call(
                    client.merge_version_aliases,
                    name=f"{base_name}@{newest.version_id}",
                    version_aliases=["default"],
                )
            self.retry.call(client.delete_model_version, name=versioned).result(timeout=self.retry.timeout)
            stderr(f"vertex: deleted {versioned}")
        except exceptions.NotFound:
            stderr(f"vertex: {versioned} is already gone")
        except exceptions.GoogleAPICallError as e:
            raise BackendError(f"deleting {versioned} failed: {e.message}") from None

    def _release(self, endpoint: str, base_name: str, version: str) -> None:
        """Undeploy ``base_name@version`` from ``endpoint``; delete the endpoint if nothing else is on it."""
        from google.api_core import exceptions

        client = self.hosts.endpoints(location_of(endpoint))
        try:
            state = self.retry.call(client.get_endpoint, name=endpoint)
        except exceptions.NotFound:
            return
        ours = [d for d in state.deployed_models if d.model == base_name and d.model_version_id == version]
        for deployed in ours:
            try:
                self.retry.call(client.undeploy_model, endpoint=endpoint, deployed_model_id=deployed.id).result(
                    timeout=self.retry.timeout
                )
            except exceptions.NotFound:
                pass  # undeployed by an earlier attempt whose answer was lost
            stderr(f"vertex: undeployed {base_name}@{version} from {endpoint}")
        if len(ours) == len(state.deployed_models):
            try:
                self.retry.call(client.delete_endpoint, name=endpoint).result(timeout=self.retry.timeout)
            except exceptions.NotFound:
                return
            stderr(f"vertex: deleted endpoint {endpoint}")

    def endpoint_state(self, endpoint_id: str, client_config: dict[str, str] | None = None) -> EndpointState | None:
        """Deployed versions and traffic of an endpoint, with the URL a client calls; ``None`` if it is gone."""
        from google.api_core import exceptions

        location = location_of(endpoint_id)
        try:
            endpoint = self.retry.call(self.hosts.endpoints(location).get_endpoint, name=endpoint_id)
        except exceptions.NotFound:
            return None
        versions = {d.id: int(d.model_version_id or 1) for d in endpoint.deployed_models}
        traffic = {versions[i]: int(p) for i, p in endpoint.traffic_split.items() if i in versions}
        own = endpoint.labels.get(VERSION_LABEL, "")
        if own.isdigit() and traffic:
            # A tuning job's labels reach the endpoint it creates: report traffic by tuneform's version number,
            # which the stack's outputs use, rather than by the registry's (1 for every base-model run).
            traffic = {int(own): sum(traffic.values())}
        base_url = self.hosts.base_url(location)
        project = endpoint.name.split("/")[1]
        return EndpointState(
            endpoint_id=endpoint.name,
            url=f"{base_url}/v1/{endpoint.name}:generateContent",
            traffic=traffic,
            healthy=bool(endpoint.deployed_models),
            client={
                # What google-genai needs (Vertex mode): this project and location, and the endpoint as the model.
                "project": project,
                "location": location,
                "model": endpoint.name,
                "baseUrl": base_url,
                **(client_config or {}),
            },
        )


def deployed_endpoints(job: Any) -> list[str]:
    """Every endpoint a tuning job reported: the default checkpoint's and each intermediate checkpoint's."""
    found = [str(job.tuned_model.endpoint)] if job.tuned_model.endpoint else []
    found += [str(c.endpoint) for c in job.tuned_model.checkpoints if c.endpoint]
    return sorted(set(found))
