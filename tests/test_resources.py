"""The dynamic providers' contracts, against an in-memory backend that implements the protocol.

The full lifecycle with the real Pulumi CLI is in ``test_local_stack.py``; these pin down the diff semantics that
decide whether a reviewer sees "replace" (a new paid tuning run) or "update", and the guard on cost.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import dill
import pytest

from tuneform.backends.base import (
    DatasetArtifact,
    EndpointRequest,
    EndpointState,
    TuningOutcome,
    TuningRequest,
)
from tuneform.resources import _provider
from tuneform.resources._provider import BackendSettings
from tuneform.resources.endpoint import EndpointProvider
from tuneform.resources.tuning_job import TuningJobProvider


@dataclass
class InMemoryBackend:
    """A whole target in a few dicts: what a provider may assume of any backend."""

    target: str = "fake"
    jobs: dict[str, TuningOutcome] = field(default_factory=dict)
    requests: list[TuningRequest] = field(default_factory=list)
    endpoints: dict[str, EndpointState] = field(default_factory=dict)
    metadata: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)

    def store_dataset(self, converted_path: str, sha256: str, examples: int, tokens: int) -> DatasetArtifact:
        return DatasetArtifact(sha256, f"mem://{sha256}", examples, tokens)

    def dataset_present(self, artifact: DatasetArtifact) -> bool:
        return True

    def tune(self, request: TuningRequest, progress: Any) -> TuningOutcome:
        self.requests.append(request)
        for outcome in self.jobs.values():
            if outcome.job_id.endswith(request.spec_hash):
                return outcome
        version = 1 + sum(1 for job in self.jobs.values() if job.model.startswith(request.name + "@"))
        outcome = TuningOutcome(
            job_id=f"{request.name}-{request.spec_hash}",
            state="SUCCEEDED",
            model=f"{request.name}@{version}",
            version=version,
            metrics={"exactMatch": 0.9},
        )
        self.jobs[outcome.job_id] = outcome
        return outcome

    def tuning_status(self, job_id: str) -> TuningOutcome | None:
        return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> None:
        return None

    def update_metadata(self, job_id: str, description: str, labels: dict[str, str]) -> None:
        self.metadata[job_id] = (description, labels)

    def delete_version(self, model: str, version: int) -> None:
        return None

    def deploy(self, request: EndpointRequest, existing: str | None, progress: Any) -> EndpointState:
        state = EndpointState(
            request.name, "http://127.0.0.1:1", dict(request.traffic), True, request.settings.get("api_key") or "k1"
        )
        self.endpoints[request.name] = state
        return state

    def endpoint_status(self, endpoint_id: str) -> EndpointState | None:
        return self.endpoints.get(endpoint_id)

    def undeploy(self, endpoint_id: str) -> None:
        self.endpoints.pop(endpoint_id, None)


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> InMemoryBackend:
    fake = InMemoryBackend()
    # The one seam: providers build their backend from settings inside each method.
    monkeypatch.setattr(_provider, "build_backend", lambda settings: fake)
    for module in ("tuning_job", "endpoint", "dataset", "model_version"):
        monkeypatch.setattr(f"tuneform.resources.{module}.build_backend", lambda settings: fake)
    return fake


SETTINGS = BackendSettings(target="local", repo_root="/repo")


def job_props(**overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "name": "ticket-router",
        "target": "local",
        "specHash": "abc",
        "baseModel": "smollm2-135m-instruct",
        "mode": "adapter",
        "adapterSize": 4,
        "hyperparameters": {"epochs": 3, "learningRate": 0.0002},
        "lora": None,
        "trainSha256": "t" * 64,
        "trainUri": "mem://t",
        "trainExamples": 300,
        "trainTokens": 9000,
        "validationSha256": None,
        "validationUri": None,
        "validationExamples": 0,
        "description": "Routes tickets",
        "labels": {"team": "support"},
        "adopt": None,
        "estimatedTrainingTokens": 27000,
        "estimatedCost": 0.0,
        "maxTrainingCost": None,
    }
    props.update(overrides)
    return props


class TestTuningJobDiff:
    def test_no_change_is_no_diff(self) -> None:
        provider = TuningJobProvider(SETTINGS)
        result = provider.diff("id", {**job_props(), "jobId": "x", "version": 1}, job_props())
        assert result.changes is False
        assert result.replaces == []

    def test_training_inputs_replace_and_name_what_changed(self) -> None:
        provider = TuningJobProvider(SETTINGS)
        news = job_props(hyperparameters={"epochs": 4, "learningRate": 0.0002}, trainSha256="u" * 64)
        result = provider.diff("id", job_props(), news)
        assert result.changes is True
        assert sorted(result.replaces) == ["hyperparameters", "trainSha256"]
        assert result.delete_before_replace is False

    def test_description_and_labels_update_in_place(self) -> None:
        provider = TuningJobProvider(SETTINGS)
        result = provider.diff("id", job_props(), job_props(description="new", labels={"team": "ops"}))
        assert result.changes is True
        assert result.replaces == []


class TestTuningJobLifecycle:
    def test_create_outputs_version_and_keeps_inputs(self, backend: InMemoryBackend) -> None:
        created = TuningJobProvider(SETTINGS).create(job_props())
        assert created.outs["version"] == 1
        assert created.outs["modelName"] == "ticket-router@1"
        assert created.outs["baseModel"] == "smollm2-135m-instruct"
        assert backend.requests[0].train.tokens == 9000

    def test_update_keeps_outcome_and_sends_labels(self, backend: InMemoryBackend) -> None:
        provider = TuningJobProvider(SETTINGS)
        created = provider.create(job_props())
        updated = provider.update(created.id, created.outs, job_props(labels={"team": "ops"}))
        assert updated.outs["version"] == 1
        assert updated.outs["labels"] == {"team": "ops"}
        assert backend.metadata[created.id] == ("Routes tickets", {"team": "ops"})

    def test_read_of_a_vanished_job_drops_it(self, backend: InMemoryBackend) -> None:
        assert TuningJobProvider(SETTINGS).read("gone", job_props()).id == ""


class TestCostGuard:
    def test_new_run_over_the_limit_is_refused_with_the_numbers(self) -> None:
        news = job_props(estimatedCost=120.5, maxTrainingCost=100, estimatedTrainingTokens=15_062_500)
        result = TuningJobProvider(SETTINGS).check({}, news)
        assert [f.property for f in result.failures] == ["estimatedCost"]
        assert result.failures[0].reason == (
            "ticket-router: estimated training cost $120.50 (15,062,500 training tokens) exceeds the stack's "
            "maxTrainingCost $100.00. Lower epochs or the dataset size, or raise it with "
            "`pulumi config set tuneform:maxTrainingCost <usd>`."
        )

    def test_an_unchanged_run_is_not_refused(self) -> None:
        props = job_props(estimatedCost=120.5, maxTrainingCost=100)
        assert TuningJobProvider(SETTINGS).check(props, props).failures == []

    def test_under_the_limit_passes(self) -> None:
        news = job_props(estimatedCost=12.0, maxTrainingCost=100)
        assert TuningJobProvider(SETTINGS).check({}, news).failures == []


class TestEndpoint:
    def props(self, **overrides: Any) -> dict[str, Any]:
        props = {"name": "ticket-router", "modelName": "ticket-router", "traffic": {"1": 100}, "versions": {}}
        return {**props, "port": 8765, **overrides}

    def test_dead_server_found_by_refresh_forces_an_update(self, backend: InMemoryBackend) -> None:
        provider = EndpointProvider(SETTINGS)
        created = provider.create(self.props())
        assert provider.diff(created.id, created.outs, self.props()).changes is False
        backend.endpoints.clear()
        refreshed = provider.read(created.id, created.outs)
        assert refreshed.outs["healthy"] is False
        assert refreshed.outs["apiKey"] == created.outs["apiKey"]
        assert provider.diff(created.id, refreshed.outs, self.props()).changes is True

    def test_update_keeps_the_key(self, backend: InMemoryBackend) -> None:
        provider = EndpointProvider(SETTINGS)
        created = provider.create(self.props())
        updated = provider.update(created.id, created.outs, self.props(traffic={"1": 90, "2": 10}))
        assert updated.outs["apiKey"] == created.outs["apiKey"]
        assert updated.outs["servedTraffic"] == {"1": 90, "2": 10}


def test_providers_pickle_without_clients() -> None:
    """Pulumi dills providers into state: they must carry settings only, and survive a round trip."""
    for provider in (TuningJobProvider(SETTINGS), EndpointProvider(SETTINGS)):
        restored = dill.loads(dill.dumps(provider, recurse=True))
        assert restored.settings == SETTINGS
        assert len(pickle.dumps(provider.settings)) < 2048


class TestEvaluationGate:
    """`spec.endpoint.promote`: a new version takes traffic only if it beats the serving one."""

    PROMOTE = {"metric": "exactMatch", "minImprovement": 0.02}

    def props(self, version: int, score: float) -> dict[str, Any]:
        return {
            "name": "ticket-router",
            "modelName": "ticket-router",
            "traffic": {str(version): 100},
            "versions": {},
            "port": 8765,
            "promote": self.PROMOTE,
            "candidateVersion": version,
            "candidateMetrics": {"exactMatch": score},
        }

    def test_holds_a_worse_version_and_promotes_a_better_one(self, backend: InMemoryBackend) -> None:
        provider = EndpointProvider(SETTINGS)
        first = provider.create(self.props(1, 0.50))
        assert first.outs["servedTraffic"] == {"1": 100}

        worse = provider.update(first.id, first.outs, self.props(2, 0.51))
        assert worse.outs["servedTraffic"] == {"1": 100}, "v2 beats v1 by 0.01 < 0.02: held"
        assert worse.outs["promotion"] == {
            "outcome": "held",
            "metric": "exactMatch",
            "minImprovement": 0.02,
            "candidate": {"version": 2, "score": 0.51},
            "serving": {"version": 1, "score": 0.50},
        }
        assert backend.endpoints["ticket-router"].traffic == {1: 100}

        better = provider.update(first.id, worse.outs, self.props(3, 0.60))
        assert better.outs["servedTraffic"] == {"3": 100}
        assert better.outs["promotion"]["outcome"] == "promoted"
        assert better.outs["promotion"]["serving"] == {"version": 1, "score": 0.50}

    def test_a_version_without_the_metric_is_held(self, backend: InMemoryBackend) -> None:
        provider = EndpointProvider(SETTINGS)
        first = provider.create(self.props(1, 0.5))
        unmeasured = {**self.props(2, 0.9), "candidateMetrics": {}}
        held = provider.update(first.id, first.outs, unmeasured)
        assert held.outs["promotion"]["outcome"] == "held"
        assert held.outs["servedTraffic"] == {"1": 100}

    def test_without_a_gate_the_spec_traffic_applies(self, backend: InMemoryBackend) -> None:
        provider = EndpointProvider(SETTINGS)
        first = provider.create({**self.props(1, 0.5), "promote": None})
        moved = provider.update(first.id, first.outs, {**self.props(2, 0.1), "promote": None})
        assert moved.outs["servedTraffic"] == {"2": 100}
        assert moved.outs["promotion"] is None


def test_hundreds_of_dynamic_resources_do_not_nest_the_pickler() -> None:
    """Regresses a RecursionError at about 80 specs: Pulumi 3.260 re-wraps the pickler on every dynamic resource."""
    from pulumi.dynamic.dynamic import serialize_provider

    from tuneform.resources._provider import unwrap_pickler_patch

    for _ in range(1500):
        unwrap_pickler_patch()
        serialize_provider(TuningJobProvider(SETTINGS))
    unwrap_pickler_patch()
    assert pickle._Pickler._batch_setitems.__qualname__ == "_Pickler._batch_setitems"  # type: ignore[attr-defined]


def test_counts_cross_the_wire_as_ints_again() -> None:
    from tuneform.resources._provider import whole_numbers

    assert whole_numbers({"examples": 32.0, "rate": 1.0, "tokens": 2.5}, ("examples", "tokens")) == {
        "examples": 32,
        "rate": 1.0,
        "tokens": 2.5,
    }
