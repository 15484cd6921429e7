"""The Vertex emulator itself: it must refuse what the service refuses, or the backend tests prove nothing.

Raw HTTP (httpx) for the requests a generated client would not send; the real ``aiplatform_v1`` client for the v1
surface; plus the backend's import hygiene and settings, which need no server. Behaviour ids (E1...) are those of
docs/vertex-emulator.md, whose table this file checks row by row where a row can be shown in isolation.
"""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform_v1

from emulators.vertex_api import FaultPlan, Outcome, VertexEmulator
from tuneform.backends.base import BackendError
from tuneform.backends.vertex import VertexBackend, vertex_base_model
from tuneform.resources._provider import BackendSettings

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(60)]

PARENT = "projects/p/locations/us-central1"
JOB = {
    "baseModel": "gemini-3.5-flash",
    "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/datasets/x.jsonl", "exportLastCheckpointOnly": True},
    "tunedModelDisplayName": "m",
    "labels": {"tuneform-spec-hash": "h1"},
}
OPEN = {
    **JOB,
    "baseModel": "google/gemma3@gemma-3-1b-it",
    "outputUri": "gs://b/out",
    "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/datasets/x.jsonl", "tuningMode": "TUNING_MODE_FULL"},
}


@pytest.fixture
def emu():
    with VertexEmulator(queued_seconds=0.02, running_seconds=0.1) as emulator:
        yield emulator


def post(emu: VertexEmulator, body: dict, api: str = "v1beta1", location: str = "us-central1") -> httpx.Response:
    return httpx.post(f"{emu.endpoints[location]}/{api}/projects/p/locations/{location}/tuningJobs", json=body)


def spec(**changes) -> dict:
    return {"supervisedTuningSpec": {"trainingDatasetUri": "gs://b/datasets/x.jsonl", **changes}}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({**JOB, "tunedModelDisplayNmae": "typo"}, 400, "Invalid JSON payload"),  # E1
        ({**JOB, **spec(hyperParameters={"epochs": 3})}, 400, "Invalid JSON payload"),  # E1
        ({**JOB, **spec(hyperParameters={"adapterSize": "ADAPTER_SIZE_THREE"})}, 400, "Invalid JSON payload"),
        ({**JOB, "baseModel": "gemini-2.5-flash"}, 404, "Publisher Model `projects/123456789012/locations/"
         "us-central1/publishers/google/models/gemini-2.5-flash` was not found"),  # E5: retired 2026-10-20
        ({**JOB, "baseModel": "gemini-9"}, 404, "was not found or your project does not have access"),  # E5
        ({**JOB, **spec(hyperParameters={"adapterSize": "ADAPTER_SIZE_THIRTY_TWO"})}, 400,
         "The adapter size is not supported for this base model."),  # E6
        ({**JOB, "encryptionSpec": {"kmsKeyName": "k"}}, 400, "encryption keys are not supported"),  # E6
        ({**JOB, "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/x.csv"}}, 400, "GCS object of type JSONL"),
        ({**OPEN, "baseModel": "google/gemma3"}, 404, "was not found"),  # E5/E7: no @version, no such model
        ({k: v for k, v in OPEN.items() if k != "outputUri"}, 400, "output_uri is required"),  # E7
        ({**OPEN, **spec(tuningMode="TUNING_MODE_PEFT_ADAPTER")}, 400, "is not supported for google/gemma3"),  # E7
        ({**JOB, **spec(hyperParameters={"learningRate": 0.1})}, 400, "only available for open source models"),
        ({**JOB, **spec(hyperParameters={"learningRate": 0.1, "learningRateMultiplier": 1})}, 400,
         "mutually exclusive"),  # E8
        ({**JOB, "labels": {"Team": "x"}}, 400, "Invalid label"),  # E10
        ({**JOB, "baseModel": None, "preTunedModel": {"tunedModelName": f"{PARENT}/models/9@1"}}, 404,
         "does not exist"),  # E23
    ],
)  # fmt: skip
def test_bad_create_is_refused(emu, body, status, message):
    body = {k: v for k, v in body.items() if v is not None}
    answer = post(emu, body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["status"] == ("NOT_FOUND" if status == 404 else "INVALID_ARGUMENT")
    assert message in answer.json()["error"]["message"]
    assert emu.creates == 0


def test_output_only_fields_are_ignored_not_refused(emu):
    answer = post(emu, {**JOB, "state": "JOB_STATE_SUCCEEDED", "tunedModel": {"model": "x"}})  # E2
    assert answer.status_code == 200 and answer.json()["state"] == "JOB_STATE_QUEUED"
    assert emu.ignored_output_only == ["state", "tunedModel"]


def test_a_resource_in_another_location_is_refused_by_this_host(emu):
    # E3: each location has its own host; the multi-region `us` host does not serve us-central1 and back.
    answer = httpx.post(f"{emu.endpoints['us']}/v1beta1/{PARENT}/tuningJobs", json=JOB)
    assert answer.status_code == 400 and "us-central1-aiplatform.googleapis.com" in answer.json()["error"]["message"]
    name = post(emu, JOB).json()["name"]
    assert httpx.get(f"{emu.endpoints['europe-west4']}/v1beta1/{name}").status_code == 400


def test_3x_tuning_only_in_its_regions(emu):
    assert post(emu, JOB, location="us-west1").status_code == 404  # E5/E6: not offered there
    assert post(emu, OPEN, location="us-west1").status_code == 200  # open models tune in us-west1 (V-oss)


def test_v1_field_is_unknown_on_v1(emu):
    # outputUri and tuningMode exist in v1beta1 only: the v1 surface must refuse them as unknown (E1).
    assert post(emu, OPEN, "v1").status_code == 400
    assert post(emu, OPEN).status_code == 200


def test_states_advance_and_enums_follow_the_requested_encoding(emu):
    emu.queued_seconds = 30  # long enough that both reads see QUEUED however slow the machine is
    name = post(emu, JOB).json()["name"]
    as_names = httpx.get(f"{emu.url}/v1beta1/{name}").json()
    as_ints = httpx.get(f"{emu.url}/v1beta1/{name}", params={"$alt": "json;enum-encoding=int"}).json()
    assert as_names["state"] == "JOB_STATE_QUEUED" and as_ints["state"] == 1
    assert "tunedModel" not in as_names
    assert re.fullmatch(r"projects/123456789012/locations/us-central1/tuningJobs/\d+", name)  # E4


def wait_done(emu: VertexEmulator, name: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        job = emu.job(name)
        if job["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"{name} did not finish")


def test_checkpoints_each_deployed_to_an_endpoint_in_the_multi_region(emu):
    body = {**JOB, **spec(hyperParameters={"epochCount": "3"})}  # exportLastCheckpointOnly not set: false (E12)
    job = wait_done(emu, post(emu, body).json()["name"])
    tuned = job["tunedModel"]
    assert tuned["model"].startswith("projects/123456789012/locations/us-central1/models/")  # E14
    assert [c["epoch"] for c in tuned["checkpoints"]] == ["1", "2", "3"]
    endpoints = [c["endpoint"] for c in tuned["checkpoints"]]
    assert len(set(endpoints)) == 3 and all("/locations/us/endpoints/" in e for e in endpoints)
    assert tuned["endpoint"] == endpoints[-1]  # E13: the default (final) checkpoint's endpoint
    last_only = wait_done(emu, post(emu, JOB).json()["name"])["tunedModel"]
    assert "checkpoints" not in last_only and "/locations/us/endpoints/" in last_only["endpoint"]


def test_open_model_jobs_deploy_nothing(emu):
    job = wait_done(emu, post(emu, OPEN).json()["name"])  # E16
    assert job["state"] == "JOB_STATE_SUCCEEDED" and "tunedModel" not in job
    assert emu.live_endpoints() == [] and emu.live_models() == []


def test_list_refuses_label_filters_unless_allowed_and_pages(emu):
    for i in range(5):
        post(emu, {**JOB, "labels": {"tuneform-spec-hash": f"h{i % 2}"}})
    url = f"{emu.url}/v1beta1/{PARENT}/tuningJobs"
    refused = httpx.get(url, params={"filter": 'labels.tuneform-spec-hash="h0"'})
    assert refused.status_code == 400 and "unsupported field" in refused.json()["error"]["message"]  # E15
    first = httpx.get(url, params={"pageSize": 2}).json()
    rest = httpx.get(url, params={"pageSize": 10, "pageToken": first["nextPageToken"]}).json()
    assert len(first["tuningJobs"]) == 2 and len(rest["tuningJobs"]) == 3 and "nextPageToken" not in rest
    assert httpx.get(url, params={"filter": 'state="JOB_STATE_QUEUED"'}).status_code == 200
    assert httpx.get(url, params={"pageSzie": 2}).status_code == 400
    emu.list_filters = "labels"
    allowed = httpx.get(url, params={"filter": 'labels.tuneform-spec-hash="h0"'}).json()["tuningJobs"]
    assert len(allowed) == 3


def test_lagging_list_hides_new_jobs_until_the_lag_passes(emu):
    emu.list_lag_seconds = 0.5  # E34
    name = post(emu, JOB).json()["name"]
    url = f"{emu.url}/v1beta1/{PARENT}/tuningJobs"
    assert httpx.get(url).json().get("tuningJobs", []) == []
    assert httpx.get(f"{emu.url}/v1beta1/{name}").status_code == 200, "a direct read sees it at once"
    time.sleep(0.6)
    assert [j["name"] for j in httpx.get(url).json()["tuningJobs"]] == [name]


def test_update_model_cannot_mix_model_and_version_fields(emu):
    model = wait_done(emu, post(emu, JOB).json()["name"])["tunedModel"]["model"]
    base = model.split("@")[0]
    host = emu.url

    def patch(name: str, mask: str, body: dict) -> httpx.Response:
        return httpx.patch(f"{host}/v1beta1/{name}", params={"updateMask": mask}, json=body)

    mixed = patch(model, "description,labels", {"name": model, "description": "d"})  # E25
    assert mixed.status_code == 400 and mixed.json()["error"]["status"] == "FAILED_PRECONDITION"
    assert patch(base, "versionDescription", {"name": base, "versionDescription": "v"}).status_code == 400
    assert patch(model, "versionDescription,labels", {"name": model, "versionDescription": "v", "labels": {"a": "b"}}
                 ).status_code == 200  # fmt: skip
    assert (
        patch(base, "description,labels", {"name": base, "description": "d", "labels": {"c": "d"}}).status_code == 200
    )
    read = httpx.get(f"{host}/v1beta1/{model}").json()
    assert read["description"] == "d" and read["versionDescription"] == "v"
    assert read["labels"] == {"a": "b", "c": "d"}  # E24: merged on read
    assert patch(base, "", {"name": base}).status_code == 400


def test_deployed_versions_and_models_cannot_be_deleted(emu):
    model = wait_done(emu, post(emu, JOB).json()["name"])["tunedModel"]["model"]
    base = model.split("@")[0]
    refused = httpx.delete(f"{emu.url}/v1beta1/{base}")  # E26
    assert refused.status_code == 400 and "Undeploy it first" in refused.json()["error"]["message"]
    only = httpx.delete(f"{emu.url}/v1beta1/{model}:deleteVersion")  # E27: deployed (and the only version)
    assert only.status_code == 400 and only.json()["error"]["status"] == "FAILED_PRECONDITION"
    endpoint = httpx.get(f"{emu.url}/v1beta1/{model}").json()["deployedModels"][0]
    assert httpx.delete(f"{emu.endpoints['us']}/v1beta1/{endpoint['endpoint']}").status_code == 400  # E30
    undeploy = httpx.post(f"{emu.endpoints['us']}/v1beta1/{endpoint['endpoint']}:undeployModel",
                          json={"deployedModelId": endpoint["deployedModelId"]})  # fmt: skip
    assert undeploy.status_code == 200 and undeploy.json()["done"] is True
    still_only = httpx.delete(f"{emu.url}/v1beta1/{model}:deleteVersion")
    assert "Use DeleteModel" in still_only.json()["error"]["message"]
    assert httpx.delete(f"{emu.url}/v1beta1/{base}").status_code == 200
    assert httpx.get(f"{emu.url}/v1beta1/{model}").status_code == 404


def test_generate_content_on_the_tuned_endpoint(emu):
    endpoint = wait_done(emu, post(emu, JOB).json()["name"])["tunedModel"]["endpoint"]
    body = {"contents": [{"role": "user", "parts": [{"text": "I was charged twice"}]}]}
    answer = httpx.post(f"{emu.endpoints['us']}/v1/{endpoint}:generateContent", json=body)  # E32
    assert answer.status_code == 200
    assert "emulated answer from m" in answer.json()["candidates"][0]["content"]["parts"][0]["text"]
    assert httpx.post(f"{emu.url}/v1/{endpoint}:generateContent", json=body).status_code == 400  # E3


def test_publisher_models_answer_by_lifecycle(emu):
    assert httpx.get(f"{emu.url}/v1beta1/publishers/google/models/gemini-3.5-flash").status_code == 200
    assert httpx.get(f"{emu.url}/v1beta1/publishers/google/models/gemini-2.5-pro").status_code == 404  # E35
    assert httpx.get(f"{emu.url}/v1beta1/publishers/meta/models/llama3_1@llama-3.1-8b").status_code == 200


def test_v1_client_create_get_list_cancel(emu):
    client = aiplatform_v1.GenAiTuningServiceClient(
        transport="rest", credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=emu.url)
    )
    emu.script(Outcome(running_seconds=30))
    job = client.create_tuning_job(
        parent=PARENT,
        tuning_job=aiplatform_v1.TuningJob(
            base_model="gemini-3.5-flash",
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


def test_fault_rate_faults_about_that_share_of_requests():
    with VertexEmulator(faults=FaultPlan(rate=0.3, kinds=("429", "503", "lost"), seed=3)) as emu:  # E33
        answers = [post(emu, {**JOB, "labels": {"n": str(i)}}).status_code for i in range(200)]
    faulted = sum(code != 200 for code in answers)
    assert 40 <= faulted <= 80, faulted
    assert set(answers) <= {200, 429, 503, 504}
    lost = answers.count(504)
    assert emu.creates == answers.count(200) + lost, "a lost answer still created its job"


def test_backend_module_imports_no_google_cloud_and_pickles():
    code = (
        "import sys, tuneform.backends.vertex;"
        "heavy = [m for m in sys.modules if m.startswith(('google.cloud.aiplatform', 'google.cloud.storage',"
        " 'google.api_core', 'grpc'))];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
    backend = VertexBackend("p", "us-central1", "b", api_endpoints={"*": "http://127.0.0.1:1"})
    copy = pickle.loads(pickle.dumps(backend))
    assert copy.hosts == backend.hosts and copy.parent == backend.parent


def test_from_settings():
    settings = BackendSettings(
        target="vertex",
        repo_root="/r",
        project="p",
        region="europe-west4",
        bucket="gs://b",
        api_endpoint="http://127.0.0.1:9",
        api_endpoints=(("eu", "http://127.0.0.1:8"),),
        deadline_seconds=60,
        poll_seconds=(0.5, 2.0),
    )
    backend = VertexBackend.from_settings(settings)
    assert (backend.project, backend.region, backend.bucket) == ("p", "europe-west4", "b")
    assert backend.hosts.endpoint("eu") == "http://127.0.0.1:8"
    assert backend.hosts.endpoint("europe-west4") == "http://127.0.0.1:9"
    assert backend.store.endpoint is None
    assert backend.deadline_seconds == 60 and backend.poll == (0.5, 2.0)
    with pytest.raises(BackendError, match="tuneform:region, tuneform:bucket"):
        VertexBackend.from_settings(BackendSettings(target="vertex", repo_root="/r", project="p"))


def test_google_hosts_per_location():
    hosts = VertexBackend("p", "us-central1", "b").hosts
    assert hosts.endpoint("us-central1") == "us-central1-aiplatform.googleapis.com"
    assert hosts.endpoint("us") == "aiplatform.us.rep.googleapis.com"  # V-locations
    assert hosts.base_url("eu") == "https://aiplatform.eu.rep.googleapis.com"


def test_open_model_names_need_a_version():
    assert vertex_base_model("google/gemma3@gemma-3-27b-it") == ("google/gemma3@gemma-3-27b-it", True)
    assert vertex_base_model("gemini-3.5-flash") == ("gemini-3.5-flash", False)
    with pytest.raises(BackendError, match="publisher/model@version"):
        vertex_base_model("google/gemma3")


def test_every_behaviour_in_the_table_is_cited_in_the_emulator():
    table = (Path(__file__).parents[1] / "docs" / "vertex-emulator.md").read_text()
    ids = set(re.findall(r"^\| (E\d+) \|", table, flags=re.M))
    code = (Path(__file__).parent / "emulators" / "vertex_api.py").read_text()
    cited = set(re.findall(r"\bE\d+\b", code))
    assert len(ids) >= 30
    assert ids - cited <= {"E4", "E19", "E28", "E31"}, "rows without code citing them"


def test_every_catalogue_adapter_size_has_a_vertex_enum_name():
    """The loader checks adapterSize against the catalogue, the only list; the request builder only names sizes."""
    from tuneform import catalogue
    from tuneform.backends.vertex import ADAPTER_SIZES

    for info in catalogue.all_models().values():
        if info.provider == "vertex":
            assert set(info.adapter_sizes) <= set(ADAPTER_SIZES), info.id


def test_labels_follow_the_tuning_job_proto(emu):
    """E10: up to 64 code points, international lowercase letters allowed; at most 64 labels on a resource."""
    assert post(emu, {**JOB, "labels": {"équipe": "données", "k" * 64: "v" * 64}}).status_code == 200
    assert post(emu, {**JOB, "labels": {"k" * 65: "v"}}).status_code == 400
    assert post(emu, {**JOB, "labels": {"Team": "a"}}).status_code == 400
    assert post(emu, {**JOB, "labels": {f"l{i}": "x" for i in range(65)}}).status_code == 400
