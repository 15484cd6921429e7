"""Local endpoints across specs and stacks: stable ports, one stack per model's endpoint, and refusals that leave the
running endpoint alone."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tuneform.backends.base import BackendError, EndpointRequest
from tuneform.backends.local import LocalBackend, endpoint_ports


def _running(repo: Path, name: str, port: int, stack: str = "local") -> None:
    """Record an endpoint as `deploy` leaves one (the server itself is not needed to plan ports)."""
    directory = repo / ".tuneform" / "endpoints" / name
    directory.mkdir(parents=True)
    info = {"pid": 0, "port": port, "url": f"http://127.0.0.1:{port}", "log_path": "", "pid_path": ""}
    (directory / "service.json").write_text(json.dumps({**info, "config_path": "", "name": name}))
    (directory / "stack.json").write_text(json.dumps({"stack": stack}))


def test_a_fresh_checkout_numbers_endpoints_by_name(tmp_path: Path) -> None:
    assert endpoint_ports(tmp_path, ["ticket-router", "invoice-fields"], 8765) == {
        "invoice-fields": 8765,
        "ticket-router": 8766,
    }


def test_adding_a_spec_moves_no_running_endpoint(tmp_path: Path) -> None:
    _running(tmp_path, "ticket-router", 8765)
    # `aaa-router` sorts first; by position it would have taken 8765 and moved ticket-router.
    assert endpoint_ports(tmp_path, ["ticket-router", "aaa-router"], 8765) == {
        "aaa-router": 8766,
        "ticket-router": 8765,
    }


def test_a_renamed_spec_does_not_take_the_port_of_its_old_endpoint(tmp_path: Path) -> None:
    # The old name's endpoint stops only after the new one starts (create before delete).
    _running(tmp_path, "tiny-router", 8765)
    assert endpoint_ports(tmp_path, ["tiny-router2"], 8765) == {"tiny-router2": 8766}


def test_removing_a_spec_moves_no_other_endpoint(tmp_path: Path) -> None:
    _running(tmp_path, "aaa-router", 8765)
    _running(tmp_path, "ticket-router", 8766)
    assert endpoint_ports(tmp_path, ["ticket-router"], 8765) == {"ticket-router": 8766}


def test_a_new_base_port_moves_every_endpoint(tmp_path: Path) -> None:
    _running(tmp_path, "ticket-router", 8765)
    assert endpoint_ports(tmp_path, ["ticket-router"], 9000) == {"ticket-router": 9000}


def test_a_second_stack_is_refused_the_endpoint_of_the_first(tmp_path: Path) -> None:
    _running(tmp_path, "ticket-router", 8765, stack="local")
    other = LocalBackend(tmp_path, stack="local2")
    request = EndpointRequest(name="ticket-router", model="ticket-router", traffic={1: 100}, settings={"port": 8775})
    with pytest.raises(BackendError, match="belongs to stack 'local'"):
        other.deploy(request, None, lambda _line: None)
    other.undeploy("ticket-router")  # destroying the second stack leaves the first one's endpoint alone
    assert (tmp_path / ".tuneform" / "endpoints" / "ticket-router" / "service.json").exists()


def test_a_taken_port_is_refused_before_the_running_endpoint_stops(tmp_path: Path) -> None:
    _running(tmp_path, "ticket-router", 8765)
    backend = LocalBackend(tmp_path, stack="local")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        request = EndpointRequest(name="ticket-router", model="ticket-router", traffic={}, settings={"port": taken})
        with pytest.raises(
            BackendError, match=f"port {taken} on 127.0.0.1 is already in use.*keeps serving on port 8765"
        ):
            backend.deploy(request, None, lambda _line: None)
    assert (tmp_path / ".tuneform" / "endpoints" / "ticket-router" / "service.json").exists()


def test_a_version_whose_weights_were_deleted_by_hand_is_gone(tmp_path: Path) -> None:
    import shutil

    backend = LocalBackend(tmp_path, stack="local")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "adapter_model.safetensors").write_bytes(b"w")
    artifact = backend.registry.store.put_dir(weights)
    (tmp_path / "train.jsonl").write_text("{}\n")
    dataset = backend.registry.store.put_file(tmp_path / "train.jsonl")
    backend.registry.add_version(
        "ticket-router",
        spec_hash="ab" * 32,
        dataset_sha256=dataset,
        validation_sha256=None,
        base_model="smollm2-135m-instruct",
        mode="adapter",
        hyperparameters={},
        artifact_sha256=artifact,
        artifact_kind="adapter",
        metrics={},
    )
    assert backend.tuning_status("ticket-router@1") is not None
    shutil.rmtree(backend.registry.store.get(artifact))
    # Refresh drops it (so the next `up` tunes again) and serving it says what is wrong, not ObjectNotFoundError.
    assert backend.tuning_status("ticket-router@1") is None
    request = EndpointRequest(name="ticket-router", model="ticket-router", traffic={1: 100}, settings={"port": 8799})
    with pytest.raises(BackendError, match=r"ticket-router@1: its weights .* are missing"):
        backend.deploy(request, None, lambda _line: None)


@pytest.mark.training
def test_a_refused_training_is_said_without_a_traceback(tmp_path: Path) -> None:
    import hashlib

    from training_helpers import TICKETS, build_tiny_model, write_slice
    from tuneform.backends.base import TuningFailed, TuningRequest

    tiny = build_tiny_model(tmp_path / "tiny")
    data = write_slice(TICKETS / "train.jsonl", tmp_path / "train.jsonl", 8)
    backend = LocalBackend(tmp_path / "repo", cache_dir=tmp_path / "cache", stack="local")
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    train = backend.store_dataset(str(data), sha, 8, 800)
    request = TuningRequest(
        name="tiny",
        spec_hash="ab" * 32,
        base_model=str(tiny),
        mode="adapter",
        adapter_size=4,
        hyperparameters={"epochs": 1, "learningRate": 1e-3, "batchSize": 8},
        train=train,
        validation=None,
        lora={"target_modules": ["q_prj"]},
    )
    with pytest.raises(TuningFailed) as refused:
        backend.tune(request, lambda _line: None)
    message = str(refused.value)
    assert message.startswith("local tuning of tiny refused: spec.targets.local.lora.targetModules: expected names")
    assert "Traceback" not in message
