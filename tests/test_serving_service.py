"""The endpoint as a background service: real processes, real ports, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import openai
import pytest

import test_serving_support as support
from tuneform.serving import (
    ServiceError,
    ServiceInfo,
    generate_api_key,
    info_from_config,
    parse_config,
    start,
    status,
    stop,
    write_config,
)

pytestmark = pytest.mark.timeout(240)
TESTS_DIR = str(Path(__file__).resolve().parent)


@pytest.fixture(autouse=True)
def _server_can_import_the_test_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    # The server process imports its inference module by name; here that is tests/test_serving_support.py.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")])))


def _write(tmp: Path, *, port: int | None = None, inference: str = "test_serving_support") -> tuple[Path, str]:
    tiny = support.cached_tiny_models()
    key = generate_api_key()
    config = parse_config(
        {
            "name": "ticket-router",
            "host": "127.0.0.1",
            "port": port or support.free_port(),
            "api_key": key,
            "base_model_dir": str(tiny["base"]),
            "versions": {"1": {"artifact_dir": str(tiny["adapter"]), "kind": "adapter"}},
            "traffic": {"1": 100},
            "log_path": str(tmp / "logs" / "ticket-router.log"),
            "inference": inference,
            "max_new_tokens": 4,
            "load_timeout_s": 180,
        }
    )
    path = tmp / "endpoint.json"
    write_config(path, config)
    return path, key


def _ask(info: ServiceInfo, key: str) -> str:
    client = openai.OpenAI(base_url=f"{info.url}/v1", api_key=key, max_retries=0)
    completion = client.chat.completions.create(
        model="ticket-router", messages=[{"role": "user", "content": "VPN down"}], max_tokens=3
    )
    assert completion.model == "ticket-router@1" and completion.usage is not None
    assert completion.usage.completion_tokens >= 1
    return completion.choices[0].message.content or ""


def test_start_status_stop_in_process(tmp_path: Path) -> None:
    config_path, key = _write(tmp_path)
    assert oct(config_path.stat().st_mode & 0o777) == "0o600"  # the file holds the key
    info = start(config_path)
    try:
        assert status(info).healthy
        assert os.getsid(info.pid) == info.pid  # its own session: signals to Pulumi's process group miss it
        assert Path(info.pid_path).read_text().strip() == str(info.pid)
        assert info_from_config(config_path) == info
        info.save(tmp_path / "service.json")
        assert ServiceInfo.load(tmp_path / "service.json") == info
        _ask(info, key)
        with pytest.raises(ServiceError, match=r"already used by the tuneform endpoint 'ticket-router' \(pid \d+\)"):
            start(config_path)
    finally:
        stop(info)
    gone = status(info)
    assert not gone.alive and not gone.healthy and "not running" in gone.detail
    assert not Path(info.pid_path).exists() and info_from_config(config_path) is None
    log = Path(info.log_path).read_text()
    assert "ready: ticket-router" in log and "Shutting down" in log  # SIGTERM gave a clean shutdown
    stop(info)  # idempotent


def test_the_log_never_holds_a_key_and_is_its_owners_only(tmp_path: Path) -> None:
    config_path, key = _write(tmp_path)
    log_path = tmp_path / "logs" / "ticket-router.log"
    log_path.parent.mkdir(parents=True)
    log_path.write_text("an earlier log\n")
    log_path.chmod(0o644)  # as a version before this one left it
    info = start(config_path)
    try:
        body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 1}}
        url = f"{info.url}/v1beta/models/ticket-router:generateContent"
        assert httpx.post(url, params={"key": key, "alt": "json"}, json=body).status_code == 200
        assert httpx.post(url, params={"key": "a-wrong-key-123"}, json=body).status_code == 401
        assert httpx.post(url, content=b'{"contents": "\\ud800"}', params={"key": key}).status_code == 400
    finally:
        stop(info)
    log = log_path.read_text()
    assert key not in log and "a-wrong-key-123" not in log
    assert "POST /v1beta/models/ticket-router:generateContent?key=***&alt=json 200" in log
    assert "Traceback" not in log  # a hostile body is the client's mistake, not the server's
    assert log_path.stat().st_mode & 0o777 == 0o600


def test_outlives_its_caller_and_a_kill_is_noticed(tmp_path: Path) -> None:
    config_path, key = _write(tmp_path)
    caller = textwrap.dedent(
        f"""
        import json
        from tuneform.serving import start
        print(json.dumps(start({str(config_path)!r}).to_dict()))
        """
    )
    done = subprocess.run([sys.executable, "-c", caller], capture_output=True, text=True, timeout=200, check=True)
    info = ServiceInfo(**json.loads(done.stdout.strip().splitlines()[-1]))
    try:
        # The `pulumi up` that started it has exited; the server still answers.
        assert status(info).healthy
        _ask(info, key)
        os.kill(info.pid, signal.SIGKILL)
        for _ in range(50):
            if not status(info).alive:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        dead = status(info)
        assert not dead.alive and not dead.healthy  # what `pulumi refresh` relies on
    finally:
        stop(info)
    assert not Path(info.pid_path).exists()


def test_refuses_a_port_taken_by_another_program(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        config_path, _ = _write(tmp_path, port=other.getsockname()[1])
        with pytest.raises(ServiceError, match="is already used by another program; stop that program or choose"):
            start(config_path)
    assert not (tmp_path / "logs" / "ticket-router.pid").exists()


def test_a_server_that_cannot_load_fails_start_with_the_log_tail(tmp_path: Path) -> None:
    config_path, _ = _write(tmp_path, inference="no_such_inference_module")
    with pytest.raises(ServiceError) as caught:
        start(config_path, timeout_s=60)
    message = str(caught.value)
    assert "ticket-router: the endpoint server" in message
    assert "No module named 'no_such_inference_module'" in message  # from the log's tail
    assert not (tmp_path / "logs" / "ticket-router.pid").exists()


def test_the_server_command_lists_config_problems_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "endpoint.json"
    bad.write_text(json.dumps({"name": "m", "host": "0.0.0.0", "port": 0, "traffic": {"1": 100}}))
    done = subprocess.run(
        [sys.executable, "-m", "tuneform.serving", "--config", str(bad)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"6 problems in {bad}:"
    assert f"{bad}: port: expected an integer from 1 to 65535, got 0." in lines


def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    config_path, _ = _write(tmp_path)
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        info = ServiceInfo(
            pid=stranger.pid,
            port=1,
            url="http://127.0.0.1:1",
            log_path=str(tmp_path / "x.log"),
            pid_path=str(tmp_path / "x.pid"),
            config_path=str(config_path),
            name="ticket-router",
        )
        assert not status(info).alive
        stop(info, grace_s=0.5)
        assert stranger.poll() is None  # the unrelated process that now owns the pid is untouched
    finally:
        stranger.kill()
        stranger.wait()


def test_a_reload_serves_the_new_versions_without_a_gap(tmp_path: Path) -> None:
    import threading

    from tuneform.serving import load_config, reload

    config_path, key = _write(tmp_path)
    info = start(config_path)
    codes: list[int] = []
    done = threading.Event()

    def watch() -> None:  # what a client sees while the endpoint changes its versions
        while not done.is_set():
            codes.append(httpx.get(f"{info.url}/health", timeout=10).status_code)

    try:
        tiny = support.cached_tiny_models()
        data = json.loads(config_path.read_text())
        data["versions"]["2"] = {"artifact_dir": str(tiny["full"]), "kind": "full"}
        data["traffic"] = {"1": 50, "2": 50}
        write_config(config_path, parse_config(data))
        watcher = threading.Thread(target=watch)
        watcher.start()
        assert reload(info, load_config(config_path), timeout_s=120) == info
        done.set()
        watcher.join()
        assert codes and set(codes) == {200}, codes
        health = httpx.get(f"{info.url}/health").json()
        assert (health["pid"], health["versions"], health["traffic"]) == (info.pid, [1, 2], {"1": 50, "2": 50})
        client = openai.OpenAI(base_url=f"{info.url}/v1", api_key=key, max_retries=0)
        answer = client.chat.completions.create(model="ticket-router@2", messages=[{"role": "user", "content": "hi"}])
        assert answer.model == "ticket-router@2"

        # A version that cannot load: the old set keeps serving, and the reload says why.
        data["versions"]["3"] = {"artifact_dir": str(tmp_path / "missing"), "kind": "adapter"}
        data["traffic"] = {"3": 100}
        write_config(config_path, parse_config(data))
        with pytest.raises(ServiceError, match="could not load the new versions and keeps serving the old ones"):
            reload(info, load_config(config_path), timeout_s=120)
        assert httpx.get(f"{info.url}/health").json()["versions"] == [1, 2]
        pinned = client.chat.completions.create(model="ticket-router@1", messages=[{"role": "user", "content": "hi"}])
        assert pinned.model == "ticket-router@1"  # still served (the split is 50/50, so the name is pinned here)
    finally:
        done.set()
        stop(info)
