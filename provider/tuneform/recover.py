"""One step out of an interrupted ``pulumi up``: ``make recover`` (``python -m tuneform.recover``).

A ``pulumi up`` that was killed (SIGKILL, a closed terminal, a CI runner torn down) leaves behind:

- the stack's **lock** (the file backend's ``.pulumi/locks/…``): every later ``up``, ``refresh`` and ``destroy``
  refuses to run until ``pulumi cancel`` removes it;
- **pending operations** in the state: "creating" entries for resources whose create was under way. ``pulumi up`` and
  a plain ``pulumi refresh`` keep them; only ``pulumi refresh --clear-pending-creates`` drops them. That is safe for
  tuneform's resources: their creates find what the interrupted run made (a run directory, a registered version, a
  labelled Vertex job) and adopt it instead of starting again;
- **processes** of the killed run. tuneform's provider leaves within a second, stopping its training run or starting
  server (``tuneform.processes``), but Pulumi's language host checks its engine only every 5 minutes.

``--check`` (``make up`` runs it first) says what is left and the one command that clears it, and exits 1. Without it,
the recovery: stop the leftovers, ``pulumi cancel``, ``pulumi refresh --clear-pending-creates``, ``pulumi up``.
A lock whose ``pulumi`` process still runs on this machine is never cancelled.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tuneform.processes import ProcessRef, answers
from tuneform.workspace import file_backend_dir, project_name

__all__ = ["Leftover", "StackLock", "leftovers", "main", "pending_operations", "stack_locks"]

RECOVER_COMMAND = "make recover"
"""What the messages tell a person to run (``python -m tuneform.recover`` outside the Makefile)."""


@dataclass(frozen=True)
class StackLock:
    """A lock file of the self-managed (file) backend: who took it, and whether that process still runs here."""

    path: Path
    pid: int
    username: str
    hostname: str
    timestamp: str

    @property
    def here(self) -> bool:
        return self.hostname == socket.gethostname()

    @property
    def running(self) -> bool:
        """The process that took the lock still runs on this machine (``False`` for another machine's lock)."""
        return self.here and ProcessRef(self.pid).runs("pulumi")

    def describe(self) -> str:
        return f"{self.username}@{self.hostname} (pid {self.pid}) at {self.timestamp}"


@dataclass(frozen=True)
class Leftover:
    """A process of a ``pulumi up`` that is gone."""

    pid: int
    what: str


def stack_locks(project_dir: Path, stack: str) -> list[StackLock] | None:
    """The stack's locks in a file backend (``PULUMI_BACKEND_URL=file://…``); ``None`` when they cannot be read here.

    Args:
        project_dir: The directory of ``Pulumi.yaml``.
        stack: The stack name.
    """
    backend = file_backend_dir(os.environ.get("PULUMI_BACKEND_URL", ""))
    if backend is None:
        return None
    root = backend / ".pulumi" / "locks"
    folders = [root / "organization" / project_name(project_dir) / stack, root / stack]  # project-scoped, legacy
    locks = []
    for path in sorted(p for folder in folders if folder.is_dir() for p in folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        locks.append(
            StackLock(
                path,
                int(data.get("pid", 0)),
                data.get("username", "?"),
                data.get("hostname", "?"),
                data.get("timestamp", "?"),
            )  # fmt: skip
        )
    return locks


def _pulumi(*args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pulumi", *args, "--non-interactive"], capture_output=capture, text=True, check=False)


def pending_operations(stack: str) -> list[tuple[str, str]]:
    """``(operation, resource name)`` of each pending operation in the stack's state (empty for a new stack)."""
    result = _pulumi("stack", "export", "--stack", stack, capture=True)
    if result.returncode != 0:
        return []
    deployment = json.loads(result.stdout).get("deployment") or {}
    return [
        (str(op.get("type")), str(op.get("resource", {}).get("urn", "?")).rsplit("::", 1)[-1])
        for op in deployment.get("pending_operations") or []
    ]


_ADDRESS = re.compile(r"^(127\.0\.0\.1|localhost|\[::1\]):\d+$")


def leftovers(project_dir: Path) -> list[Leftover]:
    """Processes of a ``pulumi up`` of this project whose engine is gone (Linux; elsewhere none are found).

    A Pulumi plugin is started with its engine's address as its argument and the project as its directory; when
    nothing listens at that address any more, the plugin serves no one. Training runs whose provider is gone are
    found in the run ledger.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    project = project_dir.resolve()
    found: list[Leftover] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            cwd = (entry / "cwd").resolve()
        except OSError:
            continue
        addresses = [a for a in argv[1:] if _ADDRESS.match(a)]
        is_plugin = any("pulumi-language-" in a or "pulumi-resource-" in a or a == "pulumi.dynamic" for a in argv)
        if is_plugin and addresses and cwd == project and not answers(addresses[-1]):
            found.append(Leftover(int(entry.name), f"{Path(argv[0]).name} of the engine at {addresses[-1]}"))
    found += _orphaned_trainers(project)
    return found


def _orphaned_trainers(project: Path) -> list[Leftover]:
    from tuneform.registry import Registry, RegistryError, registry_root

    root = registry_root(project)
    if not (root / "runs").is_dir():
        return []
    try:
        records = Registry(root).runs()
    except (RegistryError, OSError, ValueError, TypeError):
        return []
    return [
        Leftover(r.trainer.pid, f"the training run of {r.model} (its provider, pid {r.pid}, is gone)")
        for r in records
        if r.trainer is not None and not r.owner.alive() and r.trainer.runs("tuneform.training.run", r.run_dir)
    ]


def _hint(stack: str, locks: list[StackLock] | None, pending: list[tuple[str, str]]) -> str:
    lines = [f"The stack {stack!r} was left behind by an interrupted `pulumi up`:"]
    for lock in locks or []:
        lines.append(f"  - it is locked by {lock.describe()}, which no longer runs")
    for operation, name in pending:
        lines.append(f"  - {name}: {operation} (a pending operation that `pulumi up` and `pulumi refresh` keep)")
    lines.append(
        f"Run `{RECOVER_COMMAND}` (STACK={stack}): it stops what the interrupted run left running, removes the lock "
        "(`pulumi cancel`), drops the pending creates (`pulumi refresh --clear-pending-creates`; tuneform adopts what "
        "they had made) and runs `pulumi up`."
    )
    return "\n".join(lines)


def check(project_dir: Path, stack: str) -> int:
    """Exit status 1, with the way out, when the stack is locked or has pending operations; else 0."""
    locks = stack_locks(project_dir, stack)
    running = [lock for lock in locks or [] if lock.running]
    if running:
        print(
            f"The stack {stack!r} is locked by a `pulumi` command still running on this machine "
            f"({running[0].describe()}): wait for it to end. If it hangs, stop it and run `{RECOVER_COMMAND}`.",
            file=sys.stderr,
        )
        return 1
    pending = pending_operations(stack)
    if locks or pending:
        print(_hint(stack, locks, pending), file=sys.stderr)
        return 1
    return 0


def recover(project_dir: Path, stack: str, *, up: bool = True) -> int:
    """Clear what an interrupted ``pulumi up`` left and run ``pulumi up``; returns the exit status."""
    from tuneform import processes

    def say(line: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        print(f"[recover {stamp}] {line}", flush=True)

    locks = stack_locks(project_dir, stack)
    running = [lock for lock in locks or [] if lock.running]
    if running:
        say(
            f"the stack is locked by a `pulumi` command that still runs here ({running[0].describe()}): not touching "
            "it"
        )
        return 1
    for leftover in leftovers(project_dir):
        say(f"stopping {leftover.what} (pid {leftover.pid})")
        processes.stop(leftover.pid, group=False)
    if locks is None:
        say("the state backend is not a local directory: its lock cannot be checked here, so it is left alone")
    elif locks:
        say(f"removing the lock of the interrupted run ({locks[0].describe()}): pulumi cancel")
        if _pulumi("cancel", "--yes", "--stack", stack).returncode != 0:
            return 1
    pending = pending_operations(stack)
    flags = ["--clear-pending-creates"] if any(op == "creating" for op, _ in pending) else []
    say("refreshing the state" + (f", dropping {len(pending)} pending operation(s)" if pending else "")
        + f": pulumi refresh {' '.join(flags)}".rstrip())  # fmt: skip
    if _pulumi("refresh", "--yes", "--stack", stack, *flags).returncode != 0:
        say(
            "refresh failed; if it says the stack is locked by a run on another machine that is gone, run "
            f"`pulumi cancel --stack {stack}` and then `{RECOVER_COMMAND}` again"
        )
        return 1
    if not up:
        return 0
    say("pulumi up")
    return _pulumi("up", "--yes", "--stack", stack).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuneform.recover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default=os.environ.get("STACK", "local"))
    parser.add_argument("--check", action="store_true", help="only say whether the stack needs recovering (exit 1)")
    parser.add_argument("--no-up", action="store_true", help="recover the state but do not run `pulumi up`")
    args = parser.parse_args(argv)
    project_dir = Path.cwd()
    if args.check:
        return check(project_dir, args.stack)
    return recover(project_dir, args.stack, up=not args.no_up)


if __name__ == "__main__":
    sys.exit(main())
