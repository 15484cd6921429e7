"""Datasets in Cloud Storage: content-addressed objects that are written once and never overwritten.

Gemini tuning reads the Gemini JSONL (``contents`` with roles ``user``/``model``); Vertex AI's open-model tuning
reads chat ``messages`` with role ``assistant`` (sources.yaml: V-oss), so open models get that form of the same
examples. Either way the object is named by the canonical Gemini content's SHA-256, the identity tuneform records.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuneform.backends.base import BackendError, DatasetArtifact
from tuneform.backends.vertex._api import emulator_credentials, stderr

if TYPE_CHECKING:
    from google.cloud.storage import Client

__all__ = ["DatasetStore", "JobMarker", "MarkerConflict"]

UPLOAD_FORMATS = ("gemini", "messages")
MARKERS = "tuneform/jobs"
"""Where the bucket keeps one marker per (spec name, spec hash): ``tuneform/jobs/<name>/<spec hash>.json``."""


class MarkerConflict(Exception):
    """Another writer changed a job marker since it was read (a concurrent ``pulumi up`` of the same spec)."""


@dataclass(frozen=True)
class JobMarker:
    """What the bucket records of a spec's tuning job, read back directly (no listing) by every later attempt.

    Written before CreateTuningJob with a fresh ``token`` (sent as the job's ``tuneform-request`` label), and again
    with the job's ``name`` as soon as the create answers. A marker with a token and no name is a create whose
    answer never came back: the job may exist, findable by its token once the listing shows it.
    """

    token: str
    sent_at: float
    """When the create was sent (seconds since the epoch)."""
    job: str = ""
    """The job's resource name, once known."""
    generation: int = 0
    """The object's generation as read: the precondition of the next write."""


class DatasetStore:
    """Upload converted datasets to ``gs://<bucket>/datasets/``.

    Args:
        project: The project the storage client bills to.
        bucket: Bucket name (no ``gs://``).
        endpoint: Cloud Storage endpoint override; ``http://`` (fake-gcs-server) gets anonymous credentials.
    """

    def __init__(self, project: str, bucket: str, endpoint: str | None = None) -> None:
        self.project = project
        self.bucket = bucket.removeprefix("gs://").rstrip("/")
        self.endpoint = endpoint
        self._client: Client | None = None

    def client(self) -> Client:
        """The storage client, built once: a create reads and writes its marker several times."""
        if self._client is None:
            from google.cloud.storage import Client

            kwargs: dict[str, Any] = emulator_credentials(self.endpoint)
            if self.endpoint:
                kwargs["client_options"] = {"api_endpoint": self.endpoint}
            self._client = Client(project=self.project, **kwargs)
        return self._client

    def store(
        self, converted_path: str, sha256: str, examples: int, tokens: int, upload_format: str = "gemini"
    ) -> DatasetArtifact:
        """Upload a converted JSONL unless its object already exists.

        Objects are written with ``if_generation_match=0``: an existing object (the same bytes, by construction) is
        never overwritten, and a concurrent upload of the same file is harmless.

        Args:
            converted_path: The Gemini-format JSONL on local disk.
            sha256: Its SHA-256 (hex); checked against the file before anything is uploaded.
            examples: Example count, recorded in the object's metadata.
            tokens: Token total of one pass, recorded likewise.
            upload_format: ``gemini``, or ``messages`` for open models.

        Raises:
            BackendError: If the file does not hash to ``sha256``, cannot be converted, or the upload fails.
        """
        from google.api_core import exceptions

        if upload_format not in UPLOAD_FORMATS:
            raise BackendError(f"dataset upload format {upload_format!r}: expected one of {UPLOAD_FORMATS}")
        digest = hashlib.sha256()
        with open(converted_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise BackendError(f"{converted_path}: content hashes to {digest.hexdigest()}, not {sha256}")
        suffix = ".jsonl" if upload_format == "gemini" else ".messages.jsonl"
        object_name = f"datasets/{sha256}{suffix}"
        uri = f"gs://{self.bucket}/{object_name}"
        blob = self.client().bucket(self.bucket).blob(object_name)
        try:
            if blob.exists():
                stderr(f"vertex: dataset {uri} already stored")
                return DatasetArtifact(sha256=sha256, uri=uri, examples=examples, tokens=tokens)
            blob.metadata = {"tuneform-examples": str(examples), "tuneform-tokens": str(tokens)}
            if upload_format == "gemini":
                stderr(f"vertex: uploading {converted_path} to {uri}")
                blob.upload_from_filename(converted_path, content_type="application/jsonl", if_generation_match=0)
            else:
                self._upload_messages(blob, converted_path, uri)
        except exceptions.PreconditionFailed:
            stderr(f"vertex: dataset {uri} was stored concurrently; keeping that copy")
        except exceptions.GoogleAPICallError as e:
            raise BackendError(f"uploading {converted_path} to {uri} failed: {e.message}") from None
        return DatasetArtifact(sha256=sha256, uri=uri, examples=examples, tokens=tokens)

    @staticmethod
    def _upload_messages(blob: Any, converted_path: str, uri: str) -> None:
        from tuneform.datasets.messages import MessageConversionError, write_messages_jsonl

        handle, temporary = tempfile.mkstemp(suffix=".jsonl")
        os.close(handle)
        try:
            try:
                _, rows = write_messages_jsonl(converted_path, temporary)
            except MessageConversionError as error:
                raise BackendError(f"{uri}: open models take text conversations only: {error}") from None
            stderr(f"vertex: uploading {rows} examples as chat messages (open-model format) to {uri}")
            blob.upload_from_filename(temporary, content_type="application/jsonl", if_generation_match=0)
        finally:
            os.unlink(temporary)

    def _marker_blob(self, name: str, spec_hash: str) -> Any:
        return self.client().bucket(self.bucket).blob(f"{MARKERS}/{name}/{spec_hash}.json")

    def marker_uri(self, name: str, spec_hash: str) -> str:
        return f"gs://{self.bucket}/{MARKERS}/{name}/{spec_hash}.json"

    def read_marker(self, name: str, spec_hash: str) -> JobMarker | None:
        """The job marker of a spec name and hash, or ``None`` when there is none (or it is unreadable)."""
        from google.api_core import exceptions

        blob = self._marker_blob(name, spec_hash)
        try:
            blob.reload()
            data = json.loads(blob.download_as_bytes(if_generation_match=blob.generation))
            return JobMarker(str(data["token"]), float(data["sentAt"]), str(data.get("job", "")), int(blob.generation))
        except exceptions.NotFound:
            return None
        except exceptions.PreconditionFailed:
            return self.read_marker(name, spec_hash)  # rewritten between the two reads
        except (ValueError, KeyError, TypeError):
            stderr(f"vertex: {self.marker_uri(name, spec_hash)} is not a tuneform job marker; ignoring it")
            return None

    def write_marker(self, name: str, spec_hash: str, marker: JobMarker, *, replaces: JobMarker | None) -> JobMarker:
        """Write a job marker, only over the one read (``replaces``, or none: the object must not exist).

        Returns:
            The marker as written (its new generation).

        Raises:
            MarkerConflict: Someone else wrote or removed it since it was read.
        """
        from google.api_core import exceptions

        blob = self._marker_blob(name, spec_hash)
        body = {"token": marker.token, "sentAt": marker.sent_at, "job": marker.job, "spec": name,
                "specHash": spec_hash}  # fmt: skip
        try:
            blob.upload_from_string(
                json.dumps(body, indent=2),
                content_type="application/json",
                if_generation_match=replaces.generation if replaces else 0,
            )
        except exceptions.PreconditionFailed:
            raise MarkerConflict(self.marker_uri(name, spec_hash)) from None
        return JobMarker(marker.token, marker.sent_at, marker.job, int(blob.generation or 0))

    def drop_marker(self, name: str, spec_hash: str, marker: JobMarker) -> None:
        """Remove a marker whose create certainly did not happen (the service refused it); a newer one stays."""
        from google.api_core import exceptions

        try:
            self._marker_blob(name, spec_hash).delete(if_generation_match=marker.generation)
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            pass

    def present(self, artifact: DatasetArtifact) -> bool:
        """Whether ``artifact.uri`` still exists in its bucket."""
        bucket, _, name = artifact.uri.removeprefix("gs://").partition("/")
        return bool(self.client().bucket(bucket).blob(name).exists())
