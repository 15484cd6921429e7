"""`pulumi preview --stack local` of the shipped specs, with the real CLI on a temporary file backend.

Preview validates every spec and dataset, declares one component per spec with stable names, and creates nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pulumi_cli import PulumiCLI, copy_project

pytestmark = pytest.mark.cli


def test_preview_declares_one_component_per_shipped_spec(pulumi_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = copy_project(tmp_path / "project", include=("Pulumi.yaml", "__main__.py", "tuning_specs"))
    cli: PulumiCLI = pulumi_cli(project)
    cli.stack_init("local", config={"tuneform:target": "local"})
    preview = cli.preview(env={"TUNEFORM_CACHE": str(tmp_path / "cache")})
    specs = sorted(path.stem for path in (project / "tuning_specs").glob("*.yaml"))
    for name in specs:
        assert f"tuneform:index:TunedModel {name} create" in preview.stdout, preview.stdout
        for child in (f"{name}-train", f"{name}-validation", f"{name}-tuning", f"{name}-version"):
            assert f" {child} create" in preview.stdout
    assert not (project / ".tuneform" / "models").exists()
    assert cli.resources() == [], "preview records nothing in state"


def test_preview_refuses_an_invalid_spec_without_a_traceback(pulumi_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = copy_project(tmp_path / "project", include=("Pulumi.yaml", "__main__.py", "tuning_specs"))
    spec = project / "tuning_specs" / "ticket-router.yaml"
    spec.write_text(
        spec.read_text().replace("  adapterSize: 4 ", "  adapterSize: 3 ").replace("epochs: 3", "epoch: 3")
    )
    cli: PulumiCLI = pulumi_cli(project)
    cli.stack_init("local", config={"tuneform:target": "local"})
    result = cli.preview(check=False, env={"TUNEFORM_CACHE": str(tmp_path / "cache")})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    assert "tuning_specs/ticket-router.yaml:" in output
    assert "spec.hyperparameters.epoch" in output and "Did you mean `epochs`?" in output
    assert (
        "spec.adapterSize: expected one of 1, 2, 4, 8, 16 for gemini-3.1-flash-lite, got 3. "
        "Set `adapterSize: 4`." in output
    )
