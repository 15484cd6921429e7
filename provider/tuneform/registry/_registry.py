"""Numbered model versions, dataset records and the run ledger, as JSON files beside the object store.

Layout of the registry directory::

    lock                                  flock(2) taken by every writer of metadata
    objects/<sha>                         content-addressed files and trees (``ObjectStore``)
    datasets/<sha>.json                   a stored dataset (keeps its object from garbage collection)
    models/<name>/versions/<n>.json       one file per version
    models/<name>/serving.json            versions an endpoint serves (never deleted by retention)
    runs/<name>/<spec_hash>/run.json      an in-progress tuning run; its directory holds the checkpoints

Every JSON file is written to a temporary file and renamed into place, so readers need no lock and always see a
whole file; writers serialise on ``lock`` so two ``pulumi up`` processes never hand out the same version number.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneform.registry._files import RegistryError, _check_name, _check_spec_hash, _now, _read_json, _write_json
from tuneform.registry._runs import RunBusyError, RunLedger, RunRecord
from tuneform.registry._store import ObjectStore

__all__ = ["DEFAULT_GC_GRACE_S", "DatasetRecord", "Registry", "RegistryError", "RunBusyError", "RunRecord", "Version"]

DEFAULT_GC_GRACE_S = 3600.0
"""Objects younger than this survive garbage collection: a concurrent run may have stored one a moment ago."""


@dataclass(frozen=True)
class Version:
    """One tuned model version, as recorded in ``models/<model>/versions/<number>.json``."""

    model: str
    number: int
    spec_hash: str
    """Identity of the training inputs + dataset; the same hash means the same model, so it is reused."""
    dataset_sha256: str
    validation_sha256: str | None
    base_model: str
    mode: str
    """``adapter`` or ``full``."""
    hyperparameters: dict[str, Any]
    artifact_sha256: str
    """The adapter or full weights: a tree in the object store."""
    artifact_kind: str
    """``adapter`` (PEFT adapter directory) or ``full`` (a complete model directory)."""
    metrics: dict[str, float]
    parent_version: int | None
    """The model's latest version when this one was added (``None`` for the first)."""
    created_at: str
    """ISO 8601 UTC."""
    training_log_sha256: str | None = None
    """The training log, copied into the object store."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form data a backend wants to keep with the version."""

    @property
    def label(self) -> str:
        """The versioned name, ``<model>@<number>``."""
        return f"{self.model}@{self.number}"

    def objects(self) -> set[str]:
        """The object-store hashes this version keeps alive."""
        refs = {self.dataset_sha256, self.artifact_sha256, self.validation_sha256, self.training_log_sha256}
        return {sha for sha in refs if sha}


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset stored in the object store, as recorded in ``datasets/<sha256>.json``."""

    sha256: str
    examples: int
    tokens: int
    source: str
    """Where it came from (the spec's path), for people reading the registry."""
    created_at: str


class Registry(RunLedger):
    """The local model registry: versions, datasets and runs over a content-addressed ``ObjectStore``.

    Safe to use from several processes at once (writers take an ``flock`` on ``<root>/lock``). Holds only a path, so
    it pickles; build it where it is used.

    Args:
        root: The registry directory, e.g. ``<repo>/.tuneform`` (created if missing).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.store = ObjectStore(self.root)
        self._lock_path = self.root / "lock"
        self._run_locks: dict[tuple[str, str], int] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Held run locks are open file descriptors of this process; they must not travel.
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])  # type: ignore[misc]

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the registry's write lock (blocking) for a block of reads and writes that must be atomic."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ---- versions -------------------------------------------------------------------------------------------

    def _versions_dir(self, model: str) -> Path:
        return self.root / "models" / _check_name(model) / "versions"

    def versions(self, model: str) -> list[Version]:
        """Lists a model's versions.

        Args:
            model: The model name (``metadata.name``).

        Returns:
            Its versions, oldest first; empty for an unknown model.
        """
        folder = self._versions_dir(model)
        if not folder.is_dir():
            return []
        numbers = sorted(int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit())
        return [self._load_version(folder / f"{n}.json") for n in numbers]

    @staticmethod
    def _load_version(path: Path) -> Version:
        return Version(**_read_json(path))

    def get(self, model: str, number: int) -> Version | None:
        """Finds one version.

        Args:
            model: The model name.
            number: The version number.

        Returns:
            The version, or ``None`` if it does not exist (never made, or removed by retention).
        """
        path = self._versions_dir(model) / f"{int(number)}.json"
        return self._load_version(path) if path.is_file() else None

    def latest(self, model: str) -> Version | None:
        """Finds the newest version.

        Args:
            model: The model name.

        Returns:
            The highest-numbered version, or ``None`` for a model without versions.
        """
        versions = self.versions(model)
        return versions[-1] if versions else None

    def find_version(self, model: str, spec_hash: str) -> Version | None:
        """Finds the version an identical configuration produced, so it can be reused without training.

        Args:
            model: The model name.
            spec_hash: ``ResolvedSpec.spec_hash(dataset_hash)`` of the configuration being applied.

        Returns:
            The newest version with that spec hash, or ``None``.
        """
        matches = [v for v in self.versions(model) if v.spec_hash == spec_hash]
        return matches[-1] if matches else None

    def add_version(
        self,
        model: str,
        *,
        spec_hash: str,
        dataset_sha256: str,
        validation_sha256: str | None,
        base_model: str,
        mode: str,
        hyperparameters: dict[str, Any],
        artifact_sha256: str,
        artifact_kind: str,
        metrics: dict[str, float],
        parent_version: int | None = None,
        training_log: str | os.PathLike[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Version:
        """Records a new version under the next free number.

        If a version with the same ``spec_hash`` already exists (a concurrent run of the same configuration won
        the race) that version is returned instead of adding a duplicate.

        Args:
            model: The model name.
            spec_hash: Identity of the training inputs + dataset.
            dataset_sha256: The training set's object.
            validation_sha256: The validation set's object, if any.
            base_model: Catalogue id or path of the base model.
            mode: ``adapter`` or ``full``.
            hyperparameters: As used for training (epochs, learning rate, batch size, LoRA settings...).
            artifact_sha256: The weights' object (``ObjectStore.put_dir``).
            artifact_kind: ``adapter`` or ``full``.
            metrics: Evaluation results (validation loss, exact match, for base and tuned).
            parent_version: The version this one follows; defaults to the latest version at the time of the call.
            training_log: A log file to copy into the store and keep with the version.
            extra: Free-form data to keep with the version.

        Returns:
            The recorded version.

        Raises:
            RegistryError: A referenced object is not in the store, or a name or hash is malformed.
        """
        _check_spec_hash(spec_hash)
        if artifact_kind not in ("adapter", "full"):
            raise RegistryError(f"artifact_kind: expected 'adapter' or 'full', got {artifact_kind!r}")
        for what, sha in (
            ("dataset_sha256", dataset_sha256),
            ("validation_sha256", validation_sha256),
            ("artifact_sha256", artifact_sha256),
        ):
            if sha is not None and not self.store.has(sha):
                raise RegistryError(f"{what}: object {sha!r} is not in the store; put it there before recording")
        log_sha = self.store.put_file(training_log) if training_log is not None else None
        folder = self._versions_dir(model)
        with self.locked():
            existing = self.find_version(model, spec_hash)
            if existing is not None:
                return existing
            latest = self.latest(model)
            number = 1 if latest is None else latest.number + 1
            if parent_version is None and latest is not None:
                parent_version = latest.number
            version = Version(
                model=model,
                number=number,
                spec_hash=spec_hash,
                dataset_sha256=dataset_sha256,
                validation_sha256=validation_sha256,
                base_model=base_model,
                mode=mode,
                hyperparameters=dict(hyperparameters),
                artifact_sha256=artifact_sha256,
                artifact_kind=artifact_kind,
                metrics=dict(metrics),
                parent_version=parent_version,
                created_at=_now(),
                training_log_sha256=log_sha,
                extra=dict(extra or {}),
            )
            _write_json(folder / f"{number}.json", asdict(version))
        return version

    def artifact_path(self, version: Version) -> Path:
        """Locates a version's weights.

        Args:
            version: The version.

        Returns:
            The artifact directory in the object store (read-only).
        """
        return self.store.get(version.artifact_sha256)

    def models(self) -> list[str]:
        """Lists the models that have a directory in the registry.

        Returns:
            Model names, sorted.
        """
        folder = self.root / "models"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    # ---- serving and retention ------------------------------------------------------------------------------

    def set_serving(self, model: str, versions: set[int]) -> None:
        """Records which versions an endpoint serves; retention never removes them.

        Args:
            model: The model name.
            versions: The served version numbers (empty when the endpoint is gone).
        """
        path = self.root / "models" / _check_name(model) / "serving.json"
        with self.locked():
            _write_json(path, {"versions": sorted(int(v) for v in versions)})

    def serving(self, model: str) -> set[int]:
        """Tells which versions an endpoint serves.

        Args:
            model: The model name.

        Returns:
            The served version numbers.
        """
        path = self.root / "models" / _check_name(model) / "serving.json"
        return set(_read_json(path)["versions"]) if path.is_file() else set()

    def retain(self, model: str, keep_last: int, *, gc_grace_s: float = DEFAULT_GC_GRACE_S) -> list[int]:
        """Deletes a model's older versions, keeping the newest ``keep_last`` and every served one, then collects
        objects nothing references any more.

        Args:
            model: The model name.
            keep_last: How many of the newest versions to keep (at least 1).
            gc_grace_s: Passed to ``gc``.

        Returns:
            The deleted version numbers.

        Raises:
            RegistryError: ``keep_last`` is below 1.
        """
        if keep_last < 1:
            raise RegistryError(f"keep_last: expected an integer >= 1, got {keep_last}")
        with self.locked():
            versions = self.versions(model)
            keep = {v.number for v in versions[-keep_last:]} | self.serving(model)
            deleted = [v.number for v in versions if v.number not in keep]
            for number in deleted:
                (self._versions_dir(model) / f"{number}.json").unlink()
        self.gc(grace_s=gc_grace_s)
        return deleted

    def delete_version(self, model: str, number: int, *, gc_grace_s: float = DEFAULT_GC_GRACE_S) -> bool:
        """Deletes one version (``retain: false`` on ``pulumi destroy``), then collects unreferenced objects.

        Args:
            model: The model name.
            number: The version number.
            gc_grace_s: Passed to ``gc``.

        Returns:
            True if it existed.

        Raises:
            RegistryError: An endpoint still serves the version.
        """
        with self.locked():
            if int(number) in self.serving(model):
                raise RegistryError(
                    f"{model}@{number} is served by an endpoint; take it out of `spec.endpoint.traffic` (or destroy "
                    "the endpoint) before deleting it."
                )
            path = self._versions_dir(model) / f"{int(number)}.json"
            existed = path.is_file()
            path.unlink(missing_ok=True)
        self.gc(grace_s=gc_grace_s)
        return existed

    def delete_model(self, model: str, *, gc_grace_s: float = DEFAULT_GC_GRACE_S) -> None:
        """Deletes a model with all its versions, serving record and runs, then collects unreferenced objects.

        Args:
            model: The model name.
            gc_grace_s: Passed to ``gc``.
        """
        with self.locked():
            shutil.rmtree(self.root / "models" / _check_name(model), ignore_errors=True)
            shutil.rmtree(self.root / "runs" / model, ignore_errors=True)
        self.gc(grace_s=gc_grace_s)

    def gc(self, *, grace_s: float = DEFAULT_GC_GRACE_S) -> list[str]:
        """Deletes objects that no version and no dataset record references.

        Args:
            grace_s: Objects younger than this many seconds are kept (they may belong to a version being added).

        Returns:
            The deleted object hashes.
        """
        with self.locked():
            keep: set[str] = {record.sha256 for record in self.datasets()}
            for model in self.models():
                for version in self.versions(model):
                    keep |= version.objects()
            return self.store.collect(keep, grace_s)

    # ---- datasets -------------------------------------------------------------------------------------------

    def add_dataset(self, path: str | os.PathLike[str], *, examples: int, tokens: int, source: str) -> DatasetRecord:
        """Stores a converted dataset file and records it, so garbage collection keeps it.

        Args:
            path: The converted JSONL file.
            examples: Number of examples.
            tokens: Token total of one pass.
            source: Where it came from, for people.

        Returns:
            The record; ``sha256`` is the object's address.
        """
        sha = self.store.put_file(path)
        record_path = self.root / "datasets" / f"{sha}.json"
        with self.locked():
            if record_path.is_file():
                return DatasetRecord(**_read_json(record_path))
            record = DatasetRecord(sha256=sha, examples=examples, tokens=tokens, source=source, created_at=_now())
            _write_json(record_path, asdict(record))
        return record

    def dataset(self, sha256: str) -> DatasetRecord | None:
        """Finds a dataset record.

        Args:
            sha256: The dataset's hash.

        Returns:
            The record, or ``None``.
        """
        path = self.root / "datasets" / f"{sha256}.json"
        return DatasetRecord(**_read_json(path)) if path.is_file() and self.store.has(sha256) else None

    def datasets(self) -> list[DatasetRecord]:
        """Lists the dataset records.

        Returns:
            Every record, sorted by hash.
        """
        folder = self.root / "datasets"
        if not folder.is_dir():
            return []
        return [DatasetRecord(**_read_json(p)) for p in sorted(folder.glob("*.json"))]

    def remove_dataset(self, sha256: str) -> None:
        """Drops a dataset record; its object goes at the next ``gc`` unless a version references it.

        Args:
            sha256: The dataset's hash.
        """
        with self.locked():
            (self.root / "datasets" / f"{sha256}.json").unlink(missing_ok=True)
