"""The Vertex AI target: supervised tuning jobs, and the tuned model versions and endpoints they produce.

Size (~600 lines): the ``Backend`` protocol's methods and the waits between them; the request builder, storage, model
registry, hosts, job views and continuous tuning are their own modules.

Talks to Vertex through google-cloud-aiplatform's generated ``aiplatform_v1beta1`` clients over REST
(``vertexai.tuning`` is deprecated, and only v1beta1 carries the open-model fields), each client built for the
location of the resource it touches (see ``_api.Hosts``). What the tuning API cannot do, and what this backend does
instead:

- there is no request id on CreateTuningJob and no documented list consistency: before creating, the backend reads
  the spec's job marker in the bucket (which names the job once a create answered) and looks for a job of the same
  spec name and hash (labels it sets on every job), and adopts it; a create whose answer was lost is found by the
  token it carried, within a bounded wait (``LOST_CREATE_WAIT_S``), so a retry or a re-run never pays twice;
- the tuning API documents no filter fields: a label filter is tried, and when the service refuses it the backend
  lists the location's jobs and filters them itself;
- a re-tune starts from the base model (a new registry model); continuing from tuned weights (``continueFrom``) is
  the spec's explicit choice, and its documented restrictions are checked before the job is created;
- there is no update RPC for jobs: labels and description go to the tuned model and its version (two requests,
  as UpdateModel requires); there is no delete RPC: a finished job is history, ``retain: false`` deletes the tuned
  version, every endpoint it was deployed to, and the model once its last version is gone.

Version numbers: a re-tune from the base model is version 1 of a new registry model, so tuneform numbers the runs of
one spec name itself (label ``tuneform-version``) and reports that number; the registry name carries Vertex's own.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tuneform.backends.base import (
    BackendError,
    BackendSettings,
    DatasetArtifact,
    EndpointRequest,
    EndpointState,
    Progress,
    TuningFailed,
    TuningOutcome,
    TuningRequest,
)
from tuneform.backends.vertex._api import (
    LIVE_STATES,
    NAME_LABEL,
    OWN_LABELS,
    SPEC_HASH_LABEL,
    STACK_LABEL,
    TERMINAL_STATES,
    Hosts,
    Retry,
    api_errors,
    label_value,
    location_of,
    short,
    state_name,
    stderr,
)
from tuneform.backends.vertex.continuation import continuation_source
from tuneform.backends.vertex.jobs import failure_message, outcome, tuneform_version
from tuneform.backends.vertex.registry import ModelRegistry, deployed_endpoints
from tuneform.backends.vertex.requests import build_tuning_job, vertex_base_model
from tuneform.backends.vertex.storage import DatasetStore, JobMarker, MarkerConflict

if TYPE_CHECKING:
    from google.cloud import aiplatform_v1beta1


__all__ = ["VertexBackend"]

REQUEST_LABEL = "tuneform-request"
"""A job's label holding the token of the create that made it (``JobMarker.token``)."""

LOST_CREATE_WAIT_S = 60.0
"""How long after an unanswered create tuneform looks for its job in the listing before taking it as never made.

No Google document says how soon a created tuning job appears in ListTuningJobs (docs/vertex-emulator.md, E34: the
emulator's lag is ours). This figure is ours too: a listing that lags longer than this after a lost answer can still
lead to a second job. A create that did answer is found by direct read and does not depend on it.
"""


class VertexBackend:
    """Tunes on Vertex AI.

    Args:
        project: GCP project id (or number).
        region: Where jobs run and tuned models are registered, e.g. ``us-central1``.
        bucket: Dataset bucket (no ``gs://``).
        api_endpoints: Location -> API base URL overrides (``*`` for all): the emulator in tests. Default: Google's
            host for each location.
        storage_endpoint: Cloud Storage endpoint; default the real service. ``http://`` = fake-gcs-server.
        service_account: Runs the tuning jobs (default: Vertex's tuning service agent).
        kms_key_name: CMEK key for everything a job creates.
        deadline_seconds: How long ``tune`` waits for a terminal state before raising (the job keeps running).
        poll: ``(first, longest)`` seconds between polls; the interval grows by half each poll.
        retry_initial: First back-off in seconds for 429/503/504 answers (doubling, up to 30x).
        retry_timeout: Give up retrying one call after this many seconds.
        lost_create_wait_s: How long after an unanswered create its job is looked for (``LOST_CREATE_WAIT_S``).
    """

    target = "vertex"

    def __init__(
        self,
        project: str,
        region: str,
        bucket: str,
        *,
        api_endpoints: dict[str, str] | None = None,
        storage_endpoint: str | None = None,
        service_account: str | None = None,
        kms_key_name: str | None = None,
        deadline_seconds: float = BackendSettings.deadline_seconds,
        poll: tuple[float, float] = BackendSettings.poll_seconds,
        retry_initial: float = BackendSettings.retry_seconds[0],
        retry_timeout: float = BackendSettings.retry_seconds[1],
        lost_create_wait_s: float = LOST_CREATE_WAIT_S,
        stack: str = "",
    ) -> None:
        self.project = project
        self.stack = label_value(stack) if stack else ""
        self.region = region
        self.hosts = Hosts(dict(api_endpoints or {}))
        self.retry = Retry(retry_initial, retry_timeout)
        self.store = DatasetStore(project, bucket, storage_endpoint)
        self.registry = ModelRegistry(self.hosts, self.retry)
        self.service_account = service_account
        self.kms_key_name = kms_key_name
        self.deadline_seconds = deadline_seconds
        self.poll = poll
        self.lost_create_wait_s = lost_create_wait_s
        self._label_filters = True
        """Cleared once the service refuses a label filter; later listings filter on this side."""

    @classmethod
    def from_settings(cls, settings: BackendSettings) -> VertexBackend:
        """Build from the providers' plain settings.

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
        poll = settings.poll_seconds
        retry = settings.retry_seconds
        endpoints = dict(settings.api_endpoints)
        if settings.api_endpoint:
            endpoints.setdefault("*", settings.api_endpoint)
        return cls(
            settings.project,
            settings.region,
            settings.bucket,
            api_endpoints=endpoints,
            storage_endpoint=settings.storage_endpoint or None,
            service_account=settings.service_account or None,
            kms_key_name=settings.kms_key_name or None,
            # 0 meant "the default" in states written before the default lived in BackendSettings.
            deadline_seconds=float(settings.deadline_seconds or BackendSettings.deadline_seconds),
            poll=(float(poll[0]), float(poll[1])),
            retry_initial=float(retry[0]),
            retry_timeout=float(retry[1]),
            stack=settings.stack,
        )

    @property
    def parent(self) -> str:
        """``projects/<project>/locations/<region>``."""
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def bucket(self) -> str:
        return self.store.bucket

    # ---- datasets --------------------------------------------------------------------------------------------

    @api_errors("uploading a dataset")
    def store_dataset(
        self, converted_path: str, sha256: str, examples: int, tokens: int, upload_format: str = "gemini"
    ) -> DatasetArtifact:
        """Upload a converted dataset to ``gs://<bucket>/datasets/`` unless it is there (see ``DatasetStore``)."""
        return self.store.store(converted_path, sha256, examples, tokens, upload_format)

    @api_errors("reading a dataset object")
    def dataset_present(self, artifact: DatasetArtifact) -> bool:
        return self.store.present(artifact)

    # ---- base models -----------------------------------------------------------------------------------------

    def base_model_offered(self, base_model: str) -> bool | None:
        """Ask Model Garden whether a base model is still offered: ``None`` when it cannot be asked (no credentials,
        no network); never raises, so a preview never depends on it.
        """
        try:
            from google.api_core import exceptions
            from google.auth import exceptions as auth_exceptions

            publisher, _, model = base_model.partition("/") if "/" in base_model else ("google", "", base_model)
            name = f"publishers/{publisher}/models/{model}"
            client = self.hosts.model_garden(self.region)
            try:
                client.get_publisher_model(name=name, timeout=20)
            except exceptions.NotFound:
                return False
            return True
        except (auth_exceptions.DefaultCredentialsError, exceptions.GoogleAPIError, OSError, ValueError):
            return None

    # ---- tuning ----------------------------------------------------------------------------------------------

    @api_errors("tuning")
    def tune(self, request: TuningRequest, progress: Progress) -> TuningOutcome:
        """Adopt (explicitly, or the job of this name and spec hash) or create a tuning job, then wait for its end.

        Returns:
            The outcome of a SUCCEEDED job.

        Raises:
            TuningFailed: The job ended FAILED, CANCELLED, EXPIRED or PARTIALLY_SUCCEEDED.
            BackendError: The API refused the job, continuation is not possible, or our deadline passed (the job
                keeps running).
        """
        from google.api_core import exceptions

        vertex_base_model(request.base_model)
        client = self.hosts.tuning(self.region)
        try:
            if request.adopt:
                job = self.retry.call(client.get_tuning_job, progress, name=request.adopt)
                progress(f"vertex: adopting {job.name} ({short(state_name(job))}) as `adopt` asks")
                reused = True
            else:
                # Lookup and create are retried as one unit: a create whose answer was lost may have succeeded, and
                # the next attempt then finds that job by its labels instead of paying for a second one.
                job, reused = self.retry.call(
                    self._find_or_create, progress, client=client, request=request, progress=progress
                )
        except exceptions.NotFound as e:
            raise BackendError(f"{request.name}: {e.message}") from None
        except exceptions.GoogleAPICallError as e:
            raise BackendError(f"{request.name}: the tuning API refused the job: {e.message}") from None
        job = self._wait(client, job, request.name, progress)
        if reused and job.tuned_model.model:
            # An adopted job (a revert, or one a killed `pulumi up` left) carries the labels and description of
            # the spec that made it; the model must carry this spec's.
            try:
                self.update_metadata(job.name, request.description, dict(request.labels))
            except BackendError as error:
                progress(f"vertex: {error}; the adopted model keeps its earlier labels")
        return outcome(job, reused)

    def _find_or_create(
        self, client: aiplatform_v1beta1.GenAiTuningServiceClient, request: TuningRequest, progress: Progress
    ) -> tuple[aiplatform_v1beta1.TuningJob, bool]:
        """The job of this spec name and hash to adopt, or a new one; never a second job for one create.

        The bucket's job marker (``DatasetStore.read_marker``) is read directly, so a job whose create answered is
        found however far the listing lags. A create whose answer never came back left a marker with a token and no
        name: its job, if the service made it, carries the token as a label and is looked for in the listing until
        ``lost_create_wait_s`` after the create was sent.
        """
        for _ in range(3):
            try:
                return self._find_or_create_once(client, request, progress)
            except MarkerConflict:
                progress(
                    f"vertex: another `pulumi up` is creating {request.name}'s job at the same time; looking again"
                )
        raise BackendError(
            f"{request.name}: {self.store.marker_uri(request.name, request.spec_hash)} keeps changing under this run; "
            "is another `pulumi up` of the same spec running? Run `pulumi up` again once it has finished."
        )

    def _find_or_create_once(
        self, client: aiplatform_v1beta1.GenAiTuningServiceClient, request: TuningRequest, progress: Progress
    ) -> tuple[aiplatform_v1beta1.TuningJob, bool]:
        from google.api_core import exceptions

        name, spec_hash = request.name, request.spec_hash
        marker = self.store.read_marker(name, spec_hash)
        recorded = self._recorded_job(client, marker, name, spec_hash, progress)
        if recorded is not None:
            return recorded, True
        jobs = self._jobs_of(client, name, progress)
        if marker is not None and marker.token and not marker.job:
            sent, jobs = self._await_lost_create(client, request, marker, jobs, progress)
            if sent is not None:
                marker = self.store.write_marker(name, spec_hash, replace(marker, job=sent.name), replaces=marker)
        existing = self._adoptable(jobs, spec_hash, progress)
        if existing is not None:
            progress(
                f"vertex: adopting {existing.name} ({short(state_name(existing))}): it carries "
                f"{SPEC_HASH_LABEL}={spec_hash[:63]}, so no second job is started"
            )
            if marker is None or marker.job != existing.name:
                token = existing.labels.get(REQUEST_LABEL, "")
                self.store.write_marker(name, spec_hash, JobMarker(token, time.time(), existing.name), replaces=marker)
            return existing, True
        numbered = [j for j in jobs if state_name(j) in LIVE_STATES or state_name(j) == "JOB_STATE_SUCCEEDED"]
        version = max((tuneform_version(j) for j in numbered), default=0) + 1
        pre_tuned = continuation_source(request, jobs, self.registry, self.kms_key_name, progress)
        tuning_job = build_tuning_job(
            request,
            bucket=self.bucket,
            version=version,
            pre_tuned_model=pre_tuned,
            kms_key_name=self.kms_key_name,
            service_account=self.service_account,
        )
        # CreateTuningJob takes no request id and names the job itself: the token is ours to find it by.
        pending = JobMarker(uuid.uuid4().hex, time.time())
        tuning_job.labels[REQUEST_LABEL] = pending.token
        if self.stack:
            tuning_job.labels[STACK_LABEL] = self.stack
        pending = self.store.write_marker(name, spec_hash, pending, replaces=marker)
        try:
            job = client.create_tuning_job(parent=self.parent, tuning_job=tuning_job)
        except (exceptions.ClientError, exceptions.ServiceUnavailable):
            # The service refused, or was unavailable, before acting (Google retries these even for calls that are
            # not idempotent: Workflows' default_retry_predicate_non_idempotent, AIP-194): no job carries the token.
            # Anything else (504, a dropped connection) may have created it, and the marker stays for the retry.
            self.store.drop_marker(name, spec_hash, pending)
            raise
        self.store.write_marker(name, spec_hash, replace(pending, job=job.name), replaces=pending)
        source = f", continuing from {pre_tuned}" if pre_tuned else f" from {request.base_model}"
        progress(f"vertex: created {job.name} for {name} v{version}{source}")
        return job, False

    def _recorded_job(
        self,
        client: aiplatform_v1beta1.GenAiTuningServiceClient,
        marker: JobMarker | None,
        name: str,
        spec_hash: str,
        progress: Progress,
    ) -> aiplatform_v1beta1.TuningJob | None:
        """The job the marker names, read directly, when it can be adopted."""
        from google.api_core import exceptions

        if marker is None or not marker.job:
            return None
        try:
            job = self.retry.call(client.get_tuning_job, progress, name=marker.job)
        except exceptions.NotFound:
            return None
        if not self._ours(job):  # two stacks sharing one bucket: the marker names the other stack's job
            return None
        adoptable = self._adoptable([job], spec_hash, progress)
        if adoptable is not None:
            progress(
                f"vertex: adopting {job.name} ({short(state_name(job))}), the job this spec's marker records "
                f"({self.store.marker_uri(name, spec_hash)}), so no second job is "
                "started"
            )
        return adoptable

    def _await_lost_create(
        self,
        client: aiplatform_v1beta1.GenAiTuningServiceClient,
        request: TuningRequest,
        marker: JobMarker,
        jobs: list[aiplatform_v1beta1.TuningJob],
        progress: Progress,
    ) -> tuple[aiplatform_v1beta1.TuningJob | None, list[aiplatform_v1beta1.TuningJob]]:
        """Look for the job of a create whose answer never came back, by its token, until the wait is over.

        Returns:
            The job (``None`` when it is not listed ``lost_create_wait_s`` after the create was sent: taken as never
            made), and the latest listing.
        """
        deadline = marker.sent_at + self.lost_create_wait_s
        said = False
        interval = 1.0
        while True:
            sent = next((j for j in jobs if j.labels.get(REQUEST_LABEL) == marker.token), None)
            if sent is not None:
                if said:
                    progress(f"vertex: {sent.name} carries the token of the unanswered create; it is that job")
                return sent, jobs
            left = deadline - time.time()
            if left <= 0:
                if said:
                    progress(
                        f"vertex: no job carries {REQUEST_LABEL}={marker.token} {self.lost_create_wait_s:.0f} s after "
                        "the create was sent: that create was not made; creating the job now"
                    )
                return None, jobs
            if not said:
                progress(
                    f"vertex: the create of {request.name}'s job sent {max(0.0, time.time() - marker.sent_at):.0f} s "
                    f"ago never answered (lost, or `pulumi up` was interrupted); looking for a job labelled "
                    f"{REQUEST_LABEL}={marker.token} in the listing for up to {left:.0f} s more (no Google document "
                    "says how soon a new job is listed)"
                )
                said = True
            time.sleep(min(interval, left))
            interval = min(interval * 2, 10.0)
            jobs = self._jobs_of(client, request.name, progress)

    def _adoptable(
        self, jobs: list[aiplatform_v1beta1.TuningJob], spec_hash: str, progress: Progress
    ) -> aiplatform_v1beta1.TuningJob | None:
        """The job of this spec hash to adopt: one still going, or a succeeded one whose tuned model still exists."""
        for job in jobs:
            if job.labels.get(SPEC_HASH_LABEL) != spec_hash[:63]:
                continue
            state = state_name(job)
            if state in LIVE_STATES and state != "JOB_STATE_CANCELLING":
                return job
            if state != "JOB_STATE_SUCCEEDED":
                continue
            if not job.tuned_model.model:
                return job  # an open-model job: its result is the weights under outputUri
            if self.registry.get(str(job.tuned_model.model)) is not None:
                return job
            progress(
                f"vertex: {job.name} tuned this configuration before, but its model {job.tuned_model.model} was "
                "deleted; tuning it again"
            )
        return None

    def _jobs_of(
        self, client: aiplatform_v1beta1.GenAiTuningServiceClient, name: str, report: Progress | None = None
    ) -> list[aiplatform_v1beta1.TuningJob]:
        """Every job of one spec name in this location that this stack may adopt, continue from or delete, newest
        first: its own, and those made before jobs carried their stack."""
        jobs = self._list(client, NAME_LABEL, label_value(name), report)
        return [job for job in jobs if self._ours(job)]

    def _ours(self, job: aiplatform_v1beta1.TuningJob) -> bool:
        return not self.stack or job.labels.get(STACK_LABEL, self.stack) == self.stack

    def _list(
        self,
        client: aiplatform_v1beta1.GenAiTuningServiceClient,
        label: str,
        value: str,
        report: Progress | None = None,
    ) -> list[aiplatform_v1beta1.TuningJob]:
        from google.api_core import exceptions
        from google.cloud import aiplatform_v1beta1

        def listing(request: aiplatform_v1beta1.ListTuningJobsRequest) -> list[aiplatform_v1beta1.TuningJob]:
            # Every page is fetched inside the retry: the pager asks for the next page lazily.
            return self.retry.call(lambda: list(client.list_tuning_jobs(request=request)), report)

        jobs: list[aiplatform_v1beta1.TuningJob] = []
        if self._label_filters:
            request = aiplatform_v1beta1.ListTuningJobsRequest(parent=self.parent, filter=f'labels.{label}="{value}"')
            try:
                jobs = listing(request)
            except exceptions.BadRequest:  # INVALID_ARGUMENT arrives over REST as a plain 400
                # The tuning API documents no filter fields (P-genai-tuning): list everything and filter here.
                self._label_filters = False
        if not self._label_filters:
            jobs = listing(aiplatform_v1beta1.ListTuningJobsRequest(parent=self.parent))
        # Checked here even when the service filtered: a service that ignored the filter must not make us adopt.
        jobs = [j for j in jobs if j.labels.get(label) == value]
        return sorted(jobs, key=lambda j: j.create_time, reverse=True)

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
            state = state_name(job)
            elapsed = time.monotonic() - start
            stats = job.tuning_data_stats.supervised_tuning_data_stats
            tokens = (
                f", {stats.total_billable_token_count} billable tokens" if stats.total_billable_token_count else ""
            )
            progress(f"vertex: {name}: {short(state)} after {elapsed:.0f} s{tokens} ({job.name})")
            if state in TERMINAL_STATES:
                break
            if elapsed >= self.deadline_seconds:
                raise BackendError(
                    f"{name}: tuning job {job.name} is still {short(state)} after {self.deadline_seconds:.0f} s "
                    f"(tuneform's deadline); it keeps running. Run `pulumi up` again to adopt it (it carries label "
                    f"{SPEC_HASH_LABEL}), or set `adopt: {job.name}` in the spec; cancel it with "
                    f"`gcloud ai tuning-jobs cancel {job.name}` if it is not wanted."
                )
            time.sleep(min(interval, max(self.deadline_seconds - elapsed, 0.0)))
            interval = min(interval * 1.5, self.poll[1])
            job = self.retry.call(client.get_tuning_job, progress, name=job.name)
        if state != "JOB_STATE_SUCCEEDED":
            raise TuningFailed(failure_message(job, name), job.name, short(state))
        return job

    @api_errors("reading a tuning job")
    def tuning_status(self, job_id: str) -> TuningOutcome | None:
        """Current view of a job (for ``pulumi refresh``); ``None`` when the API does not know it."""
        from google.api_core import exceptions

        try:
            job = self.retry.call(self.hosts.tuning(location_of(job_id)).get_tuning_job, name=job_id)
        except exceptions.NotFound:
            return None
        if state_name(job) == "JOB_STATE_SUCCEEDED" and job.tuned_model.model:
            if self.registry.get(str(job.tuned_model.model)) is None:
                # Its model was deleted (in the console, or by another stack): the job is history, the version gone.
                # `pulumi refresh` drops it, and the next `pulumi up` tunes again instead of failing on its endpoint.
                return None
        return outcome(job, reused=False)

    @api_errors("cancelling a tuning job")
    def cancel(self, job_id: str) -> None:
        """Cancel a job that has not ended; a finished job is history (the API cannot delete it) and is left."""
        from google.api_core import exceptions

        client = self.hosts.tuning(location_of(job_id))
        try:
            job = self.retry.call(client.get_tuning_job, name=job_id)
        except exceptions.NotFound:
            stderr(f"vertex: {job_id} no longer exists; nothing to cancel")
            return
        state = state_name(job)
        if state in TERMINAL_STATES or state == "JOB_STATE_CANCELLING":
            stderr(f"vertex: {job_id} is {short(state)}; it stays as history (the tuning API has no delete)")
            return
        try:
            self.retry.call(client.cancel_tuning_job, name=job_id)
        except (exceptions.FailedPrecondition, exceptions.BadRequest) as refused:
            # FAILED_PRECONDITION arrives over REST as HTTP 400 (BadRequest): the job ended meanwhile, or an earlier
            # attempt's answer was lost. Anything else the API refuses is still an error.
            ended = self.retry.call(client.get_tuning_job, name=job_id)
            if state_name(ended) not in (*TERMINAL_STATES, "JOB_STATE_CANCELLING"):
                raise
            stderr(
                f"vertex: {job_id} ended ({short(state_name(ended))}) before it could be cancelled ({refused.message})"
            )
            return
        stderr(f"vertex: cancellation of {job_id} requested (was {short(state)})")

    @api_errors("updating a tuned model's labels and description")
    def update_metadata(self, job_id: str, description: str, labels: dict[str, str]) -> None:
        """Apply a new description and labels to the job's tuned model and its version.

        The tuning API has no update method, so the job keeps the values it was created with. tuneform's own labels
        (spec hash, name, version, ``managed-by``) are kept. A job with no tuned model yet (or an open model's) is
        left alone; the provider's state carries the desired values.
        """
        job = self.retry.call(self.hosts.tuning(location_of(job_id)).get_tuning_job, name=job_id)
        if not job.tuned_model.model:
            stderr(f"vertex: {job_id} has no tuned model; labels and description are recorded in the stack only")
            return
        own = {k: v for k, v in job.labels.items() if k in OWN_LABELS}
        self.registry.update_metadata(str(job.tuned_model.model), description, {**labels, **own})

    def _job_of_version(self, name: str, version: int, model: str = "") -> Any:
        """The job that tuned ``version`` of ``name``; of that registry model only when ``model`` names one."""
        registry = model.split("@", 1)[0] if "/models/" in model else None
        jobs = self._jobs_of(self.hosts.tuning(self.region), name)
        for job in jobs:
            tuned = str(job.tuned_model.model)
            if not tuned or tuneform_version(job) != version:
                continue
            if registry is not None and tuned.split("@", 1)[0] != registry:
                continue
            return job
        return None

    @api_errors("deleting a tuned model version")
    def delete_version(self, model: str, version: int) -> None:
        """Delete one tuned version (``retain: false``): every endpoint it is deployed to, then the version.

        Args:
            model: The spec's ``metadata.name`` (or a registry name ``projects/.../models/ID``).
            version: tuneform's version number.

        Raises:
            BackendError: When Vertex refuses a step; the message says which and why.
        """
        name = model.rsplit("/", 1)[-1] if "/models/" in model else model
        job = self._job_of_version(name, version, model)
        if job is None:
            stderr(f"vertex: no tuned version {version} of {model} found in {self.parent}; nothing to delete")
            return
        try:
            self.registry.delete_version(str(job.tuned_model.model), deployed_endpoints(job))
        except BackendError as error:
            raise BackendError(f"{name}: {error}") from None

    # ---- endpoints -------------------------------------------------------------------------------------------

    @api_errors("finding a tuned version's endpoint")
    def deploy(self, request: EndpointRequest, existing: str | None, progress: Progress) -> EndpointState:
        """Return the endpoint Vertex deployed the requested version to when tuning it.

        Raises:
            BackendError: For a split across versions (each tuned Gemini version has an endpoint of its own), or a
                version without an endpoint.
        """
        del existing
        shares = {v: p for v, p in request.traffic.items() if p}
        if len(shares) != 1:
            raise BackendError(
                f"{request.name}: splitting traffic across versions {sorted(shares)} is not implemented on Vertex: "
                "each tuned Gemini version is served from its own endpoint; route 100 % to one version"
            )
        version = next(iter(shares))
        # The program names the endpoint its tuning job reported for the version just tuned: read it directly, since
        # a job listing may not show a job created seconds ago (list consistency is not documented).
        known = str((request.settings.get("versions") or {}).get(str(version)) or "")
        if "/endpoints/" in known:
            endpoint = known
        else:
            job = self._job_of_version(request.name, version, request.model)
            if job is None or not job.tuned_model.endpoint:
                raise BackendError(
                    f"{request.name}: no endpoint serves version {version}; was it tuned by tuneform in {self.parent}?"
                )
            endpoint = str(job.tuned_model.endpoint)
        progress(f"vertex: {request.name} v{version} is served by {endpoint}")
        state = self.registry.endpoint_state(endpoint, {"project": self.project})
        if state is None:
            raise BackendError(
                f"{request.name}: endpoint {endpoint} of version {version} no longer exists (its model was deleted "
                "outside this stack?). Run `pulumi refresh` to drop the version, then `pulumi up` to tune it again."
            )
        return state

    @api_errors("reading an endpoint")
    def endpoint_status(self, endpoint_id: str) -> EndpointState | None:
        """Deployed versions and traffic of an endpoint; ``None`` when it no longer exists."""
        return self.registry.endpoint_state(endpoint_id, {"project": self.project})

    def undeploy(self, endpoint_id: str) -> None:
        """Leave a tuned version's endpoint in place, saying so; ``delete_version`` removes it with the version."""
        stderr(
            f"vertex: {endpoint_id} was created by Vertex with the tuned model version and stays with it; an idle "
            "endpoint bears no inference cost. Set `retain: false` in the spec to delete version and endpoint."
        )
