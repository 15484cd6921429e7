"""The live smoke kit (``make vertex-smoke``) run end to end against the emulators, as CI runs it.

The kit drives the real Pulumi CLI in a throwaway project and stack, then calls the tuned endpoint with google-genai;
here the Vertex emulator and fake-gcs-server stand in for Google, so every step of the kit is known to work before a
user points it at a project that costs money.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulators.vertex_api import VertexEmulator

pytestmark = [pytest.mark.cli, pytest.mark.emulator, pytest.mark.timeout(600)]

BUCKET = "tuneform-smoke-test"  # created by the `gcs` fixture (conftest.py)


def test_smoke_kit_passes_against_the_emulators_and_leaves_nothing(pulumi_engine: Path, gcs, tmp_path: Path) -> None:
    with VertexEmulator(queued_seconds=0.2, running_seconds=1.0) as emu:
        report_file = tmp_path / "report.md"
        env = {**os.environ, "PATH": f"{pulumi_engine}{os.pathsep}{os.environ['PATH']}"}
        result = subprocess.run(
            [sys.executable, "-m", "tuneform.smoke", "--project", "test-project", "--region", "us-central1",
             "--bucket", BUCKET, "--api-endpoints", json.dumps(emu.endpoints), "--storage-endpoint", gcs.url,
             "--emulator-token", "--poll", "0.1", "0.5", "--report", str(report_file)],
            env=env, capture_output=True, text=True, timeout=540, check=False,
        )  # fmt: skip
        report = result.stdout
        assert result.returncode == 0, report + result.stderr
        assert report == report_file.read_text()
        assert report.startswith("## tuneform Vertex smoke test: passed")
        for step in ("preview", "up", "google-genai generateContent", "destroy"):
            assert f"| {step} | ok |" in report
        assert "A: emulated answer from tuneform-smoke" in report
        assert emu.creates == 1
        (job,) = emu.created_jobs()
        hyper = job["supervisedTuningSpec"]["hyperParameters"]
        assert job["baseModel"] == "gemini-3.1-flash-lite"
        assert hyper == {"epochCount": "1", "adapterSize": "ADAPTER_SIZE_ONE"}
        # The request reached the multi-region host the tuned 3.x model is served from.
        assert [host for method, path, host, _ in emu.requests if path.endswith(":generateContent")] == ["us"]
        # retain: false, so destroy took the tuned model and its endpoint with it.
        assert emu.live_models() == [] and emu.live_endpoints() == []


def test_an_up_that_runs_too_long_leaves_no_job_running(
    pulumi_engine: Path, gcs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job queued behind the project's quota can outlast `pulumi up`'s own time limit: the kit then stopped the
    # engine, lost its report and left the job billing. Here the limit is 30 s and the job runs 120 s.
    from tuneform import smoke

    monkeypatch.setenv("PATH", f"{pulumi_engine}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(smoke, "ENGINE_GRACE_S", -30.0)
    with VertexEmulator(queued_seconds=0.2, running_seconds=120.0) as emu:
        report_file = tmp_path / "report.md"
        code = smoke.main(
            ["--project", "test-project", "--region", "us-central1", "--bucket", BUCKET, "--deadline", "60",
             "--api-endpoints", json.dumps(emu.endpoints), "--storage-endpoint", gcs.url, "--emulator-token",
             "--poll", "0.1", "0.5", "--report", str(report_file)]
        )  # fmt: skip
        report = report_file.read_text()
        assert code == 1
        assert "| up | failed |" in report and "ran past 30 s and was stopped; cancelled projects/" in report, report
        assert "| destroy | ok |" in report, report
        assert len(emu.received("POST", ":cancel")) == 1
