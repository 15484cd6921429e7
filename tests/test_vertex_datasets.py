"""Dataset upload to fake-gcs-server with google-cloud-storage: content-addressed, never repeated, never overwritten.

fake-gcs-server is built once by ``scripts/build_fake_gcs.sh`` (minutes, cached afterwards) and started per module.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from tuneform.backends.base import BackendError
from tuneform.backends.vertex import VertexBackend

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]

BUCKET = "tuneform-datasets"  # created by the `gcs` fixture (conftest.py)


@pytest.fixture
def backend(gcs):
    return VertexBackend("test-project", "us-central1", f"gs://{BUCKET}", storage_endpoint=gcs.url)


@pytest.fixture
def client(gcs):
    return storage.Client(project="test-project", credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": gcs.url})  # fmt: skip


def write_jsonl(path, texts):
    lines = [json.dumps({"contents": [{"role": "user", "parts": [{"text": t}]},
                                      {"role": "model", "parts": [{"text": t.upper()}]}]}) for t in texts]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_upload_is_content_addressed_and_not_repeated(backend, client, tmp_path, capsys):
    path = tmp_path / "train.jsonl"
    sha = write_jsonl(path, ["refund please", "reset my password"])

    art = backend.store_dataset(str(path), sha, examples=2, tokens=40)
    assert art.uri == f"gs://{BUCKET}/datasets/{sha}.jsonl"
    assert (art.sha256, art.examples, art.tokens) == (sha, 2, 40)
    blob = client.bucket(BUCKET).get_blob(f"datasets/{sha}.jsonl")
    assert blob.download_as_bytes() == path.read_bytes()
    assert blob.metadata == {"tuneform-examples": "2", "tuneform-tokens": "40"}
    assert "uploading" in capsys.readouterr().err

    again = backend.store_dataset(str(path), sha, examples=2, tokens=40)
    assert again == art
    # Same generation: the object was not written a second time.
    assert client.bucket(BUCKET).get_blob(f"datasets/{sha}.jsonl").generation == blob.generation
    assert "already stored" in capsys.readouterr().err
    assert backend.dataset_present(art)


def test_changed_dataset_gets_its_own_object(backend, client, tmp_path):
    first = tmp_path / "a.jsonl"
    second = tmp_path / "b.jsonl"
    sha1 = write_jsonl(first, ["one"])
    sha2 = write_jsonl(second, ["one", "two"])
    backend.store_dataset(str(first), sha1, 1, 5)
    backend.store_dataset(str(second), sha2, 2, 10)
    names = {b.name for b in client.list_blobs(BUCKET, prefix="datasets/")}
    assert {f"datasets/{sha1}.jsonl", f"datasets/{sha2}.jsonl"} <= names
    assert client.bucket(BUCKET).blob(f"datasets/{sha1}.jsonl").download_as_bytes() == first.read_bytes()


def test_existing_object_is_never_overwritten(backend, client, tmp_path, monkeypatch, capsys):
    """Two writers racing on one sha: the loser's ``if_generation_match=0`` write is refused, and that is fine."""
    path = tmp_path / "race.jsonl"
    sha = write_jsonl(path, ["race"])
    blob = client.bucket(BUCKET).blob(f"datasets/{sha}.jsonl")
    blob.upload_from_filename(str(path), if_generation_match=0)
    generation = client.bucket(BUCKET).get_blob(blob.name).generation
    # The other writer won between the backend's existence check and its upload.
    monkeypatch.setattr(storage.Blob, "exists", lambda self, *a, **k: False)
    backend.store_dataset(str(path), sha, 1, 5)
    monkeypatch.undo()
    assert "stored concurrently" in capsys.readouterr().err
    assert client.bucket(BUCKET).get_blob(blob.name).generation == generation


def test_hash_mismatch_is_refused_before_upload(backend, client, tmp_path):
    path = tmp_path / "x.jsonl"
    write_jsonl(path, ["x"])
    with pytest.raises(BackendError, match="content hashes to"):
        backend.store_dataset(str(path), "0" * 64, 1, 1)
    assert not client.bucket(BUCKET).blob(f"datasets/{'0' * 64}.jsonl").exists()


def test_missing_bucket_is_a_backend_error(gcs, tmp_path):
    path = tmp_path / "y.jsonl"
    sha = write_jsonl(path, ["y"])
    be = VertexBackend("test-project", "us-central1", "no-such-bucket", storage_endpoint=gcs.url)
    with pytest.raises(BackendError, match="no-such-bucket"):
        be.store_dataset(str(path), sha, 1, 1)
