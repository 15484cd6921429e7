"""The Pulumi program's resources and their inputs, with Pulumi's mocks (no engine, no GCP, no plugin).

The shipped specs are declared for each target; the pulumi-gcp storage of a vertex stack is asserted input by input.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pulumi
import pytest

REPO = Path(__file__).resolve().parents[1]


class Recorder(pulumi.runtime.Mocks):
    """Answers like a provider would and remembers every resource the program declared."""

    def __init__(self) -> None:
        self.resources: dict[str, pulumi.runtime.MockResourceArgs] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources[args.name] = args
        outputs = dict(args.inputs)
        if args.typ.endswith("tuneform:TuningJob"):
            outputs.update(
                jobId=f"jobs/{args.name}",
                state="SUCCEEDED",
                modelName=f"{args.inputs['name']}@3",
                version=3,
                metrics={"exactMatch": 0.9},
                reused=False,
            )
        if args.typ.endswith("tuneform:Dataset"):
            outputs["uri"] = f"store://{args.inputs['sha256']}"
        if args.typ.endswith("tuneform:Endpoint"):
            outputs.update(url="http://127.0.0.1:9", apiKey="k", healthy=True, servedTraffic=args.inputs["traffic"])
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


def run_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, str]) -> Recorder:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "Pulumi.yaml", project / "Pulumi.yaml")
    shutil.copytree(REPO / "tuning_specs", project / "tuning_specs")
    monkeypatch.chdir(project)
    recorder = Recorder()
    pulumi.runtime.set_mocks(recorder, project="tuneform", stack="prod", preview=False)
    pulumi.runtime.set_all_config(config)
    from tuneform.program import main

    @pulumi.runtime.test
    def declared() -> None:
        main()

    declared()
    return recorder


def by_type(recorder: Recorder, suffix: str) -> dict[str, pulumi.runtime.MockResourceArgs]:
    return {name: args for name, args in recorder.resources.items() if args.typ.endswith(suffix)}


def test_local_stack_declares_one_component_per_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = run_program(tmp_path, monkeypatch, {"tuneform:target": "local", "tuneform:endpointPort": "9100"})
    components = by_type(recorder, "tuneform:index:TunedModel")
    assert sorted(components) == ["invoice-fields", "ticket-router"]
    assert not [args for args in recorder.resources.values() if args.typ.startswith("gcp:")]

    job = by_type(recorder, "tuneform:TuningJob")["ticket-router-tuning"].inputs
    assert job["baseModel"] == "smollm2-135m-instruct"
    assert job["target"] == "local"
    assert job["hyperparameters"] == {"epochs": 1, "learningRate": 0.002, "batchSize": 8}
    assert job["labels"] == {"team": "support"}
    assert job["trainExamples"] >= 300 and job["validationExamples"] >= 60
    assert job["estimatedTrainingTokens"] == job["trainTokens"] * 1
    assert len(job["specHash"]) == 64
    # The local target's test set and decoding defaults travel with the job (and the version keeps them).
    assert job["generation"] == {"temperature": 0.0, "maxOutputTokens": 8, "stop": ["\n"]}
    assert job["testExamples"] == 120 and job["testUri"].endswith(".jsonl") and len(job["testSha256"]) == 64

    datasets = by_type(recorder, "tuneform:Dataset")
    assert sorted(datasets) == [
        "invoice-fields-train",
        "invoice-fields-validation",
        "ticket-router-train",
        "ticket-router-validation",
    ]
    endpoints = by_type(recorder, "tuneform:Endpoint")
    # Ports follow the serving models' names: adding a spec does not move the others.
    assert {name: args.inputs["port"] for name, args in endpoints.items()} == {"ticket-router-endpoint": 9100}
    assert endpoints["ticket-router-endpoint"].inputs["traffic"] == {"3": 100}


VERTEX = {
    "tuneform:target": "vertex",
    "tuneform:project": "acme-ml",
    "tuneform:region": "europe-west4",
    "tuneform:projectNumber": "123456789012",
    "tuneform:enableApis": "true",
    "tuneform:openModels": "true",
}


def test_vertex_stack_declares_storage_and_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = run_program(tmp_path, monkeypatch, VERTEX)
    bucket = by_type(recorder, "gcp:storage/bucket:Bucket")
    assert len(bucket) == 1
    inputs = next(iter(bucket.values())).inputs
    assert inputs["name"] == "acme-ml-tuneform-prod"
    assert inputs["location"] == "EUROPE-WEST4"
    assert inputs["uniformBucketLevelAccess"] is True
    assert inputs["publicAccessPrevention"] == "enforced"
    assert inputs["versioning"] == {"enabled": True}
    services = by_type(recorder, "gcp:projects/service:Service")
    assert [args.inputs["service"] for args in services.values()] == ["aiplatform.googleapis.com"]
    members = {
        args.inputs["member"] for args in by_type(recorder, "gcp:storage/bucketIAMMember:BucketIAMMember").values()
    }
    assert "serviceAccount:service-123456789012@gcp-sa-vertex-tune.iam.gserviceaccount.com" in members

    jobs = by_type(recorder, "tuneform:TuningJob")
    router = jobs["ticket-router-tuning"].inputs
    assert router["baseModel"] == "gemini-3.1-flash-lite"
    assert router["adapterSize"] == 4
    assert router["hyperparameters"] == {"epochs": 3, "learningRateMultiplier": 1.0}
    invoice = jobs["invoice-fields-tuning"].inputs
    assert invoice["baseModel"] == "meta/llama3_1@llama-3.1-8b-instruct"
    assert "learningRate" in invoice["hyperparameters"]
    assert "learningRateMultiplier" not in invoice["hyperparameters"]


def test_vertex_stack_with_an_existing_bucket_declares_no_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = run_program(tmp_path, monkeypatch, {**VERTEX, "tuneform:bucket": "team-datasets"})
    assert not [args for args in recorder.resources.values() if args.typ.startswith("gcp:")]
    assert len(by_type(recorder, "tuneform:TuningJob")) == 2
