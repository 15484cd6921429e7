"""The vertex target end to end: the real Pulumi CLI, the shipped specs, fake-gcs-server and the tuning-API emulator.

The stack names an existing bucket, so it needs no pulumi-gcp plugin (which cannot be installed here). Every request
the provider sends is parsed by the emulator into the API's own proto types; a misspelt field fails the run.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from emulators.fake_gcs import FakeGcs
from emulators.vertex_api import Outcome, VertexEmulator
from pulumi_cli import PulumiCLI, copy_project
from vertex_faults import run_fault_run

pytestmark = [pytest.mark.cli, pytest.mark.emulator]

BUCKET = "tuneform-stack-test"


@pytest.fixture
def emulators():  # type: ignore[no-untyped-def]
    with FakeGcs() as gcs, VertexEmulator(queued_seconds=0.2, running_seconds=1.0) as tuning:
        gcs.create_bucket(BUCKET)
        yield gcs, tuning


def stored_datasets(gcs: FakeGcs) -> set[str]:
    listing = httpx.get(f"{gcs.url}/storage/v1/b/{BUCKET}/o", params={"prefix": "datasets/"}, timeout=10).json()
    return {item["name"] for item in listing.get("items", [])}


def processes_mentioning(path: Path) -> list[int]:
    marker = os.fsencode(str(path))
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def set_epochs(project: Path, epochs: int) -> None:
    spec = project / "tuning_specs" / "ticket-router.yaml"
    text = spec.read_text()
    start = text.index("    epochs: ")
    end = text.index("\n", start)
    spec.write_text(text[:start] + f"    epochs: {epochs}" + text[end:])


def ask_with_google_genai(client_config: dict) -> str:
    """What a user's application does with the stack's `genai` output (Vertex mode), here against the emulator."""
    from google import genai
    from google.genai import types
    from google.oauth2.credentials import Credentials

    client = genai.Client(
        vertexai=True,
        project=client_config["project"],
        location=client_config["location"],
        credentials=Credentials(token="emulator"),  # never refreshed; the emulator checks no token
        http_options=types.HttpOptions(base_url=client_config["baseUrl"], api_version="v1"),
    )
    return str(client.models.generate_content(model=client_config["model"], contents="I was charged twice").text)


def stack(pulumi_cli, tmp_path: Path, gcs: FakeGcs, tuning: VertexEmulator) -> tuple[PulumiCLI, Path]:  # type: ignore[no-untyped-def]
    project = copy_project(tmp_path / "project", include=("Pulumi.yaml", "__main__.py", "tuning_specs"))
    cli: PulumiCLI = pulumi_cli(project)
    cli.stack_init(
        "vertex-test",
        config={
            "tuneform:target": "vertex",
            "tuneform:project": "test-project",
            "tuneform:region": "us-central1",
            "tuneform:bucket": BUCKET,
            "tuneform:apiEndpoint": json.dumps(tuning.endpoints),
            "tuneform:storageEndpoint": gcs.url,
            "tuneform:pollSeconds": "[0.1, 0.5]",
            "tuneform:deadlineSeconds": "120",
        },
    )
    return cli, project


def test_vertex_stack_lifecycle(pulumi_cli, tmp_path: Path, emulators) -> None:  # type: ignore[no-untyped-def]
    gcs, tuning = emulators
    cli, project = stack(pulumi_cli, tmp_path, gcs, tuning)

    cli.up(timeout=300)
    outputs = cli.outputs()
    specs = sorted(p.stem for p in (project / "tuning_specs").glob("*.yaml"))
    assert sorted(outputs) == specs
    assert tuning.creates == len(specs), "one tuning job per spec"
    router = outputs["ticket-router"]
    assert router["model"].startswith("projects/") and router["model"].endswith("@1")
    assert router["version"] == 1
    # Tuned 3.x models are served from the `us` multi-region endpoint (E14), and the outputs say how to call it.
    assert router["endpoint"] == f"{tuning.endpoints['us']}/v1/{router['genai']['model']}:generateContent"
    assert router["genai"]["location"] == "us" and router["genai"]["project"] == "test-project"
    assert "/locations/us/endpoints/" in router["genai"]["model"]
    answer = ask_with_google_genai(router["genai"])
    assert answer.startswith("emulated answer from ticket-router")
    uploaded = stored_datasets(gcs)
    assert len(uploaded) == 4 and all(name.endswith(".jsonl") for name in uploaded)

    cli.up("--expect-no-changes", timeout=300)
    assert tuning.creates == len(specs)

    set_epochs(project, 4)
    preview = cli.preview()
    assert "replace" in preview.stdout and "hyperparameters" in preview.stdout
    cli.up(timeout=300)
    router_v2 = cli.outputs()["ticket-router"]
    assert router_v2["version"] == 2, "a re-tune is the spec's version 2"
    assert router_v2["model"].split("@")[0] != router["model"].split("@")[0], "tuned from the base model: a new model"
    assert tuning.creates == len(specs) + 1
    assert stored_datasets(gcs) == uploaded, "unchanged datasets are not uploaded again"


def test_killed_up_adopts_the_running_job(pulumi_cli, tmp_path: Path, emulators) -> None:  # type: ignore[no-untyped-def]
    gcs, tuning = emulators
    cli, project = stack(pulumi_cli, tmp_path, gcs, tuning)
    cli.up(timeout=300)
    creates = tuning.creates

    set_epochs(project, 5)
    tuning.script(Outcome(running_seconds=8.0))
    killed = cli.spawn_up(project, "vertex-test")
    deadline = time.monotonic() + 120
    while tuning.creates == creates and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tuning.creates == creates + 1, "the job was submitted before the kill"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    # Pulumi starts its plugins in process groups of their own, so the kill did not reach them: the dynamic provider
    # and the language host notice their engine is gone and leave on their own (tuneform.processes; the host checks
    # every 2 s).
    deadline = time.monotonic() + 30
    while processes_mentioning(project) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(project) == [], "the killed run's provider and host outlived their engine"

    # A killed CLI leaves its lock and a pending create behind; these are the documented ways out.
    cli.run("cancel", "--yes", "--stack", "vertex-test")
    cli.refresh("--clear-pending-creates", timeout=300)
    cli.up(timeout=300)
    assert tuning.creates == creates + 1, "the second `pulumi up` adopted the running job instead of paying twice"
    assert cli.outputs()["ticket-router"]["version"] == 2


def test_failed_job_fails_the_update_with_its_message(pulumi_cli, tmp_path: Path, emulators) -> None:  # type: ignore[no-untyped-def]
    gcs, tuning = emulators
    cli, project = stack(pulumi_cli, tmp_path, gcs, tuning)
    cli.up(timeout=300)
    before = {r["urn"]: r.get("id") for r in cli.resources()}

    set_epochs(project, 6)
    tuning.script(Outcome(state="JOB_STATE_FAILED", error_message="Dataset has too many invalid examples"))
    failed = cli.up(check=False, timeout=300)
    assert failed.returncode != 0
    assert "Dataset has too many invalid examples" in failed.stdout + failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr, "a failed job is the user's to read, not a Python stack"
    after = {r["urn"]: r.get("id") for r in cli.resources()}
    assert after == before, "a failed job leaves the stack as it was: no half-made resources"
    assert cli.outputs()["ticket-router"]["version"] == 1


@pytest.mark.timeout(1500)
def test_fault_run_converges_without_duplicates_or_orphans(pulumi_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """30% of Vertex calls faulted (429, 503, slow 504, lost answers): re-runs converge, nothing doubles or leaks."""
    figures = run_fault_run(pulumi_cli, tmp_path, specs=3, rate=0.3, seed=7)
    print(figures.table(), *figures.up_errors, sep="\n")
    assert figures.up_attempts <= 4, figures.up_errors
    assert not any(e.startswith("not converged") for e in figures.up_errors), figures.up_errors
    assert figures.destroy_attempts <= 4, figures.up_errors
    assert sum(figures.faults.values()) >= 0.2 * figures.requests, "the run was really faulted"
    assert figures.duplicate_jobs == 0 and figures.jobs_not_in_state == 0
    assert figures.creates == figures.specs
    assert (figures.left_models, figures.left_endpoints) == (0, 0)
