"""The bootstrapped Pulumi engine, end to end: the real CLI, tuneform's Python language host and the dynamic-provider
shim run a small program against a temporary file backend. No tuneform code is involved, so a failure here points at
the engine set-up (scripts/build-pulumi.sh, tools/pulumi/languagehost), not at the provider."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pulumi_cli import REPO_ROOT, PulumiCLI, engine_status, write_program

pytestmark = [pytest.mark.cli, pytest.mark.timeout(300)]

PROVIDER = '''
"""A dynamic provider that manages one real file, kept in a module next to the program (like tuneform's)."""
from pathlib import Path

from pulumi.dynamic import CreateResult, ReadResult, ResourceProvider


class FileProvider(ResourceProvider):
    def create(self, props):
        path = Path(props["path"])
        path.write_text(props["content"])
        print(f"wrote {path}")
        return CreateResult(id_=str(path), outs={**props, "size": len(props["content"])})

    def read(self, id_, props):
        path = Path(id_)
        if not path.exists():
            return ReadResult("", {})
        content = path.read_text()
        return ReadResult(id_, {**props, "content": content, "size": len(content)})

    def delete(self, id_, props):
        Path(id_).unlink(missing_ok=True)
'''

PROGRAM = """
import pulumi
from pulumi.dynamic import Resource

from fileprovider import FileProvider


class ManagedFile(Resource, module="test", name="ManagedFile"):
    size: pulumi.Output[int]

    def __init__(self, name, path, content):
        super().__init__(FileProvider(), name, {"path": path, "content": content, "size": None})


config = pulumi.Config()
greeting = ManagedFile("greeting", config.require("path"), config.require("content"))
pulumi.export("size", greeting.size)
pulumi.export("token", config.require_secret("token"))
"""

FAILING_PROGRAM = """
import pulumi

raise ValueError("boom: tuneform engine test")
"""


def _write_project(root: Path, program: str) -> Path:
    return write_program(root, "enginetest", program, {"fileprovider.py": PROVIDER})


def _managed_files(cli: PulumiCLI) -> list[dict]:
    return [r for r in cli.resources() if r["type"] == "pulumi-python:dynamic/test:ManagedFile"]


def test_engine_versions(pulumi_engine: Path) -> None:
    for binary in ("pulumi", "pulumi-language-python"):
        path = pulumi_engine / binary
        if not path.exists():
            continue  # an external `pulumi` of the right version is in use; its own files are not ours to check
        flag = "version" if binary == "pulumi" else "-version"
        out = subprocess.run([str(path), flag], capture_output=True, text=True, check=True, timeout=30)
        assert out.stdout.strip() == "v3.260.0", f"{binary} reports {out.stdout!r}"


def test_dynamic_resource_lifecycle(pulumi_cli: Callable[..., PulumiCLI], tmp_path: Path) -> None:
    target = tmp_path / "files" / "greeting.txt"
    target.parent.mkdir()
    cli = pulumi_cli(_write_project(tmp_path / "project", PROGRAM))
    cli.stack_init(
        "test",
        {"enginetest:path": str(target), "enginetest:content": "hello"},
        secrets={"enginetest:token": "s3cret-token"},
    )

    preview = cli.preview()
    assert "greeting" in preview.stdout and "create" in preview.stdout, preview.stdout
    assert not target.exists(), "preview must not create anything"

    up = cli.up()
    assert target.read_text() == "hello"
    assert "wrote" in up.stdout + up.stderr, "provider output is shown to the user"
    assert cli.outputs() == {"size": 5, "token": "s3cret-token"}
    masked = cli.run("stack", "output", "--stack", "test", "--json", check=True)
    assert json.loads(masked.stdout)["token"] == "[secret]"
    state = cli.run("stack", "export", "--stack", "test", check=True).stdout
    assert "s3cret-token" not in state, "secrets are encrypted in the state"
    assert len(_managed_files(cli)) == 1

    mtime = target.stat().st_mtime_ns
    cli.up("--expect-no-changes")
    assert target.stat().st_mtime_ns == mtime, "a second up must not touch the resource"

    target.write_text("changed outside pulumi")
    cli.refresh()
    (managed,) = _managed_files(cli)
    assert managed["outputs"]["content"] == "changed outside pulumi"
    assert managed["outputs"]["size"] == len("changed outside pulumi")

    cli.destroy()
    assert not target.exists()
    assert _managed_files(cli) == []


def test_program_error_fails_with_python_error(pulumi_cli: Callable[..., PulumiCLI], tmp_path: Path) -> None:
    cli = pulumi_cli(_write_project(tmp_path / "project", FAILING_PROGRAM))
    cli.stack_init("test")

    started = time.monotonic()
    result = cli.up(check=False, timeout=120)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "ValueError: boom: tuneform engine test" in output
    assert time.monotonic() - started < 120


def test_bootstrap_second_run_is_a_noop() -> None:
    ready, why = engine_status()
    stamp = REPO_ROOT / ".venv" / ".tuneform-bootstrap"
    if not ready or not stamp.exists():
        message = (
            f"needs a bootstrapped checkout (engine: {why}; stamp present: {stamp.exists()}); run `make bootstrap`"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)

    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "bootstrap.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stderr, "the venv must not be synced again"
    assert "engine ready" in result.stderr, "the engine must not be rebuilt"
    assert elapsed < 30, f"second bootstrap took {elapsed:.1f}s"
