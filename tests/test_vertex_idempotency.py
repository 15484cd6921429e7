"""One Vertex tuning job per spec, however late the job listing shows a new job and whatever answer is lost.

CreateTuningJob takes no request id and names the job itself, and nothing documents how soon ListTuningJobs shows a
new job (docs/vertex-emulator.md, E34). Here the emulator's listing lags each create by 0.5-5 s and create answers
are lost after the job was made (E33); tuneform's job marker in the bucket (read directly, never listed) and the
create's token label must still lead every retry, and every later `pulumi up`, to the one job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from emulators.fake_gcs import FakeGcs
from emulators.vertex_api import FaultPlan, Outcome, VertexEmulator
from test_vertex_backend import Lines, gemini_request
from test_vertex_stack import BUCKET, set_epochs, stack
from tuneform.backends.vertex import VertexBackend
from tuneform.backends.vertex.backend import REQUEST_LABEL
from tuneform.processes import ProcessRef

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(300)]

PROJECT, REGION = "test-project", "us-central1"
LAG = (0.5, 5.0)


@pytest.fixture
def gcs_url(gcs: FakeGcs) -> str:
    return gcs.url


def backend(emu: VertexEmulator, gcs_url: str, **kwargs) -> VertexBackend:  # type: ignore[no-untyped-def]
    settings = {"poll": (0.05, 0.2), "retry_initial": 0.05, "retry_timeout": 60.0, "storage_endpoint": gcs_url}
    return VertexBackend(PROJECT, REGION, BUCKET, api_endpoints=emu.endpoints, **{**settings, **kwargs})


def lagging(seed: int) -> VertexEmulator:
    return VertexEmulator(queued_seconds=0.05, running_seconds=0.3, list_lag_seconds=LAG, faults=FaultPlan(seed=seed))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lost_create_answer_under_a_lagging_list_makes_one_job(gcs_url: str, seed: int) -> None:
    with lagging(seed) as emu:
        emu.lose_next_create_answer()
        lines = Lines()
        outcome = backend(emu, gcs_url).tune(gemini_request(spec_hash=f"{seed:064x}"), lines)
        assert emu.creates == 1, "the retry found the job of the lost answer instead of paying for a second one"
        (job,) = emu.created_jobs()
        assert outcome.job_id == job["name"] and outcome.state == "SUCCEEDED"
        assert any("never answered" in line for line in lines), lines
        assert any("carries the token of the unanswered create" in line for line in lines), lines


def test_every_create_answer_lost_still_makes_one_job(gcs_url: str) -> None:
    with lagging(4) as emu:
        emu.lose_next_create_answer(count=3)
        outcome = backend(emu, gcs_url).tune(gemini_request(spec_hash="4" * 64), Lines())
        assert emu.creates == 1 and outcome.state == "SUCCEEDED"


def test_a_later_run_finds_the_job_by_its_marker_while_the_list_lags(gcs_url: str) -> None:
    """A `pulumi up` killed after the create answered: the next one reads the marker, not the lagging list."""
    with lagging(5) as emu:
        emu.script(Outcome(running_seconds=30.0))
        first = backend(emu, gcs_url, deadline_seconds=0.2)
        with pytest.raises(Exception, match="still"):  # tuneform's deadline passes; the job keeps running
            first.tune(gemini_request(spec_hash="5" * 64), Lines())
        assert emu.creates == 1
        lines = Lines()
        again = backend(emu, gcs_url, deadline_seconds=0.2)
        with pytest.raises(Exception, match="still"):
            again.tune(gemini_request(spec_hash="5" * 64), lines)
        assert emu.creates == 1, "the job was adopted, though the list did not show it yet"
        assert any("the job this spec's marker records" in line for line in lines), lines


def test_an_unanswered_create_that_made_nothing_is_made_after_the_wait(gcs_url: str) -> None:
    """A 504 before the service acted: no job carries the token, so after the wait the job is created, once."""
    with lagging(6) as emu:
        emu.fail_next(504, count=1, method="POST")
        lines = Lines()
        started = time.monotonic()
        outcome = backend(emu, gcs_url, lost_create_wait_s=6.0).tune(gemini_request(spec_hash="6" * 64), lines)
        assert emu.creates == 1 and outcome.state == "SUCCEEDED"
        assert time.monotonic() - started >= 5.0, "it waited for the listing before creating"
        assert any("that create was not made" in line for line in lines), lines


def test_a_refused_create_leaves_no_pending_marker(gcs_url: str) -> None:
    """429/503/4xx mean the service did not act: the next attempt creates at once, with no wait for a listing."""
    with lagging(7) as emu:
        emu.fail_next(503, count=2, method="POST")
        lines = Lines()
        started = time.monotonic()
        outcome = backend(emu, gcs_url, lost_create_wait_s=60.0).tune(gemini_request(spec_hash="7" * 64), lines)
        assert emu.creates == 1 and outcome.state == "SUCCEEDED"
        assert time.monotonic() - started < 30.0 and not any("never answered" in line for line in lines)
        (job,) = emu.created_jobs()
        assert len(job["labels"][REQUEST_LABEL]) == 32


@pytest.mark.cli
@pytest.mark.timeout(900)
def test_killed_up_under_a_lagging_list_creates_one_job(pulumi_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`pulumi up` killed right after its create reached the service, with a list that lags 0.5-5 s: the provider
    leaves on its own, and the documented recovery adopts the job instead of creating a second one."""
    with FakeGcs() as gcs, VertexEmulator(queued_seconds=0.2, running_seconds=1.0, list_lag_seconds=LAG) as tuning:
        gcs.create_bucket(BUCKET)
        cli, project = stack(pulumi_cli, tmp_path, gcs, tuning)
        cli.up(timeout=300)
        creates = tuning.creates

        set_epochs(project, 5)
        tuning.script(Outcome(running_seconds=15.0))
        tuning.lose_next_create_answer()
        killed = cli.spawn_up(project, "vertex-test")
        deadline = time.monotonic() + 120
        while tuning.creates == creates and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tuning.creates == creates + 1, "the job was submitted before the kill"
        providers = [ref for ref in _children_mentioning(project) if "pulumi.dynamic" in _cmdline(ref.pid)]
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        deadline = time.monotonic() + 20
        while any(ref.alive() for ref in providers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(ref.alive() for ref in providers), "the provider of the killed run left on its own"

        recovered = subprocess.run(
            [str(project / ".venv" / "bin" / "python"), "-m", "tuneform.recover", "--stack", "vertex-test"],
            cwd=project,
            env=cli.env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert recovered.returncode == 0, (recovered.stdout + recovered.stderr)[-5000:]
        assert tuning.creates == creates + 1, "one job for the killed run and its recovery together"
        assert cli.outputs()["ticket-router"]["version"] == 2


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children_mentioning(project: Path) -> list[ProcessRef]:
    marker = str(project)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and marker in _cmdline(int(entry.name)):
            ref = ProcessRef.of(int(entry.name))
            if ref is not None:
                found.append(ref)
    return found
