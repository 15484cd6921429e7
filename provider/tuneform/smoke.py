"""A live smoke test of the Vertex target for its first real user: ``make vertex-smoke PROJECT=... BUCKET=...``.

It builds a throwaway Pulumi project and stack in a temporary directory (file backend, random passphrase: nothing
touches the checkout's own state), with one tiny spec — 24 short ticket-routing examples, ``gemini-3.1-flash-lite``,
adapter size 1, one epoch, ``retain: false`` — and a cost cap. Then: ``pulumi preview`` → ``pulumi up`` (upload,
tuning job, wait) → one ``generateContent`` request to the tuned model's endpoint with ``google-genai`` in Vertex mode
→ ``pulumi destroy`` (deletes the tuned model and its endpoint). It prints a report to paste into an issue, and
tries ``destroy`` even after a failed step, so nothing is left behind.

What it costs on Vertex AI: tuning bills training tokens (dataset tokens x epochs). The dataset has about 1,700
tokens (tuneform's estimate, which errs high) and runs one epoch; at the price the kit assumes unless told otherwise
(``--price``, USD 10 per 1M training tokens, above any figure seen for a Flash-class model) that is under USD 0.02.
Plus one inference request (a few hundred tokens at the base model's rates), a few KB in the bucket (the dataset
object stays: datasets are history), and no endpoint time (tuned Gemini endpoints bill per request). The cap
(``--max-cost``, default USD 1) refuses the run at preview if the estimate exceeds it.

The same kit runs in ``make test`` against the emulators (``--api-endpoints`` and ``--storage-endpoint``), so its
steps are known to work with the real CLI before anyone points it at a project that costs money.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SMOKE_EXAMPLES", "main", "run"]

MODEL = "gemini-3.1-flash-lite"
NAME = "tuneform-smoke"
SYSTEM = "Route the support ticket to one queue. Answer with the queue name only: billing, technical or shipping."

SMOKE_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("I was charged twice for my subscription this month.", "billing"),
    ("Please send me an invoice with our VAT number on it.", "billing"),
    ("My card was declined but the money left my account.", "billing"),
    ("Can I get a refund for the annual plan I cancelled?", "billing"),
    ("Why did the price go up on my last bill?", "billing"),
    ("Update the credit card we pay with, please.", "billing"),
    ("The receipt shows the wrong company name.", "billing"),
    ("I need last year's invoices for our audit.", "billing"),
    ("The app crashes as soon as I open the settings page.", "technical"),
    ("Login fails with error 500 since this morning.", "technical"),
    ("Sync between my phone and laptop stopped working.", "technical"),
    ("The export to CSV produces an empty file.", "technical"),
    ("Notifications arrive hours late on Android.", "technical"),
    ("After the update the dashboard will not load.", "technical"),
    ("The API returns a timeout for every request.", "technical"),
    ("Two-factor codes are never accepted.", "technical"),
    ("My parcel has not moved from the depot in a week.", "shipping"),
    ("The tracking number you sent does not exist.", "shipping"),
    ("Can you deliver to my office instead of my home?", "shipping"),
    ("The box arrived crushed and wet.", "shipping"),
    ("How long does delivery to Norway take?", "shipping"),
    ("The courier left my order with a neighbour I do not know.", "shipping"),
    ("I paid for express shipping but it took ten days.", "shipping"),
    ("Half of my order is missing from the delivery.", "shipping"),
)
"""Tiny on purpose: the kit checks that every step works, not that the model learns (24 examples, 1 epoch)."""

QUESTION = "Hello, the charge on my statement is double what I expected for March."


@dataclass
class Step:
    name: str
    status: str = "not run"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Report:
    project: str
    region: str
    model: str
    steps: list[Step] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(step.status == "ok" for step in self.steps)

    def render(self) -> str:
        lines = [
            f"## tuneform Vertex smoke test: {'passed' if self.ok else 'FAILED'}",
            "",
            f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
            f"- project / region: `{self.project}` / `{self.region}`; base model `{self.model}`",
            *(f"- {key}: {value}" for key, value in self.facts.items()),
            "",
            "| step | result | seconds |",
            "|---|---|---|",
            *(f"| {step.name} | {step.status} | {step.seconds:.1f} |" for step in self.steps),
        ]
        for step in self.steps:
            if step.detail:
                lines += ["", f"<details><summary>{step.name}</summary>", "", "```", step.detail.strip(), "```",
                          "</details>"]  # fmt: skip
        return "\n".join(lines) + "\n"


def _write_project(root: Path, python: str) -> None:
    (root / "stacks").mkdir(parents=True)
    datasets = root / "tuning_specs" / "datasets" / "smoke"
    datasets.mkdir(parents=True)
    (root / "Pulumi.yaml").write_text(
        "name: tuneform-smoke\nruntime:\n  name: python\n  options:\n"
        f"    virtualenv: {json.dumps(str(Path(python).parents[1]))}\nstackConfigDir: stacks\n"
    )
    (root / "__main__.py").write_text("from tuneform.program import main\n\nmain()\n")
    rows = [
        {
            "systemInstruction": {"parts": [{"text": SYSTEM}]},
            "contents": [{"role": "user", "parts": [{"text": text}]}, {"role": "model", "parts": [{"text": queue}]}],
        }
        for text, queue in SMOKE_EXAMPLES
    ]
    (datasets / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (root / "tuning_specs" / f"{NAME}.yaml").write_text(
        "apiVersion: tuneform/v1\nkind: TunedModel\n"
        f"metadata: {{name: {NAME}, description: tuneform live smoke test (safe to delete)}}\n"
        f"spec:\n  baseModel: {MODEL}\n  adapterSize: 1\n  hyperparameters: {{epochs: 1}}\n"
        "  dataset: {train: datasets/smoke/train.jsonl}\n  retain: false\n"
    )


class _Pulumi:
    def __init__(self, root: Path, state: Path, passphrase: str) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_") and k != "VIRTUAL_ENV"}
        self.env.update(
            PULUMI_HOME=str(state / ".home"),
            PULUMI_BACKEND_URL=f"file://{state}",
            PULUMI_CONFIG_PASSPHRASE=passphrase,
            PULUMI_SKIP_UPDATE_CHECK="true",
            PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
            NO_COLOR="1",
        )

    def __call__(self, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pulumi", *args, "--non-interactive", "--color=never"],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _tail(result: subprocess.CompletedProcess[str], lines: int = 40) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


def _ask(outputs: dict[str, Any], emulator_token: bool) -> str:
    """One generateContent request to the tuned endpoint, the way a user's application would make it."""
    from google import genai
    from google.genai import types

    client_config = outputs.get("genai") or {}
    kwargs: dict[str, Any] = {
        "vertexai": True,
        "project": client_config["project"],
        "location": client_config["location"],
    }
    if emulator_token:
        from google.oauth2.credentials import Credentials

        kwargs["credentials"] = Credentials(token="emulator")  # noqa: S106 - the emulator checks no token
        kwargs["http_options"] = types.HttpOptions(base_url=client_config["baseUrl"], api_version="v1")
    client = genai.Client(**kwargs)
    answer = client.models.generate_content(model=client_config["model"], contents=QUESTION)
    return str(answer.text)


ENGINE_GRACE_S = 1800.0
"""How long past tuneform's own deadline (``--deadline``, which ends the wait first and says so) `pulumi up` may run
before the kit stops it: a stopped engine leaves a job no state records, which the kit then cancels itself."""


def _cancel_live_jobs(args: argparse.Namespace) -> str:
    """Cancel the smoke stack's tuning jobs that still run; says what it did, for the report."""
    from tuneform.backends.base import BackendSettings, api_endpoint_settings
    from tuneform.backends.vertex import VertexBackend
    from tuneform.backends.vertex._api import LIVE_STATES, state_name

    try:
        # The settings the smoke stack's program built (tuneform.program.settings_from_config), from the same values.
        backend = VertexBackend.from_settings(
            BackendSettings(
                target="vertex",
                repo_root="",
                project=args.project,
                region=args.region,
                bucket=args.bucket,
                storage_endpoint=args.storage_endpoint or "",
                stack="smoke",
                **api_endpoint_settings(args.api_endpoints or ""),
            )
        )
        client = backend.hosts.tuning(backend.region)
        live = [job.name for job in backend._jobs_of(client, NAME) if state_name(job) in LIVE_STATES]
        for job in live:
            backend.cancel(job)
    except Exception as error:  # noqa: BLE001 - the report must still be written; it says what to do by hand
        return f"cancelling its tuning jobs failed ({error}): run `gcloud ai tuning-jobs list` and cancel {NAME}'s."
    return f"cancelled {', '.join(live)}" if live else "no tuning job was running"


def run(args: argparse.Namespace) -> Report:
    """Run the smoke test; returns the report (also when a step failed)."""
    report = Report(args.project, args.region, MODEL)
    report.facts["assumed price"] = f"USD {args.price} per 1M training tokens (cap USD {args.max_cost})"
    if shutil.which("pulumi") is None:
        report.steps.append(Step("engine", "failed", 0, "`pulumi` is not on PATH: run `make bootstrap` first"))
        return report
    work = Path(tempfile.mkdtemp(prefix="tuneform-smoke-"))
    try:
        root, state = work / "project", work / "state"
        state.mkdir()
        _write_project(root, sys.executable)
        pulumi = _Pulumi(root, state, secrets.token_urlsafe(24))
        config = {
            "tuneform:target": "vertex",
            "tuneform:project": args.project,
            "tuneform:region": args.region,
            "tuneform:bucket": args.bucket,
            "tuneform:maxTrainingCost": str(args.max_cost),
            "tuneform:trainingPrices": json.dumps({MODEL: args.price}),
            "tuneform:pollSeconds": json.dumps(args.poll),
            "tuneform:deadlineSeconds": str(args.deadline),
        }
        if args.api_endpoints:
            config["tuneform:apiEndpoint"] = args.api_endpoints
        if args.storage_endpoint:
            config["tuneform:storageEndpoint"] = args.storage_endpoint
        setup = pulumi("stack", "init", "smoke", "--secrets-provider", "passphrase")
        if setup.returncode == 0:
            pairs = [arg for key, value in config.items() for arg in ("--plaintext", f"{key}={value}")]
            setup = pulumi("config", "set-all", "--stack", "smoke", *pairs)

        def timed(name: str, *command: str, timeout: float = 3600) -> bool:
            started = time.monotonic()
            try:
                result = pulumi(*command, timeout=timeout)
            except subprocess.TimeoutExpired:
                # The engine was killed: clear its lock and pending create so destroy can run, and cancel the job
                # it was waiting on (no state records it), so nothing is left billing.
                pulumi("cancel", "--yes", "--stack", "smoke")
                pulumi("refresh", "--yes", "--clear-pending-creates", "--stack", "smoke")
                left = _cancel_live_jobs(args)
                detail = f"`pulumi {command[0]}` ran past {timeout:.0f} s and was stopped; " + left
                report.steps.append(Step(name, "failed", time.monotonic() - started, detail))
                return False
            ok = result.returncode == 0
            seconds = time.monotonic() - started
            report.steps.append(Step(name, "ok" if ok else "failed", seconds, "" if ok else _tail(result)))
            return ok

        upped = False
        if setup.returncode != 0:
            report.steps.append(Step("stack set-up", "failed", 0, _tail(setup)))
        elif timed("preview", "preview", "--stack", "smoke"):
            upped = timed("up", "up", "--yes", "--stack", "smoke", timeout=args.deadline + ENGINE_GRACE_S)
        if upped:
            outputs = json.loads(pulumi("stack", "output", "--stack", "smoke", "--json", "--show-secrets").stdout)
            tuned = outputs.get(NAME, {})
            report.facts.update({
                "tuned model": f"`{tuned.get('model')}` (tuneform version {tuned.get('version')})",
                "endpoint": f"`{tuned.get('endpoint')}`",
                "training tokens (estimate)": tuned.get("trainingTokens"),
                "billable tokens (Vertex)": (tuned.get("metrics") or {}).get("billable_tokens"),
                "estimated cost": f"USD {tuned.get('estimatedCost')}",
            })  # fmt: skip
            step = Step("google-genai generateContent")
            started = time.monotonic()
            try:
                answer = _ask(tuned, args.emulator_token)
                step.status, step.detail = "ok", f"Q: {QUESTION}\nA: {answer[:300]}"
            except Exception as error:  # noqa: BLE001 - any failure here is the finding the report exists for
                step.status, step.detail = "failed", f"{type(error).__name__}: {error}"
            step.seconds = time.monotonic() - started
            report.steps.append(step)
        if not args.keep and setup.returncode == 0:
            timed("destroy", "destroy", "--yes", "--stack", "smoke")
        return report
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            report.facts["kept"] = f"project and state in {work}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuneform.smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True, help="GCP project id")
    parser.add_argument("--region", default="us-central1", help="tuning region (us-central1 or europe-west4)")
    parser.add_argument("--bucket", required=True, help="an existing bucket for the dataset (no gs://)")
    parser.add_argument("--price", type=float, default=10.0, help="USD per 1M training tokens assumed for the cap")
    parser.add_argument(
        "--max-cost", type=float, default=1.0, help="refuse the run if the estimate exceeds this (USD)"
    )
    parser.add_argument("--deadline", type=int, default=4 * 3600, help="seconds to wait for the tuning job")
    parser.add_argument("--poll", type=float, nargs=2, default=[15.0, 120.0], metavar=("FIRST", "LONGEST"))
    parser.add_argument("--keep", action="store_true", help="do not destroy; keep the throwaway project and state")
    parser.add_argument("--report", type=Path, help="also write the report to this file")
    # Emulator runs (make test): where the fake services listen, and a dummy token google-genai will not refresh.
    parser.add_argument("--api-endpoints", help=argparse.SUPPRESS)
    parser.add_argument("--storage-endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--emulator-token", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    report = run(args)
    text = report.render()
    sys.stdout.write(text)
    if args.report:
        args.report.write_text(text)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
