"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pulumi_cli import PulumiCLI, engine_bin_dir, engine_status

if TYPE_CHECKING:
    from emulators.fake_gcs import FakeGcs
    from emulators.vertex_api import VertexEmulator

# --- Pulumi CLI (tests marked `cli`) -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pulumi_engine() -> Path:
    """The directory of the bootstrapped Pulumi engine.

    Skips the test when `make bootstrap` has not built the engine yet, except under CI (``CI=true``), where
    `make test` bootstraps first and a missing engine is a failure.
    """
    ready, why = engine_status()
    if not ready:
        message = f"the Pulumi engine is not bootstrapped ({why}); run `make bootstrap`"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return engine_bin_dir()


@pytest.fixture
def pulumi_cli(pulumi_engine: Path, tmp_path: Path) -> Callable[..., PulumiCLI]:
    """A factory of :class:`PulumiCLI` for a project directory, with state in this test's temporary directory.

    Call it as ``pulumi_cli(project_dir, passphrase="test")``; each call gets its own file backend and PULUMI_HOME.
    """
    count = 0

    def make(project_dir: Path, passphrase: str = "test") -> PulumiCLI:
        nonlocal count
        count += 1
        return PulumiCLI(project_dir, tmp_path / f"pulumi-backend-{count}", passphrase, bin_dir=pulumi_engine)

    return make


# --- Emulators (tests marked `emulator`) ---------------------------------------------------------------------------
# Imported inside the fixtures: the tuning-API emulator pulls in uvicorn and protobuf, which most tests never need.


@pytest.fixture(scope="module")
def gcs(request: pytest.FixtureRequest) -> Iterator[FakeGcs]:
    """A fake-gcs-server for the test module, with the module's ``BUCKET`` created."""
    from emulators.fake_gcs import FakeGcs

    with FakeGcs() as server:
        server.create_bucket(request.module.BUCKET)
        yield server


@pytest.fixture
def emu() -> Iterator[VertexEmulator]:
    """A Vertex AI emulator whose jobs queue for 0.05 s and run for 0.3 s (a module may override the timings)."""
    from emulators.vertex_api import VertexEmulator

    with VertexEmulator(queued_seconds=0.05, running_seconds=0.3) as emulator:
        yield emulator
