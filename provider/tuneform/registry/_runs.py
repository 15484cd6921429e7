"""The run ledger: tuning runs started and not finished, each claimed by an ``flock`` the kernel drops on death.

``runs/<name>/<spec_hash>/run.json`` says who started a run and how often; ``run.lock`` beside it is the claim. A run
whose process was killed is found again by the next start, which resumes from the checkpoints in the same directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tuneform.processes import ProcessRef
from tuneform.registry._files import RegistryError, _check_name, _check_spec_hash, _now, _read_json, _write_json


class RunBusyError(RegistryError):
    """Another process holds the same tuning run; ``record`` says who started it (``None`` if it wrote none yet)."""

    def __init__(self, message: str, record: RunRecord | None) -> None:
        super().__init__(message)
        self.record = record


@dataclass(frozen=True)
class RunRecord:
    """An entry of the run ledger: a tuning run that started and has not been finished (or failed)."""

    model: str
    spec_hash: str
    run_dir: Path
    state: str
    """``running`` or ``failed``; finished runs leave the ledger."""
    pid: int
    attempts: int
    """How many times the run was started; above 1 means it resumed."""
    started_at: str
    interrupted: bool
    """``running`` in the ledger but no process holds it: the process was killed, the next start resumes it."""
    pid_started: int = 0
    """Start time of ``pid`` (``tuneform.processes.ProcessRef.started``): tells a reused pid apart."""
    engine: str = ""
    """Address of the Pulumi engine the owner served (empty outside Pulumi): gone means the owner is orphaned."""
    trainer_pid: int = 0
    """The training child the owner started (it holds the run's lock too), 0 before there is one."""
    trainer_started: int = 0

    @property
    def owner(self) -> ProcessRef:
        return ProcessRef(self.pid, self.pid_started)

    @property
    def trainer(self) -> ProcessRef | None:
        return ProcessRef(self.trainer_pid, self.trainer_started) if self.trainer_pid else None


def _claim(lock_path: Path) -> int | None:
    """An open descriptor holding ``lock_path``'s ``flock``, or ``None`` while another holds it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        # The holder removed the run directory (it finished) between our open and our lock: lock the new file.
        os.close(fd)
        return _claim(lock_path)
    return fd


def _lock_is_free(lock_path: Path) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the probe's lock, if it got one
    return True


def _update_run(run_dir: Path, **changes: object) -> None:
    """Rewrites ``run_dir/run.json`` with ``changes`` applied; the caller holds the registry's write lock."""
    path = run_dir / "run.json"
    data = _read_json(path)
    data.update(changes)
    _write_json(path, data)


class RunLedger:
    """The run ledger's half of ``Registry``, which provides its ``root``, write lock and this process's claims."""

    root: Path
    _run_locks: dict[tuple[str, str], int]

    def locked(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def _run_dir(self, model: str, spec_hash: str) -> Path:
        return self.root / "runs" / _check_name(model) / _check_spec_hash(spec_hash)

    def start_run(self, model: str, spec_hash: str, *, engine: str = "", wait_s: float = 0.0) -> Path:
        """Enters a tuning run in the ledger and claims it for this process until ``finish_run``.

        The run directory is stable per ``(model, spec_hash)``: a run whose process was killed is found again by
        the next start, which returns the same directory so the trainer resumes from its checkpoints. The claim is
        an ``flock`` the kernel drops when the process dies, so a killed run never blocks its successor; a training
        child given the claim (``run_lock_fd``) holds it too, so one run directory is never trained twice at once.

        Args:
            model: The model name.
            spec_hash: Identity of the run.
            engine: The Pulumi engine address this process serves, recorded so that a successor can tell an owner
                whose ``pulumi up`` is gone from one still running.
            wait_s: How long to wait for another holder to let go.

        Returns:
            The run directory (for checkpoints and the training log).

        Raises:
            RunBusyError: Another process still holds the run after ``wait_s``; ``record`` says who started it.
        """
        run_dir = self._run_dir(model, spec_hash)
        key = (model, spec_hash)
        deadline = time.monotonic() + wait_s
        while True:
            with self.locked():
                run_dir.mkdir(parents=True, exist_ok=True)
                fd = self._run_locks.get(key)
                if fd is None:
                    fd = _claim(run_dir / "run.lock")
                if fd is not None:
                    self._run_locks[key] = fd
                    self._enter_run(run_dir, model, spec_hash, engine)
                    return run_dir
                owner = self._read_run(run_dir)
            if time.monotonic() >= deadline:
                raise RunBusyError(
                    f"{model}: the tuning run {spec_hash[:12]} is already in progress in process "
                    f"{owner.pid if owner else '?'}; wait for it to finish (another `pulumi up` is running it).",
                    owner,
                )
            time.sleep(min(0.2, wait_s))

    def _enter_run(self, run_dir: Path, model: str, spec_hash: str, engine: str) -> None:
        me = ProcessRef.current()
        previous = self._read_run(run_dir)
        _write_json(
            run_dir / "run.json",
            {
                "model": model,
                "spec_hash": spec_hash,
                "state": "running",
                "pid": me.pid,
                "pid_started": me.started,
                "engine": engine,
                "attempts": (previous.attempts if previous else 0) + 1,
                "started_at": previous.started_at if previous else _now(),
            },
        )

    def run_lock_fd(self, model: str, spec_hash: str) -> int:
        """This process's claim on a run, as an open descriptor to hand to a child (``subprocess.Popen(pass_fds=)``).

        Raises:
            RegistryError: This process has not claimed the run (``start_run``).
        """
        fd = self._run_locks.get((model, spec_hash))
        if fd is None:
            raise RegistryError(f"{model}: run {spec_hash[:12]} is not claimed by this process; call start_run first")
        return fd

    def record_trainer(self, model: str, spec_hash: str, pid: int) -> None:
        """Notes the training child that holds a run with its owner, so a successor can stop it if the owner died.

        Args:
            model: The model name.
            spec_hash: Identity of the run.
            pid: The child's process id.
        """
        run_dir = self._run_dir(model, spec_hash)
        child = ProcessRef.of(pid) or ProcessRef(pid)
        with self.locked():
            _update_run(run_dir, trainer_pid=child.pid, trainer_started=child.started)

    def finish_run(self, model: str, spec_hash: str, *, succeeded: bool = True) -> None:
        """Takes a run out of the ledger (success) or marks it failed (its checkpoints stay for a retry).

        Args:
            model: The model name.
            spec_hash: Identity of the run.
            succeeded: True once the version is recorded: the run directory and its checkpoints are deleted.
        """
        run_dir = self._run_dir(model, spec_hash)
        with self.locked():
            if succeeded:
                shutil.rmtree(run_dir, ignore_errors=True)
            elif (run_dir / "run.json").is_file():
                _update_run(run_dir, state="failed")
            fd = self._run_locks.pop((model, spec_hash), None)
            if fd is not None:
                os.close(fd)

    def _read_run(self, run_dir: Path) -> RunRecord | None:
        path = run_dir / "run.json"
        if not path.is_file():
            return None
        data = _read_json(path)
        held_here = (data["model"], data["spec_hash"]) in self._run_locks
        interrupted = data["state"] == "running" and not held_here and _lock_is_free(run_dir / "run.lock")
        return RunRecord(run_dir=run_dir, interrupted=interrupted, **data)

    def runs(self, model: str | None = None) -> list[RunRecord]:
        """Lists the run ledger.

        Args:
            model: Only this model's runs; all when ``None``.

        Returns:
            The runs that were started and not finished, including interrupted ones.
        """
        base = self.root / "runs"
        folders = [base / _check_name(model)] if model else sorted(base.iterdir()) if base.is_dir() else []
        records = []
        for folder in folders:
            if folder.is_dir():
                for run_dir in sorted(folder.iterdir()):
                    record = self._read_run(run_dir)
                    if record is not None:
                        records.append(record)
        return records
