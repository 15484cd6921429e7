"""The backend protocol: what a target (local | vertex) must do for tuneform's Pulumi resources, and its settings.

Providers in ``tuneform.resources`` are thin: each CRUD method is one or two calls here. Backends are built inside
provider methods (never pickled) from plain settings, so they may hold clients, threads and open files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

Progress = Callable[[str], None]
"""Receives one human-readable progress line (step, epoch, loss, ETA...). Providers print it to stderr."""


@dataclass(frozen=True)
class BackendSettings:
    """Everything needed to build a target's backend: plain data, captured in Pulumi's state with the providers.

    No secrets and no clients (Pulumi pickles providers into state). Each default here is the one default of its
    setting: the program fills in only what a stack sets, and the backends read the rest from here.
    """

    target: str
    repo_root: str
    """Absolute path of the repository holding ``Pulumi.yaml``; the local registry is ``<repo_root>/.tuneform``."""
    cache_dir: str = ""
    """Per-user cache (converted base models); empty = ``$TUNEFORM_CACHE`` or ``~/.cache/tuneform`` at run time."""
    endpoint_host: str = "127.0.0.1"
    project: str = ""
    region: str = ""
    bucket: str = ""
    api_endpoint: str = ""
    """Vertex API endpoint override for every location (an emulator); empty = Google's host per location."""
    api_endpoints: tuple[tuple[str, str], ...] = ()
    """Per-location overrides ``((location, url), ...)``: the emulator serves each location on a port of its own."""
    storage_endpoint: str = ""
    service_account: str = ""
    kms_key_name: str = ""
    deadline_seconds: float = 12 * 3600
    """How long the Vertex backend waits for a job before it leaves it running (``tuneform:deadlineSeconds``)."""
    poll_seconds: tuple[float, float] = (10.0, 300.0)
    """First and longest pause between status polls of a Vertex job (``tuneform:pollSeconds``)."""
    retry_seconds: tuple[float, float] = (1.0, 600.0)
    """First back-off and give-up time for Vertex answers 429/503/504 (``tuneform:retrySeconds``)."""
    keep_versions: int = 5
    """Local registry retention: the last N versions of each model, plus any a served endpoint uses."""
    stack: str = ""
    """The Pulumi stack: a checkout's local endpoints belong to one stack each ("" in states written before)."""

    # Every default is a class attribute (no default_factory), so an instance pickled into an older state before a
    # field existed still reads it.

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def api_endpoint_settings(raw: str) -> dict[str, Any]:
    """``tuneform:apiEndpoint`` as ``BackendSettings`` fields: one URL for every location, or JSON ``{location: URL}``
    (the emulator serves each location on a port of its own)."""
    endpoint: Any = json.loads(raw) if raw.lstrip().startswith("{") else raw
    if isinstance(endpoint, dict):
        return {"api_endpoints": tuple(sorted(endpoint.items()))}
    return {"api_endpoint": endpoint} if endpoint else {}


class BackendError(Exception):
    """A target refused or failed an operation; the message is shown to the user as is."""


class TuningFailed(BackendError):
    """A tuning job reached a terminal state other than success."""

    def __init__(self, message: str, job_id: str, state: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state


@dataclass(frozen=True)
class DatasetArtifact:
    """A converted (Gemini-format) JSONL stored content-addressed on the target."""

    sha256: str
    uri: str
    """Local store path or ``gs://<bucket>/datasets/<sha256>.jsonl``."""
    examples: int
    tokens: int
    """Token total of one pass (exact with a local tokenizer, else the documented high estimate)."""


@dataclass(frozen=True)
class TuningRequest:
    name: str
    """``metadata.name``: the registry model that versions accumulate under."""
    spec_hash: str
    """Identity of this run (training inputs + dataset hash); used to adopt a run that already exists."""
    base_model: str
    mode: str
    adapter_size: int | None
    hyperparameters: dict[str, Any]
    train: DatasetArtifact
    validation: DatasetArtifact | None
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    lora: dict[str, Any] | None = None
    adopt: str | None = None
    """A job resource name to bring under management instead of creating one."""
    continue_from: str | None = None
    """Vertex: ``previous`` or a tuned model version to continue from (continuous tuning); ``None``: the base model."""
    intermediate_checkpoints: bool = False
    """Vertex: keep a checkpoint per epoch (each deployed by Vertex to an endpoint of its own)."""
    test: DatasetArtifact | None = None
    """Local: scored after tuning at the version's decoding defaults (``spec.dataset.test``)."""
    generation: dict[str, Any] | None = None
    """Local: the version's decoding defaults (``spec.endpoint.generation``), saved with the version."""
    weights_hash: str = ""
    """Local: ``ResolvedSpec.weights_hash``; a version with the same one lends its weights instead of a new run."""


@dataclass(frozen=True)
class TuningOutcome:
    job_id: str
    state: str
    """Terminal or current state name, e.g. ``SUCCEEDED``, ``RUNNING``."""
    model: str
    """Versioned model name: ``projects/.../models/ID@N`` on Vertex, ``<name>@N`` locally."""
    version: int
    metrics: dict[str, float] = field(default_factory=dict)
    endpoint: str | None = None
    reused: bool = False
    """True when no new training ran (adopted job, or an identical earlier version)."""


@dataclass(frozen=True)
class EndpointRequest:
    name: str
    model: str
    """The tuned model (unversioned registry name)."""
    traffic: dict[int, int]
    """Model version -> percent; sums to 100."""
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EndpointState:
    endpoint_id: str
    url: str
    traffic: dict[int, int]
    healthy: bool
    api_key: str | None = None
    client: dict[str, str] = field(default_factory=dict)
    """How a client library reaches it beyond ``url`` (Vertex: project, location, model for google-genai)."""


class Backend(Protocol):
    target: str

    def store_dataset(
        self, converted_path: str, sha256: str, examples: int, tokens: int, upload_format: str = "gemini"
    ) -> DatasetArtifact:
        """Store a converted Gemini JSONL; ``upload_format`` ``messages`` stores it as chat rows (open models)."""
        ...

    def dataset_present(self, artifact: DatasetArtifact) -> bool: ...

    def tune(self, request: TuningRequest, progress: Progress) -> TuningOutcome:
        """Create (or adopt, or reuse) a tuning run and wait for a terminal state; raise ``TuningFailed``."""
        ...

    def tuning_status(self, job_id: str) -> TuningOutcome | None:
        """Current view of a run for ``pulumi refresh``; ``None`` when it no longer exists."""
        ...

    def cancel(self, job_id: str) -> None: ...

    def update_metadata(self, job_id: str, description: str, labels: dict[str, str]) -> None: ...

    def delete_version(self, model: str, version: int) -> None:
        """Delete one tuned model version (only called for specs with ``retain: false``)."""
        ...

    def deploy(self, request: EndpointRequest, existing: str | None, progress: Progress) -> EndpointState: ...

    def endpoint_status(self, endpoint_id: str) -> EndpointState | None: ...

    def undeploy(self, endpoint_id: str) -> None: ...
