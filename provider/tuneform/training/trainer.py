"""The local trainer: supervised fine-tuning with TRL's ``SFTTrainer`` and PEFT LoRA (or every weight).

One recipe, read top to bottom by :func:`train`: load the base model -> tokenize the conversations with a mask over
the model turns (see :mod:`tuneform.training.data`) -> ``LoraConfig`` from the spec -> ``SFTConfig`` chosen for the
device -> ``SFTTrainer.train`` resuming from the last complete checkpoint -> save the adapter (or weights).

``adapterSize`` -> LoRA (see :func:`build_lora_config`): rank = adapterSize (1, 2, 4, 8, 16, 32; 8 when unset),
alpha = 2 x rank, dropout 0.05, on every linear projection of the decoder (``all-linear``: q, k, v, o, gate, up,
down; never the tied embedding/LM head). ``targets.local.lora`` overrides any of these.

Batches on CPU: TRL's packing and padding-free modes are only correct with FlashAttention's variable-length kernels
(without them, examples packed into one row attend to each other), so on CPU batches are padded dynamically to their
longest row, and rows of similar length are grouped (``train_sampling_strategy="group_by_length"``) so little
padding is computed. Activation (gradient) checkpointing, on in SFTConfig's defaults, is off: the activations of
models this size fit easily and recomputing them costs a third more compute. Weights and optimizer state are fp32;
bf16 autocast runs the matmuls on GPUs and on CPUs with bf16 hardware (AVX512-BF16, AMX), fp32 elsewhere. The GPU
is used automatically when CUDA is available.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tuneform.backends.base import BackendError

ADAPTER_SIZES = (1, 2, 4, 8, 16, 32)
DEFAULT_ADAPTER_SIZE = 8
LORA_DROPOUT = 0.05
LORA_KEYS = ("rank", "alpha", "dropout", "target_modules")
PROGRESS_INTERVAL_S = 5.0
"""At most one progress line per this many seconds (plus the first step, epoch ends and the end)."""

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainConfig:
    """What to train, from what, and where to keep checkpoints."""

    base_model_dir: Path
    """A Hugging Face model directory (see :func:`tuneform.training.resolve_base_model`)."""
    train_file: Path
    """Gemini-format JSONL."""
    validation_file: Path | None
    """Gemini-format JSONL; used by :func:`tuneform.training.evaluate`, not during training."""
    output_dir: Path
    """Checkpoints, the final adapter or weights, and ``train.log``. One directory per run identity: a
    checkpoint found here is resumed."""
    mode: Literal["adapter", "full"]
    adapter_size: int | None
    lora: dict[str, Any] | None
    """Explicit ``rank``/``alpha``/``dropout``/``target_modules``; each overrides what ``adapter_size`` gives."""
    epochs: int = 3
    learning_rate: float = 2e-4
    batch_size: int = 8
    max_length: int = 512
    seed: int = 42
    threads: int | None = None
    """CPU threads; ``None`` = every core this process may run on."""
    extra_args: dict[str, Any] = field(default_factory=dict)
    """Further ``SFTConfig`` fields (for experiments and the benchmark), applied last."""


@dataclass
class TrainResult:
    """Where the trained artifact is and how training went."""

    output_dir: Path
    artifact_dir: Path
    """``output_dir/adapter`` (PEFT adapter) or ``output_dir/model`` (full weights), with the tokenizer."""
    kind: Literal["adapter", "full"]
    train_loss: float
    """Mean training loss over the steps of the last epoch."""
    steps: int
    epochs: float
    tokens: int
    """Non-padding tokens seen over the whole run (all epochs, across resumes)."""
    tokens_per_second: float
    """Over this call's training time only."""
    resumed_from: str | None
    """The checkpoint directory this call continued from, if any."""
    log_path: Path


def build_lora_config(adapter_size: int | None, lora: dict[str, Any] | None) -> Any:
    """Map the spec's ``adapterSize`` and explicit ``lora`` settings to a PEFT ``LoraConfig``.

    Args:
        adapter_size: 1, 2, 4, 8, 16 or 32; ``None`` means 8.
        lora: Optional overrides: ``rank``, ``alpha``, ``dropout``, ``target_modules``.

    Returns:
        A ``peft.LoraConfig`` for a causal language model.

    Raises:
        BackendError: For an adapter size outside the list or an unknown ``lora`` key.
    """
    from peft import LoraConfig

    if adapter_size is not None and adapter_size not in ADAPTER_SIZES:
        raise BackendError(f"adapterSize: expected one of {list(ADAPTER_SIZES)}, got {adapter_size}.")
    overrides = dict(lora or {})
    unknown = sorted(set(overrides) - set(LORA_KEYS))
    if unknown:
        raise BackendError(f"targets.local.lora: expected keys among {list(LORA_KEYS)}, got {unknown}.")
    rank = overrides.get("rank") or adapter_size or DEFAULT_ADAPTER_SIZE
    return LoraConfig(
        r=rank,
        lora_alpha=overrides.get("alpha") or 2 * rank,
        lora_dropout=LORA_DROPOUT if overrides.get("dropout") is None else overrides["dropout"],
        target_modules=list(overrides["target_modules"]) if overrides.get("target_modules") else "all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest *complete* checkpoint in ``output_dir``, removing any newer one a kill left half-written.

    The Trainer writes ``trainer_state.json`` last, so a checkpoint without it was interrupted mid-save;
    ``transformers.trainer_utils.get_last_checkpoint`` would pick it anyway.
    """
    if not output_dir.is_dir():
        return None
    found = sorted(
        (int(match.group(1)), path)
        for path in output_dir.iterdir()
        if path.is_dir() and (match := _CHECKPOINT.match(path.name))
    )
    for _, path in reversed(found):
        if (path / "trainer_state.json").is_file():
            return path
        shutil.rmtree(path, ignore_errors=True)
    return None


def pick_device() -> str:
    """``cuda`` when a GPU is usable, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_threads(requested: int | None) -> int:
    """Threads for torch on CPU: the request, else the cores this process may use that other work leaves idle.

    OpenMP threads wait for each other at every operator; when another process holds one of the cores, the thread
    that shares it stalls them all. Measured on 2 shared cores (load 4-6): SmolLM2 LoRA ran 15-22 tokens/s with
    2 threads and 65 tokens/s with 1.
    """
    if requested:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = int(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(cores, cores - busy))


def _format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _progress_callback(progress: Callable[[str], None], log_path: Path, interval_s: float) -> Any:
    """A ``TrainerCallback`` that reports step/total, epoch, loss, tokens/s and ETA (transformers is imported here)."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.log = log_path.open("a", encoding="utf-8")
            self.started = time.monotonic()
            self.first_step = 0
            self.first_tokens = 0
            self.last_emit = -math.inf
            self.epoch_losses: list[float] = []
            self.last_epoch_losses: list[float] = []
            self.loss = math.nan
            self.rate = 0.0

        def line(self, text: str, force: bool) -> None:
            self.log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")
            self.log.flush()
            now = time.monotonic()
            if force or now - self.last_emit >= interval_s:
                self.last_emit = now
                progress(text)

        def tokens_per_second(self, state: Any) -> float:
            elapsed = time.monotonic() - self.started
            return (state.num_input_tokens_seen - self.first_tokens) / elapsed if elapsed > 0 else 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.monotonic()
            self.first_step = state.global_step
            self.first_tokens = state.num_input_tokens_seen
            where = f"resuming at step {state.global_step}" if state.global_step else "starting"
            self.line(f"train: {where}, {state.max_steps} steps, {args.num_train_epochs} epochs", True)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])
                self.epoch_losses.append(self.loss)
                done = state.global_step - self.first_step
                elapsed = time.monotonic() - self.started
                eta = elapsed / done * (state.max_steps - state.global_step) if done else math.nan
                self.line(
                    f"train: step {state.global_step}/{state.max_steps} epoch {state.epoch:.2f} loss {self.loss:.4f} "
                    f"{self.tokens_per_second(state):.0f} tokens/s ETA {_format_seconds(eta)}",
                    done == 1 or state.global_step == state.max_steps,
                )

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.epoch_losses:
                self.last_epoch_losses = self.epoch_losses
            self.epoch_losses = []
            mean = sum(self.last_epoch_losses) / len(self.last_epoch_losses) if self.last_epoch_losses else math.nan
            self.line(f"train: epoch {state.epoch:.0f} done, mean loss {mean:.4f}, checkpointing", True)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.line(f"train: checkpoint-{state.global_step} saved", False)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.rate = self.tokens_per_second(state)
            self.line(
                f"train: finished {state.global_step} steps in {_format_seconds(time.monotonic() - self.started)}, "
                f"{self.rate:.0f} tokens/s",
                True,
            )
            self.log.close()

    return ProgressCallback()


def tokenized_dataset(tokenizer: Any, path: Path) -> Any:
    """A ``datasets.Dataset`` with ``input_ids`` and ``assistant_masks`` for every conversation in ``path``."""
    from datasets import Dataset

    from tuneform.training.data import read_conversations, tokenize_conversation

    rows = [tokenize_conversation(tokenizer, conversation.messages) for conversation in read_conversations(path)]
    return Dataset.from_list(rows)


def train(config: TrainConfig, progress: Callable[[str], None]) -> TrainResult:
    """Fine-tune ``config.base_model_dir`` on ``config.train_file``; resume if ``output_dir`` holds a checkpoint.

    Args:
        config: The run; ``output_dir`` identifies it (a checkpoint there is continued, not restarted).
        progress: Receives a line at most every few seconds: step/total, epoch, loss, tokens/s, ETA.

    Returns:
        Where the adapter or weights were saved, with loss, steps, token counts and throughput.

    Raises:
        BackendError: For a data file that cannot be read or converted, or an invalid LoRA setting.
    """
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    if config.mode not in ("adapter", "full"):
        raise BackendError(f"mode: expected 'adapter' or 'full', got {config.mode!r}.")
    config.output_dir.mkdir(parents=True, exist_ok=True)
    log_path = config.output_dir / "train.log"
    device = pick_device()
    if device == "cpu":
        torch.set_num_threads(cpu_threads(config.threads))
    progress(f"train: on {device} ({torch.get_num_threads()} threads), log at {log_path}")

    tokenizer = AutoTokenizer.from_pretrained(str(config.base_model_dir))
    train_dataset = tokenized_dataset(tokenizer, config.train_file)
    too_long = sum(1 for ids in train_dataset["input_ids"] if len(ids) > config.max_length)
    if too_long:
        progress(
            f"train: warning: {too_long} of {len(train_dataset)} examples are longer than maxLength "
            f"{config.max_length} tokens and are cut; raise maxLength to keep them whole"
        )
    # fp32 weights everywhere; bf16 autocast does the matmuls where the hardware has bf16 units (any recent GPU,
    # CPUs with AVX512-BF16/AMX: 1.5x the tokens/s of fp32 measured on 2 EPYC cores), so LoRA weights, gradients
    # and optimizer state stay fp32.
    bf16 = device == "cuda" or cpu_has_native_bf16()
    model = AutoModelForCausalLM.from_pretrained(str(config.base_model_dir), dtype=torch.float32)
    set_seed(config.seed)  # LoRA matrices are initialised from the global RNG, before the Trainer seeds anything
    if config.mode == "adapter":
        model = get_peft_model(model, build_lora_config(config.adapter_size, config.lora))

    settings: dict[str, Any] = dict(
        output_dir=str(config.output_dir),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        max_length=config.max_length,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=device == "cpu",
        bf16=bf16,
        activation_checkpointing=False,
        train_sampling_strategy="group_by_length",
        dataloader_pin_memory=device == "cuda",
        save_strategy="epoch",
        save_total_limit=2,
        logging_strategy="steps",
        logging_steps=1,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
    )
    args = SFTConfig(**{**settings, **config.extra_args})
    callback = _progress_callback(progress, log_path, PROGRESS_INTERVAL_S)
    progress(f"train: {'bf16 autocast' if args.bf16 else 'fp32'} on {device}, {len(train_dataset)} examples")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer, callbacks=[callback]
    )
    # Our callback reports progress at a bounded rate; the stock printer would dump every step's dict to stdout.
    trainer.remove_callback(PrinterCallback)
    resume = last_checkpoint(config.output_dir)
    if resume is not None:
        progress(f"train: resuming from {resume}")
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    artifact_dir = config.output_dir / ("adapter" if config.mode == "adapter" else "model")
    trainer.save_model(str(artifact_dir))
    tokenizer.save_pretrained(str(artifact_dir))
    state = trainer.state
    losses = callback.last_epoch_losses or callback.epoch_losses
    result = TrainResult(
        output_dir=config.output_dir,
        artifact_dir=artifact_dir,
        kind=config.mode,
        train_loss=sum(losses) / len(losses) if losses else math.nan,
        steps=state.global_step,
        epochs=float(state.epoch or 0.0),
        tokens=int(state.num_input_tokens_seen),
        tokens_per_second=callback.rate,
        resumed_from=str(resume) if resume else None,
        log_path=log_path,
    )
    summary = {k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}
    (config.output_dir / "result.json").write_text(json.dumps(summary, indent=2))
    progress(f"train: saved {config.mode} to {artifact_dir}")
    return result
