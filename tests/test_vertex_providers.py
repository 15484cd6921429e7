"""tuneform's dynamic providers on the vertex target, against both emulators, as Pulumi would drive them.

Each provider goes through a dill round trip first (Pulumi stores it that way in state and runs it in another
process), then its CRUD methods run against fake-gcs-server and the tuning-API emulator over real HTTP. This is the
seam between the providers and ``VertexBackend``; the Pulumi CLI run on top of it is the lead's stack test.
"""

from __future__ import annotations

import hashlib
import json

import dill
import pytest

from emulators.vertex_api import Outcome
from tuneform.resources._provider import BackendSettings
from tuneform.resources.dataset import DatasetProvider
from tuneform.resources.endpoint import EndpointProvider
from tuneform.resources.model_version import ModelVersionProvider
from tuneform.resources.tuning_job import TuningJobProvider

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]

BUCKET = "tuneform-provider-test"  # created by the `gcs` fixture (conftest.py)


@pytest.fixture
def settings(gcs, emu, tmp_path):
    return BackendSettings(
        target="vertex",
        repo_root=str(tmp_path),
        project="test-project",
        region="us-central1",
        bucket=BUCKET,
        api_endpoints=tuple(emu.endpoints.items()),
        storage_endpoint=gcs.url,
        deadline_seconds=30,
        poll_seconds=(0.05, 0.1),
    )


def as_pulumi_would(provider):
    return dill.loads(dill.dumps(provider, recurse=True))


def dataset_props(tmp_path, text: str) -> dict:
    path = tmp_path / f"{hashlib.md5(text.encode()).hexdigest()}.jsonl"
    example = {"contents": [{"role": "user", "parts": [{"text": text}]}, {"role": "model", "parts": [{"text": "ok"}]}]}
    path.write_text(json.dumps(example) + "\n")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"model": "ticket-router", "split": "train", "source": "data/train.jsonl", "format": "gemini",
            "sha256": sha, "examples": 1, "tokens": 12, "convertedPath": str(path), "uri": None}  # fmt: skip


def job_props(dataset: dict, spec_hash: str = "f" * 64, epochs: int = 2) -> dict:
    return {
        "name": "ticket-router",
        "target": "vertex",
        "specHash": spec_hash,
        "baseModel": "gemini-3.5-flash",
        "mode": "adapter",
        "adapterSize": 4,
        "hyperparameters": {"epochs": epochs, "learningRateMultiplier": 1.0},
        "lora": None,
        "trainSha256": dataset["sha256"],
        "trainUri": dataset["uri"],
        "trainExamples": 1,
        "trainTokens": 12,
        "validationSha256": None,
        "validationUri": None,
        "validationExamples": 0,
        "description": "routes tickets",
        "labels": {"team": "support"},
        "adopt": None,
        "estimatedTrainingTokens": 24,
        "estimatedCost": None,
        "maxTrainingCost": None,
    }


def test_dataset_then_job_then_version_then_endpoint(settings, emu, tmp_path, capsys):
    stored = as_pulumi_would(DatasetProvider(settings)).create(dataset_props(tmp_path, "refund"))
    assert stored.outs["uri"] == f"gs://{BUCKET}/datasets/{stored.outs['sha256']}.jsonl"

    jobs = as_pulumi_would(TuningJobProvider(settings))
    emu.script(Outcome(running_seconds=1.0))
    created = jobs.create(job_props(stored.outs))
    outs = created.outs
    assert created.id == outs["jobId"] == emu.created_jobs()[0]["name"]
    assert outs["state"] == "SUCCEEDED" and outs["version"] == 1 and outs["reused"] is False
    assert outs["modelName"].endswith("@1") and "/endpoints/" in outs["tunedEndpoint"]
    assert "RUNNING" in capsys.readouterr().err  # the progress lines reach stderr for the CLI to show

    # A rerun after a killed `pulumi up` (pending create, no id in state) adopts instead of paying twice.
    again = as_pulumi_would(TuningJobProvider(settings)).create(job_props(stored.outs))
    assert again.id == created.id and again.outs["reused"] is True and emu.creates == 1

    refreshed = jobs.read(created.id, outs)
    assert refreshed.id == created.id and refreshed.outs["modelName"] == outs["modelName"]

    updated = jobs.update(created.id, outs, {**job_props(stored.outs), "labels": {"team": "billing"}})
    assert updated.outs["modelName"] == outs["modelName"]
    # The adoption above gave the model this spec's labels once; the update gives it the new ones.
    *_, patch = emu.received("PATCH", outs["modelName"].rsplit("/", 1)[1])
    assert dict(patch.labels)["team"] == "billing"

    endpoint = as_pulumi_would(EndpointProvider(settings)).create(
        {
            "name": "ticket-router",
            "modelName": "ticket-router",
            "traffic": {"1": 100},
            "versions": {"1": "ticket-router@1"},
            "port": None,
        }  # fmt: skip
    )
    assert endpoint.id == outs["tunedEndpoint"] and endpoint.outs["servedTraffic"] == {"1": 100}

    version_props = {"model": "ticket-router", "jobId": created.id, "modelName": outs["modelName"], "version": 1,
                     "metrics": outs["metrics"], "retain": False}  # fmt: skip
    versions = as_pulumi_would(ModelVersionProvider(settings))
    versions.create(version_props)
    versions.delete(outs["modelName"], version_props)
    assert emu.received("DELETE", outs["modelName"].split("/")[-1].split("@")[0])  # the model's last version went


def test_failed_job_fails_create_with_its_message(settings, emu, tmp_path):
    from tuneform.backends.base import TuningFailed

    stored = as_pulumi_would(DatasetProvider(settings)).create(dataset_props(tmp_path, "broken"))
    emu.script(Outcome(state="JOB_STATE_FAILED", error_message="Dataset has 0 valid examples."))
    with pytest.raises(TuningFailed, match="ended FAILED: Dataset has 0 valid examples."):
        as_pulumi_would(TuningJobProvider(settings)).create(job_props(stored.outs))


def test_delete_cancels_a_running_job(settings, emu, tmp_path):
    stored = as_pulumi_would(DatasetProvider(settings)).create(dataset_props(tmp_path, "slow"))
    name = emu.seed_job(
        "projects/test-project/locations/us-central1",
        {"baseModel": "gemini-3.5-flash", "supervisedTuningSpec": {"trainingDatasetUri": stored.outs["uri"]}},
        Outcome(running_seconds=60),
    )
    as_pulumi_would(TuningJobProvider(settings)).delete(name, job_props(stored.outs))
    assert len(emu.received("POST", ":cancel")) == 1
