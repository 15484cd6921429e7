"""An emulator of the Vertex AI surfaces tuneform uses, over real HTTP on 127.0.0.1, written from Google's documents.

It is a witness, not a mirror of tuneform's backend: each behaviour below comes from Google's documentation, the
googleapis protos or a public issue thread, and is listed with its source in ``docs/vertex-emulator.md`` (behaviour
ids ``E1``... appear in comments here). Where no source says how the service behaves, the emulator picks the reading
that is harder on a client and says so in that table.

- Hosts: Vertex serves each location from its own host (``{region}-aiplatform.googleapis.com``, and the multi-region
  ``aiplatform.{us|eu}.rep.googleapis.com``). The emulator listens on one port per location and refuses a request
  whose resource name is in another location than the host it reached (E3).
- Every request body and query is parsed into the API's own proto type (``google-cloud-aiplatform``'s generated
  ``aiplatform_v1beta1``/``aiplatform_v1`` types): an unknown field is a 400 (E1).
- Publisher models with their lifecycle and tuning limits (E5-E10, E35); tuning jobs with states, checkpoints and
  the tuned model's placement in Model Registry and on endpoints (E11-E19); continuous tuning (E20-E23);
  ModelService (E24-E28) and EndpointService (E29-E31) rules; ``generateContent`` on a tuned endpoint (E32).
- Faults (E33): scripted errors, a rate of 429 / 503 / slow 504 answers, and mutating calls whose answer is lost
  after the server acted; a list that lags behind creates (E34).
"""

from __future__ import annotations

import collections
import datetime
import json
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["ApiError", "FaultPlan", "Outcome", "PublisherModel", "VertexEmulator", "running"]

TERMINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
            "JOB_STATE_PARTIALLY_SUCCEEDED")  # fmt: skip

_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED",
           500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip

# TuningJob fields marked OUTPUT_ONLY in tuning_job.proto; google.api.FieldBehavior: the server ignores them (E2).
_OUTPUT_ONLY = ("name", "state", "createTime", "startTime", "endTime", "updateTime", "error", "experiment",
                "tunedModel", "tuningDataStats", "pipelineJob", "evaluateDatasetRuns")  # fmt: skip

_MULTI_REGIONS = ("us", "eu")
_CONTINUOUS_SINCE = datetime.date(2025, 7, 11)  # E21


@dataclass(frozen=True)
class PublisherModel:
    """What the emulator knows of one base model, from Google's pages (see docs/vertex-emulator.md, E5-E10)."""

    name: str
    released: datetime.date | None = None
    retires: datetime.date | None = None
    tuning_regions: tuple[str, ...] = ()
    serving: dict[str, str] = field(default_factory=dict)
    """Tuning region -> endpoint location; absent: the tuning region."""
    adapter_sizes: tuple[str, ...] = ()
    """Enum names; empty = any."""
    cmek: bool = True
    continuous: bool = False
    open: bool = False
    modes: tuple[str, ...] = ("TUNING_MODE_PEFT_ADAPTER",)


_ADAPTERS_16 = ("ADAPTER_SIZE_ONE", "ADAPTER_SIZE_TWO", "ADAPTER_SIZE_FOUR", "ADAPTER_SIZE_EIGHT",
                "ADAPTER_SIZE_SIXTEEN")  # fmt: skip
_GEMINI_3_SERVING = {"us-central1": "us", "europe-west4": "eu"}
_OSS_REGIONS = ("us-central1", "europe-west4", "us-west1", "us-east5", "asia-southeast1")
_FULL = ("TUNING_MODE_FULL",)
_BOTH = ("TUNING_MODE_FULL", "TUNING_MODE_PEFT_ADAPTER")


def _d(text: str) -> datetime.date:
    return datetime.date.fromisoformat(text)


# E5/E6 (model versions page, supervised tuning page 2026-09-25, open model tuning page).
PUBLISHER_MODELS: dict[str, PublisherModel] = {
    model.name: model
    for model in (
        PublisherModel("gemini-3.5-flash", _d("2026-05-19"), _d("2027-05-19"), ("us-central1", "europe-west4"),
                       _GEMINI_3_SERVING, _ADAPTERS_16, cmek=False, continuous=True),
        PublisherModel("gemini-3.5-flash-lite", _d("2026-07-21"), _d("2027-07-21"), ("us-central1", "europe-west4"),
                       _GEMINI_3_SERVING, _ADAPTERS_16, cmek=False, continuous=False),
        PublisherModel("gemini-3.1-flash-lite", _d("2026-05-07"), _d("2027-05-07"), ("us-central1", "europe-west4"),
                       _GEMINI_3_SERVING, _ADAPTERS_16, cmek=False, continuous=True),
        PublisherModel("gemini-2.5-pro", _d("2025-06-17"), _d("2026-10-20"), ("us-central1", "europe-west4"),
                       adapter_sizes=_ADAPTERS_16[:4], continuous=True),
        PublisherModel("gemini-2.5-flash", _d("2025-06-17"), _d("2026-10-20"), ("us-central1", "europe-west4"),
                       adapter_sizes=_ADAPTERS_16, continuous=True),
        PublisherModel("gemini-2.5-flash-lite", _d("2025-07-22"), _d("2026-10-20"), ("us-central1", "europe-west4"),
                       adapter_sizes=_ADAPTERS_16, continuous=True),
        PublisherModel("gemini-2.0-flash-001", _d("2025-02-05"), _d("2026-06-01"), ("us-central1",),
                       adapter_sizes=_ADAPTERS_16[:4]),
        PublisherModel("gemini-2.0-flash-lite-001", _d("2025-02-25"), _d("2026-06-01"), ("us-central1",),
                       adapter_sizes=_ADAPTERS_16[:4]),
        PublisherModel("google/gemma3@gemma-3-1b-it", tuning_regions=_OSS_REGIONS, open=True, modes=_FULL),
        PublisherModel("google/gemma3@gemma-3-4b-it", tuning_regions=_OSS_REGIONS, open=True, modes=_FULL),
        PublisherModel("google/gemma3@gemma-3-12b-it", tuning_regions=_OSS_REGIONS, open=True, modes=_FULL),
        PublisherModel("google/gemma3@gemma-3-27b-it", tuning_regions=_OSS_REGIONS, open=True, modes=_BOTH),
        PublisherModel("google/medgemma@medgemma-4b-it", tuning_regions=_OSS_REGIONS, open=True, modes=_FULL),
        PublisherModel("meta/llama3_1@llama-3.1-8b", tuning_regions=_OSS_REGIONS, open=True, modes=_BOTH),
        PublisherModel("meta/llama3_1@llama-3.1-8b-instruct", tuning_regions=_OSS_REGIONS, open=True, modes=_BOTH),
        PublisherModel("meta/llama3-2@llama-3.2-1b-instruct", tuning_regions=_OSS_REGIONS, open=True, modes=_FULL),
        PublisherModel("meta/llama3-2@llama-3.2-3b-instruct", tuning_regions=_OSS_REGIONS, open=True, modes=_FULL),
        PublisherModel("meta/llama3-3@llama-3.3-70b-instruct", tuning_regions=_OSS_REGIONS, open=True, modes=_BOTH),
        PublisherModel("meta/llama4@llama-4-scout-17b-16e-instruct", tuning_regions=_OSS_REGIONS, open=True,
                       modes=("TUNING_MODE_PEFT_ADAPTER",)),
        PublisherModel("qwen/qwen3@qwen3-4b", tuning_regions=_OSS_REGIONS, open=True, modes=_FULL),
        PublisherModel("qwen/qwen3@qwen3-8b", tuning_regions=_OSS_REGIONS, open=True, modes=_FULL),
        PublisherModel("qwen/qwen3@qwen3-14b", tuning_regions=_OSS_REGIONS, open=True, modes=_FULL),
        PublisherModel("qwen/qwen3@qwen3-32b", tuning_regions=_OSS_REGIONS, open=True, modes=_BOTH),
    )
}  # fmt: skip


class ApiError(Exception):
    """An answer in Google's JSON error shape (``google.rpc.Status``: code, message, status)."""

    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or _STATUS.get(code, "UNKNOWN")


@dataclass
class Outcome:
    """How the next created job behaves (queued with ``VertexEmulator.script``)."""

    state: str = "JOB_STATE_SUCCEEDED"
    running_seconds: float | None = None
    """Time in RUNNING before the terminal state; ``None`` = the emulator's default."""
    error_message: str = ""
    data_stats: dict[str, Any] | None = None


@dataclass
class FaultPlan:
    """Transient faults at a rate (E33): each request draws once from a seeded generator.

    ``lost`` applies to mutating calls only (create, cancel, delete, undeploy, update): the server acts, then the
    answer is a 504 as if it had been lost on the way back — the case where a blind retry pays twice.
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = ("429", "503", "slow", "lost")
    slow_seconds: float = 1.5
    """How long a ``slow`` fault holds the request before answering 504 DEADLINE_EXCEEDED."""
    seed: int = 0


@dataclass
class _Job:
    name: str
    api: str
    location: str
    body: dict[str, Any]
    created: float
    created_wall: float
    outcome: Outcome
    number: int
    placement: dict[str, Any]
    """Where the result lands (model id, version, endpoint names), reserved at creation, visible once SUCCEEDED."""
    cancel_requested_at: float | None = None
    materialized: bool = False
    list_lag: float = 0.0
    """Seconds after creation before ``list`` shows the job (E34)."""


@dataclass
class _Version:
    number: int
    created_wall: float
    labels: dict[str, str]
    description: str = ""
    encryption: str = ""
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    default_checkpoint: str = ""
    deleted: bool = False


@dataclass
class _Model:
    model_id: str
    location: str
    display_name: str
    base_model: str
    versions: dict[int, _Version] = field(default_factory=dict)
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    default_version: int = 1
    deleted: bool = False

    def live(self) -> list[int]:
        return [] if self.deleted else sorted(n for n, v in self.versions.items() if not v.deleted)


@dataclass
class _Endpoint:
    name: str
    location: str
    display_name: str
    deployed: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Deployed model id -> (model id, version)."""
    labels: dict[str, str] = field(default_factory=dict)
    deleted: bool = False


class VertexEmulator:
    """Vertex AI's tuning, model, endpoint and publisher-model APIs on one 127.0.0.1 port per location.

    Args:
        queued_seconds: Time a new job spends QUEUED, then as long again PENDING.
        running_seconds: Default time in RUNNING before the terminal state.
        project_number: Resource names in answers carry the project number, as the service's do.
        locations: The locations to serve (one port each); ``endpoints`` maps each to its base URL.
        today: The date lifecycle rules use (default: today, UTC).
        list_filters: ``"documented"`` refuses filter fields the tuning API does not document (labels: E15);
            ``"labels"`` also accepts ``labels.KEY="VALUE"``.
        faults: Transient faults at a rate (E33).
        list_lag_seconds: A created job shows in ``list`` only after this long (E34); ``get`` sees it at once. A
            ``(shortest, longest)`` pair draws each job's lag uniformly between the two (seeded by ``faults.seed``).
        strict_hosts: Refuse a resource of another location than the host's (E3). Off only to run a client that
            knows one host (an older tuneform) against the other rules.
    """

    def __init__(
        self,
        *,
        queued_seconds: float = 0.05,
        running_seconds: float = 0.3,
        project_number: str = "123456789012",
        locations: tuple[str, ...] = ("us-central1", "europe-west4", "us-west1", "us", "eu"),
        today: datetime.date | None = None,
        list_filters: str = "documented",
        faults: FaultPlan | None = None,
        list_lag_seconds: float | tuple[float, float] = 0.0,
        strict_hosts: bool = True,
    ) -> None:
        self.strict_hosts = strict_hosts
        self.queued_seconds = queued_seconds
        self.running_seconds = running_seconds
        self.project_number = project_number
        self.locations = locations
        self.today = today or datetime.datetime.now(datetime.UTC).date()
        self.list_filters = list_filters
        self.faults = faults or FaultPlan()
        self.list_lag_seconds = list_lag_seconds
        self.creates = 0
        """Jobs created (a create refused with an error does not count; one whose answer was lost does)."""
        self.requests: list[tuple[str, str, str, Any]] = []
        """Every request as ``(method, path, host location, parsed proto message or None)``."""
        self.fault_counts: collections.Counter[str] = collections.Counter()
        self.ignored_output_only: list[str] = []
        """Output-only fields a client sent on create (ignored, as the service does, but worth a test's look)."""
        self.endpoints: dict[str, str] = {}
        """Location -> base URL of the emulated host serving it."""
        self.url = ""
        """Base URL of the first location's host (``us-central1``)."""
        self._jobs: dict[str, _Job] = {}
        self._models: dict[str, _Model] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._outcomes: collections.deque[Outcome] = collections.deque()
        self._scripted: collections.deque[tuple[int, str | None]] = collections.deque()
        self._lost_creates = 0
        self._ops = 0
        self._ids = 0
        self._rng = random.Random(self.faults.seed)
        self._lag_rng = random.Random(self.faults.seed + 1)  # apart, so a lag does not shift the fault sequence
        self._lock = threading.RLock()
        self._ports: dict[int, str] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ---- scripting (tests) -----------------------------------------------------------------------------------

    def script(self, outcome: Outcome) -> None:
        """Queue how the next created job behaves (FIFO; unscripted jobs succeed after ``running_seconds``)."""
        with self._lock:
            self._outcomes.append(outcome)

    def fail_next(self, status: int, count: int = 1, method: str | None = None) -> None:
        """Answer the next ``count`` requests (optionally only with HTTP ``method``) with ``status``, acting not."""
        with self._lock:
            self._scripted.extend([(status, method)] * count)

    def lose_next_create_answer(self, count: int = 1) -> None:
        """Create the next ``count`` jobs but answer 504, as when a response is lost after the server acted."""
        with self._lock:
            self._lost_creates += count

    def seed_job(
        self, parent: str, job: dict[str, Any], outcome: Outcome | None = None, age_seconds: float = 0.0
    ) -> str:
        """Create a job as if someone had ``age_seconds`` ago (not counted in ``creates``); returns its name."""
        with self._lock:
            location = parent.split("/")[3]
            self._check_create(job, location)
            return self._create("v1beta1", location, job, outcome or Outcome(), age_seconds)

    def seed_model(
        self,
        location: str,
        display_name: str,
        base_model: str,
        *,
        tuned_on: datetime.date,
        encryption: str = "",
    ) -> str:
        """A tuned model made outside the emulator's jobs (e.g. before continuous tuning existed): ``…/models/ID@1``.

        The returned name carries the project number.
        """
        with self._lock:
            model = self._new_model(location, display_name, base_model)
            wall = datetime.datetime.combine(tuned_on, datetime.time(12), datetime.UTC).timestamp()
            model.versions[1] = _Version(1, wall, {}, encryption=encryption)
            return f"{self._name(location, 'models', model.model_id)}@1"

    def drop_model(self, versioned: str) -> None:
        """Delete a tuned model version as a person would in the console: undeploy it everywhere, then delete it."""
        with self._lock:
            self._materialize()
            model_id, _, version = versioned.rsplit("/", 1)[-1].partition("@")
            model = self._models[model_id]
            for endpoint in self._endpoints.values():
                for deployed_id, (owner, number) in list(endpoint.deployed.items()):
                    if owner == model_id and number == int(version):
                        del endpoint.deployed[deployed_id]
                if not endpoint.deployed:
                    endpoint.deleted = True
            model.versions[int(version)].deleted = True
            if not model.live():
                model.deleted = True

    def job(self, name: str) -> dict[str, Any]:
        """A job's JSON as ``GET`` answers it (enum names)."""
        with self._lock:
            return self._render_job(self._job(name), int_enums=False)

    def created_jobs(self) -> list[dict[str, Any]]:
        """Every job's JSON, oldest first."""
        with self._lock:
            return [self._render_job(j, int_enums=False) for j in sorted(self._jobs.values(), key=lambda j: j.number)]

    def received(self, method: str, suffix: str) -> list[Any]:
        """Parsed messages of the requests with ``method`` whose path ends with ``suffix``."""
        return [msg for m, path, _, msg in self.requests if m == method and path.endswith(suffix)]

    def live_endpoints(self) -> list[str]:
        """Names of endpoints that still exist (what a stack would keep paying attention to)."""
        with self._lock:
            self._materialize()
            return sorted(name for name, e in self._endpoints.items() if not e.deleted)

    def live_models(self) -> list[str]:
        """``…/models/ID@N`` of every model version that still exists."""
        with self._lock:
            self._materialize()
            return sorted(
                f"{self._name(m.location, 'models', m.model_id)}@{n}" for m in self._models.values() for n in m.live()
            )

    def deployed(self) -> dict[str, list[str]]:
        """Endpoint name -> ``model@version`` deployed there (live endpoints only)."""
        with self._lock:
            self._materialize()
            return {
                name: [f"{model}@{version}" for model, version in e.deployed.values()]
                for name, e in self._endpoints.items()
                if not e.deleted
            }

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> str:
        """Serve every location on a port of its own; returns the first location's base URL."""
        self._types("v1beta1")  # slow to import: not inside the first request, where a client may time out
        route = Route
        app = Starlette(routes=[
            route("/{api}/publishers/{publisher}/models/{model}", self._publisher_model, methods=["GET"]),
            route("/{api}/projects/{p}/locations/{loc}/tuningJobs/{job}:cancel", self._cancel, methods=["POST"]),
            route("/{api}/projects/{p}/locations/{loc}/tuningJobs/{job}", self._get_job, methods=["GET"]),
            route("/{api}/projects/{p}/locations/{loc}/tuningJobs", self._create_job, methods=["POST"]),
            route("/{api}/projects/{p}/locations/{loc}/tuningJobs", self._list_jobs, methods=["GET"]),
            route("/{api}/projects/{p}/locations/{loc}/models/{model}:listVersions", self._list_versions,
                  methods=["GET"]),
            route("/{api}/projects/{p}/locations/{loc}/models/{model}:deleteVersion", self._delete_version,
                  methods=["DELETE"]),
            route("/{api}/projects/{p}/locations/{loc}/models/{model}:mergeVersionAliases", self._merge_aliases,
                  methods=["POST"]),
            route("/{api}/projects/{p}/locations/{loc}/models/{model}", self._model,
                  methods=["GET", "PATCH", "DELETE"]),
            route("/{api}/projects/{p}/locations/{loc}/endpoints/{endpoint}:undeployModel", self._undeploy,
                  methods=["POST"]),
            route("/{api}/projects/{p}/locations/{loc}/endpoints/{endpoint}:generateContent", self._generate,
                  methods=["POST"]),
            route("/{api}/projects/{p}/locations/{loc}/endpoints/{endpoint}", self._endpoint,
                  methods=["GET", "DELETE"]),
        ], exception_handlers={404: self._not_routed, 405: self._not_routed})  # fmt: skip
        sockets = []
        for location in self.locations:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            self._ports[port] = location
            self.endpoints[location] = f"http://127.0.0.1:{port}"
            sockets.append(sock)
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": sockets}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("Vertex emulator did not start within 10 s")
            time.sleep(0.01)
        self.url = self.endpoints[self.locations[0]]
        return self.url

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> VertexEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- protocol ------------------------------------------------------------------------------------------

    @staticmethod
    def _types(api: str) -> Any:
        if api == "v1beta1":
            from google.cloud import aiplatform_v1beta1

            return aiplatform_v1beta1
        if api == "v1":
            from google.cloud import aiplatform_v1

            return aiplatform_v1
        raise ApiError(404, f"unknown API version {api!r}")

    @staticmethod
    def _parse(message_type: Any, payload: str | dict[str, Any]) -> Any:
        """E1: JSON into the proto type; an unknown or mistyped field is a 400, as Google's JSON transcoding does."""
        msg = message_type.pb()()
        try:
            if isinstance(payload, dict):
                json_format.ParseDict(payload, msg, ignore_unknown_fields=False)
            else:
                json_format.Parse(payload, msg, ignore_unknown_fields=False)
        except json_format.ParseError as e:
            raise ApiError(400, f"Invalid JSON payload received. {e}") from None
        return msg

    def _query(self, request: Request, message_type: Any, path_fields: dict[str, str]) -> Any:
        params: dict[str, Any] = dict(path_fields)
        for key, value in request.query_params.items():
            if key == "$alt":
                continue
            params[key] = int(value) if key == "pageSize" else value
        return self._parse(message_type, params)

    @staticmethod
    def _int_enums(request: Request) -> bool:
        # The generated REST transport asks for `$alt=json;enum-encoding=int`; the service honours it.
        return "enum-encoding=int" in request.query_params.get("$alt", "")

    def _name(self, location: str, kind: str, id_: str) -> str:
        # The service answers with the project number whatever the caller wrote (E4).
        return f"projects/{self.project_number}/locations/{location}/{kind}/{id_}"

    def _next_id(self) -> str:
        self._ids += 1
        return str(1000 + self._ids)

    async def _not_routed(self, request: Request, exc: Exception) -> Response:
        return self._error(ApiError(404, f"The requested URL {request.url.path} was not found on this server."))

    @staticmethod
    def _error(e: ApiError) -> JSONResponse:
        return JSONResponse({"error": {"code": e.code, "message": e.message, "status": e.status}}, status_code=e.code)

    def _host(self, request: Request, location: str | None) -> str:
        """E3: the location this host serves; a resource in another location is refused."""
        port = request.scope["server"][1]
        host = self._ports[port]
        if location is not None and location != host and self.strict_hosts:
            raise ApiError(
                400,
                f"Request location {location} does not match the endpoint's location {host}: send requests for "
                f"locations/{location} to " + (f"aiplatform.{location}.rep.googleapis.com" if location in
                                                _MULTI_REGIONS else f"{location}-aiplatform.googleapis.com") + ".",
            )  # fmt: skip
        return host

    async def _begin(self, request: Request, location: str | None, mutating: bool) -> tuple[str, bool]:
        """Host check, then scripted and random faults (E33). Returns the host and whether to lose the answer."""
        host = self._host(request, location)
        with self._lock:
            for i, (status, method) in enumerate(self._scripted):
                if method is None or method == request.method:
                    del self._scripted[i]
                    self.fault_counts[f"scripted-{status}"] += 1
                    raise ApiError(status, f"scripted {status} from the emulator")
            kind = None
            if self.faults.rate and self._rng.random() < self.faults.rate:
                kinds = [k for k in self.faults.kinds if k != "lost" or mutating]
                kind = self._rng.choice(kinds) if kinds else None
        if kind == "429":
            self.fault_counts["429"] += 1
            raise ApiError(429, "Quota exceeded for aiplatform.googleapis.com (emulated fault).")
        if kind == "503":
            self.fault_counts["503"] += 1
            raise ApiError(503, "The service is currently unavailable (emulated fault).")
        if kind == "slow":
            self.fault_counts["slow"] += 1
            import asyncio

            await asyncio.sleep(self.faults.slow_seconds)
            raise ApiError(504, "Deadline exceeded (emulated fault).")
        if kind == "lost":
            self.fault_counts["lost"] += 1
        return host, kind == "lost"

    def _record(self, request: Request, host: str, message: Any) -> None:
        self.requests.append((request.method, request.url.path, host, message))

    @staticmethod
    def _lost() -> JSONResponse:
        return JSONResponse(
            {
                "error": {
                    "code": 504,
                    "message": "Deadline exceeded (the answer was lost).",
                    "status": "DEADLINE_EXCEEDED",
                }
            },
            status_code=504,
        )

    def _operation(self, resource: str, response_type: str) -> JSONResponse:
        # Long-running operations are done at once here; the client still goes through its LRO handling.
        self._ops += 1
        return JSONResponse({
            "name": f"{resource}/operations/{self._ops}",
            "done": True,
            "response": {"@type": f"type.googleapis.com/{response_type}"},
        })  # fmt: skip

    # ---- publisher models (E5-E7, E35) ----------------------------------------------------------------------------

    def _publisher(self, name: str, location: str) -> PublisherModel:
        """E5/E6: a base model that is offered in ``location`` today, else the 404 the service answers for it."""
        model = PUBLISHER_MODELS.get(name)
        retired = model is not None and model.retires is not None and self.today >= model.retires
        if model is None or retired or location not in model.tuning_regions:
            raise ApiError(
                404,
                f"Publisher Model `projects/{self.project_number}/locations/{location}/publishers/"
                f"{_publisher_path(name)}` was not found or your project does not have access to it. Please ensure "
                "you are using a valid model version. For more information, see: "
                "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions",
            )
        return model

    async def _publisher_model(self, request: Request) -> Response:
        """E35: GetPublisherModel answers 404 for a retired model, as every call naming it does (E5)."""
        p = request.path_params
        try:
            host, _ = await self._begin(request, None, mutating=False)
            model_id = p["model"]
            name = model_id if p["publisher"] == "google" and "@" not in model_id else f"{p['publisher']}/{model_id}"
            types = self._types(p["api"])
            self._record(
                request,
                host,
                self._query(
                    request, types.GetPublisherModelRequest, {"name": f"publishers/{p['publisher']}/models/{model_id}"}
                ),
            )
            model = PUBLISHER_MODELS.get(name)
            if model is None or (model.retires is not None and self.today >= model.retires):
                raise ApiError(404, f"Publisher Model `publishers/{p['publisher']}/models/{model_id}` was not found "
                                    "or your project does not have access to it.")  # fmt: skip
            view = {"name": f"publishers/{p['publisher']}/models/{model_id}", "launchStage": "GA",
                    "versionId": "001", "openSourceCategory": "GOOGLE_OWNED_OSS_WITH_GOOGLE_CHECKPOINT"
                    if model.open else "PROPRIETARY"}  # fmt: skip
            msg = self._parse(types.PublisherModel, view)
            return JSONResponse(json_format.MessageToDict(msg, use_integers_for_enums=self._int_enums(request)))
        except ApiError as e:
            return self._error(e)

    # ---- tuning jobs (E8-E23) ----------------------------------------------------------------------------

    def _check_create(self, body: dict[str, Any], location: str) -> None:
        """The checks CreateTuningJob makes before it accepts a job, each from a source (docs/vertex-emulator.md)."""
        for name in [f for f in _OUTPUT_ONLY if f in body]:
            self.ignored_output_only.append(name)  # E2: ignored, never an error
            del body[name]
        if isinstance(body.get("preTunedModel"), dict) and "baseModel" in body["preTunedModel"]:
            self.ignored_output_only.append("preTunedModel.baseModel")  # E2: output-only inside it too
            del body["preTunedModel"]["baseModel"]
        spec = body.get("supervisedTuningSpec")
        if spec is None:
            raise ApiError(400, "supervised_tuning_spec is required for supervised tuning.")
        uri = spec.get("trainingDatasetUri", "")
        for key in ("trainingDatasetUri", "validationDatasetUri"):  # E9
            value = spec.get(key)
            if value is not None and not (value.startswith("gs://") and value.endswith(".jsonl")):
                raise ApiError(400, f"{_snake(key)} should be a GCS object of type JSONL, got {value!r}.")
        if not uri:
            raise ApiError(400, "training_dataset_uri is required.")
        labels = body.get("labels", {})
        if len(labels) > 64:  # E10
            raise ApiError(400, f"A resource takes at most 64 labels, got {len(labels)}.")
        for key, value in labels.items():  # E10
            if not (_label_text(key) and key[0].isalpha()) or not _label_text(value, empty=True):
                raise ApiError(
                    400,
                    f"Invalid label {key}={value!r}: keys and values take lowercase letters (international ones too), "
                    "digits, '_' and '-', at most 64 characters; keys start with a letter.",
                )
        hyper = spec.get("hyperParameters", {})
        if "learningRate" in hyper and "learningRateMultiplier" in hyper:  # E8
            raise ApiError(400, "learning_rate and learning_rate_multiplier are mutually exclusive.")
        base = body.get("baseModel", "")
        pre = body.get("preTunedModel")
        if not base and not pre:
            raise ApiError(400, "One of base_model or pre_tuned_model is required.")
        if pre:
            base = self._continuation_base(body, location)
        model = self._publisher(base, location)
        if model.open:  # E7
            if "@" not in base:
                raise ApiError(400, f"Invalid open source publisher model resource name: {base}")
            if not body.get("outputUri", "").startswith("gs://"):
                raise ApiError(400, "output_uri is required for open model tuning.")
            if "learningRateMultiplier" in hyper:
                raise ApiError(400, "learning_rate_multiplier is not supported for open models; use learning_rate.")
            mode = spec.get("tuningMode", "TUNING_MODE_FULL")
            if mode not in model.modes:
                raise ApiError(400, f"Tuning mode {mode} is not supported for {base}.")
        else:
            for key in ("learningRate", "batchSize"):  # E8
                if key in hyper:
                    raise ApiError(400, f"{_snake(key)} is only available for open source models.")
            if "tuningMode" in spec or "outputUri" in body:
                raise ApiError(400, "tuning_mode and output_uri are only available for open source models.")
            size = hyper.get("adapterSize")
            if size is not None and model.adapter_sizes and size not in model.adapter_sizes:
                raise ApiError(400, "The adapter size is not supported for this base model.")  # E6 (G-908)
            if body.get("encryptionSpec", {}).get("kmsKeyName") and not model.cmek:
                raise ApiError(400, f"Customer-managed encryption keys are not supported for tuning {base}.")

    def _continuation_base(self, body: dict[str, Any], location: str) -> str:
        """E20-E23: continuous tuning from a tuned model; returns the base model it was tuned from."""
        pre = body["preTunedModel"]
        ref = pre.get("tunedModelName", "")
        match = re.fullmatch(r"projects/[^/]+/locations/([^/]+)/models/([^/@]+)(?:@([A-Za-z0-9_-]+))?", ref)
        if match is None:
            raise ApiError(400, f"pre_tuned_model.tuned_model_name {ref!r} is not a model resource name.")
        if match.group(1) != location:
            raise ApiError(400, f"The pre-tuned model must be in {location}, got {match.group(1)}.")
        model = self._models.get(match.group(2))
        version = self._resolve_version(model, match.group(3)) if model is not None else None
        if model is None or version is None:
            raise ApiError(404, f"Model {ref} does not exist.")
        info = model.versions[version]
        tuned_on = datetime.datetime.fromtimestamp(info.created_wall, datetime.UTC).date()
        if tuned_on < _CONTINUOUS_SINCE:  # E21
            raise ApiError(
                400,
                f"Model {ref} was tuned on {tuned_on}; only models tuned on or after "
                f"{_CONTINUOUS_SINCE} can be used for continuous tuning.",
                "FAILED_PRECONDITION",
            )
        key = body.get("encryptionSpec", {}).get("kmsKeyName", "")
        if key != info.encryption:  # E22
            raise ApiError(
                400,
                "A continuous tuning job must use the same customer-managed encryption key as the "
                f"tuning job of {ref} ({info.encryption or 'none'}), got {key or 'none'}.",
                "FAILED_PRECONDITION",
            )
        source = PUBLISHER_MODELS.get(model.base_model)
        if source is None or not source.continuous:  # E20
            raise ApiError(400, f"Continuous tuning is not supported for models tuned from {model.base_model}.")
        checkpoint = pre.get("checkpointId")
        if checkpoint and checkpoint not in {c["checkpointId"] for c in info.checkpoints}:
            raise ApiError(404, f"Checkpoint {checkpoint} of {ref} does not exist.")
        return model.base_model

    @staticmethod
    def _resolve_version(model: _Model, ref: str | None) -> int | None:
        live = model.live()
        if ref is None or ref == "default":
            return model.default_version if model.default_version in live else None
        return int(ref) if ref.isdigit() and int(ref) in live else None

    def _new_model(self, location: str, display_name: str, base_model: str) -> _Model:
        model = _Model(self._next_id(), location, display_name, base_model)
        self._models[model.model_id] = model
        return model

    def _create(self, api: str, location: str, body: dict[str, Any], outcome: Outcome, age: float) -> str:
        number = len(self._jobs) + 1
        name = self._name(location, "tuningJobs", f"{9000000000000000000 + number}")
        base = body.get("baseModel", "")
        display = body.get("tunedModelDisplayName") or f"tuned-{number}"
        placement: dict[str, Any] = {"model": None}
        publisher: PublisherModel | None
        if body.get("preTunedModel"):
            ref = body["preTunedModel"]["tunedModelName"]
            source = self._models[ref.split("/models/")[1].split("@")[0]]
            base = source.base_model
            # E23: the same display name adds a version to the pre-tuned model; another name starts a new model.
            placement["model"] = source.model_id if display == source.display_name else None
            body["preTunedModel"]["baseModel"] = base  # output-only field the service fills in
        publisher = PUBLISHER_MODELS.get(base)
        placement["display"] = display
        placement["base"] = base
        placement["open"] = bool(publisher and publisher.open)
        placement["serving"] = publisher.serving.get(location, location) if publisher else location
        now = time.monotonic()
        self._jobs[name] = _Job(name, api, location, body, now - age, time.time() - age, outcome, number, placement)
        lag = self.list_lag_seconds
        self._jobs[name].list_lag = self._lag_rng.uniform(*lag) if isinstance(lag, tuple) else lag
        return name

    def _state(self, job: _Job, now: float) -> tuple[str, float | None, float | None]:
        """E11: QUEUED -> PENDING -> RUNNING -> terminal; cancellation passes through CANCELLING (E18)."""
        queued_until = job.created + self.queued_seconds
        pending_until = queued_until + self.queued_seconds
        running = job.outcome.running_seconds
        end = pending_until + (self.running_seconds if running is None else running)
        if job.cancel_requested_at is not None and job.cancel_requested_at < end:
            settled = job.cancel_requested_at + self.queued_seconds
            start = pending_until if job.cancel_requested_at > pending_until else None
            if now < settled:
                return "JOB_STATE_CANCELLING", start, None
            return "JOB_STATE_CANCELLED", start, settled
        if now < queued_until:
            return "JOB_STATE_QUEUED", None, None
        if now < pending_until:
            return "JOB_STATE_PENDING", None, None
        if now < end:
            return "JOB_STATE_RUNNING", pending_until, None
        return job.outcome.state, pending_until, end

    def _epochs(self, job: _Job) -> int:
        spec = job.body["supervisedTuningSpec"]
        return int(spec.get("hyperParameters", {}).get("epochCount") or 3)

    def _materialize(self) -> None:
        """E12-E14, E23: once a Gemini job succeeds, its model version exists and each exported checkpoint is deployed.

        Open-model jobs (E16) register nothing and deploy nothing: their result is the weights under outputUri.
        """
        now = time.monotonic()
        for job in sorted(self._jobs.values(), key=lambda j: j.number):
            if job.materialized:
                continue
            state = self._state(job, now)[0]
            if state not in ("JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED"):
                continue
            job.materialized = True
            place = job.placement
            if place["open"]:
                continue
            model = self._models.get(place["model"] or "")
            if model is None or model.deleted:
                model = self._new_model(job.location, place["display"], place["base"])
            number = max(model.versions, default=0) + 1
            spec = job.body["supervisedTuningSpec"]
            epochs = self._epochs(job)
            exported = [epochs] if spec.get("exportLastCheckpointOnly") else _checkpoint_epochs(epochs)
            checkpoints = []
            for index, epoch in enumerate(exported, start=1):
                endpoint = self._name(place["serving"], "endpoints", self._next_id())
                deployed_id = self._next_id()
                # E31: a tuning job's labels go to the resources it generates, the endpoints among them.
                self._endpoints[endpoint] = _Endpoint(
                    endpoint,
                    place["serving"],
                    place["display"],
                    {deployed_id: (model.model_id, number)},
                    dict(job.body.get("labels", {})),
                )
                checkpoints.append({"checkpointId": str(index), "epoch": str(epoch), "step": str(epoch * 10),
                                    "endpoint": endpoint})  # fmt: skip
            key = job.body.get("encryptionSpec", {}).get("kmsKeyName", "")
            model.versions[number] = _Version(
                number, job.created_wall + (now - job.created), dict(job.body.get("labels", {})),
                encryption=key, checkpoints=checkpoints, default_checkpoint=checkpoints[-1]["checkpointId"],
            )  # fmt: skip
            if len(model.live()) == 1:
                model.default_version = number
                model.labels = dict(job.body.get("labels", {}))
                model.description = job.body.get("description", "")
            place["model"] = model.model_id
            place["version"] = number
            place["checkpoints"] = checkpoints

    def _render_job(self, job: _Job, int_enums: bool) -> dict[str, Any]:
        self._materialize()
        now = time.monotonic()
        state, start, end = self._state(job, now)
        wall = time.time() - now

        def stamp(t: float) -> str:
            return datetime.datetime.fromtimestamp(t + wall, datetime.UTC).isoformat().replace("+00:00", "Z")

        out = json.loads(json.dumps(job.body))
        out.update(name=job.name, state=state, createTime=stamp(job.created), updateTime=stamp(now))
        if start is not None:
            out["startTime"] = stamp(start)
        if end is not None:
            out["endTime"] = stamp(end)
        if start is not None and state != "JOB_STATE_CANCELLED":  # E17
            out["tuningDataStats"] = {
                "supervisedTuningDataStats": job.outcome.data_stats
                or {"tuningDatasetExampleCount": "120", "totalBillableTokenCount": "48000", "tuningStepCount": "30"}
            }
        place = job.placement
        if job.materialized and not place["open"]:
            model = self._models[place["model"]]
            tuned: dict[str, Any] = {
                "model": f"{self._name(model.location, 'models', model.model_id)}@{place['version']}"
            }
            checkpoints = place["checkpoints"]
            tuned["endpoint"] = checkpoints[-1]["endpoint"]  # E13: the default (final) checkpoint's endpoint
            if len(checkpoints) > 1:
                tuned["checkpoints"] = checkpoints  # E12: only when intermediate checkpoints are enabled
            out["tunedModel"] = tuned
        if state == "JOB_STATE_FAILED":
            out["error"] = {"code": 3, "message": job.outcome.error_message or "Tuning failed."}
        if state == "JOB_STATE_CANCELLED":
            out["error"] = {"code": 1, "message": "CANCELLED"}  # E18
        if state == "JOB_STATE_EXPIRED":
            out["error"] = {"code": 4, "message": job.outcome.error_message or "The job expired."}
        msg = self._parse(self._types(job.api).TuningJob, out)
        return json_format.MessageToDict(msg, use_integers_for_enums=int_enums)

    def _job(self, name: str) -> _Job:
        job = self._jobs.get(name)
        if job is None:
            suffix = "/tuningJobs/" + name.rsplit("/", 1)[-1]
            job = next((j for n, j in self._jobs.items() if n.endswith(suffix)), None)
        if job is None:
            raise ApiError(404, f"The TuningJob does not exist: {name}")
        return job

    async def _create_job(self, request: Request) -> Response:
        p = request.path_params
        try:
            host, lose = await self._begin(request, p["loc"], mutating=True)
            types = self._types(p["api"])
            msg = self._parse(types.TuningJob, (await request.body()).decode())
            self._record(request, host, msg)
            body = json_format.MessageToDict(msg)
            with self._lock:
                self._check_create(body, p["loc"])
                outcome = self._outcomes.popleft() if self._outcomes else Outcome()
                name = self._create(p["api"], p["loc"], body, outcome, 0.0)
                self.creates += 1
                if self._lost_creates:
                    self._lost_creates -= 1
                    lose = True
                if lose:
                    return self._lost()
                return JSONResponse(self._render_job(self._jobs[name], self._int_enums(request)))
        except ApiError as e:
            return self._error(e)

    async def _get_job(self, request: Request) -> Response:
        p = request.path_params
        name = f"projects/{p['p']}/locations/{p['loc']}/tuningJobs/{p['job']}"
        try:
            host, _ = await self._begin(request, p["loc"], mutating=False)
            types = self._types(p["api"])
            self._record(request, host, self._query(request, types.GetTuningJobRequest, {"name": name}))
            with self._lock:
                return JSONResponse(self._render_job(self._job(name), self._int_enums(request)))
        except ApiError as e:
            return self._error(e)

    async def _list_jobs(self, request: Request) -> Response:
        p = request.path_params
        parent = f"projects/{p['p']}/locations/{p['loc']}"
        try:
            host, _ = await self._begin(request, p["loc"], mutating=False)
            types = self._types(p["api"])
            msg = self._query(request, types.ListTuningJobsRequest, {"parent": parent})
            self._record(request, host, msg)
            match = self._filter(msg.filter)
            now = time.monotonic()
            with self._lock:
                # E34: a lagging list does not show jobs younger than the lag. Order: creation, oldest first (E15:
                # the API documents no order, so clients must not rely on one).
                jobs = [
                    self._render_job(j, self._int_enums(request))
                    for j in sorted(self._jobs.values(), key=lambda j: j.number)
                    if j.location == p["loc"] and now - j.created >= j.list_lag
                ]
            jobs = [j for j in jobs if match(_enum_names(j))]
            size = min(msg.page_size or 50, 100)
            start = int(msg.page_token or 0)
            out: dict[str, Any] = {"tuningJobs": jobs[start : start + size]}
            if start + size < len(jobs):
                out["nextPageToken"] = str(start + size)
            return JSONResponse(out)
        except ApiError as e:
            return self._error(e)

    _CLAUSE = re.compile(
        r'\s*(?P<field>labels\.(?P<label>[a-z][a-z0-9_-]*)|state)\s*=\s*"?(?P<value>[A-Za-z0-9_-]*)"?\s*'
    )

    def _filter(self, text: str) -> Any:
        """E15: ``state`` clauses; ``labels.*`` only when configured — the tuning API documents no filter fields."""
        clauses: list[tuple[str | None, str]] = []
        for part in filter(None, re.split(r"\s+AND\s+", text.strip())):
            m = self._CLAUSE.fullmatch(part)
            if m is None or (m.group("label") and self.list_filters != "labels"):
                raise ApiError(400, f"Invalid filter: unsupported field in {part.strip()!r}.")
            clauses.append((m.group("label"), m.group("value")))

        def match(job: dict[str, Any]) -> bool:
            return all(
                (job.get("labels", {}).get(label) if label else job.get("state")) == value for label, value in clauses
            )

        return match

    async def _cancel(self, request: Request) -> Response:
        p = request.path_params
        name = f"projects/{p['p']}/locations/{p['loc']}/tuningJobs/{p['job']}"
        try:
            host, lose = await self._begin(request, p["loc"], mutating=True)
            types = self._types(p["api"])
            msg = self._parse(types.CancelTuningJobRequest, (await request.body()).decode() or "{}")
            self._record(request, host, msg)
            with self._lock:
                job = self._job(name)
                state = self._state(job, time.monotonic())[0]
                if state in TERMINAL:
                    raise ApiError(
                        400,
                        f"The TuningJob {name} is in state {state} and cannot be cancelled.",
                        "FAILED_PRECONDITION",
                    )
                if job.cancel_requested_at is None:
                    job.cancel_requested_at = time.monotonic()
            return self._lost() if lose else JSONResponse({})
        except ApiError as e:
            return self._error(e)

    # ---- ModelService (E24-E28) ------------------------------------------------------------------------------

    def _model_of(self, ref: str) -> tuple[_Model, int | None]:
        self._materialize()
        model_id, _, version = ref.partition("@")
        model = self._models.get(model_id)
        if model is None or model.deleted:
            raise ApiError(404, f"Model {ref} does not exist.")
        if version and version != "-":
            resolved = self._resolve_version(model, version)
            if resolved is None:
                raise ApiError(404, f"Model version {ref} does not exist.")
            return model, resolved
        return model, None

    def _deployments(self, model: _Model, version: int | None = None) -> list[tuple[str, str]]:
        """(endpoint, deployed model id) of every live deployment of ``model`` (of one ``version``)."""
        return [
            (name, deployed_id)
            for name, endpoint in self._endpoints.items()
            if not endpoint.deleted
            for deployed_id, (model_id, number) in endpoint.deployed.items()
            if model_id == model.model_id and (version is None or number == version)
        ]

    def _model_view(self, model: _Model, version: int) -> dict[str, Any]:
        info = model.versions[version]
        view: dict[str, Any] = {
            "name": self._name(model.location, "models", model.model_id),
            "displayName": model.display_name,
            "description": model.description,
            "versionId": str(version),
            "versionAliases": ["default"] if version == model.default_version else [],
            "versionDescription": info.description,
            "labels": {**model.labels, **info.labels},  # E24: model and version labels merged on read
            "versionCreateTime": datetime.datetime.fromtimestamp(info.created_wall, datetime.UTC)
            .isoformat().replace("+00:00", "Z"),
            "deployedModels": [{"endpoint": e, "deployedModelId": d} for e, d in self._deployments(model, version)],
        }  # fmt: skip
        if info.encryption:
            view["encryptionSpec"] = {"kmsKeyName": info.encryption}
        if info.checkpoints:
            view["defaultCheckpointId"] = info.default_checkpoint
            view["checkpoints"] = [{"checkpointId": c["checkpointId"], "epoch": c["epoch"], "step": c["step"]}
                                   for c in info.checkpoints]  # fmt: skip
        return view

    async def _model(self, request: Request) -> Response:
        p = request.path_params
        try:
            host, lose = await self._begin(request, p["loc"], mutating=request.method != "GET")
            types = self._types(p["api"])
            with self._lock:
                model, version = self._model_of(p["model"])
                if request.method == "PATCH":
                    msg = self._parse(types.Model, (await request.body()).decode())
                    self._record(request, host, msg)
                    self._update_model(model, version, msg, request.query_params.get("updateMask", ""))
                elif request.method == "DELETE":
                    self._record(request, host, None)
                    deployed = self._deployments(model)
                    if deployed:  # E26
                        raise ApiError(
                            400,
                            f"Model {p['model']} cannot be deleted: it is deployed to "
                            f"{sorted({e for e, _ in deployed})}. Undeploy it first.",
                            "FAILED_PRECONDITION",
                        )
                    model.deleted = True
                    return self._lost() if lose else self._operation(p["model"], "google.protobuf.Empty")
                else:
                    self._record(request, host, None)
                view = self._model_view(model, version or model.default_version)
            if lose:
                return self._lost()
            msg = self._parse(types.Model, view)
            return JSONResponse(json_format.MessageToDict(msg, use_integers_for_enums=self._int_enums(request)))
        except ApiError as e:
            return self._error(e)

    @staticmethod
    def _update_model(model: _Model, version: int | None, msg: Any, mask: str) -> None:
        """E24/E25 (UpdateModelRequest): model fields with a model name, version fields with a version name."""
        if not mask:
            raise ApiError(400, "update_mask is required.")
        paths = [p.strip() for p in mask.split(",") if p.strip()]
        model_fields = {"display_name", "displayName", "description"}
        version_fields = {"version_description", "versionDescription"}
        scope_model = version is None
        for path in paths:
            if path in ("labels",):
                continue
            if path in model_fields and not scope_model or path in version_fields and scope_model:
                raise ApiError(
                    400,
                    f"Precondition check failed: field {path!r} cannot be updated with "
                    f"{'a model' if scope_model else 'a model version'} name; one request cannot update "
                    "both the model and the version fields.",
                    "FAILED_PRECONDITION",
                )
            if path not in model_fields | version_fields:
                raise ApiError(400, f"update_mask path {path!r} is not supported.")
        for path in paths:
            if path == "labels":
                if scope_model:
                    model.labels = dict(msg.labels)
                else:
                    assert version is not None
                    model.versions[version].labels = dict(msg.labels)
            elif path in ("description",):
                model.description = msg.description
            elif path in ("display_name", "displayName"):
                model.display_name = msg.display_name
            elif path in version_fields:
                assert version is not None
                model.versions[version].description = msg.version_description

    async def _list_versions(self, request: Request) -> Response:
        p = request.path_params
        try:
            host, _ = await self._begin(request, p["loc"], mutating=False)
            types = self._types(p["api"])
            name = f"projects/{p['p']}/locations/{p['loc']}/models/{p['model']}"
            self._record(request, host, self._query(request, types.ListModelVersionsRequest, {"name": name}))
            with self._lock:
                model, _ = self._model_of(p["model"])
                views = [self._model_view(model, v) for v in model.live()]
            msg = self._parse(types.ListModelVersionsResponse, {"models": views})
            return JSONResponse(json_format.MessageToDict(msg, use_integers_for_enums=self._int_enums(request)))
        except ApiError as e:
            return self._error(e)

    async def _delete_version(self, request: Request) -> Response:
        p = request.path_params
        try:
            host, lose = await self._begin(request, p["loc"], mutating=True)
            self._record(request, host, None)
            with self._lock:
                model, version = self._model_of(p["model"])
                if version is None:
                    raise ApiError(400, "DeleteModelVersion needs a version: projects/*/locations/*/models/*@*.")
                deployed = self._deployments(model, version)
                if deployed:  # E27
                    raise ApiError(
                        400,
                        f"Model version {p['model']} cannot be deleted: DeployedModels were created "
                        f"from it on {sorted({e for e, _ in deployed})}.",
                        "FAILED_PRECONDITION",
                    )
                if model.live() == [version]:  # E27
                    raise ApiError(
                        400,
                        "Deleting the only version in the Model is not allowed. Use DeleteModel for "
                        "deleting the Model instead.",
                        "FAILED_PRECONDITION",
                    )
                model.versions[version].deleted = True
                if model.default_version == version:
                    model.default_version = max(model.live())
            return self._lost() if lose else self._operation(p["model"], "google.protobuf.Empty")
        except ApiError as e:
            return self._error(e)

    async def _merge_aliases(self, request: Request) -> Response:
        p = request.path_params
        try:
            host, _ = await self._begin(request, p["loc"], mutating=True)
            types = self._types(p["api"])
            msg = self._parse(types.MergeVersionAliasesRequest, (await request.body()).decode())
            self._record(request, host, msg)
            with self._lock:
                model, version = self._model_of(p["model"])
                if version is None:
                    raise ApiError(400, "MergeVersionAliases needs a version: projects/*/locations/*/models/*@*.")
                if "default" in msg.version_aliases:
                    model.default_version = version
                view = self._model_view(model, version)
            out = self._parse(types.Model, view)
            return JSONResponse(json_format.MessageToDict(out, use_integers_for_enums=self._int_enums(request)))
        except ApiError as e:
            return self._error(e)

    # ---- EndpointService and serving (E29-E32) ---------------------------------------------------------------

    def _live_endpoint(self, location: str, endpoint_id: str) -> _Endpoint:
        self._materialize()
        found = self._endpoints.get(self._name(location, "endpoints", endpoint_id))
        if found is None or found.deleted:
            raise ApiError(404, f"Endpoint {self._name(location, 'endpoints', endpoint_id)} does not exist.")
        return found

    async def _endpoint(self, request: Request) -> Response:
        p = request.path_params
        try:
            host, lose = await self._begin(request, p["loc"], mutating=request.method == "DELETE")
            types = self._types(p["api"])
            self._record(request, host, None)
            with self._lock:
                endpoint = self._live_endpoint(p["loc"], p["endpoint"])
                if request.method == "DELETE":
                    if endpoint.deployed:  # E30
                        raise ApiError(
                            400,
                            f"Endpoint {endpoint.name} has deployed models; undeploy them first.",
                            "FAILED_PRECONDITION",
                        )
                    endpoint.deleted = True
                    return self._lost() if lose else self._operation(endpoint.name, "google.protobuf.Empty")
                view: dict[str, Any] = {
                    "name": endpoint.name,
                    "displayName": endpoint.display_name,
                    "labels": endpoint.labels,
                }
                if endpoint.deployed:
                    view["deployedModels"] = [
                        {"id": d, "model": self._name(self._models[m].location, "models", m), "modelVersionId": str(v)}
                        for d, (m, v) in endpoint.deployed.items()
                    ]
                    view["trafficSplit"] = {d: 100 // len(endpoint.deployed) for d in endpoint.deployed}
            msg = self._parse(types.Endpoint, view)
            return JSONResponse(json_format.MessageToDict(msg, use_integers_for_enums=self._int_enums(request)))
        except ApiError as e:
            return self._error(e)

    async def _undeploy(self, request: Request) -> Response:
        p = request.path_params
        try:
            host, lose = await self._begin(request, p["loc"], mutating=True)
            types = self._types(p["api"])
            msg = self._parse(types.UndeployModelRequest, (await request.body()).decode())
            self._record(request, host, msg)
            with self._lock:
                endpoint = self._live_endpoint(p["loc"], p["endpoint"])
                if msg.deployed_model_id not in endpoint.deployed:  # E29
                    raise ApiError(404, f"Deployed model {msg.deployed_model_id!r} is not on {endpoint.name}.")
                del endpoint.deployed[msg.deployed_model_id]
            if lose:
                return self._lost()
            return self._operation(endpoint.name, f"google.cloud.aiplatform.{p['api']}.UndeployModelResponse")
        except ApiError as e:
            return self._error(e)

    async def _generate(self, request: Request) -> Response:
        """E32: generateContent on a tuned model's endpoint, on the endpoint's own (multi-region) host."""
        p = request.path_params
        try:
            host, _ = await self._begin(request, p["loc"], mutating=False)
            types = self._types(p["api"])
            msg = self._parse(types.GenerateContentRequest, (await request.body()).decode())
            self._record(request, host, msg)
            with self._lock:
                endpoint = self._live_endpoint(p["loc"], p["endpoint"])
                if not endpoint.deployed:
                    raise ApiError(400, f"Endpoint {endpoint.name} has no deployed model.", "FAILED_PRECONDITION")
                model_id, version = next(iter(endpoint.deployed.values()))
            text = f"emulated answer from {endpoint.display_name} (model {model_id}@{version})"
            prompt = sum(len(part.text.split()) for content in msg.contents for part in content.parts)
            answer = {
                "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": len(text.split()),
                                  "totalTokenCount": prompt + len(text.split())},
                "modelVersion": f"{model_id}@{version}",
            }  # fmt: skip
            out = self._parse(types.GenerateContentResponse, answer)
            return JSONResponse(json_format.MessageToDict(out, use_integers_for_enums=self._int_enums(request)))
        except ApiError as e:
            return self._error(e)


TuningApiEmulator = VertexEmulator
"""The name earlier tests used."""


def _checkpoint_epochs(epochs: int) -> list[int]:
    """E12 (checkpoints page): one checkpoint after each epoch under 10 epochs, about 10 evenly spread above."""
    if epochs <= 10:
        return list(range(1, epochs + 1))
    return sorted({round(epochs * i / 10) for i in range(1, 11)})


def _publisher_path(name: str) -> str:
    if "/" in name:
        publisher, _, model = name.partition("/")
        return f"{publisher}/models/{model}"
    return f"google/models/{name}"


def _label_text(text: str, *, empty: bool = False) -> bool:
    """A label key or value as ``TuningJob.labels`` describes them: at most 64 Unicode code points, lowercase
    letters (international characters allowed), digits, underscores and dashes (E10)."""
    if not text:
        return empty
    return len(text) <= 64 and all(c in "_-" or c.isdigit() or (c.isalpha() and not c.isupper()) for c in text)


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _enum_names(job: dict[str, Any]) -> dict[str, Any]:
    from google.cloud import aiplatform_v1beta1

    state = job.get("state")
    return dict(job, state=aiplatform_v1beta1.JobState(state).name) if isinstance(state, int) else job


@contextmanager
def running(**kwargs: Any) -> Iterator[VertexEmulator]:
    """``with running() as emu:`` — an emulator for the duration of the block."""
    emu = VertexEmulator(**kwargs)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def parsed_bodies(emu: VertexEmulator) -> list[dict[str, Any]]:
    """JSON of every create request as received (handy in assertion messages)."""
    return [json.loads(json_format.MessageToJson(m)) for m in emu.received("POST", "/tuningJobs")]


def main() -> None:
    """Serve the emulator until interrupted: ``python tests/emulators/vertex_api.py`` prints each location's URL."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queued-seconds", type=float, default=2.0)
    parser.add_argument("--running-seconds", type=float, default=10.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    args = parser.parse_args()
    emu = VertexEmulator(
        queued_seconds=args.queued_seconds,
        running_seconds=args.running_seconds,
        faults=FaultPlan(rate=args.fault_rate),
    )
    emu.start()
    print(json.dumps(emu.endpoints), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emu.stop()


if __name__ == "__main__":
    main()
