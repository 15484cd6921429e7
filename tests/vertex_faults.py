"""The fault run: a Vertex stack of several specs converges through `pulumi up` re-runs with a share of calls faulted.

Shared by ``test_vertex_stack.py::test_fault_run_converges_without_duplicates_or_orphans`` and
``bench/bench_vertex_faults.py`` (which prints the figures the README quotes). The Vertex emulator answers a seeded
share of requests with 429, 503, a slow 504, or — for mutating calls — acts and then loses its answer (E33 in
docs/vertex-emulator.md); fake-gcs-server stores the datasets unfaulted. Every spec has ``retain: false`` so that
``pulumi destroy`` must also clean up under faults.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulators.fake_gcs import FakeGcs
from emulators.vertex_api import FaultPlan, VertexEmulator
from pulumi_cli import PulumiCLI, copy_project

REPO = Path(__file__).resolve().parents[1]


@dataclass
class FaultRun:
    """What one fault run measured."""

    specs: int
    fault_rate: float
    up_attempts: int = 0
    destroy_attempts: int = 0
    requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    creates: int = 0
    duplicate_jobs: int = 0
    jobs_not_in_state: int = 0
    left_models: int = 0
    left_endpoints: int = 0
    seconds: float = 0.0
    up_errors: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [
            ("specs (tuning jobs wanted)", self.specs),
            ("share of Vertex calls faulted", f"{self.fault_rate:.0%}"),
            ("Vertex requests / faulted", f"{self.requests} / {sum(self.faults.values())} {dict(self.faults)}"),
            ("`pulumi up` runs to converge", self.up_attempts),
            ("tuning jobs created", self.creates),
            ("duplicate jobs", self.duplicate_jobs),
            ("jobs the stack does not hold", self.jobs_not_in_state),
            ("`pulumi destroy` runs", self.destroy_attempts),
            ("models / endpoints left after destroy", f"{self.left_models} / {self.left_endpoints}"),
            ("wall time", f"{self.seconds:.0f} s"),
        ]
        return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def _project(root: Path, specs: int) -> Path:
    project = copy_project(root, include=("Pulumi.yaml", "__main__.py", "tuning_specs"))
    template = (project / "tuning_specs" / "ticket-router.yaml").read_text()
    for path in (project / "tuning_specs").glob("*.yaml"):
        path.unlink()
    for index in range(specs):
        text = template.replace("name: ticket-router ", f"name: router-{index} ").replace(
            "  endpoint:\n    deploy: true\n", "  endpoint:\n    deploy: true\n  retain: false\n"
        )
        text = text.replace("    epochs: 3\n", f"    epochs: {index + 1}\n")
        assert f"name: router-{index}" in text and "retain: false" in text
        (project / "tuning_specs" / f"router-{index}.yaml").write_text(text)
    return project


def run_fault_run(
    make_cli: Callable[[Path], PulumiCLI],
    workdir: Path,
    *,
    specs: int = 4,
    rate: float = 0.3,
    seed: int = 7,
    max_runs: int = 8,
    log: Callable[[str], None] = lambda _line: None,
) -> FaultRun:
    """Run the scenario: up until converged, check for duplicates and strays, destroy until clean."""
    figures = FaultRun(specs=specs, fault_rate=rate)
    started = time.monotonic()
    faults = FaultPlan(rate=rate, kinds=("429", "503", "slow", "lost"), slow_seconds=0.3, seed=seed)
    bucket = "tuneform-fault-run"
    with FakeGcs() as gcs, VertexEmulator(queued_seconds=0.1, running_seconds=0.6, faults=faults) as emu:
        gcs.create_bucket(bucket)
        project = _project(workdir / "project", specs)
        cli = make_cli(project)
        cli.stack_init(
            "faults",
            config={
                "tuneform:target": "vertex",
                "tuneform:project": "test-project",
                "tuneform:region": "us-central1",
                "tuneform:bucket": bucket,
                "tuneform:apiEndpoint": json.dumps(emu.endpoints),
                "tuneform:storageEndpoint": gcs.url,
                "tuneform:pollSeconds": "[0.1, 0.5]",
                "tuneform:retrySeconds": "[0.1, 120]",
                "tuneform:deadlineSeconds": "300",
            },
        )

        def until_it_succeeds(command: Callable[..., Any], what: str) -> int:
            for attempt in range(1, max_runs + 1):
                result = command(check=False, timeout=900)
                log(f"pulumi {what} #{attempt}: exit {result.returncode}")
                if result.returncode == 0:
                    break
                figures.up_errors.append(f"{what}: " + _last_error(result.stdout + result.stderr))
            return attempt

        figures.up_attempts = until_it_succeeds(cli.up, "up")
        converged = cli.up("--expect-no-changes", check=False, timeout=900)
        if converged.returncode != 0:
            figures.up_errors.append("not converged: " + _last_error(converged.stdout + converged.stderr))
        jobs = emu.created_jobs()
        figures.creates = emu.creates
        wanted = {(j["labels"]["tuneform-name"], j["labels"]["tuneform-spec-hash"]) for j in jobs}
        figures.duplicate_jobs = len(jobs) - len(wanted)
        held = {r["id"] for r in cli.resources() if r["type"].endswith("TuningJob")}
        figures.jobs_not_in_state = len({j["name"] for j in jobs} - held)
        figures.destroy_attempts = until_it_succeeds(cli.destroy, "destroy")
        figures.left_models = len(emu.live_models())
        figures.left_endpoints = len(emu.live_endpoints())
        # Faulted requests are refused before they are recorded, except lost answers, whose calls did act.
        figures.requests = len(emu.requests) + sum(n for kind, n in emu.fault_counts.items() if kind != "lost")
        figures.faults = dict(sorted(emu.fault_counts.items()))
    figures.seconds = time.monotonic() - started
    shutil.rmtree(workdir / "project", ignore_errors=True)
    return figures


def _last_error(output: str) -> str:
    """The provider's own error lines (``error: ...``), joined; the summary line when there are none."""
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("error:")]
    if lines:
        return " | ".join(dict.fromkeys(line[:300] for line in lines))
    return output.strip().splitlines()[-1][:300] if output.strip() else ""
