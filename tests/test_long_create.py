"""A dynamic resource whose create runs for more than ten minutes still completes and is recorded.

Regresses https://github.com/pulumi/pulumi/issues/13841 (a Python dynamic provider operation that ran for more than
about 180 s hung `pulumi up`). Local tuning runs that long, so the engine tuneform ships must survive it. The create
sleeps for ``TUNEFORM_LONG_CREATE_SECONDS`` (default 610) and prints a line every 30 s, as tuneform's trainer does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pulumi_cli import PulumiCLI, write_program

SECONDS = int(os.environ.get("TUNEFORM_LONG_CREATE_SECONDS", "610"))

pytestmark = [pytest.mark.cli, pytest.mark.slow, pytest.mark.timeout(SECONDS + 600)]

PROVIDER = """
import os
import sys
import time

from pulumi.dynamic import CreateResult, ResourceProvider


class SlowProvider(ResourceProvider):
    def create(self, props):
        # Read at call time: the provider object is pickled into state, the environment is not.
        seconds = int(os.environ.get("TUNEFORM_LONG_CREATE_SECONDS", "610"))
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            print(f"long create: {int(elapsed)}s of {seconds}s", file=sys.stderr, flush=True)
            time.sleep(min(30, seconds - elapsed))
        return CreateResult(id_="slow-1", outs={**props, "elapsed": round(time.monotonic() - started, 1)})
"""

PROGRAM = """
import pulumi
from pulumi.dynamic import Resource

from slowprovider import SlowProvider


class Slow(Resource, module="test", name="Slow"):
    elapsed: pulumi.Output[float]

    def __init__(self, name):
        super().__init__(SlowProvider(), name, {"elapsed": None})


slow = Slow("slow")
pulumi.export("elapsed", slow.elapsed)
"""


def test_create_longer_than_ten_minutes_completes(pulumi_cli: Callable[..., PulumiCLI], tmp_path: Path) -> None:
    cli = pulumi_cli(write_program(tmp_path / "project", "longcreate", PROGRAM, {"slowprovider.py": PROVIDER}))
    cli.stack_init("test")

    started = time.monotonic()
    up = cli.up(env={"TUNEFORM_LONG_CREATE_SECONDS": str(SECONDS)}, timeout=SECONDS + 300)
    took = time.monotonic() - started

    assert took >= SECONDS
    assert cli.outputs()["elapsed"] >= SECONDS
    assert [r["id"] for r in cli.resources() if r["type"] == "pulumi-python:dynamic/test:Slow"] == ["slow-1"]
    assert "long create: 0s of" in up.stdout + up.stderr, "progress lines reach the user"
    cli.destroy()
