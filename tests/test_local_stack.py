"""The local target end to end, with the real Pulumi CLI on a temporary file backend.

A tiny random Llama (built in a second) stands in for SmolLM2 so the whole cycle takes well under a minute on 2
cores: `preview`, `up` (really trains with TRL, evaluates, registers version 1, starts the endpoint), a no-op `up`,
a hyperparameter edit (version 2), its revert (version 1 again, without training), a server killed behind Pulumi's
back (`refresh` notices, `up` restarts it), and `destroy` (server stopped, registry kept).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from pulumi_cli import PulumiCLI, copy_project
from training_helpers import TICKETS, build_tiny_model, write_slice

pytestmark = [pytest.mark.cli, pytest.mark.training]

SPEC = """\
apiVersion: tuneform/v1
kind: TunedModel
metadata:
  name: tiny-router
  description: Routes tickets (tiny test model)
  labels: {{team: test}}
spec:
  baseModel: ../models/tiny
  mode: adapter
  adapterSize: 4
  hyperparameters:
    epochs: 1
    learningRate: {lr}
    batchSize: 8
  dataset:
    format: gemini
    train: datasets/train.jsonl
    validation: datasets/validation.jsonl
    test: datasets/test.jsonl
  endpoint:
    deploy: true
    generation: {{temperature: 0, maxOutputTokens: 3}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_spec(project: Path, lr: str) -> None:
    (project / "tuning_specs" / "tiny-router.yaml").write_text(SPEC.format(lr=lr))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = copy_project(tmp_path / "project", include=("Pulumi.yaml", "__main__.py"))
    build_tiny_model(root / "models" / "tiny")
    data = root / "tuning_specs" / "datasets"
    data.mkdir(parents=True)
    write_slice(TICKETS / "train.jsonl", data / "train.jsonl", 32)
    write_slice(TICKETS / "validation.jsonl", data / "validation.jsonl", 6)
    write_slice(TICKETS / "test.jsonl", data / "test.jsonl", 6)
    write_spec(root, "0.001")
    return root


def chat(url: str, key: str | None, **extra: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": "tiny-router", "messages": [{"role": "user", "content": "My invoice is wrong"}], "max_tokens": 4}
    return httpx.post(f"{url}/v1/chat/completions", json={**body, **extra}, headers=headers, timeout=60)


def test_local_stack_lifecycle(project: Path, pulumi_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli: PulumiCLI = pulumi_cli(project)
    port = free_port()
    cli.stack_init("local", config={"tuneform:target": "local", "tuneform:endpointPort": str(port)})
    env = {"TUNEFORM_CACHE": str(tmp_path / "cache")}

    preview = cli.preview(env=env)
    assert "tuneform:index:TunedModel" in preview.stdout
    assert "tiny-router-tuning" in preview.stdout
    assert not (project / ".tuneform" / "models").exists(), "preview must not train or register anything"

    first = cli.up(env=env, timeout=600)
    outputs = cli.outputs()["tiny-router"]
    assert outputs["version"] == 1
    assert outputs["reused"] is False
    assert outputs["metrics"]["validationLoss"] < outputs["metrics"]["baseValidationLoss"]
    # The test set is scored at the version's decoding defaults, beside the validation metrics.
    assert 0 <= outputs["metrics"]["testAccuracy"] <= 1 and 0 <= outputs["metrics"]["baseTestAccuracy"] <= 1
    shown = first.stdout + first.stderr
    assert "test set accuracy: base" in shown and "maxOutputTokens 3" in shown
    # Progress is tuneform's own: library warnings and progress bars go to the run's log, which progress names.
    assert "its full log (library output included): " in shown
    kept = re.search(r"its run log is kept in (\S+)", shown)
    assert kept is not None, "the version keeps the run's log and says where"
    log = Path(kept.group(1)).read_text()
    assert "train: step" in shown and "train: step" in log and "every step, from" in log
    for noise in ("Warning", "it/s]", "Loading weights", "Building labels"):
        assert noise not in shown, noise
    assert "Warning" in log, "library warnings go to the log"
    assert (project / ".tuneform").stat().st_mode & 0o077 == 0, "the registry is its owner's only"
    url, key = outputs["endpoint"], outputs["apiKey"]
    # A request that sets nothing gets the version's saved decoding: greedy, 3 tokens, whatever its request id.
    defaults = [chat(url, key, max_tokens=None, user=f"user-{i}").json() for i in range(2)]
    assert [d["usage"]["completion_tokens"] for d in defaults] == [3, 3]
    assert defaults[0]["choices"][0]["message"] == defaults[1]["choices"][0]["message"]
    server_log = project / ".tuneform" / "endpoints" / "tiny-router" / "server.log"
    assert server_log.stat().st_mode & 0o777 == 0o600
    assert url == f"http://127.0.0.1:{port}"
    answer = chat(url, key)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["role"] == "assistant"
    assert chat(url, None).status_code == 401
    assert chat(url, "wrong").status_code == 401

    cli.up("--expect-no-changes", env=env)

    write_spec(project, "0.002")
    edited = cli.preview(env=env)
    assert "hyperparameters" in edited.stdout
    cli.up(env=env, timeout=600)
    outputs = cli.outputs()["tiny-router"]
    assert outputs["version"] == 2
    assert outputs["apiKey"] == key, "the endpoint keeps its key across versions"

    write_spec(project, "0.001")
    reverted = cli.up(env=env, timeout=600)
    outputs = cli.outputs()["tiny-router"]
    assert outputs["version"] == 1
    assert outputs["reused"] is True
    assert "reusing it, no training" in reverted.stdout + reverted.stderr
    assert chat(url, key).headers["X-Tuneform-Model-Version"] == "1"

    # Only the decoding defaults change: a new version with version 1's weights, its test set scored again.
    spec_file = project / "tuning_specs" / "tiny-router.yaml"
    spec_file.write_text(spec_file.read_text().replace("maxOutputTokens: 3", "maxOutputTokens: 2"))
    rescored = cli.up(env=env, timeout=600)
    shown = rescored.stdout + rescored.stderr
    assert "version 1 has these weights (only endpoint.generation differs): reusing them, no training" in shown
    assert "train: step" not in shown and "test set accuracy: base" in shown
    outputs = cli.outputs()["tiny-router"]
    assert (outputs["version"], outputs["reused"]) == (3, True)
    versions_dir = project / ".tuneform" / "models" / "tiny-router" / "versions"
    records = [json.loads((versions_dir / f"{n}.json").read_text()) for n in (1, 3)]
    assert records[0]["artifact_sha256"] == records[1]["artifact_sha256"]
    assert chat(url, key, max_tokens=None).json()["usage"]["completion_tokens"] == 2

    service = json.loads((project / ".tuneform" / "endpoints" / "tiny-router" / "service.json").read_text())
    os.killpg(service["pid"], signal.SIGKILL)
    time.sleep(0.5)
    cli.refresh(env=env)
    cli.up(env=env)
    assert chat(url, key).status_code == 200, "`pulumi up` after refresh restarts a dead endpoint"

    cli.destroy(env=env)
    with pytest.raises(httpx.ConnectError):
        chat(url, key)
    versions = sorted(p.name for p in (project / ".tuneform" / "models" / "tiny-router" / "versions").iterdir())
    assert versions == ["1.json", "2.json", "3.json"], "destroy leaves the registry intact"
