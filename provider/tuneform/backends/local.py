"""The local target: tune on this machine, keep every version in ``<repo>/.tuneform``, serve over HTTP on 127.0.0.1.

A tuning run is identified by its spec hash (training inputs + dataset hashes). If the registry already holds a
version with that hash (the configuration was tuned before, e.g. a ``git revert``), it is reused without training.
Otherwise the run executes in a child process (``tuneform.training.run``) inside a run directory that is
stable per spec hash, so a run killed with ``pulumi up`` resumes from its last checkpoint next time. One run trains at
a time on a machine (a file lock), because two runs on the same cores only make both slower.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import secrets
import subprocess
import sys
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneform.backends.base import (
    BackendError,
    BackendSettings,
    DatasetArtifact,
    EndpointRequest,
    EndpointState,
    Progress,
    TuningFailed,
    TuningOutcome,
    TuningRequest,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


_LOG_TAIL_LINES = 30
_TAKEOVER_WAIT_S = 30.0
"""How long a successor waits for a stopped owner's claim on a run to go before it says which process holds it."""
_OWNER_POLL_S = 60.0
"""How often a run waiting on a live owner (another `pulumi up`) checks that it is still alive."""


def default_cache_dir() -> Path:
    """Per-user cache for converted base models, shared by every checkout (and CI runs on the same machine)."""
    root = os.environ.get("TUNEFORM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tuneform"
    )
    return Path(root)


class LocalBackend:
    target = "local"

    def __init__(
        self,
        repo_root: Path,
        *,
        cache_dir: Path | None = None,
        host: str = BackendSettings.endpoint_host,
        keep_versions: int = BackendSettings.keep_versions,
        stack: str = BackendSettings.stack,
    ) -> None:
        from tuneform.registry import Registry, registry_root

        self.stack = stack
        self.root = registry_root(repo_root)
        self.registry = Registry(self.root)
        # Owner-only: the registry keeps training data, logs and endpoint keys (whatever mode a file inside has).
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self.cache_dir = cache_dir or default_cache_dir()
        self.host = host
        self.keep_versions = keep_versions

    @classmethod
    def from_settings(cls, settings: BackendSettings) -> LocalBackend:
        return cls(
            Path(settings.repo_root),
            cache_dir=Path(settings.cache_dir) if settings.cache_dir else None,
            host=settings.endpoint_host or BackendSettings.endpoint_host,
            keep_versions=settings.keep_versions,
            stack=settings.stack,
        )

    # Datasets -------------------------------------------------------------------------------------------------

    def store_dataset(
        self, converted_path: str, sha256: str, examples: int, tokens: int, upload_format: str = "gemini"
    ) -> DatasetArtifact:
        del upload_format  # the local trainer reads the Gemini form for every model
        # A dataset record keeps the object alive through garbage collection even before a version references it.
        record = self.registry.add_dataset(converted_path, examples=examples, tokens=tokens, source=converted_path)
        if record.sha256 != sha256:
            raise BackendError(
                f"{converted_path}: content changed while it was being stored (sha256 {record.sha256[:12]}, "
                f"expected {sha256[:12]}). Run `pulumi up` again."
            )
        return DatasetArtifact(sha256, str(self.registry.store.get(sha256)), examples, tokens)

    def dataset_present(self, artifact: DatasetArtifact) -> bool:
        return self.registry.store.has(artifact.sha256)

    # Tuning ---------------------------------------------------------------------------------------------------

    def _intact(self, version: Any, progress: Progress | None = None) -> bool:
        """Whether a version's weights are still in the store (a hand-edited `.tuneform/` may have lost them)."""
        if self.registry.store.has(version.artifact_sha256):
            return True
        if progress is not None:
            progress(
                f"version {version.number}'s weights (object {version.artifact_sha256[:12]}) are missing from "
                f"{self.registry.store.objects}: tuning again"
            )
        return False

    def tune(self, request: TuningRequest, progress: Progress) -> TuningOutcome:
        existing = self.registry.find_version(request.name, request.spec_hash)
        if existing is not None and not self._intact(existing, progress):
            existing = None
        if existing is not None:
            progress(f"version {existing.number} was tuned from exactly these inputs: reusing it, no training")
            return self._outcome(request.name, existing, reused=True)
        run_dir = self._claim_run(request, progress)
        try:
            existing = self.registry.find_version(request.name, request.spec_hash)
            if existing is not None and self._intact(existing):  # the run we waited for registered it
                self.registry.finish_run(request.name, request.spec_hash, succeeded=True)
                progress(f"version {existing.number} was tuned from exactly these inputs meanwhile: reusing it")
                return self._outcome(request.name, existing, reused=True)
            lender = self._weights_of(request)
            with _exclusive(self.root / "locks" / "train.lock", progress):
                result = _finished_result(run_dir, progress) or self._run_training(request, run_dir, progress, lender)
        except BaseException:
            # The run directory and its checkpoints stay: the next `pulumi up` resumes from them.
            self.registry.finish_run(request.name, request.spec_hash, succeeded=False)
            raise
        artifact_sha = lender.artifact_sha256 if lender else self.registry.store.put_dir(result["artifactDir"])
        metrics = {**lender.metrics, **result["metrics"]} if lender else result["metrics"]
        extra: dict[str, Any] = {"generation": _generation(request.generation)} if request.generation else {}
        if request.weights_hash:
            extra["weightsHash"] = request.weights_hash
        latest = self.registry.latest(request.name)
        version = self.registry.add_version(
            request.name,
            spec_hash=request.spec_hash,
            dataset_sha256=request.train.sha256,
            validation_sha256=request.validation.sha256 if request.validation else None,
            base_model=request.base_model,
            mode=request.mode,
            hyperparameters=request.hyperparameters,
            artifact_sha256=artifact_sha,
            artifact_kind=result["kind"],
            metrics=_finite(metrics),
            parent_version=latest.number if latest is not None else None,
            training_log=result["logPath"],
            extra=extra or None,
        )
        self.registry.finish_run(request.name, request.spec_hash, succeeded=True)
        removed = self.registry.retain(request.name, keep_last=self.keep_versions)
        if removed:
            progress(f"retention (keep {self.keep_versions}): removed versions {removed}")
        kept = self.registry.store.get(version.training_log_sha256) if version.training_log_sha256 else None
        progress(f"registered {request.name}@{version.number}" + (f"; its run log is kept in {kept}" if kept else ""))
        return self._outcome(request.name, version, reused=lender is not None)

    def _weights_of(self, request: TuningRequest) -> Any:
        """The newest intact version whose weights this request would train again (only ``endpoint.generation``
        differs), or ``None``."""
        if not request.weights_hash:
            return None
        same = [
            version
            for version in self.registry.versions(request.name)
            if version.extra.get("weightsHash") == request.weights_hash and self._intact(version)
        ]
        return same[-1] if same else None

    def _claim_run(self, request: TuningRequest, progress: Progress) -> Path:
        """Claim the run directory of this configuration, taking it over from a `pulumi up` that is gone.

        A live owner (its process and its engine still there: another `pulumi up` running the same configuration)
        is waited for. An owner whose `pulumi up` was killed is replaced: its trainer, should it still run, is
        stopped, and training resumes from the last checkpoint it left.
        """
        from tuneform import processes
        from tuneform.registry import RunBusyError, RunRecord

        engine = processes.engine_address() or ""
        name, spec_hash = request.name, request.spec_hash

        def live(owner: RunRecord | None) -> bool:
            return owner is not None and owner.owner.alive() and (not owner.engine or processes.answers(owner.engine))

        waited = 0.0
        while True:
            try:
                return self.registry.start_run(name, spec_hash, engine=engine, wait_s=_OWNER_POLL_S if waited else 0)
            except RunBusyError as busy:
                owner = busy.record
            if not live(owner):
                break
            assert owner is not None
            if waited % 600 == 0:
                progress(
                    f"another `pulumi up` (provider process {owner.pid}) is training this configuration in "
                    f"{owner.run_dir}; waiting for it to finish"
                    + (f" ({waited / 60:.0f} min so far)" if waited else "")
                )
            waited += _OWNER_POLL_S
        trainer = owner.trainer if owner is not None else None
        orphan = trainer is not None and owner is not None and trainer.runs("tuneform.training.run", owner.run_dir)
        progress(
            "the `pulumi up` that was training this configuration is gone"
            + (f" (its provider was process {owner.pid})" if owner is not None else "")
            + ": taking over its run directory"
            + (f", stopping its orphaned trainer (process {trainer.pid})" if orphan and trainer else "")
            + "; training resumes from the last checkpoint it saved"
        )
        if orphan and trainer is not None:
            processes.stop(trainer.pid)
        if owner is not None and owner.engine and owner.owner.runs("pulumi.dynamic"):
            processes.stop(owner.pid, group=False)  # a provider whose engine is gone answers no one
        try:
            return self.registry.start_run(name, spec_hash, engine=engine, wait_s=_TAKEOVER_WAIT_S)
        except RunBusyError as busy:
            raise BackendError(
                f"{name}: {busy} The process that held it was stopped {_TAKEOVER_WAIT_S:.0f} s ago and the run is "
                f"still locked: find what holds {busy.record.run_dir if busy.record else 'its run.lock'} (`fuser -v "
                "<run dir>/run.lock`), stop it, and run `pulumi up` again."
            ) from None

    def _run_training(
        self, request: TuningRequest, run_dir: Path, progress: Progress, lender: Any = None
    ) -> dict[str, Any]:
        """Train in a child process; with a ``lender`` (a version with the same weights), only score the test set."""
        from tuneform import catalogue, processes
        from tuneform.training.run import EXIT_REFUSED, REFUSED, RunRequest

        if lender is not None:
            progress(
                f"version {lender.number} has these weights (only endpoint.generation differs): reusing them, no "
                "training" + ("; scoring the test set at the new decoding defaults" if request.test else "")
            )
            if request.test is None:
                artifact = self.registry.store.get(lender.artifact_sha256)
                return {"artifactDir": str(artifact), "kind": lender.artifact_kind, "metrics": {}, "logPath": None}

        info = catalogue.get_model(request.base_model) or catalogue.local_path_info(request.base_model)
        defaults = info.training_defaults()
        hp = request.hyperparameters
        run = RunRequest(
            base_model=request.base_model,
            cache_dir=str(self.cache_dir),
            train_file=request.train.uri,
            validation_file=request.validation.uri if request.validation else None,
            mode=request.mode,
            adapter_size=request.adapter_size,
            lora=request.lora,
            epochs=int(hp.get("epochs") or defaults.epochs),
            learning_rate=float(hp.get("learningRate") or defaults.learning_rate),
            batch_size=int(hp.get("batchSize") or defaults.batch_size),
            test_file=request.test.uri if request.test else None,
            generation=_generation(request.generation),
            weights_dir=str(self.registry.store.get(lender.artifact_sha256)) if lender else None,
            weights_kind=lender.artifact_kind if lender else None,
        )
        (run_dir / "request.json").write_text(run.to_json())
        log_path = run_dir / "run.log"
        doing = "scoring" if lender else "training"
        progress(f"{doing} in a child process; its full log (library output included): {log_path}")
        tail: deque[str] = deque(maxlen=_LOG_TAIL_LINES)
        # The child writes everything to the log itself and only tuneform's progress lines to its stdout (see
        # tuneform.training.run.quiet_output); its stderr reaches the log too, for anything said before that.
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as log:
            # The child holds the run's lock with us (a run directory is trained by one process at a time), leads
            # a process group of its own (stopped whole), and is stopped if the engine goes (processes.track).
            child = subprocess.Popen(
                [sys.executable, "-m", "tuneform.training.run", str(run_dir)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
                pass_fds=(self.registry.run_lock_fd(request.name, request.spec_hash),),
                start_new_session=True,
            )
            processes.track(child, f"the training run of {request.name}")
            self.registry.record_trainer(request.name, request.spec_hash, child.pid)
            assert child.stdout is not None
            for raw in child.stdout:
                line = raw.rstrip()
                tail.append(line)
                progress(line)
            code = child.wait()
            processes.untrack(child)
        if code == EXIT_REFUSED:
            raise TuningFailed(
                f"local tuning of {request.name} refused: {(run_dir / REFUSED).read_text()}",
                job_id=f"{request.name}:{request.spec_hash[:16]}",
                state="FAILED",
            )
        if code != 0:
            with log_path.open(encoding="utf-8", errors="replace") as written:
                tail.extend(line.rstrip() for line in written)  # the traceback is in the log, not the progress
            raise TuningFailed(
                f"local tuning of {request.name} failed (exit {code}); its checkpoints stay in {run_dir} and the "
                f"next `pulumi up` resumes from them. Last lines of {log_path}:\n" + "\n".join(tail),
                job_id=f"{request.name}:{request.spec_hash[:16]}",
                state="FAILED",
            )
        return json.loads((run_dir / "result.json").read_text())

    def _outcome(self, name: str, version: Any, *, reused: bool) -> TuningOutcome:
        return TuningOutcome(
            job_id=f"{name}@{version.number}",
            state="SUCCEEDED",
            model=f"{name}@{version.number}",
            version=version.number,
            metrics=dict(version.metrics),
            endpoint=None,
            reused=reused,
        )

    def tuning_status(self, job_id: str) -> TuningOutcome | None:
        name, _, number = job_id.partition("@")
        if not number.isdigit():
            return None
        version = self.registry.get(name, int(number))
        # A version whose weights are gone is gone: `pulumi refresh` drops it and the next `up` tunes again.
        return None if version is None or not self._intact(version) else self._outcome(name, version, reused=False)

    def cancel(self, job_id: str) -> None:
        # A local run only exists while `pulumi up` waits on it; a finished version stays in the registry.
        return None

    def update_metadata(self, job_id: str, description: str, labels: dict[str, str]) -> None:
        return None

    def delete_version(self, model: str, version: int) -> None:
        self.registry.delete_version(model, version)

    # Endpoints ------------------------------------------------------------------------------------------------

    def _endpoint_dir(self, name: str) -> Path:
        return _endpoints_root(self.root) / name

    def deploy(self, request: EndpointRequest, existing: str | None, progress: Progress) -> EndpointState:
        from tuneform.serving import service
        from tuneform.serving.config import DEFAULT_PORT, parse_config, write_config
        from tuneform.training import resolve_base_model
        from tuneform.training.errors import TrainingError

        directory = self._endpoint_dir(request.name)
        self._refuse_other_stacks(directory, request.name)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)  # its config holds the key, its log what clients asked
        versions: dict[str, dict[str, Any]] = {}
        base_dirs: set[str] = set()
        for number in request.traffic:
            version = self.registry.get(request.model, number)
            if version is not None and not self._intact(version):
                raise BackendError(
                    f"{request.model}@{number}: its weights (object {version.artifact_sha256}) are missing from "
                    f"{self.registry.store.objects}, so it cannot be served. Run `pulumi refresh` and `pulumi up` to "
                    "tune it again, or take it out of `spec.endpoint.traffic`."
                )
            if version is None:
                raise BackendError(
                    f"spec.endpoint.traffic: version {number} of {request.model} is not in the registry "
                    f"(known: {[v.number for v in self.registry.versions(request.model)]})."
                )
            try:
                base_dir = resolve_base_model(version.base_model, cache_dir=self.cache_dir, progress=progress)
            except TrainingError as error:
                raise BackendError(str(error)) from None
            base_dirs.add(str(base_dir))
            versions[str(number)] = {
                "artifact_dir": str(self.registry.store.get(version.artifact_sha256)),
                "kind": version.artifact_kind,
                "base_model_dir": str(base_dir),
                # The version's own decoding defaults (spec.endpoint.generation when it was tuned).
                **({"generation": version.extra["generation"]} if version.extra.get("generation") else {}),
            }
        api_key = request.settings.get("api_key") or secrets.token_urlsafe(32)
        port = int(request.settings.get("port") or DEFAULT_PORT)
        config = {
            "name": request.name,
            "host": self.host,
            "port": port,
            "api_key": api_key,
            "base_model_dir": sorted(base_dirs)[0] if base_dirs else "",
            "versions": versions,
            "traffic": {str(number): percent for number, percent in request.traffic.items()},
            "log_path": str(directory / "server.log"),
            "pid_path": str(directory / "server.pid"),
        }
        config_path = directory / "config.json"
        info_path = directory / "service.json"
        running = service.ServiceInfo.load(info_path) if info_path.exists() else None
        moving = running is None or running.port != port
        # Our own server of this endpoint that a killed `pulumi up` left unrecorded is not in the way: start stops it.
        if moving and not service.port_free(self.host, port) and service.endpoint_on(self.host, port) != request.name:
            # Checked before the running server stops: a refused move must not leave the model unserved.
            raise BackendError(
                f"{request.name}: port {port} on {self.host} is already in use, so the endpoint cannot move there"
                + (f"; it keeps serving on port {running.port}" if running else "")
                + ". Free the port, or set another `tuneform:endpointPort`."
            )
        parsed = parse_config(config, str(config_path))
        if running is not None and running.port == port and service.status(running).healthy:
            # A new traffic split or version set on the same port: the server loads it beside what it serves and
            # switches without a gap (a restart would answer 503 while the models load).
            serving = config_path.read_bytes() if config_path.is_file() else None
            write_config(config_path, parsed)
            progress(f"reloading the endpoint on http://{self.host}:{port} with versions {sorted(request.traffic)}")
            try:
                info = service.reload(running, parsed)
            except service.ServiceError as error:
                if serving is not None:  # the file says what runs: a restart must not bring up what failed
                    config_path.write_bytes(serving)
                raise BackendError(str(error)) from None
        else:
            if running is not None:
                service.stop(running)
            # Checked by the server's own parser, and written atomically readable by its owner only: it holds the key.
            write_config(config_path, parsed)
            progress(f"starting the endpoint on http://{self.host}:{port} (log: {config['log_path']})")
            try:
                info = service.start(config_path, replace=True)  # a server a killed `pulumi up` left unrecorded goes
            except service.ServiceError as error:
                raise BackendError(str(error)) from None
        info.save(info_path)
        (directory / "stack.json").write_text(json.dumps({"stack": self.stack}))
        self.registry.set_serving(request.model, set(request.traffic))
        return EndpointState(
            endpoint_id=request.name, url=info.url, traffic=dict(request.traffic), healthy=True, api_key=api_key
        )

    def endpoint_status(self, endpoint_id: str) -> EndpointState | None:
        from tuneform.serving import service

        info_path = self._endpoint_dir(endpoint_id) / "service.json"
        if not info_path.exists():
            return None
        info = service.ServiceInfo.load(info_path)
        config = json.loads((self._endpoint_dir(endpoint_id) / "config.json").read_text())
        healthy = service.status(info).healthy
        traffic = {int(number): int(percent) for number, percent in config["traffic"].items()}
        return EndpointState(endpoint_id=endpoint_id, url=info.url, traffic=traffic, healthy=healthy, api_key=None)

    def undeploy(self, endpoint_id: str) -> None:
        from tuneform.serving import service

        directory = self._endpoint_dir(endpoint_id)
        if self._other_stack(directory) is not None:
            return  # another stack of this checkout serves the model now; its endpoint is not ours to stop
        info_path = directory / "service.json"
        if info_path.exists():
            service.stop(service.ServiceInfo.load(info_path))
            info_path.unlink()
        # The key has no use once nothing serves with it.
        (directory / "config.json").unlink(missing_ok=True)
        (directory / "stack.json").unlink(missing_ok=True)
        self.registry.set_serving(endpoint_id, set())

    def _other_stack(self, directory: Path) -> str | None:
        """The other stack of this checkout whose running endpoint the directory records; ``None`` when it records
        none, or this stack's, or no stack (an endpoint started before stacks were recorded, or by a provider
        pickled before it knew its stack)."""
        try:
            owner = json.loads((directory / "stack.json").read_text()).get("stack")
        except (OSError, ValueError, AttributeError):
            return None
        if not owner or not self.stack or owner == self.stack or not (directory / "service.json").exists():
            return None
        return str(owner)

    def _refuse_other_stacks(self, directory: Path, name: str) -> None:
        """One checkout serves a model from one local stack: the endpoint's directory, key and port are per model."""
        owner = self._other_stack(directory)
        if owner is not None:
            raise BackendError(
                f"{name}: its local endpoint in this checkout belongs to stack {owner!r}; stack {self.stack!r} "
                f"cannot serve it too (the endpoint's state, key and port are per model). Run `pulumi destroy "
                f"--stack {owner}` first, or serve this model from one stack."
            )


def _endpoints_root(registry: Path) -> Path:
    """Where a registry keeps its local endpoints, one directory per model."""
    return registry / "endpoints"


PORT_RANGE = 100
"""How far above the stack's ``endpointPort`` an endpoint's port may lie and still be kept where it is."""


def endpoint_ports(repo_root: str | Path, names: list[str], base: int) -> dict[str, int]:
    """A port for each model to serve, stable across changes to the other specs.

    An endpoint that runs keeps its port (when it lies within :data:`PORT_RANGE` of ``base``: a new
    ``endpointPort`` moves them all); a new one takes the lowest port from ``base`` up that no running endpoint of
    this checkout holds, the endpoint of a removed or renamed spec included (it stops only after the new one
    starts). Adding, removing or renaming a spec so never moves another model's endpoint.
    """
    from tuneform.registry import registry_root

    running: dict[str, int] = {}
    root = _endpoints_root(registry_root(Path(repo_root)))
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            running[directory.name] = int(json.loads((directory / "service.json").read_text())["port"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    ports: dict[str, int] = {}
    for name in sorted(names):
        port = running.get(name)
        if port is not None and base <= port < base + PORT_RANGE and port not in ports.values():
            ports[name] = port
    held = set(running.values()) | set(ports.values())
    for name in sorted(set(names) - set(ports)):
        port = base
        while port in held:
            port += 1
        ports[name] = port
        held.add(port)
    return ports


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    """Metrics a version can record: NaN and infinities are not JSON, and say nothing a missing figure does not."""
    return {key: float(value) for key, value in metrics.items() if math.isfinite(float(value))}


def _finished_result(run_dir: Path, progress: Progress) -> dict[str, Any] | None:
    """The result a killed `pulumi up`'s training run completed before the version was registered, if any."""
    path = run_dir / "result.json"
    try:
        result: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not Path(result.get("artifactDir", "")).is_dir():
        return None
    progress(f"the interrupted run had finished training and evaluation ({path}); registering its result")
    return result


def _generation(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """``spec.endpoint.generation`` as the spec holds it: numbers cross Pulumi's wire as floats."""
    if not raw:
        return None
    integers = ("topK", "maxOutputTokens")
    return {key: int(value) if key in integers else value for key, value in raw.items() if value is not None}


@contextmanager
def _exclusive(lock_path: Path, progress: Progress) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("another local tuning run is using this machine; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
