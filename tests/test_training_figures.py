"""A run resumed from its final checkpoint records the figures of the attempt that trained (never NaN or 0 tokens/s).

A `pulumi up` killed during evaluation, or before the version was registered, leaves the final checkpoint behind; the
next attempt resumes from it and trains no step. It must report what the training attempt measured, which
``tuneform.training.run`` keeps in the run directory, or, without that file, the loss the checkpoint logged.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from training_helpers import TICKETS, build_tiny_model, write_slice
from tuneform.training.run import FIGURES, RunRequest, run

pytestmark = [pytest.mark.training, pytest.mark.timeout(600)]


def test_resumed_run_reports_the_training_attempts_figures(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "tiny")
    train = write_slice(TICKETS / "train.jsonl", tmp_path / "train.jsonl", 16)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    request = RunRequest(
        base_model=str(model),
        cache_dir=str(tmp_path / "cache"),
        train_file=str(train),
        validation_file=None,
        mode="adapter",
        adapter_size=4,
        lora=None,
        epochs=1,
        learning_rate=1e-3,
        batch_size=4,
    )
    (run_dir / "request.json").write_text(request.to_json())

    trained = run(run_dir)["metrics"]
    assert math.isfinite(trained["trainLoss"]) and trained["trainTokensPerSecond"] > 0
    assert json.loads((run_dir / FIGURES).read_text()) == trained

    resumed = run(run_dir)  # the final checkpoint is there: nothing is left to train
    assert resumed["resumedFrom"] and resumed["metrics"] == trained

    (run_dir / FIGURES).unlink()  # killed between the last checkpoint and writing the figures
    from_checkpoint = run(run_dir)["metrics"]
    assert from_checkpoint["trainLoss"] == pytest.approx(trained["trainLoss"], rel=1e-6)
    assert "trainTokensPerSecond" not in from_checkpoint, "a rate no checkpoint kept is left out, not made up"
    json.dumps(from_checkpoint, allow_nan=False)
