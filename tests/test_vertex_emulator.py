"""The tuning-API emulator itself: it must refuse what the real API refuses, or the backend tests prove nothing.

Raw HTTP (httpx) for the malformed requests a generated client cannot send; the real ``aiplatform_v1`` client for
the v1 surface; plus the backend's import hygiene and settings, which need no server.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import httpx
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform_v1

from emulators.tuning_api import Outcome, TuningApiEmulator
from tuneform.backends.base import BackendError
from tuneform.backends.vertex import VertexBackend, vertex_base_model
from tuneform.resources._provider import BackendSettings

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(60)]

PARENT = "projects/p/locations/us-central1"
JOB = {
    "baseModel": "gemini-2.5-flash",
    "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/datasets/x.jsonl"},
    "tunedModelDisplayName": "m",
    "labels": {"tuneform-spec-hash": "h1"},
}


@pytest.fixture
def emu():
    with TuningApiEmulator(queued_seconds=0.02, running_seconds=0.1) as emulator:
        yield emulator


def post(emu: TuningApiEmulator, body: dict, version: str = "v1beta1") -> httpx.Response:
    return httpx.post(f"{emu.url}/{version}/{PARENT}/tuningJobs", json=body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**JOB, "tunedModelDisplayNmae": "typo"}, "Invalid JSON payload"),
        ({**JOB, "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/x.jsonl", "hyperParameters": {"epochs": 3}}},
         "Invalid JSON payload"),
        ({**JOB, "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/x.jsonl",
                                          "hyperParameters": {"adapterSize": "ADAPTER_SIZE_THREE"}}},
         "Invalid JSON payload"),
        ({**JOB, "state": "JOB_STATE_RUNNING"}, "output-only fields"),
        ({**JOB, "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/x.csv"}}, "GCS object of type JSONL"),
        ({**JOB, "baseModel": "google/gemma3"}, "Invalid open source publisher model resource name"),
        ({**JOB, "baseModel": "google/gemma3@gemma-3-1b-it"}, "outputUri is required"),
        ({**JOB, "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/x.jsonl",
                                          "hyperParameters": {"learningRate": 0.1}}}, "only supported for open"),
        ({**JOB, "labels": {"Team": "x"}}, "invalid label"),
    ],
)  # fmt: skip
def test_bad_create_is_refused_with_400(emu, body, message):
    answer = post(emu, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert message in answer.json()["error"]["message"]
    assert emu.creates == 0


def test_v1_field_is_refused_on_v1_only_when_it_is_v1beta1_only(emu):
    body = {**JOB, "outputUri": "gs://b/out"}
    # outputUri exists in v1beta1 only (fact sheet §4): the v1 surface must reject it as unknown.
    assert post(emu, body, "v1").status_code == 400
    assert post(emu, {**JOB, "baseModel": "google/gemma3@gemma-3-1b-it", "outputUri": "gs://b/out"}).status_code == 200


def test_states_advance_and_enums_follow_the_requested_encoding(emu):
    emu.queued_seconds = 30  # long enough that both reads see QUEUED however slow the machine is
    name = post(emu, JOB).json()["name"]
    as_names = httpx.get(f"{emu.url}/v1beta1/{name}").json()
    as_ints = httpx.get(f"{emu.url}/v1beta1/{name}", params={"$alt": "json;enum-encoding=int"}).json()
    assert as_names["state"] == "JOB_STATE_QUEUED" and as_ints["state"] == 1
    assert "tunedModel" not in as_names


def test_list_filters_pages_and_refuses_unknown_clauses(emu):
    for i in range(5):
        post(emu, {**JOB, "labels": {"tuneform-spec-hash": f"h{i % 2}"}})
    url = f"{emu.url}/v1beta1/{PARENT}/tuningJobs"
    first = httpx.get(url, params={"filter": 'labels.tuneform-spec-hash="h0"', "pageSize": 2}).json()
    assert len(first["tuningJobs"]) == 2 and first["nextPageToken"]
    rest = httpx.get(url, params={"filter": 'labels.tuneform-spec-hash="h0"', "pageSize": 2,
                                  "pageToken": first["nextPageToken"]}).json()  # fmt: skip
    assert len(rest["tuningJobs"]) == 1 and "nextPageToken" not in rest
    assert all(j["labels"]["tuneform-spec-hash"] == "h0" for j in first["tuningJobs"] + rest["tuningJobs"])
    assert httpx.get(url, params={"filter": 'display_name="m"'}).status_code == 400
    assert httpx.get(url, params={"pageSzie": 2}).status_code == 400


def test_v1_client_create_get_list_cancel(emu):
    client = aiplatform_v1.GenAiTuningServiceClient(
        transport="rest", credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=emu.url)
    )
    emu.script(Outcome(running_seconds=30))
    job = client.create_tuning_job(
        parent=PARENT,
        tuning_job=aiplatform_v1.TuningJob(
            base_model="gemini-2.5-flash",
            tuned_model_display_name="v1-model",
            supervised_tuning_spec=aiplatform_v1.SupervisedTuningSpec(training_dataset_uri="gs://b/d/x.jsonl"),
        ),
    )
    assert job.state == aiplatform_v1.JobState.JOB_STATE_QUEUED
    assert [j.name for j in client.list_tuning_jobs(parent=PARENT)] == [job.name]
    client.cancel_tuning_job(name=job.name)
    assert client.get_tuning_job(name=job.name).state in (
        aiplatform_v1.JobState.JOB_STATE_CANCELLING,
        aiplatform_v1.JobState.JOB_STATE_CANCELLED,
    )
    assert isinstance(emu.received("POST", "/tuningJobs")[0], aiplatform_v1.TuningJob.pb())


def test_scripted_http_errors_are_counted_down(emu):
    emu.fail_next(503, count=2)
    assert post(emu, JOB).status_code == 503
    assert post(emu, JOB).json()["error"]["status"] == "UNAVAILABLE"
    assert post(emu, JOB).status_code == 200
    assert emu.creates == 1


def test_backend_module_imports_no_google_cloud_and_pickles():
    code = (
        "import sys, tuneform.backends.vertex;"
        "heavy = [m for m in sys.modules if m.startswith(('google.cloud.aiplatform', 'google.cloud.storage',"
        " 'google.api_core', 'grpc'))];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
    backend = VertexBackend("p", "us-central1", "b", api_endpoint="http://127.0.0.1:1")
    assert pickle.loads(pickle.dumps(backend)).__dict__ == backend.__dict__


def test_from_settings():
    settings = BackendSettings(
        target="vertex",
        repo_root="/r",
        project="p",
        region="europe-west4",
        bucket="gs://b",
        api_endpoint="http://127.0.0.1:9",
        deadline_seconds=60,
        extra={"poll": [0.5, 2]},
    )
    backend = VertexBackend.from_settings(settings)
    assert (backend.project, backend.region, backend.bucket) == ("p", "europe-west4", "b")
    assert backend.api_endpoint == "http://127.0.0.1:9" and backend.storage_endpoint is None
    assert backend.deadline_seconds == 60 and backend.poll == (0.5, 2.0)
    with pytest.raises(BackendError, match="tuneform:region, tuneform:bucket"):
        VertexBackend.from_settings(BackendSettings(target="vertex", repo_root="/r", project="p"))


def test_open_model_names_need_a_version():
    assert vertex_base_model("google/gemma3@gemma-3-27b-it") == ("google/gemma3@gemma-3-27b-it", True)
    assert vertex_base_model("gemini-2.5-flash") == ("gemini-2.5-flash", False)
    with pytest.raises(BackendError, match="publisher/model@version"):
        vertex_base_model("google/gemma3")
