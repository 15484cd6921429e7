"""Processes that must not outlive the ``pulumi up`` that started them, named so that a reused pid is never mistaken.

Pulumi starts each plugin (the language host, the Python dynamic provider) in a process group of its own, so a
``pulumi up`` killed with SIGKILL takes none of them with it: the provider, and the training run or endpoint server it
was starting, would go on unobserved. Three pieces close that gap:

- the provider watches its engine (``watch_engine``): Pulumi passes the engine's gRPC address as the plugin's
  argument, and Pulumi's own plugins poll it the same way (``rpcutil.Healthcheck``, every 5 minutes). tuneform polls
  it every second; when nothing listens there any more, the provider stops the children it is still waiting on
  (``track``) and exits;
- a child of the provider exits when its parent does (``exit_with_parent``), should the provider itself be killed;
- a process is recorded as ``ProcessRef`` (pid and start time), so a later run can tell a live owner from a dead
  one whose pid was reused, and never signals a stranger.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ENGINE_POLL_S",
    "ProcessRef",
    "answers",
    "engine_address",
    "exit_with_parent",
    "stop",
    "track",
    "untrack",
    "watch_engine",
]

ENGINE_POLL_S = 1.0
"""How often the provider checks that its engine still listens: a refused connection is definite, so one is enough."""


@dataclass(frozen=True)
class ProcessRef:
    """A process as (pid, start time): the start time tells a reused pid apart."""

    pid: int
    started: int = 0
    """Start time in clock ticks since boot (``/proc/<pid>/stat`` field 22); 0 where there is no procfs."""

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        """The process ``pid`` as it is now, or ``None`` when there is none (or only its zombie)."""
        fields = _stat(pid)
        if fields is None:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
            return cls(pid)
        if fields[0] == "Z":
            return None
        return cls(pid, int(fields[19]))

    @classmethod
    def current(cls) -> ProcessRef:
        return cls.of(os.getpid()) or cls(os.getpid())

    def alive(self) -> bool:
        """The same process still runs (not a zombie, not another program under a reused pid)."""
        now = ProcessRef.of(self.pid) if self.pid > 0 else None
        return now is not None and (not self.started or not now.started or now.started == self.started)

    def runs(self, *markers: str | os.PathLike[str]) -> bool:
        """Alive, and its command line mentions every one of ``markers`` (where it can be read)."""
        if not self.alive():
            return False
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return not Path("/proc/self").exists()  # no procfs (macOS): trust the pid, as ``of`` does
        return all(os.fsencode(marker) in cmdline for marker in markers)


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or ``None``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def answers(address: str, timeout_s: float = 1.0) -> bool:
    """Whether something listens at ``host:port``.

    Only a refused or unroutable connection counts as no: a connect that times out means a listener too busy to
    accept, which is not a gone one.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return True
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (ConnectionRefusedError, ConnectionResetError):
        return False
    except OSError as error:
        return isinstance(error, TimeoutError)


def engine_address() -> str | None:
    """The engine's address when this process is Pulumi's Python dynamic provider (``python -m pulumi.dynamic ADDR``).

    ``None`` anywhere else (tests calling a provider in process, the program, a training child).
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "DynamicResourceProviderServicer", None) is None:
        return None
    args = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    return args[0] if args and ":" in args[0] else None


# ---- children the provider waits on --------------------------------------------------------------------------

_tracked: dict[int, tuple[subprocess.Popen[Any], str]] = {}
_tracked_lock = threading.Lock()
_watching: set[str] = set()


def track(child: subprocess.Popen[Any], what: str) -> None:
    """Stop ``child`` (``what`` names it for people) if the engine goes away while this process waits on it."""
    with _tracked_lock:
        _tracked[child.pid] = (child, what)


def untrack(child: subprocess.Popen[Any]) -> None:
    """``child`` ended, or now lives on its own (a started endpoint server outlives ``pulumi up`` by design)."""
    with _tracked_lock:
        _tracked.pop(child.pid, None)


def stop(pid: int, *, group: bool = True, grace_s: float = 10.0) -> None:
    """SIGTERM (and SIGCONT, in case it was stopped), then SIGKILL after ``grace_s``; waits until it is gone.

    Args:
        pid: The process, or with ``group`` the leader of its own process group (``start_new_session=True``).
        group: Signal the whole group, so anything the process started goes too.
        grace_s: Seconds between SIGTERM and SIGKILL.
    """
    ref = ProcessRef.of(pid)
    if ref is None:
        return

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    send(signal.SIGTERM)
    send(signal.SIGCONT)
    deadline = time.monotonic() + grace_s
    # A zombie counts as gone (ProcessRef.of): its exit status is left for the Popen that started it to read.
    while ref.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if ref.alive():
        send(signal.SIGKILL)
        deadline = time.monotonic() + grace_s  # bounded: a process that is not ours to kill is left, not waited on
        while ref.alive() and time.monotonic() < deadline:
            time.sleep(0.05)


def _engine_gone(address: str) -> None:
    with _tracked_lock:
        children = list(_tracked.values())
    for child, what in children:
        with contextlib.suppress(OSError):
            # Pulumi no longer reads this stream; the line is for a person watching the provider's output.
            print(
                f"tuneform: the Pulumi engine at {address} is gone; stopping {what} (pid {child.pid})", file=sys.stderr
            )
        stop(child.pid)
    # No one is left to answer: leaving now also releases every lock this process holds.
    os._exit(1)


def watch_engine(address: str | None = None, interval_s: float = ENGINE_POLL_S) -> None:
    """In the provider process: when the engine stops listening, stop the tracked children and exit.

    Args:
        address: The engine's ``host:port``; default ``engine_address()``. Nothing is watched without one.
        interval_s: Seconds between checks.
    """
    address = address or engine_address()
    if not address:
        return
    with _tracked_lock:
        if address in _watching:
            return
        _watching.add(address)

    def loop() -> None:
        while answers(address):
            time.sleep(interval_s)
        _engine_gone(address)

    threading.Thread(target=loop, name="tuneform-engine-watch", daemon=True).start()


def exit_with_parent(interval_s: float = ENGINE_POLL_S) -> None:
    """In a child process: exit as soon as the parent that started it is gone (this process is reparented)."""
    parent = os.getppid()

    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=loop, name="tuneform-parent-watch", daemon=True).start()
