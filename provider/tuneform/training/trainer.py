"""The local trainer: supervised fine-tuning with TRL's ``SFTTrainer`` and PEFT LoRA (or every weight).

Size (~600 lines): kept whole so the recipe reads top to bottom; the parts that stand alone are their own modules
(``recipe``, ``packing``, ``data``, ``base_model``, ``evaluate``, ``run``).

One recipe, read top to bottom by :func:`train`: choose how to use this machine (:mod:`tuneform.training.recipe`) ->
load the base model -> tokenize the conversations with a mask over the model turns (see
:mod:`tuneform.training.data`) -> ``LoraConfig`` from the spec -> ``SFTConfig`` from the recipe -> ``SFTTrainer.train``
resuming from the last complete checkpoint -> save the adapter (or weights).

``adapterSize`` -> LoRA (see :func:`build_lora_config`): rank = adapterSize (1, 2, 4, 8, 16, 32; 8 when unset),
alpha = 2 x rank, dropout 0.05, on every linear projection of the decoder (``all-linear``: q, k, v, o, gate, up,
down; never the tied embedding/LM head). ``targets.local.lora`` overrides any of these.

Batches: a step takes ``batch_size`` examples, grouped by length (``train_sampling_strategy="group_by_length"``), on
every device; only their layout differs. On CPU they are padded to the longest row (packing would compute attention
between examples only to mask it away). On a GPU with a variable-length attention kernel they are concatenated into
one padding-free row with positions restarting at every example, so no padding is computed and no example attends to
another (``tests/test_training_packing.py`` checks that every example's loss is unchanged). ``tokens_per_batch``
instead fills each step with whole examples up to a token budget. Activation (gradient) checkpointing, on in
SFTConfig's defaults, is off: the activations of models this size fit easily and recomputing them costs a third more
compute. The GPU is used automatically when CUDA is available.
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

from tuneform import catalogue
from tuneform.training.errors import TrainingError
from tuneform.training.recipe import (
    VARLEN_ATTENTION,
    Recipe,
    choose_recipe,
    detect_capabilities,
)

_DEFAULTS = catalogue.local_path_info("").training_defaults()
"""The catalogue's defaults for a local run (epochs, learning rate, batch size, adapter size): their one source."""
LORA_DROPOUT = 0.05
LORA_KEYS = ("rank", "alpha", "dropout", "target_modules")
PROGRESS_INTERVAL_S = 5.0
"""At most one progress line per this many seconds (plus the first step, epoch ends and the end)."""
WARMUP_STEPS = 3
"""Steps reported apart as warm-up: kernel compilation (Triton, ``torch.compile``), cuBLAS heuristics and the memory
allocator's growth happen in the first steps and would otherwise be averaged into the steady-state rate."""

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
    epochs: int = _DEFAULTS.epochs
    learning_rate: float = _DEFAULTS.learning_rate
    batch_size: int = _DEFAULTS.batch_size
    max_length: int = 512
    seed: int = 42
    threads: int | None = None
    """CPU threads; ``None`` = every core this process may run on."""
    extra_args: dict[str, Any] = field(default_factory=dict)
    """Further ``SFTConfig`` fields (for experiments and the benchmark), applied last."""
    tokens_per_batch: int | None = None
    """Fill each step with whole examples up to this many tokens instead of ``batch_size`` examples (at least
    ``max_length``)."""
    compile: bool = False
    """``torch.compile`` the model (CUDA only; its one-off cost pays back over long runs only)."""
    recipe: Recipe | None = None
    """How to use the hardware; ``None`` chooses for this machine (:func:`tuneform.training.recipe.choose_recipe`)."""


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
    warmup_seconds: float = math.nan
    """Wall time of this call's first :data:`WARMUP_STEPS` steps (compilation and other one-off costs)."""
    steady_tokens_per_second: float = math.nan
    """Tokens/s after the warm-up steps (NaN when the run had no step past them)."""
    recipe: str = ""
    """:meth:`Recipe.describe` of the recipe used."""
    cpu_seconds: float = math.nan
    """CPU time of this process during this call's training loop (see :attr:`ThroughputMeter.cpu_seconds`)."""


def _check_target_modules(model: Any, names: list[str] | None) -> None:
    """Refuse ``lora.targetModules`` entries the model has no linear layer for: PEFT ignores a misspelt name when
    another matches, and an adapter that leaves out the layer a person named trains something else."""
    import torch

    if not names:
        return
    linear = sorted(
        {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    )
    missing = [name for name in names if name not in linear]
    if missing:
        raise TrainingError(
            f"spec.targets.local.lora.targetModules: expected names of the base model's linear layers "
            f"({', '.join(linear)}), got {', '.join(missing)}. Fix the spelling, or leave targetModules out to "
            "adapt every linear layer."
        )


def build_lora_config(adapter_size: int | None, lora: dict[str, Any] | None) -> Any:
    """Map the spec's ``adapterSize`` and explicit ``lora`` settings to a PEFT ``LoraConfig``.

    Args:
        adapter_size: The LoRA rank (the loader checked it against the catalogue's ``adapterSizes``); ``None``: the
            catalogue's default.
        lora: Optional overrides: ``rank``, ``alpha``, ``dropout``, ``target_modules``.

    Returns:
        A ``peft.LoraConfig`` for a causal language model.

    Raises:
        TrainingError: For an unknown ``lora`` key.
    """
    from peft import LoraConfig

    overrides = dict(lora or {})
    unknown = sorted(set(overrides) - set(LORA_KEYS))
    if unknown:
        raise TrainingError(f"targets.local.lora: expected keys among {list(LORA_KEYS)}, got {unknown}.")
    rank = int(overrides.get("rank") or adapter_size or _DEFAULTS.adapter_size or 1)
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


class ThroughputMeter:
    """Tokens/s of a training call, with its first :data:`WARMUP_STEPS` steps timed apart.

    Args:
        tokens_of: Tokens seen so far, read from the trainer state (a host-side counter: reading it never waits for
            the GPU).
        synchronize: Waits for queued GPU work; called twice per run (end of warm-up, end of training) so that the
            timestamps are the GPU's, not the moment the CPU queued the work.
    """

    def __init__(self, tokens_of: Callable[[Any], int], synchronize: Callable[[], None] = lambda: None) -> None:
        self.tokens_of = tokens_of
        self.synchronize = synchronize
        self.started = self.warm_at = self.ended = self.cpu_started = self.cpu_ended = math.nan
        self.first_step = self.first_tokens = self.warm_tokens = self.end_tokens = 0

    def begin(self, state: Any) -> None:
        self.started, self.cpu_started = time.monotonic(), time.process_time()
        self.first_step, self.first_tokens = state.global_step, self.tokens_of(state)

    def step(self, state: Any) -> None:
        if state.global_step - self.first_step == WARMUP_STEPS:
            self.synchronize()
            self.warm_at, self.warm_tokens = time.monotonic(), self.tokens_of(state)

    def end(self, state: Any) -> None:
        self.synchronize()
        self.ended, self.end_tokens = time.monotonic(), self.tokens_of(state)
        self.cpu_ended = time.process_time()

    def rate_so_far(self, state: Any) -> float:
        elapsed = time.monotonic() - self.started
        return (self.tokens_of(state) - self.first_tokens) / elapsed if elapsed > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        elapsed = self.ended - self.started
        return (self.end_tokens - self.first_tokens) / elapsed if elapsed > 0 else 0.0

    @property
    def cpu_seconds(self) -> float:
        """CPU time this process spent in training (every thread): on a shared machine, tokens per CPU second vary
        less than tokens/s, which also count the time other processes held the cores."""
        return self.cpu_ended - self.cpu_started

    @property
    def warmup_seconds(self) -> float:
        return self.warm_at - self.started

    @property
    def steady_tokens_per_second(self) -> float:
        elapsed = self.ended - self.warm_at
        tokens = self.end_tokens - self.warm_tokens
        # No step after warm-up (a run of exactly WARMUP_STEPS) measured nothing: not a rate of 0.
        return tokens / elapsed if elapsed > 0 and tokens > 0 else math.nan


def meter_callback(meter: ThroughputMeter) -> Any:
    """A ``TrainerCallback`` that times any trainer with ``meter`` (the benchmarks time TRL's own this way)."""
    from transformers import TrainerCallback

    class MeterCallback(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            meter.begin(state)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            meter.step(state)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            meter.end(state)

    return MeterCallback()


def weighted_mean(losses: list[tuple[float, int]]) -> float:
    """The mean per step of logged ``(mean loss, steps it covers)`` pairs; NaN when there are none."""
    steps = sum(count for _, count in losses)
    return sum(loss * count for loss, count in losses) / steps if steps else math.nan


def _progress_callback(
    progress: Callable[[str], None], log_path: Path, interval_s: float, meter: ThroughputMeter
) -> Any:
    """A ``TrainerCallback`` that reports step/total, epoch, loss, tokens/s and ETA (transformers is imported here).

    It reads ``meter`` but does not drive it: :func:`meter_callback` must come before it in the trainer's callbacks
    (they run in list order), so that the meter has begun before the first line and ended before the last.
    """
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.log = log_path.open("a", encoding="utf-8")
            self.last_emit = -math.inf
            # Each logged loss is the mean over the steps since the previous log (every step on a CPU, every
            # GPU_LOG_EVERY_STEPS on a GPU): kept with that step count, so an epoch's mean weighs them right.
            self.epoch_losses: list[tuple[float, int]] = []
            self.last_epoch_losses: list[tuple[float, int]] = []
            self.logged_step = 0
            self.ending_epoch: float | None = None
            self.loss = math.nan

        def line(self, text: str, force: bool) -> None:
            self.log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")
            self.log.flush()
            now = time.monotonic()
            if force or now - self.last_emit >= interval_s:
                self.last_emit = now
                progress(text)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.logged_step = state.global_step
            where = f"resuming at step {state.global_step}" if state.global_step else "starting"
            self.line(f"train: {where}, {state.max_steps} steps, {args.num_train_epochs} epochs", True)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])
                steps, self.logged_step = state.global_step - self.logged_step, state.global_step
                if steps > 0:
                    self.epoch_losses.append((self.loss, steps))
                done = state.global_step - meter.first_step
                elapsed = time.monotonic() - meter.started
                eta = elapsed / done * (state.max_steps - state.global_step) if done else math.nan
                self.line(
                    f"train: step {state.global_step}/{state.max_steps} epoch {state.epoch:.2f} loss {self.loss:.4f} "
                    f"{meter.rate_so_far(state):.0f} tokens/s ETA {_format_seconds(eta)}",
                    done == 1 or state.global_step == state.max_steps,
                )

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            # Log the steps since the last log now, inside this epoch; the epoch's line follows that log.
            control.should_log = True
            self.ending_epoch = state.epoch
            return control

        def close_epoch(self) -> None:
            if self.ending_epoch is None:
                return
            if self.epoch_losses:
                self.last_epoch_losses, self.epoch_losses = self.epoch_losses, []
            mean = weighted_mean(self.last_epoch_losses)
            self.line(f"train: epoch {self.ending_epoch:.0f} done, mean loss {mean:.4f}, checkpointing", True)
            self.ending_epoch = None

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.close_epoch()
            self.line(f"train: checkpoint-{state.global_step} saved", False)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.close_epoch()
            steady = meter.steady_tokens_per_second
            warm = (
                f" (first {WARMUP_STEPS} steps {meter.warmup_seconds:.1f} s, then {steady:.0f} tokens/s)"
                if not math.isnan(steady)
                else ""
            )
            self.line(
                f"train: finished {state.global_step} steps in {_format_seconds(meter.ended - meter.started)}, "
                f"{meter.tokens_per_second:.0f} tokens/s{warm}",
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


def cut_to_length(dataset: Any, max_length: int) -> Any:
    """Cut rows to ``max_length`` tokens, dropping those left without a model-turn token (as TRL does when padding)."""
    from datasets import Dataset

    rows = [{key: values[:max_length] for key, values in row.items()} for row in dataset]
    return Dataset.from_list([row for row in rows if 1 in row["assistant_masks"]])


def _trainer_class() -> Any:
    """``SFTTrainer`` without its per-step host synchronisation (trl is imported here).

    TRL's ``compute_loss`` reads three metrics back from the device at every step (entropy, token accuracy, token
    count: each ``.item()`` waits for the GPU to drain its queue) and the Trainer's token counter reads a fourth. Here
    the loss is TRL's own fused-LM-head loss, unchanged, and tokens are counted on the host from the batch's shape
    (padding-free rows hold no padding) or, for padded rows, from the attention mask (a CPU tensor on CPU).

    On CPU the LM head is applied to the model-turn positions only: TRL's head scores every position off Triton
    devices (to keep tile shapes fixed for compilers), and with short answers after long prompts (ticket-router:
    about 3 of 90 tokens) the vocabulary projection of the other positions was a fifth of each step's work.
    """
    import torch
    from trl import SFTTrainer

    class TuneformSFTTrainer(SFTTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            model: Any = self.model
            self.plain_lm_head = plain_lm_head(model.config)  # computed once: a model's config stays as built
            self.progress_callback: Any = None
            """The progress callback :func:`build_trainer` attached (it holds the epoch losses)."""

        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            if return_outputs or not model.training:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False  # a cache would also stop transformers' SDPA path from keeping examples apart
            if inputs["input_ids"].device.type == "cpu" and self.plain_lm_head:
                # Accelerate autocasts by wrapping the model's forward, which this loss goes around.
                with self.accelerator.autocast():
                    return model_turn_loss(model, inputs, num_items_in_batch)
            outputs = model(**inputs, fused_lm_head=True)
            count = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            return -outputs.log_probs.sum() / torch.as_tensor(count).clamp(min=1)

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            mask = inputs.get("attention_mask")
            self.state.num_input_tokens_seen += (
                int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
            )
            return super().training_step(model, inputs, num_items_in_batch)

    return TuneformSFTTrainer


_LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "logits_scaling",
    "lm_head_multiplier",
    "output_multiplier",
)


def plain_lm_head(config: Any) -> bool:
    """Whether the logits are the LM head's output as is (no soft-capping or scaling, which TRL's head applies)."""
    text_config = config.get_text_config()
    return all(getattr(text_config, name, None) is None for name in _LOGIT_TRANSFORMS)


def model_turn_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
    """Mean next-token cross-entropy over the labelled positions, projecting only those through the LM head.

    Args:
        model: A causal LM, or a PEFT model around one.
        inputs: A collated batch with ``labels`` (-100 where no loss applies).
        num_items_in_batch: The divisor (labelled tokens of the whole step); ``None`` = this batch's count.
    """
    import torch

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    labels = inputs["labels"][:, 1:]
    hidden = causal_lm.get_decoder()(**{k: v for k, v in inputs.items() if k != "labels"}).last_hidden_state
    selected = labels != -100
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][selected]).float()
    count = selected.sum() if num_items_in_batch is None else num_items_in_batch
    total = torch.nn.functional.cross_entropy(logits, labels[selected], reduction="sum")
    return total / torch.as_tensor(count).clamp(min=1)


def _synchronize(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device == "cuda" else lambda: None


def sft_settings(config: TrainConfig, recipe: Recipe) -> dict[str, Any]:
    """The ``SFTConfig`` fields for a run (before ``config.extra_args``)."""
    budget = recipe.batches == "token_budget"
    settings: dict[str, Any] = dict(
        output_dir=str(config.output_dir),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        # A token budget packs whole examples into one row per step (TRL's best-fit-decreasing packing).
        per_device_train_batch_size=1 if budget else config.batch_size,
        packing=budget,
        packing_strategy="bfd",
        padding_free=recipe.batches == "padding_free",
        # Padding-free rows are cut by tokenized_dataset (TRL refuses max_length without packing there).
        max_length=recipe.tokens_per_batch
        if budget
        else None
        if recipe.batches == "padding_free"
        else config.max_length,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=recipe.device == "cpu",
        bf16=recipe.autocast_bf16,
        activation_checkpointing=False,
        # The same examples make a step whatever the layout; bins of a token budget are already composed.
        train_sampling_strategy="random" if budget else "group_by_length",
        dataloader_pin_memory=recipe.device == "cuda",
        save_strategy="epoch",
        save_total_limit=2,
        logging_strategy="steps",
        logging_steps=recipe.log_every_steps,
        logging_first_step=True,
        # The NaN filter reads the loss back at every step.
        logging_nan_inf_filter=recipe.device == "cpu",
        include_num_input_tokens_seen="no",  # counted by TuneformSFTTrainer.training_step, without a device read
        report_to="none",
        disable_tqdm=True,
        torch_compile=recipe.compile,
    )
    if recipe.liger:
        # TRL's fused LM head already computes the loss in chunks; Liger adds its norm, MLP and rotary kernels.
        settings.update(
            use_liger_kernel=True,
            liger_kernel_config={"rope": True, "rms_norm": True, "swiglu": True, "fused_linear_cross_entropy": False},
        )
    return settings


def build_trainer(config: TrainConfig, recipe: Recipe, progress: Callable[[str], None]) -> tuple[Any, Any, Any]:
    """Tokenize, load the model as ``recipe`` says and build the trainer.

    Returns:
        ``(trainer, tokenizer, meter)``; the trainer's callbacks report to ``progress``, ``meter`` times the run.
    """
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed
    from trl import SFTConfig
    from trl.trainer.utils import add_fused_lm_head

    if recipe.tokens_per_batch is not None and recipe.tokens_per_batch < config.max_length:
        raise TrainingError(
            f"tokens_per_batch: expected at least maxLength ({config.max_length}), got {recipe.tokens_per_batch}."
        )
    if recipe.attn_implementation == VARLEN_ATTENTION:
        from tuneform.training.packing import register_varlen_attention

        register_varlen_attention()
    config.output_dir.mkdir(parents=True, exist_ok=True)
    log_path = config.output_dir / "train.log"
    tokenizer = AutoTokenizer.from_pretrained(str(config.base_model_dir))
    train_dataset = tokenized_dataset(tokenizer, config.train_file)
    too_long = sum(1 for ids in train_dataset["input_ids"] if len(ids) > config.max_length)
    # A cut example whose model turn starts past the cut has nothing left to learn: TRL drops it, and so does
    # cut_to_length. Say how many, and refuse a run that would have none left.
    lost = sum(1 for mask in train_dataset["assistant_masks"] if 1 not in mask[: config.max_length])
    if lost == len(train_dataset):
        raise TrainingError(
            f"train: expected examples whose model turn starts within the first {config.max_length} tokens "
            f"(the most this run trains on), got none of {len(train_dataset)}. Shorten the examples."
        )
    if too_long:
        progress(
            f"train: warning: {too_long} of {len(train_dataset)} examples are longer than {config.max_length} "
            "tokens and are cut" + (f"; {lost} of them have no model-turn token left and are left out" if lost else "")
        )
    if recipe.batches != "padded":
        # TRL cuts padded rows itself, but refuses max_length on padding-free rows and packs a token budget.
        train_dataset = cut_to_length(train_dataset, config.max_length)
    model = AutoModelForCausalLM.from_pretrained(
        str(config.base_model_dir),
        dtype=getattr(torch, recipe.base_dtype),
        attn_implementation=recipe.attn_implementation,
    )
    set_seed(config.seed)  # LoRA matrices are initialised from the global RNG, before the Trainer seeds anything
    if config.mode == "adapter":
        _check_target_modules(model, (config.lora or {}).get("target_modules"))
        # PEFT keeps the adapter weights (and so their gradients and optimizer state) fp32 over a bf16 base.
        model = get_peft_model(model, build_lora_config(config.adapter_size, config.lora), autocast_adapter_dtype=True)

    args = SFTConfig(**{**sft_settings(config, recipe), **config.extra_args})
    meter = ThroughputMeter(lambda state: int(state.num_input_tokens_seen), _synchronize(recipe.device))
    callback = _progress_callback(progress, log_path, PROGRESS_INTERVAL_S, meter)
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        callbacks=[meter_callback(meter), callback],  # in this order: the progress lines read the meter
    )
    trainer.progress_callback = callback
    # TRL's head also computes entropy and top-1 hits, for metrics this trainer never reads: the loss alone is cheaper.
    causal_lm = trainer.model.get_base_model() if config.mode == "adapter" else trainer.model
    add_fused_lm_head(causal_lm, outputs=("log_probs",))
    # Our callback reports progress at a bounded rate; the stock printer would dump every step's dict to stdout.
    trainer.remove_callback(PrinterCallback)
    return trainer, tokenizer, meter


def train(config: TrainConfig, progress: Callable[[str], None]) -> TrainResult:
    """Fine-tune ``config.base_model_dir`` on ``config.train_file``; resume if ``output_dir`` holds a checkpoint.

    Args:
        config: The run; ``output_dir`` identifies it (a checkpoint there is continued, not restarted).
        progress: Receives a line at most every few seconds: step/total, epoch, loss, tokens/s, ETA.

    Returns:
        Where the adapter or weights were saved, with loss, steps, token counts and throughput.

    Raises:
        TrainingError: For a data file that cannot be read or converted, or an invalid LoRA setting.
    """
    import torch

    if config.mode not in ("adapter", "full"):
        raise TrainingError(f"mode: expected 'adapter' or 'full', got {config.mode!r}.")
    capabilities = detect_capabilities() if config.recipe is None else None
    recipe = config.recipe or choose_recipe(
        capabilities,  # type: ignore[arg-type]
        mode=config.mode,
        tokens_per_batch=config.tokens_per_batch,
        compile=config.compile,
    )
    if recipe.device == "cpu":
        torch.set_num_threads(cpu_threads(config.threads))
    where = capabilities.describe() if capabilities else recipe.device
    log_path = config.output_dir / "train.log"
    progress(f"train: on {where}, {torch.get_num_threads()} threads, log at {log_path}")
    progress(f"train: {recipe.describe()}")
    trainer, tokenizer, meter = build_trainer(config, recipe, progress)
    progress(
        f"train: {len(trainer.train_dataset)} {'packed rows' if recipe.batches == 'token_budget' else 'examples'}"
    )
    resume = last_checkpoint(config.output_dir)
    if resume is not None:
        progress(f"train: resuming from {resume}")
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    artifact_dir = config.output_dir / ("adapter" if config.mode == "adapter" else "model")
    trainer.save_model(str(artifact_dir))
    tokenizer.save_pretrained(str(artifact_dir))
    state = trainer.state
    callback = trainer.progress_callback
    result = TrainResult(
        output_dir=config.output_dir,
        artifact_dir=artifact_dir,
        kind=config.mode,
        train_loss=weighted_mean(callback.last_epoch_losses or callback.epoch_losses),
        steps=state.global_step,
        epochs=float(state.epoch or 0.0),
        tokens=int(state.num_input_tokens_seen),
        tokens_per_second=meter.tokens_per_second,
        resumed_from=str(resume) if resume else None,
        log_path=log_path,
        warmup_seconds=meter.warmup_seconds,
        steady_tokens_per_second=meter.steady_tokens_per_second,
        recipe=recipe.describe(),
        cpu_seconds=meter.cpu_seconds,
    )
    summary = {k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}
    (config.output_dir / "result.json").write_text(json.dumps(summary, indent=2))
    progress(f"train: saved {config.mode} to {artifact_dir}")
    return result
