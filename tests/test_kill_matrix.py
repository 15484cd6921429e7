"""`pulumi up` on the local stack killed (SIGKILL, its whole process group) at each moment of a run, then recovered.

For each moment — before training, mid-epoch, after a checkpoint, during evaluation, while the endpoint starts,
after the summary — the test starts a real `pulumi up` of a tiny random Llama, waits for that moment in the run's
files, freezes the process doing the work there (SIGSTOP, so the moment cannot pass before the kill), kills the CLI
and then asserts:

- no process of the killed run survives: the provider, its training child and a starting endpoint server are gone
  within seconds (the provider notices its engine is gone), Pulumi's language host (which checks its engine every
  5 minutes) is stopped by the recovery;
- `make up` would refuse with the one documented way out, and that recovery (`python -m tuneform.recover`, what
  `make recover` runs) converges: one version in the registry, finite training figures, no pending operations, the
  endpoint answers.

Two moments run in `make test`; the whole matrix is marked `slow` (`make test-all`, or `pytest -m killmatrix`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pulumi_cli import PulumiCLI, copy_project
from test_local_stack import free_port
from training_helpers import TICKETS, build_tiny_model, write_slice
from tuneform.processes import ProcessRef

pytestmark = [pytest.mark.cli, pytest.mark.training, pytest.mark.killmatrix, pytest.mark.timeout(900)]

NAME = "tiny-router"
# 64 examples in batches of 4: 16 steps an epoch, a checkpoint after each of the 2 epochs. Long enough to freeze the
# trainer mid-epoch from a 20 ms poll, short enough that a run takes seconds.
SPEC = f"""\
apiVersion: tuneform/v1
kind: TunedModel
metadata:
  name: {NAME}
  description: Routes tickets (tiny test model)
spec:
  baseModel: ../models/tiny
  mode: adapter
  adapterSize: 4
  hyperparameters:
    epochs: 2
    learningRate: 0.001
    batchSize: 4
  dataset:
    format: gemini
    train: datasets/train.jsonl
    validation: datasets/validation.jsonl
  endpoint:
    deploy: true
"""
SURVIVAL_S = 20.0
"""How long the killed run's processes may take to go (the provider checks its engine every second)."""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@dataclass
class Stack:
    cli: PulumiCLI
    project: Path
    env: dict[str, str]
    port: int

    @property
    def state(self) -> Path:
        return self.project / ".tuneform"

    def run_dir(self) -> Path | None:
        found = sorted((self.state / "runs" / NAME).glob("*/run.json"))
        return found[0].parent if found else None

    def run_record(self) -> dict:
        run_dir = self.run_dir()
        try:
            return json.loads((run_dir / "run.json").read_text()) if run_dir else {}
        except (OSError, ValueError):
            return {}


@pytest.fixture
def stack(pulumi_cli, tmp_path: Path, tiny_model: Path) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    project = copy_project(tmp_path / "project", include=("Pulumi.yaml", "__main__.py"))
    shutil.copytree(tiny_model, project / "models" / "tiny")
    data = project / "tuning_specs" / "datasets"
    data.mkdir(parents=True)
    write_slice(TICKETS / "train.jsonl", data / "train.jsonl", 64)
    write_slice(TICKETS / "validation.jsonl", data / "validation.jsonl", 6)
    (project / "tuning_specs" / f"{NAME}.yaml").write_text(SPEC)
    cli: PulumiCLI = pulumi_cli(project)
    port = free_port()
    cli.stack_init("local", config={"tuneform:target": "local", "tuneform:endpointPort": str(port)})
    yield Stack(cli, project, {"TUNEFORM_CACHE": str(tmp_path / "cache")}, port)
    # A failed test may leave its frozen trainer or an endpoint server behind: nothing outlives the test.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and str(project) in read(entry / "cmdline"):
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


def read(path: Path | None) -> str:
    try:
        return path.read_text(errors="replace") if path else ""
    except OSError:
        return ""


def checkpoints(run_dir: Path | None) -> list[Path]:
    """The complete checkpoints (the Trainer writes trainer_state.json last)."""
    return sorted(run_dir.glob("output/checkpoint-*/trainer_state.json")) if run_dir else []


def trainer_pid(stack: Stack) -> int | None:
    return stack.run_record().get("trainer_pid") or None


def server_pid(stack: Stack) -> int | None:
    folder = stack.state / "endpoints" / NAME
    if (folder / "service.json").exists():
        return None  # recorded: past the moment
    text = read(folder / "server.pid").strip()
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class Moment:
    """When to kill: ``reached`` says the moment has come and returns the pid to freeze there (0: none)."""

    reached: Callable[[Stack, str], int | None]
    check: Callable[[Stack], None] = lambda stack: None
    """Asserts, after the freeze, that the run really is at that moment."""


def _no_checkpoint(stack: Stack) -> None:
    assert checkpoints(stack.run_dir()) == [], "frozen before the first epoch's checkpoint"


MOMENTS = {
    "before-training": Moment(lambda s, _: trainer_pid(s), _no_checkpoint),
    "mid-epoch": Moment(
        lambda s, _: (
            trainer_pid(s) if "train: step" in read(s.run_dir() and s.run_dir() / "output/train.log") else None
        ),
        _no_checkpoint,
    ),
    "after-checkpoint": Moment(lambda s, _: trainer_pid(s) if checkpoints(s.run_dir()) else None),
    "during-evaluation": Moment(
        lambda s, _: (
            trainer_pid(s) if "evaluating the base model" in read(s.run_dir() and s.run_dir() / "run.log") else None
        )
    ),
    "endpoint-start": Moment(lambda s, _: server_pid(s)),
    "after-summary": Moment(lambda s, out: 0 if "Duration:" in out else None),
}


def descendants(root: int) -> list[ProcessRef]:
    """Every process under ``root`` now (children of children too), with its start time."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            ref = ProcessRef.of(child)
            if ref is not None:
                found.append(ref)
                todo.append(child)
    return found


def cmdline(ref: ProcessRef) -> str:
    return read(Path(f"/proc/{ref.pid}/cmdline")).replace("\0", " ")


def kill_up_at(stack: Stack, moment: str, log: Path) -> list[ProcessRef]:
    """Start `pulumi up`, kill its process group at ``moment``; returns the processes the killed run had."""
    with log.open("w") as out:
        up = stack.cli.spawn_up(stack.project, "local", env=stack.env, output=out)
    deadline = time.monotonic() + 600
    try:
        while True:
            freeze = MOMENTS[moment].reached(stack, read(log))
            if freeze is not None:
                break
            assert up.poll() is None, f"`pulumi up` ended before {moment}:\n{read(log)[-3000:]}"
            assert time.monotonic() < deadline, f"{moment} never came:\n{read(log)[-3000:]}"
            time.sleep(0.02)
        if freeze:
            os.kill(freeze, signal.SIGSTOP)
        MOMENTS[moment].check(stack)
        processes = descendants(up.pid)
    finally:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
    return processes


def wait_gone(processes: list[ProcessRef], within_s: float) -> list[str]:
    deadline = time.monotonic() + within_s
    while True:
        alive = [f"{ref.pid}: {cmdline(ref)}" for ref in processes if ref.alive()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def recover(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(stack.project / ".venv" / "bin" / "python"), "-m", "tuneform.recover", "--stack", "local", *args],
        cwd=stack.project,
        env=stack.cli.env(stack.env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def pending_operations(stack: Stack) -> list:
    state = json.loads(stack.cli.run("stack", "export", "--stack", "local", check=True).stdout)
    return state["deployment"].get("pending_operations") or []


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def ask(stack: Stack) -> httpx.Response:
    outputs = stack.cli.outputs()[NAME]
    body = {"model": NAME, "messages": [{"role": "user", "content": "My invoice is wrong"}], "max_tokens": 4}
    headers = {"Authorization": f"Bearer {outputs['apiKey']}"}
    return httpx.post(f"{outputs['endpoint']}/v1/chat/completions", json=body, headers=headers, timeout=60)


def assert_converged(stack: Stack) -> None:
    assert pending_operations(stack) == []
    versions = sorted(p.name for p in (stack.state / "models" / NAME / "versions").iterdir())
    assert versions == ["1.json"], "one version: the killed run's work was resumed or adopted, never repeated"
    outputs = stack.cli.outputs()[NAME]
    assert outputs["version"] == 1
    metrics = outputs["metrics"]
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["trainLoss"] > 0 and metrics["trainTokensPerSecond"] > 0, metrics
    assert not list((stack.state / "runs" / NAME).glob("*/run.json")), "the finished run left the ledger"
    answer = ask(stack)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param("before-training", marks=pytest.mark.slow),
        "mid-epoch",
        pytest.param("after-checkpoint", marks=pytest.mark.slow),
        pytest.param("during-evaluation", marks=pytest.mark.slow),
        "endpoint-start",
        pytest.param("after-summary", marks=pytest.mark.slow),
    ],
)
def test_killed_up_leaves_nothing_running_and_one_step_recovers(stack: Stack, moment: str, tmp_path: Path) -> None:
    processes = kill_up_at(stack, moment, tmp_path / "up.log")
    recorded_server = json.loads(read(stack.state / "endpoints" / NAME / "service.json") or "{}").get("pid")
    run = [ref for ref in processes if ref.pid != recorded_server]
    language_host = [ref for ref in run if cmdline(ref).split(" ")[0].endswith("pulumi-language-python")]
    if moment != "after-summary":  # by then the CLI may already have closed its plugins
        assert len(language_host) == 1, [cmdline(ref) for ref in run]
        roles = " ".join(cmdline(ref) for ref in run)
        assert "pulumi.dynamic" in roles, "the provider was part of the killed run"
        assert ("tuneform.training.run" in roles) == (moment not in ("endpoint-start",))
        assert ("tuneform.serving" in roles) == (moment == "endpoint-start")
    survivors = wait_gone([ref for ref in run if ref not in language_host], SURVIVAL_S)
    assert survivors == [], f"still running {SURVIVAL_S:.0f} s after `pulumi up` was killed: {survivors}"

    if moment != "after-summary":
        check = recover(stack, "--check")
        assert check.returncode == 1, check.stdout + check.stderr
        assert "make recover" in check.stderr and "pending operation" in check.stderr, check.stderr
    recovered = recover(stack)
    out = recovered.stdout + recovered.stderr
    assert recovered.returncode == 0, out[-5000:]
    assert "Traceback" not in out and "RunBusyError" not in out, out[-5000:]
    assert wait_gone(language_host, 5) == [], "the recovery stops what the killed run left"
    if moment == "after-checkpoint":
        assert "train: resuming from" in out and "checkpoint-16" in out, out[-5000:]
    if moment == "during-evaluation":
        assert "the figures of the attempt that trained" in out, out[-5000:]
    assert_converged(stack)
    assert recover(stack, "--check").returncode == 0
    stack.cli.destroy(env=stack.env)


@pytest.mark.slow
def test_server_left_by_a_killed_provider_is_replaced(stack: Stack, tmp_path: Path) -> None:
    """The provider itself SIGKILLed while its endpoint server starts: nothing stops the server, which then holds
    the endpoint's port unrecorded; the recovery's `pulumi up` stops the server its pid file names and starts anew."""
    processes = kill_up_at(stack, "endpoint-start", tmp_path / "up.log")
    for ref in processes:
        if "pulumi.dynamic" in cmdline(ref):
            os.kill(ref.pid, signal.SIGKILL)
    left = server_pid(stack)
    assert left is not None
    os.kill(left, signal.SIGCONT)
    deadline = time.monotonic() + 120
    while not healthy(stack.port):
        assert time.monotonic() < deadline, "the leftover server never came up"
        time.sleep(0.5)
    recovered = recover(stack)
    out = recovered.stdout + recovered.stderr
    assert recovered.returncode == 0, out[-5000:]
    assert f"stopping the endpoint server (pid {left})" in out, out[-5000:]
    assert not ProcessRef(left).alive()
    assert_converged(stack)
    stack.cli.destroy(env=stack.env)
