"""Process lifetimes across a killed `pulumi up` (tuneform.processes), with real processes and a real TCP listener.

The provider watches its engine's address and, when nothing listens there any more, stops the children it waits
on and exits; a training child exits when its parent is gone; a recorded pid whose process was replaced is not
taken for it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tuneform.processes import ProcessRef, answers

pytestmark = pytest.mark.timeout(60)


def _gone(pid: int, within_s: float) -> bool:
    ref = ProcessRef.of(pid)
    deadline = time.monotonic() + within_s
    while ref is not None and ref.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return ref is None or not ref.alive()


def test_provider_stops_its_children_and_leaves_when_the_engine_goes() -> None:
    engine = socket.socket()
    engine.bind(("127.0.0.1", 0))
    engine.listen()
    address = f"127.0.0.1:{engine.getsockname()[1]}"
    provider_code = textwrap.dedent(
        f"""
        import subprocess, sys, time
        from tuneform import processes
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        processes.track(child, "a training run")
        processes.watch_engine({address!r}, interval_s=0.2)
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    provider = subprocess.Popen(
        [sys.executable, "-c", provider_code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert provider.stdout is not None
        child = int(provider.stdout.readline())
        time.sleep(0.6)
        assert provider.poll() is None and ProcessRef.of(child) is not None, "the engine answers: all stay"
        assert answers(address)
        engine.close()
        assert not answers(address)
        assert provider.wait(timeout=10) == 1
        assert _gone(child, 5), "the tracked child was stopped"
        assert provider.stderr is not None and "is gone; stopping a training run" in provider.stderr.read()
    finally:
        provider.kill()
        engine.close()


def test_child_exits_with_its_parent() -> None:
    child_code = "from tuneform.processes import exit_with_parent; import time; exit_with_parent(0.1); time.sleep(60)"
    parent_code = textwrap.dedent(
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {child_code!r}])
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(1.0)
    assert ProcessRef.of(child) is not None
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _gone(child, 5), "the orphaned child left on its own"


def test_a_reused_pid_is_not_the_recorded_process() -> None:
    me = ProcessRef.current()
    assert me.alive() and me.runs("python")
    assert not ProcessRef(me.pid, me.started + 1).alive(), "same pid, another start time: another process"
    assert not ProcessRef(me.pid).runs("no-such-marker")
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    assert ProcessRef.of(int(done.stdout)) is None


def test_stop_escalates_to_sigkill_and_wakes_a_stopped_process() -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"],
        start_new_session=True,
    )
    time.sleep(0.5)
    os.kill(stubborn.pid, signal.SIGSTOP)
    from tuneform.processes import stop

    started = time.monotonic()
    stop(stubborn.pid, grace_s=1.0)
    assert stubborn.wait(timeout=5) == -signal.SIGKILL, "SIGTERM was ignored: SIGKILL after the grace"
    assert 1.0 <= time.monotonic() - started < 5
