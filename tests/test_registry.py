"""The local registry on real files: content addressing, versions, reuse, retention, GC, the run ledger and
two processes writing at once."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tuneform.processes import ProcessRef
from tuneform.registry import ObjectNotFoundError, Registry, RegistryError, RunBusyError, tree_sha256

pytestmark = pytest.mark.timeout(60)


def _adapter_dir(base: Path, name: str, content: str) -> Path:
    folder = base / name
    (folder / "nested").mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "tag": content}))
    (folder / "nested" / "weights.bin").write_bytes(content.encode() * 100)
    return folder


def _spec_hash(i: int) -> str:
    return f"{i:064x}"


def _add(reg: Registry, tmp: Path, i: int, model: str = "ticket-router") -> int:
    data = tmp / f"train{i}.jsonl"
    data.write_text(f'{{"i": {i}}}\n')
    ds = reg.add_dataset(data, examples=1, tokens=3, source=f"train{i}.jsonl")
    art = reg.store.put_dir(_adapter_dir(tmp, f"art{i}", f"weights-{i}"))
    version = reg.add_version(
        model,
        spec_hash=_spec_hash(i),
        dataset_sha256=ds.sha256,
        validation_sha256=None,
        base_model="smollm2-135m-instruct",
        mode="adapter",
        hyperparameters={"epochs": i},
        artifact_sha256=art,
        artifact_kind="adapter",
        metrics={"exactMatch": 0.5},
    )
    return version.number


class TestObjectStore:
    def test_file_is_content_addressed_and_deduped(self, tmp_path: Path) -> None:
        reg = Registry(tmp_path / "reg")
        a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
        a.write_text("same\n")
        b.write_text("same\n")
        sha = reg.store.put_file(a)
        assert sha == hashlib.sha256(b"same\n").hexdigest()
        assert reg.store.put_file(b) == sha
        assert reg.store.get(sha).read_text() == "same\n"
        assert reg.store.shas() == [sha]
        assert list((tmp_path / "reg" / "tmp").iterdir()) == []

    def test_tree_hash_is_deterministic_and_content_sensitive(self, tmp_path: Path) -> None:
        reg = Registry(tmp_path / "reg")
        one = _adapter_dir(tmp_path, "one", "x")
        two = _adapter_dir(tmp_path, "two", "x")
        os.utime(two / "adapter_config.json", (1, 1))  # timestamps are not content
        sha = reg.store.put_dir(one)
        assert sha == reg.store.put_dir(two) == tree_sha256(one)
        (two / "nested" / "weights.bin").write_bytes(b"changed")
        assert reg.store.put_dir(two) != sha
        stored = reg.store.get(sha)
        assert (stored / "nested" / "weights.bin").read_bytes() == b"x" * 100
        # Read-only bits (root ignores them, so check the mode rather than try a write).
        assert stat.S_IMODE((stored / "adapter_config.json").stat().st_mode) & 0o222 == 0

    def test_missing_object(self, tmp_path: Path) -> None:
        reg = Registry(tmp_path / "reg")
        assert not reg.store.has("0" * 64)
        assert not reg.store.has("../../etc")
        with pytest.raises(ObjectNotFoundError):
            reg.store.get("0" * 64)


class TestVersions:
    def test_numbering_parent_and_reuse_by_spec_hash(self, tmp_path: Path) -> None:
        reg = Registry(tmp_path / "reg")
        assert reg.latest("ticket-router") is None
        assert _add(reg, tmp_path, 1) == 1
        assert _add(reg, tmp_path, 2) == 2
        v1, v2 = reg.versions("ticket-router")
        assert v1.parent_version is None and v2.parent_version == 1
        assert v2.label == "ticket-router@2" and v2.created_at.endswith("+00:00")
        assert reg.get("ticket-router", 2) == v2 == reg.latest("ticket-router")
        # A `git revert` re-applies version 1's configuration: found, not retrained.
        assert reg.find_version("ticket-router", _spec_hash(1)) == v1
        assert reg.find_version("ticket-router", _spec_hash(9)) is None
        assert (reg.artifact_path(v1) / "nested" / "weights.bin").read_bytes() == b"weights-1" * 100
        on_disk = json.loads((tmp_path / "reg/models/ticket-router/versions/2.json").read_text())
        assert on_disk["hyperparameters"] == {"epochs": 2} and on_disk["spec_hash"] == _spec_hash(2)

    def test_adding_an_existing_spec_hash_returns_that_version(self, tmp_path: Path) -> None:
        reg = Registry(tmp_path / "reg")
        _add(reg, tmp_path, 1)
        again = tmp_path / "again"
        again.mkdir()
        assert _add(reg, again, 1) == 1
        assert len(reg.versions("ticket-router")) == 1

    def test_refuses_unstored_objects_and_bad_names(self, tmp_path: Path) -> None:
        reg = Registry(tmp_path / "reg")
        with pytest.raises(RegistryError, match="artifact_sha256: object .* is not in the store"):
            reg.add_version(
                "m",
                spec_hash=_spec_hash(1),
                dataset_sha256=reg.store.put_file(__file__),
                validation_sha256=None,
                base_model="b",
                mode="adapter",
                hyperparameters={},
                artifact_sha256="f" * 64,
                artifact_kind="adapter",
                metrics={},
            )
        with pytest.raises(RegistryError, match="model name '../x'"):
            reg.versions("../x")

    def test_training_log_is_kept(self, tmp_path: Path) -> None:
        reg = Registry(tmp_path / "reg")
        log = tmp_path / "train.log"
        log.write_text("step 1 loss 2.0\n")
        art = reg.store.put_dir(_adapter_dir(tmp_path, "a", "w"))
        version = reg.add_version(
            "m",
            spec_hash=_spec_hash(1),
            dataset_sha256=art,
            validation_sha256=None,
            base_model="b",
            mode="full",
            hyperparameters={},
            artifact_sha256=art,
            artifact_kind="full",
            metrics={"loss": 1.0},
            training_log=log,
        )
        assert version.training_log_sha256 is not None
        assert reg.store.get(version.training_log_sha256).read_text() == "step 1 loss 2.0\n"

    def test_registry_pickles_as_plain_data(self, tmp_path: Path) -> None:
        reg = Registry(tmp_path / "reg")
        run_dir = reg.start_run("m", _spec_hash(1))
        clone = pickle.loads(pickle.dumps(reg))
        assert clone.root == reg.root and clone._run_locks == {}
        reg.finish_run("m", _spec_hash(1), succeeded=True)
        assert not run_dir.exists()


class TestRetention:
    def test_keeps_last_n_and_served_version_and_collects_objects(self, tmp_path: Path) -> None:
        reg = Registry(tmp_path / "reg")
        for i in range(1, 6):
            _add(reg, tmp_path, i)
        v1, v2 = reg.get("ticket-router", 1), reg.get("ticket-router", 2)
        assert v1 is not None and v2 is not None
        reg.set_serving("ticket-router", {2})
        # Drop the dataset records: only versions keep those objects now.
        for record in reg.datasets():
            reg.remove_dataset(record.sha256)
        deleted = reg.retain("ticket-router", keep_last=2, gc_grace_s=0)
        assert deleted == [1, 3]
        assert [v.number for v in reg.versions("ticket-router")] == [2, 4, 5]
        assert reg.serving("ticket-router") == {2}
        assert not reg.store.has(v1.artifact_sha256) and not reg.store.has(v1.dataset_sha256)
        assert reg.store.has(v2.artifact_sha256) and reg.store.has(v2.dataset_sha256)
        # Numbers are never reused after retention.
        assert _add(reg, tmp_path, 6) == 6

    def test_gc_keeps_recorded_datasets_and_young_objects(self, tmp_path: Path) -> None:
        reg = Registry(tmp_path / "reg")
        data = tmp_path / "d.jsonl"
        data.write_text("{}\n")
        record = reg.add_dataset(data, examples=1, tokens=1, source="d.jsonl")
        loose = reg.store.put_dir(_adapter_dir(tmp_path, "loose", "l"))
        (tmp_path / "reg" / "tmp" / "put-killed-writer").mkdir()  # what a writer killed mid-copy leaves
        assert reg.gc() == []  # default grace: a just-stored object may be about to be recorded
        assert reg.gc(grace_s=0) == [loose]
        assert list((tmp_path / "reg" / "tmp").iterdir()) == []
        assert reg.store.has(record.sha256) and reg.dataset(record.sha256) == record

    def test_delete_model(self, tmp_path: Path) -> None:
        reg = Registry(tmp_path / "reg")
        _add(reg, tmp_path, 1, model="a")
        _add(reg, tmp_path, 2, model="b")
        for record in reg.datasets():
            reg.remove_dataset(record.sha256)
        reg.delete_model("a", gc_grace_s=0)
        assert reg.models() == ["b"] and reg.versions("a") == []
        assert len(reg.store.shas()) == 2  # b's dataset and adapter

    def test_delete_version_refuses_a_served_one(self, tmp_path: Path) -> None:
        reg = Registry(tmp_path / "reg")
        _add(reg, tmp_path, 1)
        _add(reg, tmp_path, 2)
        reg.set_serving("ticket-router", {1})
        with pytest.raises(RegistryError, match=r"ticket-router@1 is served by an endpoint; take it out of"):
            reg.delete_version("ticket-router", 1)
        assert reg.delete_version("ticket-router", 2) and not reg.delete_version("ticket-router", 2)
        assert [v.number for v in reg.versions("ticket-router")] == [1]

    def test_keep_last_must_be_positive(self, tmp_path: Path) -> None:
        with pytest.raises(RegistryError, match="keep_last: expected an integer >= 1, got 0"):
            Registry(tmp_path).retain("m", keep_last=0)


def _add_many(root: str, start: int, count: int) -> None:
    reg = Registry(root)
    tmp = Path(root).parent / f"work{start}"
    tmp.mkdir()
    for i in range(start, start + count):
        _add(reg, tmp, i)


def _put_same_tree(root: str, source: str, times: int) -> None:
    store = Registry(root).store
    shas = {store.put_dir(source) for _ in range(times)}
    assert len(shas) == 1


class TestConcurrency:
    def test_two_processes_storing_the_same_tree_dedupe(self, tmp_path: Path) -> None:
        source = _adapter_dir(tmp_path, "adapter", "w" * 5000)
        root = str(tmp_path / "reg")
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_put_same_tree, args=(root, str(source), 20)) for _ in range(2)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(50)
            assert proc.exitcode == 0
        store = Registry(root).store
        assert store.shas() == [tree_sha256(source)]
        assert (store.get(tree_sha256(source)) / "nested" / "weights.bin").read_bytes() == ("w" * 5000).encode() * 100
        assert list((tmp_path / "reg" / "tmp").iterdir()) == []

    def test_two_processes_adding_versions_get_distinct_numbers(self, tmp_path: Path) -> None:
        root = str(tmp_path / "reg")
        Registry(root)
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_add_many, args=(root, start, 15)) for start in (1, 101)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(50)
            assert proc.exitcode == 0
        versions = Registry(root).versions("ticket-router")
        assert [v.number for v in versions] == list(range(1, 31))
        assert len({v.spec_hash for v in versions}) == 30
        assert not list((tmp_path / "reg/models/ticket-router/versions").glob(".*"))  # no temp files left


class TestRunLedger:
    def test_run_dir_is_stable_and_claimed(self, tmp_path: Path) -> None:
        reg = Registry(tmp_path / "reg")
        run_dir = reg.start_run("m", _spec_hash(7))
        (run_dir / "checkpoint-1").mkdir()
        assert reg.start_run("m", _spec_hash(7)) == run_dir  # same process: idempotent
        (record,) = reg.runs("m")
        assert record.state == "running" and not record.interrupted and record.attempts == 2
        reg.finish_run("m", _spec_hash(7), succeeded=False)
        (record,) = reg.runs()
        assert record.state == "failed" and (run_dir / "checkpoint-1").is_dir()
        assert reg.start_run("m", _spec_hash(7)) == run_dir
        reg.finish_run("m", _spec_hash(7), succeeded=True)
        assert reg.runs() == [] and not run_dir.exists()

    def test_killed_run_is_found_again_and_resumed(self, tmp_path: Path) -> None:
        root = tmp_path / "reg"
        script = textwrap.dedent(
            f"""
            import sys, time
            from tuneform.registry import Registry
            run_dir = Registry({str(root)!r}).start_run("m", {_spec_hash(3)!r})
            (run_dir / "checkpoint-1").mkdir()
            print("started", flush=True)
            time.sleep(60)
            """
        )
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
            reg = Registry(root)
            with pytest.raises(RunBusyError, match=f"already in progress in process {proc.pid}"):
                reg.start_run("m", _spec_hash(3))
            (live,) = reg.runs("m")
            assert not live.interrupted
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        (killed,) = reg.runs("m")
        assert killed.interrupted and killed.pid == proc.pid and killed.state == "running"
        run_dir = reg.start_run("m", _spec_hash(3))
        assert (run_dir / "checkpoint-1").is_dir()
        (resumed,) = reg.runs("m")
        assert resumed.attempts == 2 and resumed.pid == os.getpid() and not resumed.interrupted


def _spawn_owner(root: Path, spec_hash: str, trainer_argv: list[str], exit_after: bool) -> subprocess.Popen[str]:
    """A process that claims a run and starts a "trainer" holding the claim with it, as LocalBackend does."""
    script = textwrap.dedent(
        f"""
        import subprocess, sys, time
        from tuneform.registry import Registry
        reg = Registry({str(root)!r})
        run_dir = reg.start_run("m", {spec_hash!r}, engine="")
        trainer = subprocess.Popen({trainer_argv!r} + [str(run_dir)], pass_fds=(reg.run_lock_fd("m", {spec_hash!r}),),
                                   start_new_session=True)
        reg.record_trainer("m", {spec_hash!r}, trainer.pid)
        print(trainer.pid, flush=True)
        if not {exit_after!r}:
            time.sleep(60)
        """
    )
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


_SLEEPER = [sys.executable, "-c", "import sys, time; time.sleep(60)", "tuneform.training.run"]


class TestRunOwnership:
    def test_the_trainer_holds_the_run_after_its_owner_is_gone(self, tmp_path: Path) -> None:
        root = tmp_path / "reg"
        owner = _spawn_owner(root, _spec_hash(4), _SLEEPER, exit_after=True)
        assert owner.stdout is not None
        trainer = int(owner.stdout.readline())
        owner.wait()
        try:
            with pytest.raises(RunBusyError) as busy:
                Registry(root).start_run("m", _spec_hash(4))
            record = busy.value.record
            assert record is not None and record.pid == owner.pid and not record.owner.alive()
            assert record.trainer is not None and record.trainer.pid == trainer and record.trainer.alive()
            assert record.trainer.runs("tuneform.training.run", record.run_dir)
        finally:
            os.kill(trainer, signal.SIGKILL)
        run_dir = Registry(root).start_run("m", _spec_hash(4), wait_s=10)
        (record,) = Registry(root).runs("m")
        assert record.attempts == 2 and record.pid == os.getpid() and record.trainer is None and run_dir.is_dir()

    def test_waits_for_a_holder_that_lets_go(self, tmp_path: Path) -> None:
        root = tmp_path / "reg"
        owner = _spawn_owner(root, _spec_hash(5), [sys.executable, "-c", "import time; time.sleep(1.5)"], True)
        assert owner.stdout is not None
        owner.stdout.readline()
        owner.wait()
        assert Registry(root).start_run("m", _spec_hash(5), wait_s=30).is_dir()

    def test_a_dead_owners_run_is_taken_over_with_a_line_not_a_traceback(self, tmp_path: Path) -> None:
        """LocalBackend: the provider of a killed `pulumi up` is gone but its trainer still trains; the next run
        stops that orphan, says so, and claims the run directory for itself."""
        from tuneform.backends.base import DatasetArtifact, TuningRequest
        from tuneform.backends.local import LocalBackend

        backend = LocalBackend(tmp_path / "repo")
        owner = _spawn_owner(backend.root, _spec_hash(6), _SLEEPER, exit_after=True)
        assert owner.stdout is not None
        trainer = int(owner.stdout.readline())
        owner.wait()
        data = DatasetArtifact("0" * 64, "unused.jsonl", 1, 1)
        request = TuningRequest("m", _spec_hash(6), "tiny", "adapter", 4, {}, data, None)
        lines: list[str] = []
        run_dir = backend._claim_run(request, lines.append)
        assert run_dir == backend.root / "runs" / "m" / _spec_hash(6)
        assert (
            len(lines) == 1
            and "is gone" in lines[0]
            and f"stopping its orphaned trainer (process {trainer})" in (lines[0])
        )
        assert ProcessRef.of(trainer) is None, "the orphaned trainer was stopped"
