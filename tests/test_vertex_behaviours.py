"""The Vertex service behaviours tuneform's first backend got wrong (issue 8), one test each, against the emulator.

Each test drives the backend (or the provider, the loader, the storage declaration) through the Backend protocol and
asserts what Google's documents say the service does (docs/vertex-emulator.md). Every one of them failed on the
backend before this change (commit ef41645); to see that again, check that commit out in a worktree, copy this file
and ``tests/emulators/vertex_api.py`` into it, and run this file with ``VERTEX_EMULATOR_ONE_HOST=1`` (the old backend
knew a single host, so the emulator's per-location host rule is switched off for that run).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os

import httpx
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform_v1beta1, storage

from emulators.vertex_api import VertexEmulator
from tuneform.backends.base import BackendError, DatasetArtifact, TuningRequest
from tuneform.resources._provider import BackendSettings, build_backend

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]

PROJECT, REGION = "test-project", "us-central1"
BUCKET = "tuneform-behaviours"  # created by the `gcs` fixture (conftest.py)
ONE_HOST = os.environ.get("VERTEX_EMULATOR_ONE_HOST") == "1"


@pytest.fixture
def emu():
    with VertexEmulator(queued_seconds=0.02, running_seconds=0.1, strict_hosts=not ONE_HOST) as emulator:
        yield emulator


_GCS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _job_markers(gcs):  # type: ignore[no-untyped-def]
    """Every tune keeps its job marker in the stack's bucket (tuneform's idempotency record): fake-gcs-server."""
    _GCS["url"] = gcs.url


def backend(emu: VertexEmulator, **overrides):
    endpoints = {"api_endpoint": emu.url} if ONE_HOST else {"api_endpoints": tuple(emu.endpoints.items())}
    overrides.setdefault("storage_endpoint", _GCS.get("url", ""))
    settings = BackendSettings(
        target="vertex", repo_root="/nonexistent", project=PROJECT, region=REGION, bucket=BUCKET,
        deadline_seconds=30, poll_seconds=(0.05, 0.1), **endpoints, **overrides,
    )  # fmt: skip
    return build_backend(settings)


def request(**changes) -> TuningRequest:
    sha = "1" * 64
    fields = {
        "name": "router",
        "spec_hash": "a" * 64,
        "base_model": "gemini-3.5-flash",
        "mode": "adapter",
        "adapter_size": 4,
        "hyperparameters": {"epochs": 3},
        "train": DatasetArtifact(sha, f"gs://{BUCKET}/datasets/{sha}.jsonl", 10, 1000),
        "validation": None,
        "description": "routes tickets",
        "labels": {"team": "support"},
    }
    fields.update(changes)
    return TuningRequest(**fields)


def quiet(_line: str) -> None:
    return None


def test_1_every_checkpoint_endpoint_is_released_when_a_version_is_deleted(emu):
    """Vertex deploys each intermediate checkpoint to an endpoint of its own (V-checkpoints, E12).

    The old backend left intermediate checkpoints on (so three endpoints per 3-epoch run) and undeployed only
    ``tunedModel.endpoint``: the version could not be deleted (E27) and the other endpoints leaked.
    """
    be = backend(emu)
    outcome = be.tune(request(), quiet)
    assert len(emu.live_endpoints()) == 1, "intermediate checkpoints are off unless the spec asks for them"
    be.delete_version("router", outcome.version)
    assert emu.live_models() == [] and emu.live_endpoints() == []


def test_1b_intermediate_checkpoints_on_request_are_all_released(emu):
    be = backend(emu)
    outcome = be.tune(request(intermediate_checkpoints=True), quiet)
    assert len(emu.live_endpoints()) == 3, "one endpoint per epoch's checkpoint (E12)"
    be.delete_version("router", outcome.version)
    assert emu.live_models() == [] and emu.live_endpoints() == []


def test_2_labels_and_description_update_in_place(emu):
    """UpdateModel cannot mix model fields and version fields in one request (P-model-service, E25).

    The old backend sent ``description`` (a model field) with a versioned name and was refused every time.
    """
    be = backend(emu)
    outcome = be.tune(request(), quiet)
    be.update_metadata(outcome.job_id, "routes every ticket", {"team": "billing"})
    model = httpx.get(f"{emu.endpoints[REGION]}/v1beta1/{outcome.model}").json()
    assert model["description"] == "routes every ticket"
    assert model["versionDescription"] == "routes every ticket"
    assert model["labels"]["team"] == "billing" and model["labels"]["tuneform-spec-hash"] == "a" * 63


def test_3_a_retune_starts_from_the_base_model(emu):
    """A new run of a spec tunes the base model (as the local target and the README promise), not the old weights.

    The old backend continued from the previous version (``preTunedModel``) without being asked.
    """
    be = backend(emu)
    be.tune(request(), quiet)
    be.tune(request(spec_hash="b" * 64, hyperparameters={"epochs": 4}), quiet)
    second = aiplatform_v1beta1.TuningJob.wrap(emu.received("POST", "/tuningJobs")[1])
    assert second.base_model == "gemini-3.5-flash"
    assert not second.pre_tuned_model.tuned_model_name


def test_3b_continuation_is_explicit_and_checked_before_any_spend(emu):
    be = backend(emu)
    first = be.tune(request(), quiet)
    second = be.tune(request(spec_hash="b" * 64, continue_from="previous"), quiet)
    sent = aiplatform_v1beta1.TuningJob.wrap(emu.received("POST", "/tuningJobs")[1])
    assert sent.pre_tuned_model.tuned_model_name == first.model
    assert second.model == first.model.replace("@1", "@2"), "same display name: version 2 of the same model (E23)"

    # Restrictions (V-continuous), each refused before a job is created:
    creates = emu.creates
    old = emu.seed_model(REGION, "router", "gemini-3.5-flash", tuned_on=datetime.date(2025, 6, 1))
    with pytest.raises(BackendError, match="tuned on or after 2025-07-11"):
        be.tune(request(spec_hash="c" * 64, continue_from=old), quiet)
    missing = f"projects/{PROJECT}/locations/{REGION}/models/424242@1"
    with pytest.raises(BackendError, match="does not exist in Model Registry"):
        be.tune(request(spec_hash="d" * 64, continue_from=missing), quiet)
    with pytest.raises(BackendError, match="was tuned from gemini-3.5-flash, but the spec's baseModel is"):
        be.tune(request(spec_hash="e" * 64, base_model="gemini-3.1-flash-lite", continue_from=first.model), quiet)
    assert emu.creates == creates
    # `previous` after a change of base model: nothing tuned from the new base yet, so the run starts from it.
    be.tune(request(spec_hash="f" * 64, base_model="gemini-3.1-flash-lite", continue_from="previous"), quiet)
    last = aiplatform_v1beta1.TuningJob.wrap(emu.received("POST", "/tuningJobs")[-1])
    assert last.base_model == "gemini-3.1-flash-lite" and not last.pre_tuned_model.tuned_model_name


def test_4_a_configuration_whose_model_was_deleted_is_tuned_again(emu):
    """A succeeded job whose tuned model is gone (``retain: false`` + destroy) must not be adopted.

    The old backend adopted it by spec hash, so the spec could never be tuned again.
    """
    be = backend(emu)
    first = be.tune(request(), quiet)
    emu.drop_model(first.model)
    again = be.tune(request(), quiet)
    assert emu.creates == 2 and not again.reused and again.job_id != first.job_id


def test_5_an_undocumented_label_filter_refused_by_the_service_falls_back(emu):
    """The tuning API documents no filter fields (P-genai-tuning, E15); the emulator refuses ``labels.*``.

    The old backend's every create failed on that refusal.
    """
    assert emu.list_filters == "documented"
    be = backend(emu)
    first = be.tune(request(), quiet)
    again = be.tune(request(), quiet)
    assert again.job_id == first.job_id and emu.creates == 1, "adopted through a client-side filter"


def test_6_open_model_datasets_are_uploaded_as_chat_messages(gcs, emu, tmp_path):
    """Open-model tuning reads ``messages`` with role ``assistant`` (V-oss), not Gemini ``contents``.

    The old backend uploaded the Gemini form for every model.
    """
    turns = [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "hello"}]}]
    example = {"systemInstruction": {"parts": [{"text": "Be brief."}]}, "contents": turns}
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(example, sort_keys=True, separators=(",", ":")) + "\n")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    be = backend(emu, storage_endpoint=gcs.url)
    artifact = be.store_dataset(str(path), sha, 1, 10, "messages")
    client = storage.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs.url}
    )
    stored = client.bucket(BUCKET).blob(artifact.uri.split("/", 3)[3]).download_as_text()
    assert json.loads(stored) == {"messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "hi"},
                                               {"role": "assistant", "content": "hello"}]}  # fmt: skip


def test_6b_open_models_do_not_deploy_and_deploy_true_is_refused_at_validation(tmp_path):
    """Open-model tuning jobs deploy nothing (V-oss, E16); the old loader let ``deploy: true`` through."""
    from tuneform.spec.errors import SpecErrors
    from tuneform.spec.loader import load_specs

    (tmp_path / "Pulumi.yaml").write_text("name: t\n")
    data = tmp_path / "datasets" / "train.jsonl"
    data.parent.mkdir()
    data.write_text("{}\n")
    spec = tmp_path / "open.yaml"
    spec.write_text(
        "apiVersion: tuneform/v1\nkind: TunedModel\nmetadata: {name: open}\nspec:\n"
        "  baseModel: meta/llama3_1@llama-3.1-8b-instruct\n  adapterSize: 16\n"
        "  hyperparameters: {learningRate: 0.0002}\n  dataset: {train: datasets/train.jsonl}\n"
        "  endpoint: {deploy: true}\n"
    )
    with pytest.raises(SpecErrors, match=r"spec.endpoint.deploy: expected `deploy: false` for meta/llama3_1"):
        load_specs([spec], repo_root=tmp_path)
    spec.write_text(spec.read_text().replace("  endpoint: {deploy: true}\n", ""))
    (doc,) = load_specs([spec], repo_root=tmp_path)
    assert doc.resolved["vertex"].endpoint.deploy is False, "open models default to no endpoint"


def test_7_a_cost_cap_with_an_unknown_price_refuses_and_says_how_to_set_it():
    """``maxTrainingCost`` with no known price used to pass silently: a cap that never bites."""
    from tuneform.resources.tuning_job import TuningJobProvider

    settings = BackendSettings(target="vertex", repo_root="/nonexistent")
    news = {"name": "router", "baseModel": "gemini-3.5-flash", "specHash": "a" * 64, "maxTrainingCost": 50.0,
            "estimatedCost": None, "estimatedTrainingTokens": 160000}  # fmt: skip
    result = TuningJobProvider(settings).check({}, news)
    (failure,) = result.failures
    assert "price of tuning gemini-3.5-flash is not known" in failure.reason
    assert "tuneform:trainingPrices" in failure.reason
    priced = TuningJobProvider(settings).check({}, {**news, "estimatedCost": 0.8})
    assert priced.failures == []


def test_8_a_custom_service_account_gets_the_roles_tuning_needs():
    """V-sft-use: the account needs roles/aiplatform.tuningServiceAgent and the tuning service agent needs token
    creator on it. The old storage declaration gave it bucket access only."""
    import pulumi

    from tuneform.resources.storage import declare_vertex_storage

    recorded: dict[str, tuple[str, dict]] = {}

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args):  # type: ignore[no-untyped-def]
            recorded[args.name] = (args.typ, dict(args.inputs))
            return f"{args.name}-id", dict(args.inputs)

        def call(self, args):  # type: ignore[no-untyped-def]
            return {}, []

    pulumi.runtime.set_mocks(Mocks(), project="tuneform", stack="test", preview=False)
    account = "tuner@acme.iam.gserviceaccount.com"

    @pulumi.runtime.test
    def declare():  # type: ignore[no-untyped-def]
        _, resources = declare_vertex_storage(
            "s",
            {
                "project": "acme",
                "region": REGION,
                "bucket": "team-bucket",
                "serviceAccount": account,
                "projectNumber": "42",
            },  # fmt: skip
        )

        def check(_: list) -> None:
            roles = {(typ.rsplit(":", 1)[-1], inputs["role"], inputs["member"]) for typ, inputs in recorded.values()}
            assert ("IAMMember", "roles/aiplatform.tuningServiceAgent", f"serviceAccount:{account}") in roles
            assert ("IAMMember", "roles/iam.serviceAccountTokenCreator",
                    "serviceAccount:service-42@gcp-sa-vertex-tune.iam.gserviceaccount.com") in roles  # fmt: skip

        return pulumi.Output.all(*[r.urn for r in resources]).apply(check)

    declare()


# Found by a hostile pass over the Vertex path (each test fails on the code before it).


def test_9_refresh_drops_a_version_whose_model_was_deleted(emu):
    """A model deleted in the console (or by another stack) left `pulumi up` failing on its endpoint for good."""
    be = backend(emu)
    first = be.tune(request(), quiet)
    assert be.tuning_status(first.job_id) is not None
    emu.drop_model(first.model)
    assert be.tuning_status(first.job_id) is None, "refresh drops it, and the next up tunes again (test_4)"


def test_10_a_connection_dropped_while_waiting_is_retried():
    """One network blip during an hours-long wait ended `pulumi up` with a requests traceback."""
    import requests

    from tuneform.backends.vertex._api import Retry

    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise requests.exceptions.ConnectionError("connection reset by peer")
        return "RUNNING"

    assert Retry(initial=0.01, timeout=5).call(flaky) == "RUNNING" and len(calls) == 3


def _job_props(**changes: object) -> dict:
    props = {
        "name": "router",
        "baseModel": "gemini-3.5-flash",
        "mode": "adapter",
        "trainSha256": "",
        "region": "us-central1",
        "remoteData": ["gs://bkt-a/team/tickets-2026-10.jsonl"],
        "specHash": "a" * 64,
        "estimatedCost": 0.0,
        "estimatedTrainingTokens": 0,
        "tokenMethod": "unknown: remote file",
    }
    props.update(changes)
    return props


def test_11_a_gs_dataset_is_named_by_its_uri_and_no_cap_lets_it_through():
    """A gs:// training set was recorded as 0 tokens ($0.00, so any maxTrainingCost passed), and pointing the spec
    at another object changed no job: the next re-tune trained on the old object."""
    from tuneform.resources.tuning_job import TuningJobProvider

    provider = TuningJobProvider(BackendSettings(target="vertex", repo_root="."))
    old = _job_props()
    moved = _job_props(remoteData=["gs://bkt-a/team/tickets-2026-11.jsonl"])
    assert provider.diff("job", old, moved).replaces == ["remoteData"]
    (failure,) = provider.check({}, {**old, "maxTrainingCost": 0.01}).failures
    assert "the training data is not in the repository (a gs:// dataset)" in failure.reason
    # A job created before tuneform recorded remoteData is not re-tuned by the upgrade.
    before = {k: v for k, v in old.items() if k != "remoteData"}
    assert provider.diff("job", before, old).replaces == []


def test_12_a_new_region_is_a_new_job_and_epochs_left_to_vertex_bound_no_cap():
    from tuneform.resources.tuning_job import TuningJobProvider

    provider = TuningJobProvider(BackendSettings(target="vertex", repo_root="."))
    local = _job_props(remoteData=None, tokenMethod="estimate", estimatedCost=1.0, estimatedTrainingTokens=100_000)
    assert provider.diff("job", local, {**local, "region": "europe-west4"}).replaces == ["region"]
    capped = {**local, "maxTrainingCost": 100.0}
    assert provider.check({}, capped).failures == []
    (failure,) = provider.check({}, {**capped, "epochsAssumed": True}).failures
    assert "leaves epochs to Vertex AI" in failure.reason


def test_13_two_stacks_of_one_project_keep_their_jobs_apart(emu):
    """Two stacks in one project and region (staging, prod) shared jobs: prod adopted staging's, and staging's
    destroy deleted the model prod served. Jobs now carry their stack; one made before that belongs to any."""
    staging, prod = backend(emu, stack="staging"), backend(emu, stack="prod")
    first = staging.tune(request(), quiet)
    second = prod.tune(request(), quiet)
    assert emu.creates == 2 and not second.reused and second.model != first.model
    assert prod.tuning_status(second.job_id) is not None
    staging.delete_version("router", first.version)
    assert emu.live_models() == [second.model]
    assert prod.tuning_status(second.job_id) is not None, "prod's model survives staging's destroy"
    # The same stack adopts its own job, as before.
    assert prod.tune(request(), quiet).reused


def test_14_an_adopted_job_gets_the_specs_labels(emu):
    """A revert adopts the earlier job; its model kept the labels of the spec that made it."""
    be = backend(emu)
    first = be.tune(request(labels={"team": "support"}), quiet)
    again = be.tune(request(labels={"team": "billing"}, description="routes invoices"), quiet)
    assert again.reused and again.model == first.model
    model = aiplatform_v1beta1.ModelServiceClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emu.endpoints.get(REGION, emu.url)},
    ).get_model(name=first.model)
    assert model.labels["team"] == "billing"
