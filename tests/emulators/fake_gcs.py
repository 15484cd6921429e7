"""Launch fake-gcs-server (built by ``scripts/build_fake_gcs.sh``) on 127.0.0.1 for the duration of a test."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def binary() -> str:
    """Path of the fake-gcs-server binary: ``$TUNEFORM_FAKE_GCS`` or the build script's cached build."""
    explicit = os.environ.get("TUNEFORM_FAKE_GCS")
    if explicit:
        return explicit
    # The script prints the cached path at once when built; otherwise it builds (minutes, once per machine).
    done = subprocess.run([str(REPO / "scripts" / "build_fake_gcs.sh")], check=True, capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeGcs:
    """A fake-gcs-server process with an in-memory backend.

    Attributes:
        url: ``http://127.0.0.1:<port>``, for ``client_options={"api_endpoint": url}`` or ``STORAGE_EMULATOR_HOST``.
    """

    def __init__(self) -> None:
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> str:
        """Start the server on a free port and wait until it answers; returns its URL."""
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._proc = subprocess.Popen(
            [binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
             "-external-url", self.url, "-public-host", f"127.0.0.1:{port}", "-log-level", "warn"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
                    return self.url
            except (urllib.error.URLError, ConnectionError):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    self.stop()
                    raise RuntimeError(f"fake-gcs-server did not start on {self.url}: {err}") from None
                time.sleep(0.05)

    def create_bucket(self, name: str) -> None:
        """Create a bucket through the JSON API (as a project admin would, before tuneform runs)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.storage import Client

        client = Client(project="test-project", credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": self.url})  # fmt: skip
        client.create_bucket(name)

    def stop(self) -> None:
        """Terminate the server process (it keeps nothing: the backend is in memory)."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None

    def __enter__(self) -> FakeGcs:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
