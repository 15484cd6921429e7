"""The endpoint server as a background service: start it so it outlives the caller, check it, stop it.

``pulumi up`` runs the provider in a short-lived process, so the server is its own session leader (no signal meant
for Pulumi's process group reaches it), writes to a log file and leaves a pid file. ``ServiceInfo`` is plain data
that a Pulumi resource keeps in its state; ``status`` checks the process *and* the health route, so a killed or
hung server is noticed by ``pulumi refresh``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneform import processes
from tuneform.serving.config import ServerConfig, load_config

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Servers started by this process: polled so an exited child is reaped and not mistaken for a live zombie."""


class ServiceError(RuntimeError):
    """The endpoint server could not be started (the message carries the reason and the log's tail)."""


@dataclass(frozen=True)
class ServiceInfo:
    """A started endpoint server; plain data, kept in Pulumi state."""

    pid: int
    port: int
    url: str
    """``http://<host>:<port>``; the OpenAI base URL is ``<url>/v1``, the Gemini one ``<url>``."""
    log_path: str
    pid_path: str
    config_path: str
    name: str

    def to_dict(self) -> dict[str, Any]:
        """Renders the info as a JSON-ready dict (``ServiceInfo(**d)`` reads it back).

        Returns:
            The fields by name.
        """
        return dict(self.__dict__)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the info as JSON, atomically.

        Args:
            path: Destination file.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ServiceInfo:
        """Reads what ``save`` wrote.

        Args:
            path: The JSON file.

        Returns:
            The info.
        """
        return cls(**json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class ServiceStatus:
    """What ``status`` found."""

    alive: bool
    """The server's process exists (and is not a zombie)."""
    healthy: bool
    """Its ``/health`` answered 200 for the same pid."""
    detail: str
    """One line for people: why it is not healthy."""


def _tail(path: str, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _health(host: str, port: int, timeout_s: float = 2.0) -> tuple[int, dict[str, Any]]:
    """Returns ``(status, body)`` of ``GET /health``, or ``(0, {})`` when nothing answers."""
    url = f"http://{_url_host(host)}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"{}")
        except ValueError:
            return err.code, {}
    except (OSError, ValueError):
        return 0, {}


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def endpoint_on(host: str, port: int) -> str | None:
    """The name of the tuneform endpoint answering on ``host:port``, or ``None`` (nothing, or another program)."""
    code, body = _health(host, port)
    name = body.get("name") if code else None
    return str(name) if isinstance(name, str) else None


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # uvicorn binds with SO_REUSEADDR too; without it, connections in TIME_WAIT would look like a taken port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _is_server_process(pid: int, config_path: str) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    # Not a zombie, and running this module with this configuration: a reused pid belongs to some other program (or
    # another endpoint's server), never signal it. Without procfs (macOS) the pid is trusted, and the health check
    # confirms it is ours.
    return processes.ProcessRef(pid).runs("tuneform.serving", config_path)


def _write_pid(path: str, pid: int) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, target)


def _info(config: ServerConfig, config_path: str | os.PathLike[str], pid: int) -> ServiceInfo:
    """The service record of the server ``pid`` running ``config`` (read from ``config_path``)."""
    return ServiceInfo(
        pid=pid,
        port=config.port,
        url=f"http://{_url_host(config.host)}:{config.port}",
        log_path=config.log_path,
        pid_path=config.pid_path,
        config_path=str(Path(config_path).resolve()),
        name=config.name,
    )


def start(
    config_path: str | os.PathLike[str], *, timeout_s: float | None = None, replace: bool = False
) -> ServiceInfo:
    """Starts the endpoint server in the background and waits until it is healthy.

    Args:
        config_path: The server's JSON configuration (see ``tuneform.serving.config``).
        timeout_s: How long to wait for ``/health`` to return 200; defaults to the config's ``load_timeout_s``.
        replace: First stop a server already running this configuration file (its pid file or ``/health`` names
            it): the caller has just rewritten the file and stopped the server it recorded, so any other is one a
            killed ``pulumi up`` left unrecorded. Without it such a server makes ``start`` refuse, naming it.

    Returns:
        The running server.

    Raises:
        ServiceError: The port is taken, the server exited, failed to load, or did not get healthy in time (the
            server is stopped then; the message ends with the log's last lines).
    """
    config = load_config(config_path)
    wait_s = config.load_timeout_s if timeout_s is None else timeout_s
    if replace:
        _stop_unrecorded(config, config_path)
    if not port_free(config.host, config.port):
        code, body = _health(config.host, config.port)
        if code and body.get("name") == config.name:
            owner = f"the tuneform endpoint {config.name!r} (pid {body.get('pid')})"
            fix = "stop it first (`pulumi destroy`, or tuneform.serving.service.stop) or use another port."
        else:
            owner = "another program"
            fix = "stop that program or choose a free port for the endpoint."
        raise ServiceError(f"{config.name}: port {config.port} on {config.host} is already used by {owner}; {fix}")
    Path(config.log_path).parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The log is its owner's only: it records requests (never keys) and the models' paths.
    fd = os.open(config.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)  # a log left by an earlier version may be world-readable
    with os.fdopen(fd, "ab") as log:
        log.write(f"--- starting {config.name} on {config.host}:{config.port} at {time.ctime()}\n".encode())
        log.flush()
        child = subprocess.Popen(
            [sys.executable, "-m", "tuneform.serving", "--config", str(Path(config_path).resolve())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    _CHILDREN[child.pid] = child
    # Until it is healthy and returned, nothing records this server: if `pulumi up` goes now, the provider stops it.
    processes.track(child, f"the starting endpoint server of {config.name}")
    _write_pid(config.pid_path, child.pid)
    info = _info(config, config_path, child.pid)
    try:
        return _wait_healthy(child, config, info, wait_s)
    finally:
        processes.untrack(child)


def _wait_healthy(
    child: subprocess.Popen[bytes], config: ServerConfig, info: ServiceInfo, wait_s: float
) -> ServiceInfo:
    deadline = time.monotonic() + wait_s
    while True:
        exit_code = child.poll()
        if exit_code is not None:
            Path(config.pid_path).unlink(missing_ok=True)
            raise ServiceError(
                f"{config.name}: the endpoint server exited with status {exit_code} while starting. "
                f"Last lines of {config.log_path}:\n{_tail(config.log_path)}"
            )
        code, body = _health(config.host, config.port, timeout_s=1.0)
        if code == 200 and body.get("pid") == child.pid:
            return info
        if code == 500 or time.monotonic() > deadline:
            stop(info)
            why = f"failed to load ({body.get('error')})" if code == 500 else f"was not healthy after {wait_s:g}s"
            raise ServiceError(
                f"{config.name}: the endpoint server {why}. Last lines of {config.log_path}:\n{_tail(config.log_path)}"
            )
        time.sleep(0.2)


def status(info: ServiceInfo) -> ServiceStatus:
    """Checks a started server: its process and its health route.

    Args:
        info: What ``start`` returned.

    Returns:
        Whether it is alive and healthy.
    """
    if not _is_server_process(info.pid, info.config_path):
        return ServiceStatus(False, False, f"process {info.pid} is not running; see {info.log_path}")
    host, port = info.url.removeprefix("http://").rsplit(":", 1)
    code, body = _health(host.strip("[]"), int(port))
    if code == 200 and body.get("pid") == info.pid and body.get("name") == info.name:
        return ServiceStatus(True, True, "healthy")
    if code == 0:
        return ServiceStatus(True, False, f"process {info.pid} runs but {info.url}/health does not answer")
    return ServiceStatus(True, False, f"{info.url}/health answered {code} {body.get('status', '')}".strip())


def reload(info: ServiceInfo, config: ServerConfig, *, timeout_s: float | None = None) -> ServiceInfo:
    """Has a running server serve its rewritten configuration without a gap (SIGHUP; see ``Endpoint.reload``).

    Args:
        info: The running server (same name, host and port as ``config``).
        config: What its configuration file now holds.
        timeout_s: How long to wait; defaults to the config's ``load_timeout_s``.

    Returns:
        ``info``: the same process serves on.

    Raises:
        ServiceError: The server is gone, could not load the new versions (it keeps serving the old ones), or did
            not finish in time.
    """
    from tuneform.serving.config import revision

    wanted = revision(config)
    host, port = info.url.removeprefix("http://").rsplit(":", 1)
    os.kill(info.pid, signal.SIGHUP)
    deadline = time.monotonic() + (config.load_timeout_s if timeout_s is None else timeout_s)
    while time.monotonic() < deadline:
        code, body = _health(host.strip("[]"), int(port))
        if code == 200 and body.get("revision") == wanted and body.get("pid") == info.pid:
            return info
        failure = body.get("reloadFailure") or {}
        if failure and failure.get("revision") in (wanted, ""):
            raise ServiceError(
                f"{config.name}: the endpoint could not load the new versions and keeps serving the old ones: "
                f"{failure.get('error')}. Last lines of {info.log_path}:\n{_tail(info.log_path)}"
            )
        if not _is_server_process(info.pid, info.config_path):
            raise ServiceError(
                f"{config.name}: the endpoint server exited. Last lines of {info.log_path}:\n{_tail(info.log_path)}"
            )
        time.sleep(0.2)
    raise ServiceError(
        f"{config.name}: the endpoint did not serve the new versions within the load timeout; see {info.log_path}"
    )


def stop(info: ServiceInfo, *, grace_s: float = 10.0) -> None:
    """Stops a server: SIGTERM, then SIGKILL after ``grace_s``. Stopping a stopped server is fine.

    Args:
        info: What ``start`` returned.
        grace_s: Seconds to wait for a clean shutdown before killing.
    """
    # The pid file may name another server of the same configuration: one a killed `pulumi up` started after this
    # one was recorded. It goes too, or it would hold the port.
    for pid in dict.fromkeys((info.pid, _read_pid(info.pid_path))):
        if pid is not None:
            _stop_pid(pid, info.config_path, grace_s)
    Path(info.pid_path).unlink(missing_ok=True)


def _stop_pid(pid: int, config_path: str, grace_s: float) -> None:
    if _is_server_process(pid, config_path):
        with contextlib.suppress(ProcessLookupError):
            # The server leads its own session: signalling the group also reaches any worker it spawned.
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _is_server_process(pid, config_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is_server_process(pid, config_path):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while _is_server_process(pid, config_path):
                time.sleep(0.05)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait()


def _read_pid(pid_path: str) -> int | None:
    try:
        return int(Path(pid_path).read_text().strip())
    except (OSError, ValueError):
        return None


def _stop_unrecorded(config: ServerConfig, config_path: str | os.PathLike[str]) -> None:
    """Stop a server of this configuration that nothing records: a `pulumi up` was killed while it started it.

    Its pid file names it (or, without one, its ``/health`` does); it runs this very configuration file, which the
    caller is about to replace, so it can only be a leftover. A server of another checkout or program is left alone
    (and ``start`` then says the port is taken).
    """
    resolved = str(Path(config_path).resolve())
    candidates = [_read_pid(config.pid_path)]
    if not port_free(config.host, config.port):
        _, body = _health(config.host, config.port)
        if body.get("name") == config.name and isinstance(body.get("pid"), int):
            candidates.append(body["pid"])
    for pid in dict.fromkeys(candidates):
        if pid is not None and _is_server_process(pid, resolved):
            print(
                f"{config.name}: stopping the endpoint server (pid {pid}) that an interrupted `pulumi up` left "
                f"unrecorded on port {config.port}",
                file=sys.stderr,
                flush=True,
            )
            _stop_pid(pid, resolved, 10.0)


def info_from_config(config_path: str | os.PathLike[str]) -> ServiceInfo | None:
    """Finds the server a configuration started, from its pid file (e.g. after the Pulumi state was lost).

    Args:
        config_path: The server's configuration file.

    Returns:
        The server's info if its pid file names a running server, else ``None``.
    """
    config: ServerConfig = load_config(config_path)
    pid = _read_pid(config.pid_path)
    if pid is None or not _is_server_process(pid, str(Path(config_path).resolve())):
        return None
    return _info(config, config_path, pid)
