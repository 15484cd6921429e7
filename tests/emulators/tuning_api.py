"""An emulator of Vertex AI's tuning API (``projects/*/locations/*/tuningJobs``) over real HTTP on 127.0.0.1.

It speaks the REST JSON of ``v1beta1`` and ``v1`` that google-cloud-aiplatform's generated REST transport sends, so
the Vertex backend is exercised through the real client, end to end. Every request is parsed into the API's own proto
type (``json_format.Parse(..., ignore_unknown_fields=False)``): a misspelt or misplaced field fails the request with
400, and the test with it.

Behaviour it reproduces, from the fact sheet (``shared/reference/vertex-sft-facts.md``):

- states advance with time: QUEUED -> PENDING -> RUNNING -> a terminal state (SUCCEEDED unless scripted);
- ``tunedModel.model`` is ``.../models/ID@N``: a base-model job starts a new model at version 1, a
  ``preTunedModel`` job with the same display name adds version N+1 to that model, a different name starts a new model;
- ``tuningDataStats`` appear once the job runs; FAILED/CANCELLED jobs carry ``error``;
- ``list`` supports ``filter`` on labels and state, and paging; ``:cancel`` ends in CANCELLED;
- scripted HTTP errors (429, 503, 504) for the next N requests, scripted outcomes per created job; it counts creates.

Also a sliver of ModelService (get, patch, list versions, move the ``default`` alias, delete a version or a model)
and EndpointService (get, undeploy, delete), enough for label updates, endpoint status and ``retain: false``. Its
rules follow the Model Registry docs: a deployed version cannot be deleted, nor the one carrying ``default``.
Long-running operations come back already done.
"""

from __future__ import annotations

import collections
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TERMINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
            "JOB_STATE_PARTIALLY_SUCCEEDED")  # fmt: skip

_HTTP_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip

# Output-only fields of TuningJob: the real API ignores or rejects them on create; a client that sends one has a bug.
_OUTPUT_ONLY = ("name", "state", "create_time", "start_time", "end_time", "update_time", "error", "experiment",
                "tuned_model", "tuning_data_stats", "pipeline_job", "evaluate_dataset_runs")  # fmt: skip

# Adapter sizes Gemini base models accept (fact sheet §1; 32 is refused with this exact message, python-genai#908).
_GEMINI_ADAPTER_SIZES = ("ADAPTER_SIZE_ONE", "ADAPTER_SIZE_TWO", "ADAPTER_SIZE_FOUR", "ADAPTER_SIZE_EIGHT",
                         "ADAPTER_SIZE_SIXTEEN")  # fmt: skip


class ApiError(Exception):
    """An error answer in Google's JSON error shape."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Outcome:
    """How the next created job behaves (queued with ``TuningApiEmulator.script``)."""

    state: str = "JOB_STATE_SUCCEEDED"
    """Terminal state, e.g. ``JOB_STATE_FAILED``, ``JOB_STATE_EXPIRED``, ``JOB_STATE_PARTIALLY_SUCCEEDED``."""
    running_seconds: float | None = None
    """Time in RUNNING before the terminal state; ``None`` = the emulator's default."""
    error_message: str = ""
    data_stats: dict[str, Any] | None = None
    """``supervisedTuningDataStats`` JSON; defaults to plausible counts."""


@dataclass
class _Job:
    name: str
    version: str
    """``v1`` or ``v1beta1``: the API version the job was created with (and is rendered in)."""
    body: dict[str, Any]
    """The created TuningJob as JSON (input fields); output fields are computed on read."""
    created: float
    outcome: Outcome
    number: int
    cancel_requested_at: float | None = None
    tuned_model: dict[str, str] | None = None


@dataclass
class _Model:
    model_id: str
    display_name: str
    base_model: str
    versions: int = 0
    """Versions ever created; numbers are never reused."""
    deleted_versions: set[int] = field(default_factory=set)
    default_version: int = 1
    """The version carrying the ``default`` alias: the first one, until the alias is moved."""
    deleted: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def live_versions(self) -> list[int]:
        return [] if self.deleted else [v for v in range(1, self.versions + 1) if v not in self.deleted_versions]


class TuningApiEmulator:
    """The tuning API on ``http://127.0.0.1:<port>``; use as a context manager or call ``start``/``stop``.

    Args:
        queued_seconds: Time a new job spends QUEUED, then as long again PENDING.
        running_seconds: Default time in RUNNING before the terminal state.
        project_number: Used in resource names the API returns (it answers with numbers, not project ids).
    """

    def __init__(
        self, *, queued_seconds: float = 0.05, running_seconds: float = 0.3, project_number: str = "123456789012"
    ) -> None:
        self.queued_seconds = queued_seconds
        self.running_seconds = running_seconds
        self.project_number = project_number
        self.creates = 0
        """How many jobs were created (a create that failed with an error does not count)."""
        self.requests: list[tuple[str, str, Any]] = []
        """Every request as ``(method, path, parsed proto message)``; the message is a protobuf (``.pb``) object."""
        self._jobs: dict[str, _Job] = {}
        self._models: dict[str, _Model] = {}
        self._outcomes: collections.deque[Outcome] = collections.deque()
        self._http_errors: collections.deque[tuple[int, str | None]] = collections.deque()
        self._lost_creates = 0
        self._undeployed: set[str] = set()
        self._deleted_endpoints: set[str] = set()
        self._op_count = 0
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ---- scripting -------------------------------------------------------------------------------------------

    def script(self, outcome: Outcome) -> None:
        """Queue how the next created job behaves (FIFO; unscripted jobs succeed after ``running_seconds``)."""
        with self._lock:
            self._outcomes.append(outcome)

    def fail_next(self, status: int, count: int = 1, method: str | None = None) -> None:
        """Answer the next ``count`` requests (optionally only those with HTTP ``method``) with ``status``."""
        with self._lock:
            self._http_errors.extend([(status, method)] * count)

    def lose_next_create_answer(self, count: int = 1) -> None:
        """Create the next ``count`` jobs but answer 504, as when a response is lost after the server acted.

        The create still counts: this is the case where a blind client retry would pay for a second job.
        """
        with self._lock:
            self._lost_creates += count

    def seed_job(
        self, parent: str, job: dict[str, Any], outcome: Outcome | None = None, age_seconds: float = 0.0
    ) -> str:
        """Create a job as if someone else had created it ``age_seconds`` ago; returns its resource name.

        Does not count as a create: tests use it for jobs that exist before the code under test runs.
        """
        with self._lock:
            return self._create("v1beta1", parent, job, outcome or Outcome(), time.monotonic() - age_seconds)

    def job(self, name: str) -> dict[str, Any]:
        """The current JSON view of a job, as ``GET`` would answer it (names of enums)."""
        with self._lock:
            return self._render(self._jobs[name], int_enums=False)

    def created_jobs(self) -> list[dict[str, Any]]:
        """JSON views of every job, oldest first."""
        with self._lock:
            return [self._render(j, int_enums=False) for j in sorted(self._jobs.values(), key=lambda j: j.number)]

    def received(self, method: str, suffix: str) -> list[Any]:
        """Parsed messages of the requests with ``method`` whose path ends with ``suffix``."""
        return [msg for m, path, msg in self.requests if m == method and path.endswith(suffix)]

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> str:
        """Start serving on a free port of 127.0.0.1; returns the base URL."""
        # Import the (slow to import) v1beta1 types now, not inside the first request where a client may time out.
        self._types("v1beta1")
        app = Starlette(routes=[
            Route("/{ver}/projects/{p}/locations/{loc}/tuningJobs/{job}:cancel", self._cancel, methods=["POST"]),
            Route("/{ver}/projects/{p}/locations/{loc}/tuningJobs/{job}", self._get, methods=["GET"]),
            Route("/{ver}/projects/{p}/locations/{loc}/tuningJobs", self._create_route, methods=["POST"]),
            Route("/{ver}/projects/{p}/locations/{loc}/tuningJobs", self._list, methods=["GET"]),
            Route("/{ver}/projects/{p}/locations/{loc}/models/{model}:listVersions", self._model_versions,
                  methods=["GET"]),
            Route("/{ver}/projects/{p}/locations/{loc}/models/{model}:deleteVersion", self._delete_model_version,
                  methods=["DELETE"]),
            Route("/{ver}/projects/{p}/locations/{loc}/models/{model}:mergeVersionAliases", self._merge_aliases,
                  methods=["POST"]),
            Route("/{ver}/projects/{p}/locations/{loc}/models/{model}", self._model,
                  methods=["GET", "PATCH", "DELETE"]),
            Route("/{ver}/projects/{p}/locations/{loc}/endpoints/{endpoint}:undeployModel", self._undeploy,
                  methods=["POST"]),
            Route("/{ver}/projects/{p}/locations/{loc}/endpoints/{endpoint}", self._endpoint,
                  methods=["GET", "DELETE"]),
        ])  # fmt: skip
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("tuning-API emulator did not start within 10 s")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> TuningApiEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- protocol helpers ------------------------------------------------------------------------------------

    @staticmethod
    def _types(version: str) -> Any:
        # Imported on first use: each generated package takes seconds to import, and v1 is rarely needed.
        if version == "v1beta1":
            from google.cloud import aiplatform_v1beta1

            return aiplatform_v1beta1
        if version == "v1":
            from google.cloud import aiplatform_v1

            return aiplatform_v1
        raise ApiError(404, f"unknown API version {version!r}")

    @staticmethod
    def _parse(message_type: Any, payload: str | dict[str, Any]) -> Any:
        """Parse JSON into ``message_type``'s protobuf, refusing unknown fields (400), as the real API does."""
        msg = message_type.pb()()
        try:
            if isinstance(payload, dict):
                json_format.ParseDict(payload, msg, ignore_unknown_fields=False)
            else:
                json_format.Parse(payload, msg, ignore_unknown_fields=False)
        except json_format.ParseError as e:
            raise ApiError(400, f"Invalid JSON payload received. {e}") from None
        return msg

    def _query_message(self, request: Request, message_type: Any, path_fields: dict[str, str]) -> Any:
        """Parse a GET's query string (minus ``$alt``) plus path fields into the request proto."""
        params: dict[str, Any] = dict(path_fields)
        for key, value in request.query_params.items():
            if key == "$alt":
                continue
            params[key] = int(value) if key == "pageSize" else value
        return self._parse(message_type, params)

    def _before(self, request: Request) -> None:
        with self._lock:
            for i, (status, method) in enumerate(self._http_errors):
                if method is None or method == request.method:
                    del self._http_errors[i]
                    raise ApiError(status, f"scripted {status} from the emulator")

    @staticmethod
    def _error(e: ApiError) -> JSONResponse:
        status = _HTTP_STATUS.get(e.code, "UNKNOWN")
        return JSONResponse({"error": {"code": e.code, "message": e.message, "status": status}}, status_code=e.code)

    @staticmethod
    def _int_enums(request: Request) -> bool:
        # The generated REST transport asks for `$alt=json;enum-encoding=int`; honour it like the real service.
        return "enum-encoding=int" in request.query_params.get("$alt", "")

    def _name(self, project: str, location: str, kind: str, id_: str) -> str:
        del project  # the API answers with the project number whatever the caller wrote
        return f"projects/{self.project_number}/locations/{location}/{kind}/{id_}"

    def _lookup(self, name: str) -> _Job:
        job = self._jobs.get(name)
        if job is None:
            # Callers may address a job by project id; the id part after "tuningJobs/" is unique here.
            suffix = "/tuningJobs/" + name.rsplit("/", 1)[-1]
            job = next((j for n, j in self._jobs.items() if n.endswith(suffix)), None)
        if job is None:
            raise ApiError(404, f"The TuningJob does not exist: {name}")
        return job

    # ---- job lifecycle ---------------------------------------------------------------------------------------

    def _state(self, job: _Job, now: float) -> tuple[str, float | None, float | None]:
        """(state, start time, end time) of ``job`` at ``now``, both times on the monotonic clock."""
        queued_until = job.created + self.queued_seconds
        pending_until = queued_until + self.queued_seconds
        running = job.outcome.running_seconds
        end = pending_until + (self.running_seconds if running is None else running)
        if job.cancel_requested_at is not None and job.cancel_requested_at < end:
            # Cancellation is asynchronous: CANCELLING for a moment, then CANCELLED.
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

    def _create(self, version: str, parent: str, body: dict[str, Any], outcome: Outcome, created: float) -> str:
        number = len(self._jobs) + 1
        location = parent.split("/")[3]
        name = self._name("", location, "tuningJobs", f"{9000000000000000000 + number}")
        tuned_model = self._tuned_model(body, location)
        self._jobs[name] = _Job(name, version, body, created, outcome, number, tuned_model=tuned_model)
        return name

    def _tuned_model(self, body: dict[str, Any], location: str) -> dict[str, str]:
        """Registry placement of a job's result, per the display-name/version rules of the fact sheet."""
        display = body.get("tunedModelDisplayName") or f"tuned-{uuid.uuid4().hex[:8]}"
        model: _Model | None = None
        pre = body.get("preTunedModel", {}).get("tunedModelName")
        base = body.get("baseModel", "")
        if pre:
            source_id = pre.split("/models/", 1)[-1].split("@", 1)[0]
            source = self._models.get(source_id)
            if source is None:
                raise ApiError(404, f"preTunedModel.tunedModelName {pre!r} does not exist")
            # Output-only field the real service fills in: what the pre-tuned model was tuned from.
            body["preTunedModel"]["baseModel"] = base = source.base_model
            if source.display_name == display:
                model = source
        if model is None:
            model = _Model(model_id=str(1000 + len(self._models) + 1), display_name=display, base_model=base)
            self._models[model.model_id] = model
        model.versions += 1
        model.labels = dict(body.get("labels", {}))
        endpoint = str(5000 + sum(m.versions for m in self._models.values()))
        return {
            "model": f"{self._name('', location, 'models', model.model_id)}@{model.versions}",
            "endpoint": self._name("", location, "endpoints", endpoint),
        }

    def _render(self, job: _Job, int_enums: bool) -> dict[str, Any]:
        now = time.monotonic()
        state, start, end = self._state(job, now)
        wall = time.time() - now  # monotonic -> wall clock offset

        def stamp(t: float) -> str:
            return datetime.fromtimestamp(t + wall, UTC).isoformat().replace("+00:00", "Z")

        out = dict(job.body)
        out.update(name=job.name, state=state, createTime=stamp(job.created), updateTime=stamp(now))
        if start is not None:
            out["startTime"] = stamp(start)
        if end is not None:
            out["endTime"] = stamp(end)
        if start is not None and state != "JOB_STATE_CANCELLED":
            out["tuningDataStats"] = {
                "supervisedTuningDataStats": job.outcome.data_stats
                or {"tuningDatasetExampleCount": "120", "totalBillableTokenCount": "48000", "tuningStepCount": "30"}
            }
        if state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED") and job.tuned_model:
            out["tunedModel"] = dict(job.tuned_model)
        if state == "JOB_STATE_FAILED":
            out["error"] = {"code": 3, "message": job.outcome.error_message or "Tuning failed."}
        if state == "JOB_STATE_CANCELLED":
            out["error"] = {"code": 1, "message": "CANCELLED"}
        if state == "JOB_STATE_EXPIRED":
            out["error"] = {"code": 4, "message": job.outcome.error_message or "The job expired."}
        # Round-trip through the proto type: the answer has exactly the real JSON shape (and int enums if asked).
        msg = self._parse(self._types(job.version).TuningJob, out)
        return json_format.MessageToDict(msg, use_integers_for_enums=int_enums)

    # ---- routes ----------------------------------------------------------------------------------------------

    async def _create_route(self, request: Request) -> Response:
        p = request.path_params
        parent = f"projects/{p['p']}/locations/{p['loc']}"
        try:
            self._before(request)
            types = self._types(p["ver"])
            raw = (await request.body()).decode()
            msg = self._parse(types.TuningJob, raw)
            self.requests.append(("POST", request.url.path, msg))
            body = json_format.MessageToDict(msg)
            self._validate_create(body)
            with self._lock:
                outcome = self._outcomes.popleft() if self._outcomes else Outcome()
                name = self._create(p["ver"], parent, body, outcome, time.monotonic())
                self.creates += 1
                if self._lost_creates:
                    self._lost_creates -= 1
                    raise ApiError(504, "scripted: the job was created but the answer was lost")
                return JSONResponse(self._render(self._jobs[name], self._int_enums(request)))
        except ApiError as e:
            return self._error(e)

    @staticmethod
    def _validate_create(body: dict[str, Any]) -> None:
        """The server-side checks whose absence would let a backend bug through (fact sheet §2, §3)."""
        present = [f for f in _OUTPUT_ONLY if json_format_name(f) in body]
        if present:
            raise ApiError(400, f"output-only fields must not be set on create: {', '.join(present)}")
        base = body.get("baseModel", "")
        if not base and "preTunedModel" not in body:
            raise ApiError(400, "one of baseModel or preTunedModel is required")
        spec = body.get("supervisedTuningSpec")
        if spec is None:
            raise ApiError(400, "supervisedTuningSpec is required")
        for key in ("trainingDatasetUri", "validationDatasetUri"):
            uri = spec.get(key)
            if uri is not None and not (uri.startswith("gs://") and uri.endswith(".jsonl")):
                raise ApiError(400, f"{key} should be a GCS object of type JSONL, got {uri!r}")
        if "trainingDatasetUri" not in spec:
            raise ApiError(400, "supervisedTuningSpec.trainingDatasetUri is required")
        hyper = spec.get("hyperParameters", {})
        is_open = "/" in base
        if is_open:
            if "@" not in base:
                raise ApiError(400, f"Invalid open source publisher model resource name: {base}")
            if not body.get("outputUri", "").startswith("gs://"):
                raise ApiError(400, "outputUri is required for open model tuning")
            if "learningRateMultiplier" in hyper:
                raise ApiError(400, "learningRateMultiplier is not supported for open models; use learningRate")
        else:
            if "learningRate" in hyper or "tuningMode" in spec or "batchSize" in hyper:
                raise ApiError(400, "learningRate, batchSize and tuningMode are only supported for open models")
            size = hyper.get("adapterSize")
            if size is not None and size not in _GEMINI_ADAPTER_SIZES:
                raise ApiError(400, "The adapter size is not supported for this base model")
        if "learningRate" in hyper and "learningRateMultiplier" in hyper:
            raise ApiError(400, "learningRate and learningRateMultiplier are mutually exclusive")
        for key, value in body.get("labels", {}).items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key) or not re.fullmatch(r"[a-z0-9_-]{0,63}", value):
                raise ApiError(400, f"invalid label {key}={value!r}: lowercase letters, digits, _ and -, at most 63")

    async def _get(self, request: Request) -> Response:
        p = request.path_params
        name = f"projects/{p['p']}/locations/{p['loc']}/tuningJobs/{p['job']}"
        try:
            self._before(request)
            types = self._types(p["ver"])
            self.requests.append(("GET", request.url.path, self._query_message(request, types.GetTuningJobRequest,
                                                                              {"name": name})))  # fmt: skip
            with self._lock:
                return JSONResponse(self._render(self._lookup(name), self._int_enums(request)))
        except ApiError as e:
            return self._error(e)

    async def _list(self, request: Request) -> Response:
        p = request.path_params
        parent = f"projects/{p['p']}/locations/{p['loc']}"
        try:
            self._before(request)
            types = self._types(p["ver"])
            msg = self._query_message(request, types.ListTuningJobsRequest, {"parent": parent})
            self.requests.append(("GET", request.url.path, msg))
            match = _compile_filter(msg.filter)
            with self._lock:
                jobs = [self._render(j, self._int_enums(request)) for j in self._jobs.values()
                        if j.name.split("/")[3] == p["loc"]]  # fmt: skip
            # Newest first, as the service lists.
            jobs = [j for j in reversed(jobs) if match(json_format_view(j))]
            size = msg.page_size or 100
            start = int(msg.page_token or 0)
            page = jobs[start : start + size]
            out: dict[str, Any] = {"tuningJobs": page}
            if start + size < len(jobs):
                out["nextPageToken"] = str(start + size)
            return JSONResponse(out)
        except ApiError as e:
            return self._error(e)

    async def _cancel(self, request: Request) -> Response:
        p = request.path_params
        name = f"projects/{p['p']}/locations/{p['loc']}/tuningJobs/{p['job']}"
        try:
            self._before(request)
            types = self._types(p["ver"])
            raw = (await request.body()).decode() or "{}"
            msg = self._parse(types.CancelTuningJobRequest, raw)
            self.requests.append(("POST", request.url.path, msg))
            with self._lock:
                job = self._lookup(name)
                state, _, _ = self._state(job, time.monotonic())
                if state in TERMINAL:
                    raise ApiError(400, f"The TuningJob {name} is in state {state} and cannot be cancelled.")
                job.cancel_requested_at = time.monotonic()
            return JSONResponse({})
        except ApiError as e:
            return self._error(e)

    # ---- ModelService / EndpointService: just what tuneform uses --------------------------------------------

    def _model_of(self, ref: str) -> tuple[_Model, int | None]:
        """The model addressed by ``ID`` or ``ID@N`` and the version (``None`` without ``@``); 404 if gone."""
        model_id, _, version = ref.partition("@")
        model = self._models.get(model_id)
        if model is None or model.deleted:
            raise ApiError(404, f"Model {ref} does not exist")
        if version and int(version) not in model.live_versions():
            raise ApiError(404, f"Model version {ref} does not exist")
        return model, int(version) if version else None

    def _model_view(self, model: _Model, location: str, version: int) -> dict[str, Any]:
        return {
            "name": self._name("", location, "models", model.model_id),
            "displayName": model.display_name,
            "versionId": str(version),
            "versionAliases": ["default"] if version == model.default_version else [],
            "labels": model.labels,
            "description": model.description,
        }

    def _endpoints(self) -> dict[str, tuple[_Job, str]]:
        """Live endpoints -> (owning job, deployed model id or "" once undeployed)."""
        now = time.monotonic()
        out: dict[str, tuple[_Job, str]] = {}
        for job in self._jobs.values():
            if job.tuned_model and self._state(job, now)[0] == "JOB_STATE_SUCCEEDED":
                name = job.tuned_model["endpoint"]
                if name not in self._deleted_endpoints:
                    deployed = "" if name in self._undeployed else name.rsplit("/", 1)[1] + "0"
                    out[name] = (job, deployed)
        return out

    def _deployed_versions(self, model: _Model) -> dict[int, str]:
        """Versions of ``model`` still deployed -> the endpoint serving each."""
        out = {}
        for name, (job, deployed) in self._endpoints().items():
            assert job.tuned_model is not None
            ref = job.tuned_model["model"].rsplit("/", 1)[1]
            if deployed and ref.split("@")[0] == model.model_id:
                out[int(ref.split("@")[1])] = name
        return out

    def _operation(self, resource: str, response_type: str) -> JSONResponse:
        # Long-running operations finish at once here; the client still goes through its LRO machinery.
        self._op_count += 1
        return JSONResponse({
            "name": f"{resource}/operations/{self._op_count}",
            "done": True,
            "response": {"@type": f"type.googleapis.com/{response_type}"},
        })  # fmt: skip

    async def _model(self, request: Request) -> Response:
        p = request.path_params
        try:
            self._before(request)
            types = self._types(p["ver"])
            with self._lock:
                model, version = self._model_of(p["model"])
                if request.method == "PATCH":
                    msg = self._parse(types.Model, (await request.body()).decode())
                    mask = request.query_params.get("updateMask", "")
                    self.requests.append(("PATCH", request.url.path, msg))
                    if not mask:
                        raise ApiError(400, "updateMask is required")
                    for path in mask.split(","):
                        if path == "labels":
                            model.labels = dict(msg.labels)
                        elif path == "description":
                            model.description = msg.description
                        else:
                            raise ApiError(400, f"updateMask path {path!r} is not supported by the emulator")
                if request.method == "DELETE":
                    self.requests.append(("DELETE", request.url.path, None))
                    deployed = self._deployed_versions(model)
                    if deployed:
                        where = sorted(deployed.values())
                        raise ApiError(400, f"Model {p['model']} is deployed at {where}; undeploy it first")
                    model.deleted = True
                    return self._operation(p["model"], "google.protobuf.Empty")
                view = self._model_view(model, p["loc"], version or model.default_version)
            msg = self._parse(types.Model, view)
            return JSONResponse(json_format.MessageToDict(msg, use_integers_for_enums=self._int_enums(request)))
        except ApiError as e:
            return self._error(e)

    async def _model_versions(self, request: Request) -> Response:
        p = request.path_params
        try:
            self._before(request)
            types = self._types(p["ver"])
            name = f"projects/{p['p']}/locations/{p['loc']}/models/{p['model']}"
            self.requests.append(("GET", request.url.path, self._query_message(
                request, types.ListModelVersionsRequest, {"name": name})))  # fmt: skip
            with self._lock:
                model, _ = self._model_of(p["model"])
                views = [self._model_view(model, p["loc"], v) for v in model.live_versions()]
            msg = self._parse(types.ListModelVersionsResponse, {"models": views})
            return JSONResponse(json_format.MessageToDict(msg, use_integers_for_enums=self._int_enums(request)))
        except ApiError as e:
            return self._error(e)

    async def _delete_model_version(self, request: Request) -> Response:
        p = request.path_params
        try:
            self._before(request)
            self.requests.append(("DELETE", request.url.path, None))
            with self._lock:
                model, version = self._model_of(p["model"])
                if version is None:
                    raise ApiError(400, "deleteVersion needs a versioned name MODEL@VERSION")
                endpoint = self._deployed_versions(model).get(version)
                if endpoint:
                    raise ApiError(400, f"Model version {p['model']} is deployed at {endpoint}; undeploy it first")
                if version == model.default_version:
                    raise ApiError(400, f"Model version {p['model']} carries the default alias and cannot be "
                                        "deleted; move the alias or delete the model")  # fmt: skip
                model.deleted_versions.add(version)
                return self._operation(p["model"], "google.protobuf.Empty")
        except ApiError as e:
            return self._error(e)

    async def _merge_aliases(self, request: Request) -> Response:
        p = request.path_params
        try:
            self._before(request)
            types = self._types(p["ver"])
            msg = self._parse(types.MergeVersionAliasesRequest, (await request.body()).decode())
            self.requests.append(("POST", request.url.path, msg))
            with self._lock:
                model, version = self._model_of(p["model"])
                if version is None:
                    raise ApiError(400, "mergeVersionAliases needs a versioned name MODEL@VERSION")
                if list(msg.version_aliases) != ["default"]:
                    raise ApiError(400, "the emulator only moves the `default` alias")
                model.default_version = version
                view = self._model_view(model, p["loc"], version)
            out = self._parse(types.Model, view)
            return JSONResponse(json_format.MessageToDict(out, use_integers_for_enums=self._int_enums(request)))
        except ApiError as e:
            return self._error(e)

    async def _endpoint(self, request: Request) -> Response:
        p = request.path_params
        try:
            self._before(request)
            types = self._types(p["ver"])
            name = self._name("", p["loc"], "endpoints", p["endpoint"])
            with self._lock:
                found = self._endpoints().get(name)
                if found is None:
                    raise ApiError(404, f"Endpoint {name} does not exist")
                owner, deployed = found
                assert owner.tuned_model is not None
                if request.method == "DELETE":
                    self.requests.append(("DELETE", request.url.path, None))
                    if deployed:
                        raise ApiError(400, f"Endpoint {name} still has deployed models; undeploy them first")
                    self._deleted_endpoints.add(name)
                    return self._operation(name, "google.protobuf.Empty")
                model, _, version = owner.tuned_model["model"].partition("@")
            view: dict[str, Any] = {"name": name, "displayName": owner.body.get("tunedModelDisplayName", "")}
            if deployed:
                view["deployedModels"] = [{"id": deployed, "model": model, "modelVersionId": version}]
                view["trafficSplit"] = {deployed: 100}
            msg = self._parse(types.Endpoint, view)
            return JSONResponse(json_format.MessageToDict(msg, use_integers_for_enums=self._int_enums(request)))
        except ApiError as e:
            return self._error(e)

    async def _undeploy(self, request: Request) -> Response:
        p = request.path_params
        try:
            self._before(request)
            types = self._types(p["ver"])
            msg = self._parse(types.UndeployModelRequest, (await request.body()).decode())
            self.requests.append(("POST", request.url.path, msg))
            name = self._name("", p["loc"], "endpoints", p["endpoint"])
            with self._lock:
                found = self._endpoints().get(name)
                if found is None:
                    raise ApiError(404, f"Endpoint {name} does not exist")
                if not found[1] or msg.deployed_model_id != found[1]:
                    raise ApiError(404, f"Deployed model {msg.deployed_model_id!r} is not on {name}")
                self._undeployed.add(name)
            return self._operation(name, f"google.cloud.aiplatform.{p['ver']}.UndeployModelResponse")
        except ApiError as e:
            return self._error(e)


def json_format_name(field_name: str) -> str:
    """``snake_case`` proto field name -> its JSON (lowerCamel) name."""
    head, *rest = field_name.split("_")
    return head + "".join(w.title() for w in rest)


def json_format_view(job: dict[str, Any]) -> dict[str, Any]:
    """A job's JSON with the state as its enum name, whatever encoding it was rendered in."""
    from google.cloud import aiplatform_v1beta1

    state = job.get("state")
    if isinstance(state, int):
        job = dict(job, state=aiplatform_v1beta1.JobState(state).name)
    return job


_CLAUSE = re.compile(r'\s*(labels\.(?P<label>[a-z][a-z0-9_-]*)|state)\s*=\s*"?(?P<value>[A-Za-z0-9_-]*)"?\s*')


def _compile_filter(text: str) -> Any:
    """A predicate for the subset of AIP-160 filters tuneform sends: ``labels.k="v"`` and ``state=X``, ANDed.

    Anything else is refused with 400 rather than silently matching everything, so a filter typo cannot make the
    backend adopt the wrong job.
    """
    clauses: list[tuple[str | None, str]] = []
    for part in filter(None, re.split(r"\s+AND\s+", text.strip())):
        m = _CLAUSE.fullmatch(part)
        if m is None:
            raise ApiError(400, f"Unsupported filter clause: {part!r}")
        clauses.append((m.group("label"), m.group("value")))

    def match(job: dict[str, Any]) -> bool:
        for label, value in clauses:
            actual = job.get("labels", {}).get(label) if label else job.get("state")
            if actual != value:
                return False
        return True

    return match


@contextmanager
def running(**kwargs: Any) -> Iterator[TuningApiEmulator]:
    """``with running() as emu:`` — an emulator for the duration of the block."""
    emu = TuningApiEmulator(**kwargs)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def parsed_bodies(emu: TuningApiEmulator) -> list[dict[str, Any]]:
    """JSON of every created TuningJob request, as received (handy in assertion messages)."""
    return [json.loads(json_format.MessageToJson(m)) for m in emu.received("POST", "/tuningJobs")]


def main() -> None:
    """Serve the emulator until interrupted: ``python tests/emulators/tuning_api.py`` prints its URL."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queued-seconds", type=float, default=2.0)
    parser.add_argument("--running-seconds", type=float, default=10.0)
    args = parser.parse_args()
    emu = TuningApiEmulator(queued_seconds=args.queued_seconds, running_seconds=args.running_seconds)
    print(emu.start(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emu.stop()


if __name__ == "__main__":
    main()
