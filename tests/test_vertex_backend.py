"""VertexBackend against the tuning-API emulator: the real aiplatform client, its REST transport, real HTTP.

Every request the backend sends is parsed by the emulator into the API's own proto types; a misspelt field would
answer 400 and fail these tests. Times are tenths of seconds: the emulator's clock runs at real speed.
"""

from __future__ import annotations

import httpx
import pytest
from google.cloud import aiplatform_v1beta1

from emulators.tuning_api import Outcome, TuningApiEmulator
from tuneform.backends.base import BackendError, DatasetArtifact, EndpointRequest, TuningFailed, TuningRequest
from tuneform.backends.vertex import SPEC_HASH_LABEL, VertexBackend

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(60)]

PROJECT, REGION, BUCKET = "test-project", "us-central1", "tuneform-test-datasets"
PARENT = f"projects/{PROJECT}/locations/{REGION}"


def backend(emu: TuningApiEmulator, **kwargs) -> VertexBackend:
    settings = {"poll": (0.05, 0.1), "retry_initial": 0.05, "retry_timeout": 10.0, **kwargs}
    return VertexBackend(PROJECT, REGION, BUCKET, api_endpoint=emu.url, **settings)


def artifact(sha: str) -> DatasetArtifact:
    return DatasetArtifact(sha256=sha, uri=f"gs://{BUCKET}/datasets/{sha}.jsonl", examples=120, tokens=40000)


def gemini_request(**changes) -> TuningRequest:
    fields = {
        "name": "ticket-router",
        "spec_hash": "a" * 64,
        "base_model": "gemini-2.5-flash",
        "mode": "adapter",
        "adapter_size": 2,
        "hyperparameters": {"epochs": 3, "learningRateMultiplier": 0.5},
        "train": artifact("1" * 64),
        "validation": artifact("2" * 64),
        "description": "routes tickets",
        "labels": {"team": "support"},
    }
    fields.update(changes)
    return TuningRequest(**fields)


class Lines(list):
    """Collects progress lines (a list that is also the callback)."""

    def __call__(self, line: str) -> None:
        self.append(line)


def created(emu: TuningApiEmulator) -> list:
    return emu.received("POST", "/tuningJobs")


class TestCreateAndWait:
    def test_gemini_job_request_and_outcome(self, emu):
        emu.script(Outcome(running_seconds=1.0))  # several polls see RUNNING even on a loaded machine
        lines = Lines()
        outcome = backend(emu, kms_key_name="projects/p/locations/us-central1/keyRings/r/cryptoKeys/k",
                          service_account="tuner@p.iam.gserviceaccount.com").tune(gemini_request(), lines)  # fmt: skip

        assert emu.creates == 1
        (sent,) = created(emu)
        job = aiplatform_v1beta1.TuningJob.wrap(sent)
        assert job.base_model == "gemini-2.5-flash"
        spec = job.supervised_tuning_spec
        assert spec.training_dataset_uri == f"gs://{BUCKET}/datasets/{'1' * 64}.jsonl"
        assert spec.validation_dataset_uri == f"gs://{BUCKET}/datasets/{'2' * 64}.jsonl"
        assert spec.hyper_parameters.epoch_count == 3
        assert spec.hyper_parameters.learning_rate_multiplier == 0.5
        # The proto number of ADAPTER_SIZE_TWO is 6, not 2 (2 is FOUR): check the enum, not the integer.
        assert (
            spec.hyper_parameters.adapter_size
            == aiplatform_v1beta1.SupervisedHyperParameters.AdapterSize.ADAPTER_SIZE_TWO
        )
        assert spec.tuning_mode == 0 and job.output_uri == ""
        assert job.tuned_model_display_name == "ticket-router"
        assert job.description == "routes tickets"
        assert dict(job.labels) == {"team": "support", SPEC_HASH_LABEL: "a" * 63, "tuneform-name": "ticket-router",
                                    "managed-by": "tuneform"}  # fmt: skip
        assert job.encryption_spec.kms_key_name.endswith("/cryptoKeys/k")
        assert job.service_account == "tuner@p.iam.gserviceaccount.com"

        assert outcome.state == "SUCCEEDED"
        assert outcome.model.endswith("/models/1001@1") and outcome.version == 1
        assert outcome.endpoint and "/endpoints/" in outcome.endpoint
        assert outcome.job_id == emu.created_jobs()[0]["name"]
        assert outcome.metrics == {"billable_tokens": 48000.0, "examples": 120.0, "tuning_steps": 30.0}
        assert outcome.reused is False
        # A line per poll, states in order, billable tokens once the job runs.
        states = [line.split(": ")[2].split(" after")[0] for line in lines if " after " in line]
        assert states[0] in ("QUEUED", "PENDING") and states[-1] == "SUCCEEDED" and "RUNNING" in states
        assert any("48000 billable tokens" in line for line in lines)

    def test_open_model_job(self, emu):
        request = gemini_request(
            name="Gemma Router", base_model="google/gemma3@gemma-3-27b-it", mode="full", adapter_size=None,
            hyperparameters={"epochs": 2, "learningRate": 1e-5, "batchSize": 8}, validation=None,
        )  # fmt: skip
        outcome = backend(emu).tune(request, Lines())

        job = aiplatform_v1beta1.TuningJob.wrap(created(emu)[0])
        assert job.base_model == "google/gemma3@gemma-3-27b-it"
        spec = job.supervised_tuning_spec
        assert spec.tuning_mode == aiplatform_v1beta1.SupervisedTuningSpec.TuningMode.TUNING_MODE_FULL
        assert spec.hyper_parameters.learning_rate == pytest.approx(1e-5)
        assert spec.hyper_parameters.batch_size == 8
        assert spec.hyper_parameters.learning_rate_multiplier == 0
        assert spec.validation_dataset_uri == ""
        assert job.output_uri == f"gs://{BUCKET}/tuning-output/gemma-router/{'a' * 64}"
        assert job.labels["tuneform-name"] == "gemma-router"
        assert outcome.state == "SUCCEEDED" and outcome.version == 1

    def test_adapter_mode_for_open_model(self, emu):
        request = gemini_request(base_model="meta/llama3_1@llama-3.1-8b", adapter_size=16,
                                 hyperparameters={"learningRate": 2e-4})  # fmt: skip
        backend(emu).tune(request, Lines())
        spec = aiplatform_v1beta1.TuningJob.wrap(created(emu)[0]).supervised_tuning_spec
        assert spec.tuning_mode == aiplatform_v1beta1.SupervisedTuningSpec.TuningMode.TUNING_MODE_PEFT_ADAPTER
        assert spec.hyper_parameters.adapter_size.name == "ADAPTER_SIZE_SIXTEEN"

    def test_api_refusal_is_a_backend_error(self, emu):
        # The emulator refuses adapter size 32 for Gemini, as the real service does (python-genai#908).
        with pytest.raises(BackendError, match="adapter size is not supported"):
            backend(emu).tune(gemini_request(adapter_size=32), Lines())
        assert emu.creates == 0

    def test_full_mode_for_gemini_is_refused_before_any_call(self, emu):
        with pytest.raises(BackendError, match="set `mode: adapter`"):
            backend(emu).tune(gemini_request(mode="full"), Lines())
        assert emu.creates == 0


class TestVersions:
    def test_retune_same_name_is_next_version_of_same_model(self, emu):
        be = backend(emu)
        first = be.tune(gemini_request(), Lines())
        second = be.tune(gemini_request(spec_hash="b" * 64, hyperparameters={"epochs": 5}), Lines())

        assert emu.creates == 2
        sent = aiplatform_v1beta1.TuningJob.wrap(created(emu)[1])
        assert sent.pre_tuned_model.tuned_model_name == first.model
        assert sent.base_model == ""
        assert second.model.split("@")[0] == first.model.split("@")[0]
        assert (first.version, second.version) == (1, 2)

    def test_other_name_or_base_model_starts_a_new_model(self, emu):
        be = backend(emu)
        first = be.tune(gemini_request(), Lines())
        other = be.tune(gemini_request(name="other-router", spec_hash="c" * 64), Lines())
        rebased = be.tune(gemini_request(spec_hash="d" * 64, base_model="gemini-2.5-pro"), Lines())

        assert other.model.split("@")[0] != first.model.split("@")[0] and other.version == 1
        assert rebased.version == 1 and rebased.model.split("@")[0] != first.model.split("@")[0]
        assert aiplatform_v1beta1.TuningJob.wrap(created(emu)[2]).base_model == "gemini-2.5-pro"


class TestAdopt:
    def test_second_tune_with_same_hash_adopts(self, emu):
        be = backend(emu)
        first = be.tune(gemini_request(), Lines())
        lines = Lines()
        again = be.tune(gemini_request(), lines)

        assert emu.creates == 1
        assert again.job_id == first.job_id and again.model == first.model
        assert again.reused is True
        assert any("no second job is started" in line for line in lines)
        # The lookup went through the list filter on the spec-hash label.
        lists = emu.received("GET", "/tuningJobs")
        assert any(m.filter == f'labels.{SPEC_HASH_LABEL}="{"a" * 63}"' for m in lists)

    def test_running_job_left_by_a_killed_run_is_adopted(self, emu):
        be = backend(emu)
        job = be.job_for(gemini_request())
        name = emu.seed_job(PARENT, _json(job), Outcome(running_seconds=0.4))
        outcome = be.tune(gemini_request(), Lines())

        assert emu.creates == 0
        assert outcome.job_id == name and outcome.state == "SUCCEEDED" and outcome.reused

    @pytest.mark.parametrize("state", ["JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"])
    def test_failed_job_with_same_hash_is_not_adopted(self, emu, state):
        be = backend(emu)
        emu.seed_job(PARENT, _json(be.job_for(gemini_request())), Outcome(state=state, running_seconds=0),
                     age_seconds=10)  # fmt: skip
        outcome = be.tune(gemini_request(), Lines())
        assert emu.creates == 1 and not outcome.reused

    def test_explicit_adopt(self, emu):
        be = backend(emu)
        other = be.job_for(gemini_request(name="hand-made", spec_hash="e" * 64))
        name = emu.seed_job(PARENT, _json(other), age_seconds=10)
        outcome = be.tune(gemini_request(adopt=name), Lines())

        assert emu.creates == 0
        assert outcome.job_id == name and outcome.reused and outcome.state == "SUCCEEDED"

    def test_adopting_a_missing_job_says_so(self, emu):
        with pytest.raises(BackendError, match="does not exist"):
            backend(emu).tune(gemini_request(adopt=f"{PARENT}/tuningJobs/42"), Lines())

    def test_adopt_lookup_pages_through_list(self, emu):
        be = backend(emu)
        for i in range(120):  # more than one page (the emulator pages by 100)
            emu.seed_job(PARENT, _json(be.job_for(gemini_request(spec_hash=f"{i:064d}"))), age_seconds=100 - i)
        target = emu.seed_job(PARENT, _json(be.job_for(gemini_request())), age_seconds=200)
        # The target is the oldest, so it sits on the last page of a newest-first listing.
        outcome = be.tune(gemini_request(), Lines())
        assert outcome.job_id == target and emu.creates == 0


class TestTerminalStates:
    def test_failed_job_raises_with_message_and_stats(self, emu):
        emu.script(Outcome(state="JOB_STATE_FAILED", error_message="More than 10% of examples were dropped.",
                           data_stats={"tuningDatasetExampleCount": "40", "totalTruncatedExampleCount": "2",
                                       "truncatedExampleIndices": ["3", "17"],
                                       "droppedExampleReasons": ["example 5: 140000 tokens > 131072"]}))  # fmt: skip
        with pytest.raises(TuningFailed) as caught:
            backend(emu).tune(gemini_request(), Lines())
        message = str(caught.value)
        assert "ended FAILED: More than 10% of examples were dropped." in message
        assert "40 training examples" in message
        assert "2 truncated (0-based lines 3, 17)" in message
        assert "1 dropped: example 5: 140000 tokens > 131072" in message
        assert caught.value.state == "FAILED" and caught.value.job_id == emu.created_jobs()[0]["name"]

    @pytest.mark.parametrize("state", ["JOB_STATE_EXPIRED", "JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_CANCELLED"])
    def test_every_terminal_state_ends_the_wait(self, emu, state):
        emu.script(Outcome(state=state, running_seconds=0.1))
        with pytest.raises(TuningFailed) as caught:
            backend(emu, deadline_seconds=20).tune(gemini_request(), Lines())
        assert caught.value.state == state.removeprefix("JOB_STATE_")

    def test_deadline_leaves_job_running_and_says_how_to_adopt(self, emu):
        emu.script(Outcome(running_seconds=60))
        with pytest.raises(BackendError) as caught:
            backend(emu, deadline_seconds=0.3).tune(gemini_request(), Lines())
        assert not isinstance(caught.value, TuningFailed)
        name = emu.created_jobs()[0]["name"]
        assert f"set `adopt: {name}`" in str(caught.value)
        assert emu.job(name)["state"] == "JOB_STATE_RUNNING"
        # ...and the next run adopts it rather than paying twice.
        assert backend(emu, deadline_seconds=0.2).tuning_status(name).state == "RUNNING"
        with pytest.raises(BackendError):
            backend(emu, deadline_seconds=0.2).tune(gemini_request(), Lines())
        assert emu.creates == 1


class TestRetries:
    @pytest.mark.parametrize("status", [429, 503, 504])
    def test_transient_errors_are_retried(self, emu, status):
        emu.fail_next(status, count=2, method="POST")
        emu.fail_next(status, count=2, method="GET")
        lines = Lines()
        outcome = backend(emu).tune(gemini_request(), lines)
        assert outcome.state == "SUCCEEDED" and emu.creates == 1
        assert sum("retrying" in line for line in lines) == 4

    def test_create_whose_answer_was_lost_is_not_repeated(self, emu):
        """A 504 after the server created the job: the retry must find that job by label, not create another."""
        emu.lose_next_create_answer()
        lines = Lines()
        outcome = backend(emu).tune(gemini_request(), lines)
        assert emu.creates == 1
        assert outcome.job_id == emu.created_jobs()[0]["name"] and outcome.state == "SUCCEEDED"
        assert any("retrying" in line for line in lines) and any("no second job" in line for line in lines)

    def test_persistent_unavailability_gives_up(self, emu):
        emu.fail_next(503, count=1000)
        with pytest.raises(BackendError, match="still failing after retrying .* scripted 503"):
            backend(emu, retry_timeout=0.5).tune(gemini_request(), Lines())


class TestStatusCancelMetadata:
    def test_cancel_running_job(self, emu, capsys):
        emu.script(Outcome(running_seconds=60))
        be = backend(emu, deadline_seconds=0.1)
        with pytest.raises(BackendError):
            be.tune(gemini_request(), Lines())
        name = emu.created_jobs()[0]["name"]
        be.cancel(name)
        assert len(emu.received("POST", ":cancel")) == 1
        assert emu.job(name)["state"] in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED")

    def test_cancel_succeeded_job_is_a_noted_no_op(self, emu, capsys):
        be = backend(emu)
        outcome = be.tune(gemini_request(), Lines())
        be.cancel(outcome.job_id)
        assert emu.received("POST", ":cancel") == []
        assert "stays as history" in capsys.readouterr().err

    def test_status_of_unknown_job_is_none(self, emu):
        assert backend(emu).tuning_status(f"{PARENT}/tuningJobs/404") is None

    def test_update_metadata_patches_the_tuned_model(self, emu):
        be = backend(emu)
        outcome = be.tune(gemini_request(), Lines())
        be.update_metadata(outcome.job_id, "new words", {"team": "billing"})
        (patch,) = emu.received("PATCH", outcome.model.split("/")[-1])
        model = aiplatform_v1beta1.Model.wrap(patch)
        assert model.description == "new words"
        assert dict(model.labels) == {"team": "billing", SPEC_HASH_LABEL: "a" * 63, "tuneform-name": "ticket-router",
                                      "managed-by": "tuneform"}  # fmt: skip


class TestEndpoints:
    def test_deploy_returns_the_auto_endpoint_of_the_version(self, emu):
        be = backend(emu)
        first = be.tune(gemini_request(), Lines())
        second = be.tune(gemini_request(spec_hash="b" * 64), Lines())
        model = first.model.split("@")[0]

        state = be.deploy(EndpointRequest(name="ticket-router", model=model, traffic={1: 100}), None, Lines())
        assert state.endpoint_id == first.endpoint and state.traffic == {1: 100} and state.healthy
        assert state.url == f"{emu.url}/v1/{first.endpoint}:generateContent"
        state = be.deploy(EndpointRequest(name="ticket-router", model=model, traffic={1: 0, 2: 100}), None, Lines())
        assert state.endpoint_id == second.endpoint and state.traffic == {2: 100}
        # The program passes the spec's name as the model: the newest job's version wins.
        state = be.deploy(
            EndpointRequest(name="ticket-router", model="ticket-router", traffic={2: 100}), None, Lines()
        )
        assert state.endpoint_id == second.endpoint
        rebased = be.tune(gemini_request(spec_hash="c" * 64, base_model="gemini-2.5-pro"), Lines())
        assert rebased.version == 1
        state = be.deploy(
            EndpointRequest(name="ticket-router", model="ticket-router", traffic={1: 100}), None, Lines()
        )
        assert state.endpoint_id == rebased.endpoint
        state = be.deploy(EndpointRequest(name="ticket-router", model=model, traffic={1: 100}), None, Lines())
        assert state.endpoint_id == first.endpoint
        with pytest.raises(BackendError, match="no endpoint serves version 7"):
            be.deploy(EndpointRequest(name="ticket-router", model=model, traffic={7: 100}), None, Lines())

    def test_split_across_versions_is_refused_with_reason(self, emu):
        with pytest.raises(BackendError, match="not implemented on Vertex"):
            backend(emu).deploy(EndpointRequest(name="r", model="m", traffic={1: 50, 2: 50}), None, Lines())

    def test_status_of_missing_endpoint_is_none(self, emu):
        assert backend(emu).endpoint_status(f"{PARENT}/endpoints/77") is None


class TestDeleteVersion:
    def test_retain_false_deletes_versions_endpoints_then_the_model(self, emu, capsys):
        be = backend(emu)
        first = be.tune(gemini_request(), Lines())
        second = be.tune(gemini_request(spec_hash="b" * 64), Lines())
        model = first.model.split("@")[0]

        # Version 1 is deployed and carries `default`: both must be dealt with before the registry lets it go.
        be.delete_version("ticket-router", 1)
        assert be.endpoint_status(first.endpoint) is None
        assert be.endpoint_status(second.endpoint) is not None
        assert len(emu.received("POST", first.endpoint.split("/")[-1] + ":undeployModel")) == 1
        (merge,) = emu.received("POST", ":mergeVersionAliases")
        assert list(merge.version_aliases) == ["default"]
        versions = httpx.get(f"{emu.url}/v1beta1/{model}:listVersions").json()["models"]
        assert [(m["versionId"], m.get("versionAliases")) for m in versions] == [("2", ["default"])]

        be.delete_version("ticket-router", 2)
        assert httpx.get(f"{emu.url}/v1beta1/{model}").status_code == 404
        assert "version 2 was its last" in capsys.readouterr().err

    def test_unknown_version_is_a_noted_no_op(self, emu, capsys):
        backend(emu).delete_version("ticket-router", 3)
        assert "nothing to delete" in capsys.readouterr().err

    def test_emulator_refuses_deleting_a_deployed_version(self, emu):
        first = backend(emu).tune(gemini_request(), Lines())
        answer = httpx.delete(f"{emu.url}/v1beta1/{first.model}:deleteVersion")
        assert answer.status_code == 400 and "undeploy it first" in answer.json()["error"]["message"]


def _json(job: aiplatform_v1beta1.TuningJob) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(aiplatform_v1beta1.TuningJob.pb(job))
