"""VertexBackend against the Vertex emulator: the real aiplatform clients, their REST transport, real HTTP.

Every request the backend sends is parsed by the emulator into the API's own proto types and checked against the
documented rules (docs/vertex-emulator.md); a misspelt field, a wrong host or a refused combination fails these tests.
Times are tenths of seconds: the emulator's clock runs at real speed. The eight behaviours issue 8 found wrong have
tests of their own in test_vertex_behaviours.py.
"""

from __future__ import annotations

import pytest
from google.cloud import aiplatform_v1beta1
from google.protobuf import json_format

from emulators.vertex_api import Outcome, VertexEmulator
from tuneform.backends.base import BackendError, DatasetArtifact, EndpointRequest, TuningFailed, TuningRequest
from tuneform.backends.vertex import NAME_LABEL, SPEC_HASH_LABEL, VERSION_LABEL, VertexBackend, build_tuning_job
from tuneform.backends.vertex.backend import REQUEST_LABEL

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(60)]

PROJECT, REGION, BUCKET = "test-project", "us-central1", "tuneform-test-datasets"
PARENT = f"projects/{PROJECT}/locations/{REGION}"


_GCS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _job_markers(gcs):  # type: ignore[no-untyped-def]
    """Every tune keeps its job marker in the stack's bucket (tuneform's idempotency record): fake-gcs-server."""
    _GCS["url"] = gcs.url


def backend(emu: VertexEmulator, **kwargs) -> VertexBackend:
    settings = {"poll": (0.05, 0.1), "retry_initial": 0.05, "retry_timeout": 10.0, "storage_endpoint": _GCS["url"]}
    # Unless a test lags it, the emulator lists a job at once: an unanswered create is looked for briefly.
    settings["lost_create_wait_s"] = 2.0
    settings.update(kwargs)
    return VertexBackend(PROJECT, REGION, BUCKET, api_endpoints=emu.endpoints, **settings)


def artifact(sha: str) -> DatasetArtifact:
    return DatasetArtifact(sha256=sha, uri=f"gs://{BUCKET}/datasets/{sha}.jsonl", examples=120, tokens=40000)


def gemini_request(**changes) -> TuningRequest:
    fields = {
        "name": "ticket-router",
        "spec_hash": "a" * 64,
        "base_model": "gemini-3.5-flash",
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


def created(emu: VertexEmulator) -> list:
    return emu.received("POST", "/tuningJobs")


def as_json(job: aiplatform_v1beta1.TuningJob) -> dict:
    return json_format.MessageToDict(aiplatform_v1beta1.TuningJob.pb(job))


def seeded(emu: VertexEmulator, request: TuningRequest, version: int = 1, **kwargs) -> str:
    """A job made by an earlier run of tuneform (same labels), e.g. one a killed `pulumi up` left running."""
    return emu.seed_job(PARENT, as_json(build_tuning_job(request, bucket=BUCKET, version=version)), **kwargs)


class TestRequest:
    def test_gemini_job_request_and_outcome(self, emu):
        emu.script(Outcome(running_seconds=1.0))  # several polls see RUNNING even on a loaded machine
        lines = Lines()
        be = backend(emu, service_account="tuner@p.iam.gserviceaccount.com")
        outcome = be.tune(gemini_request(), lines)

        assert emu.creates == 1
        (sent,) = created(emu)
        job = aiplatform_v1beta1.TuningJob.wrap(sent)
        assert job.base_model == "gemini-3.5-flash"
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
        assert spec.export_last_checkpoint_only is True, "one endpoint per version unless the spec asks for more"
        assert spec.tuning_mode == 0 and job.output_uri == ""
        assert job.tuned_model_display_name == "ticket-router"
        assert job.description == "routes tickets"
        assert len(job.labels.pop(REQUEST_LABEL)) == 32, "the create's token, to find it by after a lost answer"
        assert dict(job.labels) == {"team": "support", SPEC_HASH_LABEL: "a" * 63, NAME_LABEL: "ticket-router",
                                    VERSION_LABEL: "1", "managed-by": "tuneform"}  # fmt: skip
        assert job.service_account == "tuner@p.iam.gserviceaccount.com"
        assert emu.ignored_output_only == [], "the client sent no output-only field"

        assert outcome.state == "SUCCEEDED"
        assert "/locations/us-central1/models/" in outcome.model and outcome.model.endswith("@1")
        assert outcome.version == 1
        # E14: a tuned 3.x model is served from the `us` multi-region, not from the tuning region.
        assert outcome.endpoint and "/locations/us/endpoints/" in outcome.endpoint
        assert outcome.job_id == emu.created_jobs()[0]["name"]
        assert outcome.metrics == {"billable_tokens": 48000.0, "examples": 120.0, "tuning_steps": 30.0}
        assert outcome.reused is False
        states = [line.split(": ")[2].split(" after")[0] for line in lines if " after " in line]
        assert states[0] in ("QUEUED", "PENDING") and states[-1] == "SUCCEEDED" and "RUNNING" in states
        assert any("48000 billable tokens" in line for line in lines)

    def test_open_model_job(self, emu):
        request = gemini_request(
            name="Gemma Router", base_model="google/gemma3@gemma-3-27b-it", mode="full", adapter_size=None,
            hyperparameters={"epochs": 2, "learningRate": 1e-5, "batchSize": 8}, validation=None,
        )  # fmt: skip
        outcome = backend(emu, kms_key_name="projects/p/locations/us-central1/keyRings/r/cryptoKeys/k").tune(
            request, Lines()
        )
        job = aiplatform_v1beta1.TuningJob.wrap(created(emu)[0])
        assert job.base_model == "google/gemma3@gemma-3-27b-it"
        spec = job.supervised_tuning_spec
        assert spec.tuning_mode == aiplatform_v1beta1.SupervisedTuningSpec.TuningMode.TUNING_MODE_FULL
        assert spec.hyper_parameters.learning_rate == pytest.approx(1e-5)
        assert spec.hyper_parameters.batch_size == 8
        assert spec.hyper_parameters.learning_rate_multiplier == 0
        assert spec.export_last_checkpoint_only is False  # a Gemini-only field; open models write every checkpoint
        assert spec.validation_dataset_uri == ""
        assert job.output_uri == f"gs://{BUCKET}/tuning-output/gemma-router/{'a' * 64}"
        assert job.encryption_spec.kms_key_name.endswith("/cryptoKeys/k")
        assert job.labels[NAME_LABEL] == "gemma-router"
        # E16: open-model jobs register and deploy nothing; the result is the final checkpoint under outputUri.
        assert outcome.state == "SUCCEEDED" and outcome.version == 1 and outcome.endpoint is None
        assert outcome.model == f"{job.output_uri}/postprocess/node-0/checkpoints/final"

    def test_adapter_mode_for_open_model(self, emu):
        request = gemini_request(base_model="meta/llama3_1@llama-3.1-8b", adapter_size=16,
                                 hyperparameters={"learningRate": 2e-4})  # fmt: skip
        backend(emu).tune(request, Lines())
        spec = aiplatform_v1beta1.TuningJob.wrap(created(emu)[0]).supervised_tuning_spec
        assert spec.tuning_mode == aiplatform_v1beta1.SupervisedTuningSpec.TuningMode.TUNING_MODE_PEFT_ADAPTER
        assert spec.hyper_parameters.adapter_size.name == "ADAPTER_SIZE_SIXTEEN"

    def test_api_refusal_is_a_backend_error(self, emu):
        # E6: the emulator refuses adapter size 32 for Gemini with the service's words (python-genai#908).
        with pytest.raises(BackendError, match="adapter size is not supported"):
            backend(emu).tune(gemini_request(adapter_size=32), Lines())
        assert emu.creates == 0

    def test_full_mode_for_gemini_is_refused_before_any_call(self, emu):
        with pytest.raises(BackendError, match="set `mode: adapter`"):
            backend(emu).tune(gemini_request(mode="full"), Lines())
        assert emu.creates == 0

    def test_cmek_on_a_3x_model_is_refused_by_the_service(self, emu):
        # Validation refuses this before any call (spec/stack.py); the service would too (E6).
        with pytest.raises(BackendError, match="encryption keys are not supported"):
            backend(emu, kms_key_name="projects/p/locations/us-central1/keyRings/r/cryptoKeys/k").tune(
                gemini_request(), Lines()
            )
        assert emu.creates == 0

    def test_retired_base_model_is_refused_the_way_the_service_refuses_it(self, emu):
        with pytest.raises(BackendError, match="Publisher Model .*gemini-2.5-flash.* was not found"):
            backend(emu).tune(gemini_request(base_model="gemini-2.5-flash"), Lines())
        assert emu.creates == 0

    def test_region_without_3x_tuning_is_refused(self):
        with VertexEmulator(locations=("us-east1", "us"), queued_seconds=0.01, running_seconds=0.05) as emu:
            be = VertexBackend(
                PROJECT,
                "us-east1",
                BUCKET,
                api_endpoints=emu.endpoints,
                retry_initial=0.05,
                storage_endpoint=_GCS["url"],
            )
            with pytest.raises(BackendError, match="was not found or your project does not have access"):
                be.tune(gemini_request(), Lines())
            assert emu.creates == 0


class TestVersions:
    def test_retune_starts_from_the_base_model_and_counts_versions(self, emu):
        be = backend(emu)
        first = be.tune(gemini_request(), Lines())
        second = be.tune(gemini_request(spec_hash="b" * 64, hyperparameters={"epochs": 5}), Lines())

        sent = aiplatform_v1beta1.TuningJob.wrap(created(emu)[1])
        assert sent.base_model == "gemini-3.5-flash" and not sent.pre_tuned_model.tuned_model_name
        assert sent.labels[VERSION_LABEL] == "2"
        # E23: a job from the base model makes a new registry model at version 1; tuneform's own number goes on.
        assert second.model.split("@")[0] != first.model.split("@")[0] and second.model.endswith("@1")
        assert (first.version, second.version) == (1, 2)

    def test_other_name_has_versions_of_its_own(self, emu):
        be = backend(emu)
        be.tune(gemini_request(), Lines())
        other = be.tune(gemini_request(name="other-router", spec_hash="c" * 64), Lines())
        rebased = be.tune(gemini_request(spec_hash="d" * 64, base_model="gemini-3.1-flash-lite"), Lines())
        assert other.version == 1
        assert rebased.version == 2
        assert aiplatform_v1beta1.TuningJob.wrap(created(emu)[2]).base_model == "gemini-3.1-flash-lite"

    def test_failed_run_does_not_use_up_a_version_number(self, emu):
        be = backend(emu)
        be.tune(gemini_request(), Lines())
        emu.script(Outcome(state="JOB_STATE_FAILED", running_seconds=0.05))
        with pytest.raises(TuningFailed):
            be.tune(gemini_request(spec_hash="b" * 64), Lines())
        again = be.tune(gemini_request(spec_hash="c" * 64), Lines())
        assert again.version == 2


class TestAdopt:
    def test_second_tune_with_same_hash_adopts(self, emu):
        be = backend(emu)
        first = be.tune(gemini_request(), Lines())
        lines = Lines()
        again = be.tune(gemini_request(), lines)

        assert emu.creates == 1
        assert again.job_id == first.job_id and again.model == first.model and again.version == 1
        assert again.reused is True
        assert any("no second job is started" in line for line in lines)

    def test_same_hash_under_another_name_is_not_adopted(self, emu):
        """Two specs with the same training inputs share a spec hash; each still gets a job of its own."""
        be = backend(emu)
        first = be.tune(gemini_request(), Lines())
        other = be.tune(gemini_request(name="twin-router"), Lines())
        assert emu.creates == 2 and other.job_id != first.job_id

    def test_running_job_left_by_a_killed_run_is_adopted(self, emu):
        name = seeded(emu, gemini_request(), outcome=Outcome(running_seconds=0.4))
        outcome = backend(emu).tune(gemini_request(), Lines())
        assert emu.creates == 0
        assert outcome.job_id == name and outcome.state == "SUCCEEDED" and outcome.reused

    @pytest.mark.parametrize("state", ["JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"])
    def test_failed_job_with_same_hash_is_not_adopted(self, emu, state):
        seeded(emu, gemini_request(), outcome=Outcome(state=state, running_seconds=0), age_seconds=10)
        outcome = backend(emu).tune(gemini_request(), Lines())
        assert emu.creates == 1 and not outcome.reused

    def test_explicit_adopt(self, emu):
        name = seeded(emu, gemini_request(name="hand-made", spec_hash="e" * 64), age_seconds=10)
        outcome = backend(emu).tune(gemini_request(adopt=name), Lines())
        assert emu.creates == 0
        assert outcome.job_id == name and outcome.reused and outcome.state == "SUCCEEDED"

    def test_adopting_a_missing_job_says_so(self, emu):
        with pytest.raises(BackendError, match="does not exist"):
            backend(emu).tune(gemini_request(adopt=f"{PARENT}/tuningJobs/42"), Lines())

    def test_adopt_lookup_pages_through_list(self, emu):
        target = seeded(emu, gemini_request(), age_seconds=200)
        for i in range(120):  # more than one page (the emulator pages by at most 100)
            seeded(emu, gemini_request(spec_hash=f"{i:064d}"), version=i + 2, age_seconds=100 - i)
        outcome = backend(emu).tune(gemini_request(), Lines())
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
        assert backend(emu).tuning_status(name).state == "RUNNING"
        with pytest.raises(BackendError):
            backend(emu, deadline_seconds=0.2).tune(gemini_request(), Lines())
        assert emu.creates == 1, "the next run adopted the running job rather than paying twice"


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
        """A 504 after the server created the job: the retry must find that job by its labels, not create another."""
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


class TestStatusAndCancel:
    def test_cancel_running_job(self, emu):
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


class TestEndpoints:
    def test_deploy_returns_the_endpoint_of_the_version_on_its_multi_region_host(self, emu):
        be = backend(emu)
        first = be.tune(gemini_request(), Lines())
        second = be.tune(gemini_request(spec_hash="b" * 64), Lines())

        state = be.deploy(
            EndpointRequest(name="ticket-router", model="ticket-router", traffic={1: 100}), None, Lines()
        )
        assert state.endpoint_id == first.endpoint and state.traffic == {1: 100} and state.healthy
        assert state.url == f"{emu.endpoints['us']}/v1/{first.endpoint}:generateContent"
        assert state.client == {"project": PROJECT, "location": "us", "model": first.endpoint,
                                "baseUrl": emu.endpoints["us"]}  # fmt: skip
        state = be.deploy(
            EndpointRequest(name="ticket-router", model="ticket-router", traffic={1: 0, 2: 100}), None, Lines()
        )
        assert state.endpoint_id == second.endpoint and state.traffic == {2: 100}
        with pytest.raises(BackendError, match="no endpoint serves version 7"):
            be.deploy(EndpointRequest(name="ticket-router", model="ticket-router", traffic={7: 100}), None, Lines())

    def test_endpoint_status_is_asked_of_the_endpoints_own_host(self, emu):
        outcome = backend(emu).tune(gemini_request(), Lines())
        state = backend(emu).endpoint_status(outcome.endpoint)
        assert state is not None and state.healthy
        hosts = {host for method, path, host, _ in emu.requests if path.endswith(outcome.endpoint.split("/")[-1])}
        assert hosts == {"us"}

    def test_split_across_versions_is_refused_with_reason(self, emu):
        with pytest.raises(BackendError, match="not implemented on Vertex"):
            backend(emu).deploy(EndpointRequest(name="r", model="m", traffic={1: 50, 2: 50}), None, Lines())

    def test_status_of_missing_endpoint_is_none(self, emu):
        assert backend(emu).endpoint_status("projects/p/locations/us/endpoints/77") is None


def test_base_model_offered_asks_model_garden(emu):
    be = backend(emu)
    assert be.base_model_offered("gemini-3.5-flash") is True
    assert be.base_model_offered("gemini-2.5-flash") is False  # E35: retired on 2026-10-20
    assert be.base_model_offered("meta/llama3_1@llama-3.1-8b") is True
    unreachable = VertexBackend(PROJECT, REGION, BUCKET, api_endpoints={"*": "http://127.0.0.1:9"})
    assert unreachable.base_model_offered("gemini-3.5-flash") is None
