"""The local trainer, for real: tiny Llama models trained with TRL + PEFT on slices of the example data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from training_helpers import REPO, TICKETS, build_tiny_model, tiny_train_config, write_slice
from tuneform.serving.engine import Job, decode_all, render_prompt
from tuneform.serving.protocol import Decoding
from tuneform.training import TrainConfig, build_lora_config, evaluate, load_for_inference, train
from tuneform.training.base_model import resolve_base_model
from tuneform.training.errors import TrainingError
from tuneform.training.trainer import last_checkpoint

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    return (
        write_slice(TICKETS / "train.jsonl", root / "train.jsonl", 24),
        write_slice(TICKETS / "validation.jsonl", root / "validation.jsonl", 8),
    )


def _config(tiny: Path, data: tuple[Path, Path], output: Path, **overrides) -> TrainConfig:
    return tiny_train_config(tiny, data[0], output, validation_file=data[1], **overrides)


def _weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    (path,) = [p for p in directory.glob("*.safetensors")]
    return load_file(str(path))


def _step_losses(output: Path) -> list[float]:
    checkpoint = last_checkpoint(output)
    assert checkpoint is not None
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


class TestLora:
    def test_loss_falls_adapter_changes_base_does_not(self, tiny: Path, data, tmp_path: Path) -> None:
        import torch

        lines: list[str] = []
        result = train(_config(tiny, data, tmp_path / "run", epochs=4), lines.append)

        assert result.kind == "adapter" and result.artifact_dir == tmp_path / "run" / "adapter"
        assert result.steps == 12 and result.epochs == pytest.approx(4.0)
        losses = _step_losses(tmp_path / "run")
        assert len(losses) == 12
        assert sum(losses[-3:]) / 3 < losses[0] * 0.8, losses
        assert result.tokens > 0 and result.tokens_per_second > 0
        assert result.resumed_from is None

        # LoRA B starts at zero: a trained adapter has moved it.
        adapter = _weights(result.artifact_dir)
        assert adapter and all(".lora_" in name for name in adapter)
        lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
        assert lora_b and all(tensor.abs().sum() > 0 for tensor in lora_b)
        config = json.loads((result.artifact_dir / "adapter_config.json").read_text())
        assert config["r"] == 4 and config["lora_alpha"] == 8
        projections = {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
        assert projections == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

        # The base directory's weights are untouched, and so is the base inside the merged model.
        base = _weights(tiny)
        model, _ = load_for_inference(tiny, None, None)
        for name, tensor in model.state_dict().items():
            if name in base:
                assert torch.equal(tensor, base[name]), name

        assert any(line.startswith("train: step 1/12 epoch") and "tokens/s ETA" in line for line in lines), lines
        log = result.log_path.read_text()
        assert "train: step 12/12" in log and "checkpoint-12 saved" in log

    def test_same_seed_same_adapter(self, tiny: Path, data, tmp_path: Path) -> None:
        import torch

        results = [
            train(_config(tiny, data, tmp_path / name, extra_args={"max_steps": 2}), lambda _: None)
            for name in ("a", "b")
        ]
        first, second = (_weights(r.artifact_dir) for r in results)
        assert first.keys() == second.keys()
        for name in first:
            assert torch.equal(first[name], second[name]), name
        other = train(_config(tiny, data, tmp_path / "c", seed=7, extra_args={"max_steps": 2}), lambda _: None)
        assert any(not torch.equal(first[n], t) for n, t in _weights(other.artifact_dir).items())


class TestFull:
    def test_full_mode_changes_base_weights(self, tiny: Path, data, tmp_path: Path) -> None:
        import torch

        result = train(_config(tiny, data, tmp_path / "run", mode="full", learning_rate=1e-3), lambda _: None)
        assert result.kind == "full" and result.artifact_dir.name == "model"
        before, after = _weights(tiny), _weights(result.artifact_dir)
        changed = [name for name in before if not torch.equal(before[name], after[name])]
        assert "model.layers.0.self_attn.q_proj.weight" in changed
        assert "model.embed_tokens.weight" in changed
        assert (result.artifact_dir / "tokenizer.json").is_file()
        model, tokenizer = load_for_inference(tiny, result.artifact_dir, "full")
        answers: list[Any] = []
        prompt = render_prompt(tokenizer, [{"role": "user", "content": "hi"}], "Be brief.")
        greedy = Decoding(temperature=0.0, top_p=1.0, max_new_tokens=4)
        job = Job.make(prompt, greedy, lambda kind, value: answers.append(value))
        decode_all(model, tokenizer, [job], max_batch=1)  # the code that serves the saved weights
        text, prompt_tokens, completion_tokens, finish = (
            answers[-1].text,
            answers[-1].prompt_tokens,
            answers[-1].completion_tokens,
            answers[-1].finish_reason,
        )
        assert prompt_tokens > 0 and 1 <= completion_tokens <= 4 and finish in ("stop", "length")
        assert isinstance(text, str)


_CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_training import _config
from tuneform.training import trainer
trainer.PROGRESS_INTERVAL_S = 0
def slow(line):
    print(line, flush=True)
    time.sleep(0.25)  # slows steps down so that the parent can kill this run mid-epoch
trainer.train(_config(Path({tiny!r}), (Path({train!r}), Path({val!r})), Path({out!r}), epochs=3), slow)
"""


class TestResume:
    def test_killed_run_resumes_from_last_checkpoint(self, tiny: Path, data, tmp_path: Path) -> None:
        output = tmp_path / "run"
        script = _CHILD.format(
            tests=str(REPO / "tests"), tiny=str(tiny), train=str(data[0]), val=str(data[1]), out=str(output)
        )
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        try:
            # Not last_checkpoint(): it deletes a checkpoint still being written, under the child's feet.
            while not list(output.glob("checkpoint-*/trainer_state.json")):
                assert child.poll() is None, child.stdout.read().decode() if child.stdout else ""
                assert time.monotonic() < deadline, "no checkpoint within 120 s"
                time.sleep(0.05)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
        checkpoint = last_checkpoint(output)
        assert checkpoint is not None and checkpoint.name == "checkpoint-3"
        assert not (output / "adapter").exists(), "the child finished before it was killed"

        lines: list[str] = []
        result = train(_config(tiny, data, output, epochs=3), lines.append)
        assert result.resumed_from == str(checkpoint)
        assert result.steps == 9 and result.epochs == pytest.approx(3.0)
        assert f"train: resuming from {checkpoint}" in lines
        assert any(line.startswith("train: resuming at step 3, 9 steps") for line in lines), lines
        assert (output / "adapter" / "adapter_model.safetensors").is_file()

    def test_half_written_checkpoint_is_skipped(self, tmp_path: Path) -> None:
        (tmp_path / "checkpoint-2").mkdir()
        (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
        (tmp_path / "checkpoint-4").mkdir()  # killed while saving: no trainer_state.json
        assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
        assert not (tmp_path / "checkpoint-4").exists()


class TestEvaluate:
    def test_tuned_beats_base_on_a_memorised_set(self, tiny: Path, data, tmp_path: Path) -> None:
        # Validation = training data: a tiny random model can only be expected to beat its base on what it has seen,
        # and only full fine-tuning memorises 24 examples in seconds (a LoRA cannot move its frozen tied embeddings).
        full = train(_config(tiny, data, tmp_path / "full", mode="full", epochs=12), lambda _: None)
        lines: list[str] = []
        base = evaluate(tiny, None, data[0], max_new_tokens=6, progress=lines.append)
        tuned = evaluate(tiny, full.artifact_dir, data[0], kind="full", max_new_tokens=6, progress=lines.append)
        assert base.examples == tuned.examples == 24
        assert base.exact_match == 0.0
        assert tuned.validation_loss < base.validation_loss / 4
        assert tuned.exact_match > 0.8
        assert any(line.startswith("eval: 24/24 generated") for line in lines)

        lora = train(_config(tiny, data, tmp_path / "lora", epochs=4), lambda _: None)
        adapted = evaluate(tiny, lora.artifact_dir, data[0], kind="adapter", max_new_tokens=6, progress=lines.append)
        assert adapted.validation_loss < base.validation_loss * 0.8


class TestConfiguration:
    @pytest.mark.parametrize("size", [1, 2, 4, 8, 16, 32])
    def test_adapter_size_maps_to_rank_and_alpha(self, size: int) -> None:
        config = build_lora_config(size, None)
        assert (config.r, config.lora_alpha, config.lora_dropout) == (size, 2 * size, 0.05)
        assert config.target_modules == "all-linear"

    def test_explicit_lora_overrides(self) -> None:
        config = build_lora_config(8, {"rank": 2, "alpha": 3, "dropout": 0.0, "target_modules": ["q_proj"]})
        assert (config.r, config.lora_alpha, config.lora_dropout) == (2, 3, 0.0)
        assert set(config.target_modules) == {"q_proj"}
        assert build_lora_config(None, None).r == 8

    def test_bad_settings_are_refused(self) -> None:
        with pytest.raises(TrainingError, match=r"targets.local.lora: expected keys among .* got \['r'\]"):
            build_lora_config(4, {"r": 4})

    def test_base_model_paths(self, tiny: Path, tmp_path: Path) -> None:
        assert resolve_base_model(str(tiny), cache_dir=tmp_path, progress=print) == tiny.resolve()
        with pytest.raises(TrainingError, match="expected a Hugging Face model directory with a config.json"):
            resolve_base_model(str(tmp_path), cache_dir=tmp_path, progress=print)
        with pytest.raises(TrainingError, match="expected an existing .gguf file"):
            resolve_base_model(str(tmp_path / "missing.gguf"), cache_dir=tmp_path, progress=print)
        with pytest.raises(TrainingError, match="baseModel: expected one of smollm2-135m-instruct"):
            resolve_base_model("gpt-17", cache_dir=tmp_path, progress=print)


@pytest.mark.slow
def test_smollm2_from_gguf_two_steps(tmp_path: Path) -> None:
    """The real default base model: converted once (cached in the repo's .cache), trained for 2 steps."""
    cache = Path(os.environ.get("TUNEFORM_CACHE_DIR", REPO / ".cache" / "tuneform"))
    base = resolve_base_model("smollm2-135m-instruct", cache_dir=cache, progress=print)
    started = time.monotonic()
    assert resolve_base_model("smollm2-135m-instruct", cache_dir=cache, progress=print) == base
    assert time.monotonic() - started < 1.0
    assert (base / "model.safetensors").is_file() and (base / "chat_template.jinja").is_file()
    train_file = write_slice(TICKETS / "train.jsonl", tmp_path / "train.jsonl", 4)
    config = TrainConfig(
        base_model_dir=base,
        train_file=train_file,
        validation_file=None,
        output_dir=tmp_path / "run",
        mode="adapter",
        adapter_size=4,
        lora=None,
        batch_size=2,
        extra_args={"max_steps": 2},
    )
    result = train(config, print)
    assert result.steps == 2 and result.train_loss > 0
    assert (result.artifact_dir / "adapter_model.safetensors").is_file()
