"""What a stack holds now, read from its state through the configured backend: versions, traffic, evaluations.

The change plan shows ``v3 → v4`` from here. A stack's state is read with ``pulumi stack export`` (any backend:
``gs://``, ``s3://``, ``file://``; without ``--show-secrets``, so no passphrase is needed) against
``PULUMI_BACKEND_URL``; without a ``pulumi`` on PATH a ``file://`` backend's checkpoint file is read directly. When
no state can be read, :class:`StackState` says why instead of guessing.

Per tuned model the state's resources give (see ``tuneform.program``): the ``TuningJob``'s ``version`` and
``metrics`` (the latest tuned version and its evaluation) and the ``Endpoint``'s ``servedTraffic`` (version ->
percent, so the serving version) and ``versionMetrics`` (version -> evaluation, every version the endpoint has seen).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneform.spec.stack import StackSettings
from tuneform.spec.stack import read_stack as read_stack_settings
from tuneform.workspace import file_backend_dir, project_name

__all__ = ["ModelState", "StackState", "configured_stacks", "read_stack", "settings_target", "stack_target"]

_TUNING_JOB = "pulumi-python:dynamic/tuneform:TuningJob"
_ENDPOINT = "pulumi-python:dynamic/tuneform:Endpoint"
_EXPORT_TIMEOUT = 120


@dataclass(frozen=True)
class ModelState:
    """One tuned model as its stack's state holds it."""

    name: str
    version: int | None
    """The latest tuned version (``None`` when its tuning job has no outcome yet)."""
    serving: int | None
    """The version with the most traffic on the endpoint; ``None`` without an endpoint."""
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Version (as a string) -> evaluation metrics, for every version the state knows."""


@dataclass(frozen=True)
class StackState:
    """A stack's tuned models, or why they could not be read."""

    stack: str
    target: str
    models: Mapping[str, ModelState] | None
    """``None`` when the state could not be read (see ``why``); empty for a stack with nothing deployed yet."""
    source: str
    """Where the state came from (``stack `vertex` (gs://bucket/prefix)``) or why it could not be read."""

    @property
    def reachable(self) -> bool:
        return self.models is not None


def stack_target(repo: Path, stack: str) -> str | None:
    """The target a stack reconciles (its ``tuneform:target``, default ``local``); ``None`` without a config file.

    Args:
        repo: The repository root (holds ``Pulumi.yaml``, whose ``stackConfigDir`` says where stack files are).
        stack: The stack name.

    Returns:
        ``local``, ``vertex``, or ``None`` when ``Pulumi.<stack>.yaml`` does not exist.
    """
    return settings_target(read_stack_settings(repo, stack))


def settings_target(settings: StackSettings) -> str | None:
    """:func:`stack_target` of settings already read."""
    return str(settings.get("target") or "local") if settings.file else None


def configured_stacks(stacks: str | None = None) -> list[str]:
    """The stacks a review reads and previews: ``stacks`` (space-separated), else ``$TUNEFORM_STACKS``."""
    text = stacks if stacks is not None else os.environ.get("TUNEFORM_STACKS", "")
    return text.split()


def _number(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def models_from_deployment(deployment: Mapping[str, Any]) -> dict[str, ModelState]:
    """Tuned models from a Pulumi deployment (``pulumi stack export``'s ``deployment``, a checkpoint's ``latest``).

    Args:
        deployment: The deployment, with its ``resources``.

    Returns:
        Model name -> state.
    """
    jobs: dict[str, dict[str, Any]] = {}
    endpoints: dict[str, dict[str, Any]] = {}
    for resource in deployment.get("resources") or []:
        kind = resource.get("type")
        if kind not in (_TUNING_JOB, _ENDPOINT) or resource.get("delete"):
            continue
        outputs = resource.get("outputs") or {}
        inputs = resource.get("inputs") or {}
        name = outputs.get("name") or inputs.get("name")
        if not isinstance(name, str):
            continue
        (jobs if kind == _TUNING_JOB else endpoints)[name] = outputs
    models: dict[str, ModelState] = {}
    for name in sorted({*jobs, *endpoints}):
        job, endpoint = jobs.get(name, {}), endpoints.get(name, {})
        metrics = {str(k): _metrics(v) for k, v in (endpoint.get("versionMetrics") or {}).items()}
        version = _number(job.get("version")) or None
        if version is not None and _metrics(job.get("metrics")):
            metrics[str(version)] = {**metrics.get(str(version), {}), **_metrics(job.get("metrics"))}
        traffic = {
            int(k): _number(v) or 0 for k, v in (endpoint.get("servedTraffic") or {}).items() if str(k).isdigit()
        }
        serving = max(traffic, key=lambda v: (traffic[v], v)) if traffic else None
        models[name] = ModelState(name, version, serving, {k: v for k, v in metrics.items() if v})
    return models


def _backend_url(repo: Path) -> tuple[str | None, str]:
    url = os.environ.get("PULUMI_BACKEND_URL")
    if url:
        return url, ""
    if (repo / ".pulumi").is_dir():
        # The Makefile's (and scripts/pulumi-env.sh's) default backend: the checkout's own .pulumi directory.
        return f"file://{repo / '.pulumi'}", ""
    return None, "PULUMI_BACKEND_URL is not set, so the stacks' shared state is unknown"


def _checkpoint_file(root: Path, project: str, stack: str) -> Path | None:
    stacks = root / ".pulumi" / "stacks"
    for candidate in (stacks / project / f"{stack}.json", stacks / f"{stack}.json"):
        for path in (candidate, candidate.with_name(candidate.name + ".gz")):
            if path.is_file():
                return path
    return None


def _read_file_backend(repo: Path, url: str, stack: str) -> tuple[dict[str, Any] | None, str]:
    root = file_backend_dir(url)
    assert root is not None  # called for file:// URLs only
    path = _checkpoint_file(root, project_name(repo), stack)
    if path is None:
        return {}, ""
    raw = path.read_bytes()
    data = json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)
    return (data.get("checkpoint") or {}).get("latest") or {}, ""


def _export(repo: Path, pulumi: str, url: str, stack: str) -> tuple[dict[str, Any] | None, str]:
    env = {**os.environ, "PULUMI_BACKEND_URL": url, "PULUMI_SKIP_UPDATE_CHECK": "true"}
    try:
        done = subprocess.run(
            [pulumi, "stack", "export", "--stack", stack, "--non-interactive"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=_EXPORT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"`pulumi stack export` did not answer within {_EXPORT_TIMEOUT} s"
    if done.returncode != 0:
        said = [line for line in done.stderr.strip().splitlines() if line.strip()]
        last = said[-1].removeprefix("error: ") if said else f"exit status {done.returncode}"
        if "no stack named" in last:
            return {}, ""
        return None, f"`pulumi stack export` failed: {last}"
    return json.loads(done.stdout).get("deployment") or {}, ""


def read_stack(repo: str | Path, stack: str, *, target: str | None = None) -> StackState:
    """Read one stack's tuned models from its state.

    Args:
        repo: The repository root (holds ``Pulumi.yaml``; ``pulumi`` runs there).
        stack: The stack name.
        target: The stack's target (default: from its config file).

    Returns:
        The state, or an unreachable one whose ``source`` says why.
    """
    repo = Path(repo)
    target = target or stack_target(repo, stack) or "local"
    url, why = _backend_url(repo)
    if url is None:
        return StackState(stack, target, None, why)
    pulumi = shutil.which("pulumi")
    try:
        if pulumi is not None:
            deployment, why = _export(repo, pulumi, url, stack)
        elif url.startswith("file://"):
            deployment, why = _read_file_backend(repo, url, stack)
        else:
            deployment, why = None, f"no pulumi CLI on PATH to read the {url.split('://')[0]}:// backend"
    except (OSError, ValueError) as error:
        deployment, why = None, f"its state could not be read: {error}"
    if deployment is None:
        return StackState(stack, target, None, why)
    # The scheme only: a bucket's name has no place in a public pull request.
    where = url.split("://", 1)[0] + "://" if "://" in url else url
    return StackState(stack, target, models_from_deployment(deployment), f"stack `{stack}` ({where} backend)")
