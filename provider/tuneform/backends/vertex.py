"""The Vertex AI target: datasets in Cloud Storage, supervised tuning jobs, tuned model versions and their endpoints.

Talks to Vertex through google-cloud-aiplatform's *generated* ``aiplatform_v1beta1`` clients over the REST transport
(``vertexai.tuning`` is deprecated, and only v1beta1 carries the open-model fields ``tuningMode``, ``learningRate``
and ``outputUri``), and to Cloud Storage with google-cloud-storage. Point ``api_endpoint``/``storage_endpoint`` at
``http://127.0.0.1:<port>`` to use the emulators in ``tests/emulators``; a plain-HTTP endpoint gets anonymous
credentials, anything else Application Default Credentials.

Google Cloud modules are imported inside methods: providers import this module, and Pulumi pickles providers.

What the tuning API cannot do, and what this backend does instead:

- there is no update RPC: ``update_metadata`` patches labels and description of the tuned *model version* through
  ModelService (labels propagate from job to model on creation only); the job keeps its original labels;
- there is no delete RPC: ``cancel`` cancels a running job; a finished job is history and is left alone;
  ``delete_version`` (``retain: false``) deletes the tuned model version and its auto-created endpoint instead;
- Gemini tuning deploys every tuned version to an endpoint of its own, so ``deploy`` returns that endpoint for a
  single version at 100 %; a traffic split across versions would need a shared endpoint (``gcp.vertex.AiEndpoint``
  plus DeployModel) and is refused with an explanation; ``undeploy`` leaves the auto-created endpoint in place
  (it belongs to the model version and goes with it in ``delete_version``; an idle one costs nothing).
"""

from __future__ import annotations

import enum
import hashlib
import re
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tuneform.backends.base import (
    BackendError,
    DatasetArtifact,
    EndpointRequest,
    EndpointState,
    Progress,
    TuningFailed,
    TuningOutcome,
    TuningRequest,
)

if TYPE_CHECKING:
    from google.cloud import aiplatform_v1beta1
    from google.cloud.storage import Client as StorageClient

    from tuneform.resources._provider import BackendSettings

T = TypeVar("T")

SPEC_HASH_LABEL = "tuneform-spec-hash"
NAME_LABEL = "tuneform-name"
MANAGED_BY_LABEL = "managed-by"

TERMINAL_STATES = frozenset(
    {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
     "JOB_STATE_PARTIALLY_SUCCEEDED"}
)  # fmt: skip
"""Every state a job never leaves. The SDK's ``has_ended`` misses EXPIRED and PARTIALLY_SUCCEEDED (fact sheet §6)."""

ADOPTABLE_STATES = frozenset(
    {"JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_PAUSED", "JOB_STATE_UPDATING",
     "JOB_STATE_SUCCEEDED"}
)  # fmt: skip
"""States of an existing job with this spec's hash that make creating a second (paid) job wrong."""

ADAPTER_SIZES = {1: "ADAPTER_SIZE_ONE", 2: "ADAPTER_SIZE_TWO", 4: "ADAPTER_SIZE_FOUR", 8: "ADAPTER_SIZE_EIGHT",
                 16: "ADAPTER_SIZE_SIXTEEN", 32: "ADAPTER_SIZE_THIRTY_TWO"}  # fmt: skip
"""By enum *name*: the numbers are not the sizes (ADAPTER_SIZE_TWO is 6 in the proto)."""


def label_value(text: str) -> str:
    """``text`` as a valid GCP label value: lowercase letters, digits, ``_`` and ``-``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def vertex_base_model(base_model: str) -> tuple[str, bool]:
    """Check a base model name and say whether it is an open (publisher) model.

    Gemini models are bare ids (``gemini-2.5-flash``); open models use the catalogue's ``publisher/model@version``
    form (``google/gemma3@gemma-3-27b-it``), which is also what the API requires.

    Args:
        base_model: The spec's ``baseModel``.

    Returns:
        ``(name, is_open)``.

    Raises:
        BackendError: For an open-model name without ``@version``, which the API rejects.
    """
    if "/" in base_model:
        if "@" not in base_model:
            raise BackendError(
                f"base model {base_model!r}: open models need the `publisher/model@version` form, "
                f"e.g. `google/gemma3@gemma-3-27b-it`"
            )
        return base_model, True
    return base_model, False


def _state_name(job: Any) -> str:
    # A state newer than the installed client arrives as a bare int rather than an enum member.
    return job.state.name if isinstance(job.state, enum.Enum) else f"JOB_STATE_{int(job.state)}"


def _short(state: str) -> str:
    return state.removeprefix("JOB_STATE_")


def _version_of(model: str) -> int:
    _, _, version = model.rpartition("@")
    return int(version) if version.isdigit() else 1


class VertexBackend:
    """Tunes on Vertex AI.

    Args:
        project: GCP project id (or number).
        region: Where jobs run and tuned models live, e.g. ``us-central1``.
        bucket: Dataset bucket (no ``gs://``): datasets go to ``datasets/<sha256>.jsonl``, open-model output to
            ``tuning-output/<name>/<spec hash>``.
        api_endpoint: Vertex API endpoint; default ``<region>-aiplatform.googleapis.com``. An ``http://`` URL (the
            emulator) is used with anonymous credentials.
        storage_endpoint: Cloud Storage endpoint; default the real service. ``http://`` = fake-gcs-server.
        service_account: Runs the tuning job (default: Vertex's tuning service agent).
        kms_key_name: CMEK key for everything the job creates.
        deadline_seconds: How long ``tune`` waits for a terminal state before raising (the job keeps running).
        poll: ``(first, longest)`` seconds between polls; the interval grows by half each poll.
        retry_initial: First back-off in seconds for 429/503/504 answers (doubling, up to 30x).
        retry_timeout: Give up retrying one call after this many seconds.
    """

    target = "vertex"

    def __init__(
        self,
        project: str,
        region: str,
        bucket: str,
        *,
        api_endpoint: str | None = None,
        storage_endpoint: str | None = None,
        service_account: str | None = None,
        kms_key_name: str | None = None,
        deadline_seconds: float = 12 * 3600,
        poll: tuple[float, float] = (10.0, 300.0),
        retry_initial: float = 1.0,
        retry_timeout: float = 600.0,
    ) -> None:
        self.project = project
        self.region = region
        self.bucket = bucket.removeprefix("gs://").rstrip("/")
        self.api_endpoint = api_endpoint
        self.storage_endpoint = storage_endpoint
        self.service_account = service_account
        self.kms_key_name = kms_key_name
        self.deadline_seconds = deadline_seconds
        self.poll = poll
        self.retry_initial = retry_initial
        self.retry_timeout = retry_timeout

    @classmethod
    def from_settings(cls, settings: BackendSettings) -> VertexBackend:
        """Build from the providers' plain settings; ``extra["poll"]`` may hold ``[first, longest]`` seconds.

        Args:
            settings: Stack settings (``project``, ``region``, ``bucket`` required).

        Returns:
            The backend.

        Raises:
            BackendError: When ``project``, ``region`` or ``bucket`` is empty.
        """
        required = {"project": settings.project, "region": settings.region, "bucket": settings.bucket}
        missing = [key for key, value in required.items() if not value]
        if missing:
            raise BackendError(
                "the vertex target needs stack config "
                + ", ".join(f"tuneform:{key}" for key in missing)
                + "; set it with `pulumi config set tuneform:<key> <value>`"
            )
        poll = settings.extra.get("poll") or (10.0, 300.0)
        return cls(
            settings.project,
            settings.region,
            settings.bucket,
            api_endpoint=settings.api_endpoint or None,
            storage_endpoint=settings.storage_endpoint or None,
            service_account=settings.service_account or None,
            kms_key_name=settings.kms_key_name or None,
            deadline_seconds=float(settings.deadline_seconds or 12 * 3600),
            poll=(float(poll[0]), float(poll[1])),
        )

    # ---- clients ---------------------------------------------------------------------------------------------

    @property
    def parent(self) -> str:
        """``projects/<project>/locations/<region>``."""
        return f"projects/{self.project}/locations/{self.region}"

    def _client_kwargs(self, endpoint: str | None, default: str | None) -> dict[str, Any]:
        from google.auth.credentials import AnonymousCredentials

        kwargs: dict[str, Any] = {}
        if endpoint or default:
            kwargs["client_options"] = {"api_endpoint": endpoint or default}
        if endpoint and endpoint.startswith("http://"):
            # Only emulators speak plain HTTP; never send real credentials to one.
            kwargs["credentials"] = AnonymousCredentials()
        return kwargs

    def _vertex_kwargs(self) -> dict[str, Any]:
        kwargs = self._client_kwargs(self.api_endpoint, f"{self.region}-aiplatform.googleapis.com")
        kwargs["transport"] = "rest"
        return kwargs

    def _tuning_client(self) -> aiplatform_v1beta1.GenAiTuningServiceClient:
        from google.cloud import aiplatform_v1beta1

        return aiplatform_v1beta1.GenAiTuningServiceClient(**self._vertex_kwargs())

    def _storage_client(self) -> StorageClient:
        from google.cloud.storage import Client

        return Client(project=self.project, **self._client_kwargs(self.storage_endpoint, None))

    def _call(self, fn: Callable[..., T], report: Progress | None = None, /, **kwargs: Any) -> T:
        """Call ``fn(**kwargs)``, retrying 429, 503 and 504/DEADLINE_EXCEEDED with exponential back-off."""
        from google.api_core import exceptions, retry

        def on_error(e: BaseException) -> None:
            (_stderr if report is None else report)(f"vertex: {e}; retrying")

        policy = retry.Retry(
            predicate=retry.if_exception_type(
                exceptions.TooManyRequests, exceptions.ServiceUnavailable, exceptions.GatewayTimeout
            ),
            initial=self.retry_initial,
            maximum=self.retry_initial * 30,
            multiplier=2.0,
            timeout=self.retry_timeout,
            on_error=on_error,
        )
        try:
            return policy(fn)(**kwargs)
        except exceptions.RetryError as e:
            raise BackendError(
                f"vertex: still failing after retrying for {self.retry_timeout:.0f} s: {e.cause}. "
                "Vertex AI is unavailable or throttling this project; run `pulumi up` again later."
            ) from None

    # ---- datasets --------------------------------------------------------------------------------------------

    def store_dataset(self, converted_path: str, sha256: str, examples: int, tokens: int) -> DatasetArtifact:
        """Upload a converted JSONL to ``gs://<bucket>/datasets/<sha256>.jsonl`` unless it is already there.

        Objects are content-addressed and written with ``if_generation_match=0``, so an existing object (the same
        bytes, by construction) is never overwritten and a concurrent upload of the same file is harmless.

        Args:
            converted_path: The Gemini-format JSONL on local disk.
            sha256: Its SHA-256 (hex); checked against the file before anything is uploaded.
            examples: Example count, recorded in the object's metadata.
            tokens: Token total of one pass, recorded likewise.

        Returns:
            The stored artifact.

        Raises:
            BackendError: If the file does not hash to ``sha256``, or the upload fails.
        """
        from google.api_core import exceptions

        digest = hashlib.sha256()
        with open(converted_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise BackendError(f"{converted_path}: content hashes to {digest.hexdigest()}, not {sha256}")
        object_name = f"datasets/{sha256}.jsonl"
        uri = f"gs://{self.bucket}/{object_name}"
        blob = self._storage_client().bucket(self.bucket).blob(object_name)
        try:
            if blob.exists():
                _stderr(f"vertex: dataset {uri} already stored")
            else:
                _stderr(f"vertex: uploading {converted_path} to {uri}")
                blob.metadata = {"tuneform-examples": str(examples), "tuneform-tokens": str(tokens)}
                blob.upload_from_filename(converted_path, content_type="application/jsonl", if_generation_match=0)
        except exceptions.PreconditionFailed:
            _stderr(f"vertex: dataset {uri} was stored concurrently; keeping that copy")
        except exceptions.GoogleAPICallError as e:
            raise BackendError(f"uploading {converted_path} to {uri} failed: {e.message}") from None
        return DatasetArtifact(sha256=sha256, uri=uri, examples=examples, tokens=tokens)

    def dataset_present(self, artifact: DatasetArtifact) -> bool:
        """Whether ``artifact.uri`` still exists in its bucket."""
        bucket, _, name = artifact.uri.removeprefix("gs://").partition("/")
        return bool(self._storage_client().bucket(bucket).blob(name).exists())

    # ---- tuning ----------------------------------------------------------------------------------------------

    def labels_for(self, request: TuningRequest) -> dict[str, str]:
        """The spec's labels plus tuneform's own (spec hash, name, ``managed-by``)."""
        return {
            **request.labels,
            SPEC_HASH_LABEL: request.spec_hash[:63],
            NAME_LABEL: label_value(request.name),
            MANAGED_BY_LABEL: "tuneform",
        }

    def tune(self, request: TuningRequest, progress: Progress) -> TuningOutcome:
        """Adopt (explicitly or by spec-hash label) or create a tuning job, then wait for a terminal state.

        Args:
            request: What to tune; ``hyperparameters`` keys are the spec's (``epochs``, ``learningRateMultiplier``,
                ``learningRate``, ``batchSize``).
            progress: Receives a line per poll: state, elapsed time, billable tokens once known.

        Returns:
            The outcome of a SUCCEEDED job.

        Raises:
            TuningFailed: The job ended FAILED, CANCELLED, EXPIRED or PARTIALLY_SUCCEEDED.
            BackendError: The API refused the job, or our deadline passed (the job keeps running).
        """
        from google.api_core import exceptions

        client = self._tuning_client()
        try:
            if request.adopt:
                job = self._call(client.get_tuning_job, progress, name=request.adopt)
                progress(f"vertex: adopting {job.name} ({_short(_state_name(job))}) as `adopt` asks")
                reused = True
            else:
                # Lookup and create are retried as one unit: a create that timed out may have succeeded, and the
                # next attempt then finds that job by its label instead of paying for a second one.
                job, reused = self._call(self._find_or_create, progress, client=client, request=request,
                                         progress=progress)  # fmt: skip
        except exceptions.NotFound as e:
            raise BackendError(f"{request.name}: {e.message}") from None
        except exceptions.GoogleAPICallError as e:
            raise BackendError(f"{request.name}: the tuning API refused the job: {e.message}") from None
        job = self._wait(client, job, request.name, progress)
        return self._outcome(job, reused)

    def _find_or_create(
        self, client: aiplatform_v1beta1.GenAiTuningServiceClient, request: TuningRequest, progress: Progress
    ) -> tuple[aiplatform_v1beta1.TuningJob, bool]:
        existing = self._find_by_hash(client, request.spec_hash)
        if existing is not None:
            progress(
                f"vertex: adopting {existing.name} ({_short(_state_name(existing))}): it carries "
                f"{SPEC_HASH_LABEL}={request.spec_hash[:63]}, so no second job is started"
            )
            return existing, True
        job = client.create_tuning_job(parent=self.parent, tuning_job=self.job_for(request, client))
        progress(f"vertex: created {job.name} for {request.name}")
        return job, False

    def _list(
        self, client: aiplatform_v1beta1.GenAiTuningServiceClient, label: str, value: str
    ) -> list[aiplatform_v1beta1.TuningJob]:
        from google.cloud import aiplatform_v1beta1

        req = aiplatform_v1beta1.ListTuningJobsRequest(parent=self.parent, filter=f'labels.{label}="{value}"')
        jobs = list(client.list_tuning_jobs(request=req))
        # The filter runs server-side; checking again costs nothing and guards against a service that ignores it.
        jobs = [j for j in jobs if j.labels.get(label) == value]
        return sorted(jobs, key=lambda j: j.create_time, reverse=True)

    def _find_by_hash(
        self, client: aiplatform_v1beta1.GenAiTuningServiceClient, spec_hash: str
    ) -> aiplatform_v1beta1.TuningJob | None:
        for job in self._list(client, SPEC_HASH_LABEL, spec_hash[:63]):
            if _state_name(job) in ADOPTABLE_STATES:
                return job
        return None

    def _previous_version(
        self, client: aiplatform_v1beta1.GenAiTuningServiceClient, name: str, base_model: str
    ) -> str | None:
        """The newest tuned model version of ``name`` tuned from ``base_model``, to tune the next version from."""
        for job in self._list(client, NAME_LABEL, label_value(name)):
            source = job.base_model or job.pre_tuned_model.base_model
            if _state_name(job) == "JOB_STATE_SUCCEEDED" and job.tuned_model.model and source == base_model:
                return str(job.tuned_model.model)
        return None

    def job_for(
        self, request: TuningRequest, client: aiplatform_v1beta1.GenAiTuningServiceClient | None = None
    ) -> aiplatform_v1beta1.TuningJob:
        """The TuningJob to create for ``request``.

        With ``client``, a Gemini job continues from the newest succeeded version of the same ``metadata.name``
        (``preTunedModel``), so the result is version N+1 of the same registry model rather than a new model.

        Args:
            request: What to tune.
            client: Used to look up earlier versions; without it the job starts from the base model.

        Returns:
            The job message (not yet created).

        Raises:
            BackendError: For settings the target cannot express (full tuning of Gemini, an unknown adapter size).
        """
        from google.cloud import aiplatform_v1beta1 as v1b

        base, is_open = vertex_base_model(request.base_model)
        if request.mode == "full" and not is_open:
            raise BackendError(f"{request.name}: Gemini models tune adapters only; set `mode: adapter`")
        if request.adapter_size is not None and request.adapter_size not in ADAPTER_SIZES:
            raise BackendError(
                f"{request.name}: adapterSize {request.adapter_size} is not a Vertex adapter size; "
                f"use one of {sorted(ADAPTER_SIZES)}"
            )
        # Built as plain dicts (enums by name) and converted once: proto-plus copies a message assigned into
        # another, so fields set on a sub-message after assignment would silently be lost.
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
            "labels": self.labels_for(request),
        }
        if is_open:
            spec["tuning_mode"] = "TUNING_MODE_FULL" if request.mode == "full" else "TUNING_MODE_PEFT_ADAPTER"
            if hp.get("learningRate") is not None:
                hyper["learning_rate"] = float(hp["learningRate"])
            if hp.get("batchSize") is not None:
                hyper["batch_size"] = int(hp["batchSize"])
            job["output_uri"] = f"gs://{self.bucket}/tuning-output/{label_value(request.name)}/{request.spec_hash}"
            job["base_model"] = base
        else:
            if hp.get("learningRateMultiplier") is not None:
                hyper["learning_rate_multiplier"] = float(hp["learningRateMultiplier"])
            previous = self._previous_version(client, request.name, base) if client is not None else None
            if previous:
                job["pre_tuned_model"] = {"tuned_model_name": previous}
            else:
                job["base_model"] = base
        if self.kms_key_name:
            job["encryption_spec"] = {"kms_key_name": self.kms_key_name}
        if self.service_account:
            job["service_account"] = self.service_account
        return v1b.TuningJob(job)

    def _wait(
        self,
        client: aiplatform_v1beta1.GenAiTuningServiceClient,
        job: aiplatform_v1beta1.TuningJob,
        name: str,
        progress: Progress,
    ) -> aiplatform_v1beta1.TuningJob:
        start = time.monotonic()
        interval = self.poll[0]
        while True:
            state = _state_name(job)
            elapsed = time.monotonic() - start
            stats = job.tuning_data_stats.supervised_tuning_data_stats
            tokens = (
                f", {stats.total_billable_token_count} billable tokens" if stats.total_billable_token_count else ""
            )
            progress(f"vertex: {name}: {_short(state)} after {elapsed:.0f} s{tokens} ({job.name})")
            if state in TERMINAL_STATES:
                break
            if elapsed >= self.deadline_seconds:
                raise BackendError(
                    f"{name}: tuning job {job.name} is still {_short(state)} after {self.deadline_seconds:.0f} s "
                    f"(tuneform's deadline); it keeps running. Run `pulumi up` again to adopt it (it carries label "
                    f"{SPEC_HASH_LABEL}), or set `adopt: {job.name}` in the spec; cancel it with "
                    f"`gcloud ai tuning-jobs cancel {job.name}` if it is not wanted."
                )
            time.sleep(min(interval, max(self.deadline_seconds - elapsed, 0.0)))
            interval = min(interval * 1.5, self.poll[1])
            job = self._call(client.get_tuning_job, progress, name=job.name)
        if state != "JOB_STATE_SUCCEEDED":
            raise TuningFailed(self._failure_message(job, name), job.name, _short(state))
        return job

    @staticmethod
    def _failure_message(job: aiplatform_v1beta1.TuningJob, name: str) -> str:
        state = _short(_state_name(job))
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

    def _outcome(self, job: aiplatform_v1beta1.TuningJob, reused: bool) -> TuningOutcome:
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
            # Open-model jobs may leave no registry model; their result is the final checkpoint directory.
            model = f"{job.output_uri}/postprocess/node-0/checkpoints/final"
        return TuningOutcome(
            job_id=job.name,
            state=_short(_state_name(job)),
            model=model,
            version=_version_of(model) if model else 0,
            metrics=metrics,
            endpoint=str(job.tuned_model.endpoint) or None,
            reused=reused,
        )

    def tuning_status(self, job_id: str) -> TuningOutcome | None:
        """Current view of a job (for ``pulumi refresh``); ``None`` when the API does not know it."""
        from google.api_core import exceptions

        try:
            job = self._call(self._tuning_client().get_tuning_job, name=job_id)
        except exceptions.NotFound:
            return None
        return self._outcome(job, reused=False)

    def cancel(self, job_id: str) -> None:
        """Cancel a job that has not ended; a finished job is history (the API cannot delete it) and is left."""
        from google.api_core import exceptions

        client = self._tuning_client()
        try:
            job = self._call(client.get_tuning_job, name=job_id)
        except exceptions.NotFound:
            _stderr(f"vertex: {job_id} no longer exists; nothing to cancel")
            return
        state = _state_name(job)
        if state in TERMINAL_STATES or state == "JOB_STATE_CANCELLING":
            _stderr(f"vertex: {job_id} is {_short(state)}; it stays as history (the tuning API has no delete)")
            return
        self._call(client.cancel_tuning_job, name=job_id)
        _stderr(f"vertex: cancellation of {job_id} requested (was {_short(state)})")

    def update_metadata(self, job_id: str, description: str, labels: dict[str, str]) -> None:
        """Apply a new description and labels to the job's tuned model version via ModelService.

        The tuning API has no update method, so the job itself keeps the values it was created with. tuneform's
        own labels (spec hash, name, ``managed-by``) are kept on the model. A job with no tuned model yet is left
        alone; the provider's state carries the desired values.

        Args:
            job_id: The tuning job's resource name.
            description: New description.
            labels: New spec labels.
        """
        from google.cloud import aiplatform_v1beta1 as v1b
        from google.protobuf import field_mask_pb2

        job = self._call(self._tuning_client().get_tuning_job, name=job_id)
        if not job.tuned_model.model:
            _stderr(f"vertex: {job_id} has no tuned model yet; labels and description are recorded only")
            return
        own = {k: v for k, v in job.labels.items() if k in (SPEC_HASH_LABEL, NAME_LABEL, MANAGED_BY_LABEL)}
        models = v1b.ModelServiceClient(**self._vertex_kwargs())
        model = v1b.Model(name=job.tuned_model.model, description=description, labels={**labels, **own})
        self._call(
            models.update_model, model=model, update_mask=field_mask_pb2.FieldMask(paths=["labels", "description"])
        )

    def delete_version(self, model: str, version: int) -> None:
        """Delete one tuned model version from Model Registry, with the endpoint Vertex deployed it to.

        Only called for specs with ``retain: false``. Model Registry refuses to delete a deployed version and the
        version carrying the ``default`` alias, so this undeploys it from its auto-created endpoint, deletes that
        endpoint once empty, moves ``default`` to the newest other version if needed, and deletes the whole model
        when this was its last version.

        Args:
            model: The spec's ``metadata.name`` (or a registry name ``projects/.../models/ID``).
            version: The version number.

        Raises:
            BackendError: When Vertex refuses a step; the message says which and why.
        """
        from google.api_core import exceptions
        from google.cloud import aiplatform_v1beta1 as v1b

        registry = model.split("@", 1)[0] if "/models/" in model else None
        name = model.rsplit("/", 1)[-1] if registry else model
        target: aiplatform_v1beta1.TuningJob | None = None
        jobs = self._call(self._list, client=self._tuning_client(), label=NAME_LABEL, value=label_value(name))
        for job in jobs:
            tuned = str(job.tuned_model.model)
            if tuned and _version_of(tuned) == version and registry in (None, tuned.split("@", 1)[0]):
                target = job
                break
        if target is None:
            _stderr(f"vertex: no tuned version {version} of {model} found in {self.parent}; nothing to delete")
            return
        versioned = str(target.tuned_model.model)
        base_name = versioned.split("@", 1)[0]
        kwargs = self._vertex_kwargs()
        try:
            if target.tuned_model.endpoint:
                self._release_endpoint(
                    v1b.EndpointServiceClient(**kwargs), str(target.tuned_model.endpoint), versioned
                )
            models = v1b.ModelServiceClient(**kwargs)
            versions = list(self._call(models.list_model_versions, name=base_name))
            others = [m for m in versions if m.version_id != str(version)]
            if not others:
                self._call(models.delete_model, name=base_name).result(timeout=self.retry_timeout)
                _stderr(f"vertex: deleted {base_name} (version {version} was its last)")
                return
            this = next((m for m in versions if m.version_id == str(version)), None)
            if this is not None and "default" in this.version_aliases:
                newest = max(others, key=lambda m: int(m.version_id))
                self._call(
                    models.merge_version_aliases, name=f"{base_name}@{newest.version_id}", version_aliases=["default"]
                )
                _stderr(f"vertex: moved alias `default` of {base_name} to version {newest.version_id}")
            self._call(models.delete_model_version, name=versioned).result(timeout=self.retry_timeout)
            _stderr(f"vertex: deleted {versioned}")
        except exceptions.NotFound:
            _stderr(f"vertex: {versioned} is already gone")
        except exceptions.GoogleAPICallError as e:
            raise BackendError(f"{name}: deleting {versioned} failed: {e.message}") from None

    def _release_endpoint(
        self, client: aiplatform_v1beta1.EndpointServiceClient, endpoint: str, versioned: str
    ) -> None:
        """Undeploy ``versioned`` from ``endpoint`` and delete the endpoint if nothing else is deployed there."""
        from google.api_core import exceptions

        base_name, _, version = versioned.partition("@")
        try:
            state = self._call(client.get_endpoint, name=endpoint)
        except exceptions.NotFound:
            return
        ours = [d for d in state.deployed_models if d.model == base_name and d.model_version_id == version]
        for deployed in ours:
            self._call(client.undeploy_model, endpoint=endpoint, deployed_model_id=deployed.id).result(
                timeout=self.retry_timeout
            )
            _stderr(f"vertex: undeployed {versioned} from {endpoint}")
        if len(ours) == len(state.deployed_models):
            self._call(client.delete_endpoint, name=endpoint).result(timeout=self.retry_timeout)
            _stderr(f"vertex: deleted endpoint {endpoint}")

    # ---- endpoints -------------------------------------------------------------------------------------------

    def deploy(self, request: EndpointRequest, existing: str | None, progress: Progress) -> EndpointState:
        """Return the endpoint Vertex deployed the requested version to when tuning it.

        Args:
            request: Must route 100 % of traffic to one version of ``request.model``.
            existing: Ignored: each Gemini tuned version owns its endpoint.
            progress: Receives one line naming the endpoint.

        Returns:
            The endpoint's state.

        Raises:
            BackendError: For a split across versions (not implemented on Vertex) or a version without an endpoint.
        """
        del existing
        shares = {v: p for v, p in request.traffic.items() if p}
        if len(shares) != 1:
            raise BackendError(
                f"{request.name}: splitting traffic across versions {sorted(shares)} is not implemented on Vertex: "
                "each tuned Gemini version is served from its own endpoint; route 100 % to one version"
            )
        version = next(iter(shares))
        # request.model is the spec's name or a registry name; with a registry name, only that model qualifies.
        registry = request.model.split("@", 1)[0] if "/models/" in request.model else None
        client = self._tuning_client()
        jobs = self._call(self._list, progress, client=client, label=NAME_LABEL, value=label_value(request.name))
        for job in jobs:  # newest first: after a base-model change, version numbers restart in a new model
            model = str(job.tuned_model.model)
            if not model or not job.tuned_model.endpoint or _version_of(model) != version:
                continue
            if registry is not None and model.split("@", 1)[0] != registry:
                continue
            progress(f"vertex: {request.name} v{version} ({model}) is served by {job.tuned_model.endpoint}")
            state = self.endpoint_status(job.tuned_model.endpoint)
            if state is not None:
                return state
        raise BackendError(
            f"{request.name}: no endpoint serves version {version}; was it tuned by tuneform in {self.parent}?"
        )

    def endpoint_status(self, endpoint_id: str) -> EndpointState | None:
        """Deployed versions and traffic of an endpoint; ``None`` when it no longer exists."""
        from google.api_core import exceptions
        from google.cloud import aiplatform_v1beta1 as v1b

        client = v1b.EndpointServiceClient(**self._vertex_kwargs())
        try:
            endpoint = self._call(client.get_endpoint, name=endpoint_id)
        except exceptions.NotFound:
            return None
        versions = {d.id: int(d.model_version_id or 1) for d in endpoint.deployed_models}
        traffic = {versions[i]: int(p) for i, p in endpoint.traffic_split.items() if i in versions}
        host = self.api_endpoint or f"https://{self.region}-aiplatform.googleapis.com"
        if "://" not in host:
            host = f"https://{host}"
        return EndpointState(
            endpoint_id=endpoint.name,
            url=f"{host}/v1/{endpoint.name}:generateContent",
            traffic=traffic,
            healthy=bool(endpoint.deployed_models),
        )

    def undeploy(self, endpoint_id: str) -> None:
        """Leave a tuned version's auto-created endpoint in place, saying so; ``delete_version`` removes it."""
        _stderr(
            f"vertex: {endpoint_id} was created by Vertex with the tuned model version and stays with it; an idle "
            "endpoint bears no inference cost. Set `retain: false` in the spec to delete version and endpoint."
        )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
