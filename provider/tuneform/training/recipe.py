"""How a run uses the hardware: what the machine can do (:class:`Capabilities`) -> how to train (:class:`Recipe`).

:func:`choose_recipe` is a pure function of a described machine, so every choice the GPU recipe makes is unit-tested on
a CPU-only machine; :func:`detect_capabilities` is the only part that looks at real hardware.

What is chosen, and why:

- **Weights.** LoRA on a bf16-capable GPU: the frozen base is loaded in bf16 (half the memory of fp32 and no fp32->bf16
  weight cast before every matmul under autocast) while PEFT keeps the LoRA matrices, their gradients and the
  optimizer state in fp32 (``autocast_adapter_dtype``). Full fine-tuning keeps fp32 master weights and optimizer state
  under bf16 autocast: training bf16 weights directly loses small updates. On CPU everything stays fp32 with bf16
  autocast where the CPU multiplies bf16 in hardware (AVX512-BF16, AMX).
- **Attention and batches.** Padding-free batches (a step's examples concatenated into one row, positions restarting
  at every example) need an attention kernel that keeps examples apart without an O(tokens^2) mask: the
  ``flash-attn`` package when it is installed (PyPI ships it only as a source distribution that needs the CUDA
  toolkit to build), else PyTorch's own variable-length FlashAttention (``torch.nn.attention.varlen``, Ampere or
  newer, no extra package; see :mod:`tuneform.training.packing`). Without either, and always on CPU, batches are padded
  rows of similar length. The composition of a step (which examples, how many) never depends on the device: only how
  the same examples are laid out in memory does, so a spec trains the same on CPU and GPU.
- **Token budget.** ``tokens_per_batch`` (optional) makes each step take whole examples up to that many tokens (TRL's
  best-fit-decreasing packing, rows of one example set each) instead of ``batch_size`` examples, on every device.
- **Fused kernels.** Liger's RMSNorm/SwiGLU/RoPE Triton kernels on CUDA when ``liger-kernel`` is importable (not a
  dependency of tuneform: install it to use it). The LM head and loss are already chunked by TRL's fused head.
- **Host synchronisation.** On GPU the loss is read back (a device->host sync) only every ``log_every_steps`` steps
  and tokens are counted from tensor shapes, so the CPU can queue the next step's kernels while the GPU runs.
- **Compilation.** ``torch.compile`` only when asked for, and only on CUDA: its one-off cost (minutes for a 135M model
  measured on an H200) pays back only over long runs.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

VARLEN_ATTENTION = "tuneform_varlen"
"""The attention implementation :mod:`tuneform.training.packing` registers with transformers."""
GPU_LOG_EVERY_STEPS = 10
"""On GPU, read the loss back every this many steps (each read waits for the GPU to finish its queue)."""
PACKED_ATTENTION = ("flash_attention_2", VARLEN_ATTENTION)
"""Attention implementations that take padding-free batches (``cu_seq_lens``) without a dense mask."""

Batches = Literal["padded", "padding_free", "token_budget"]


@dataclass(frozen=True)
class Capabilities:
    """What this machine can do for training, as far as the recipe cares."""

    device: Literal["cuda", "cpu"]
    bf16: bool
    """bf16 matmuls run in hardware: an Ampere-or-newer GPU, or a CPU with AVX512-BF16/AMX."""
    gpu_name: str | None = None
    compute_capability: tuple[int, int] | None = None
    gpu_memory_gib: float | None = None
    varlen_attention: bool = False
    """``torch.nn.attention.varlen`` exists and the GPU runs its FlashAttention kernels (sm80+)."""
    flash_attn: bool = False
    """The ``flash-attn`` (FlashAttention-2) package is importable."""
    liger_kernel: bool = False
    """The ``liger-kernel`` package is importable (its Triton kernels need CUDA)."""

    def describe(self) -> str:
        if self.device == "cpu":
            return f"CPU ({'bf16 hardware' if self.bf16 else 'no bf16 hardware'})"
        extras = [
            name
            for name, present in (
                ("varlen attention", self.varlen_attention),
                ("flash-attn", self.flash_attn),
                ("liger-kernel", self.liger_kernel),
            )
            if present
        ]
        cc = ".".join(map(str, self.compute_capability)) if self.compute_capability else "?"
        memory = f"{self.gpu_memory_gib:.0f} GiB" if self.gpu_memory_gib else "? GiB"
        return f"{self.gpu_name or 'GPU'} (sm {cc}, {memory}; {', '.join(extras) or 'no packed-attention kernel'})"


@dataclass(frozen=True)
class Recipe:
    """How one run trains: chosen by :func:`choose_recipe`, or given explicitly (``TrainConfig.recipe``)."""

    device: Literal["cuda", "cpu"]
    base_dtype: Literal["bfloat16", "float32"]
    """The dtype the model is loaded in: the frozen base for LoRA (adapters are always fp32), every weight for full."""
    autocast_bf16: bool
    attn_implementation: str
    """``sdpa``, ``flash_attention_2`` or :data:`VARLEN_ATTENTION`."""
    batches: Batches
    """``padded``: rows padded to the longest of the step, rows of similar length grouped; ``padding_free``: the
    step's examples in one row; ``token_budget``: whole examples up to ``tokens_per_batch`` in one row."""
    tokens_per_batch: int | None = None
    liger: bool = False
    compile: bool = False
    log_every_steps: int = 1

    def describe(self) -> str:
        parts = [
            f"{self.base_dtype} {'base' if self.base_dtype == 'bfloat16' else 'weights'}",
            "bf16 autocast" if self.autocast_bf16 else "no autocast",
            f"{self.attn_implementation} attention",
            f"{self.tokens_per_batch}-token batches" if self.batches == "token_budget" else f"{self.batches} batches",
        ]
        if self.liger:
            parts.append("liger kernels")
        if self.compile:
            parts.append("torch.compile")
        if self.log_every_steps > 1:
            parts.append(f"loss read every {self.log_every_steps} steps")
        return ", ".join(parts)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def detect_capabilities() -> Capabilities:
    """Look at this machine: CUDA device, its bf16 support and memory, and the optional kernel packages."""
    import torch

    if not torch.cuda.is_available() or os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return Capabilities(device="cpu", bf16=cpu_has_native_bf16())
    properties = torch.cuda.get_device_properties(0)
    capability = (int(properties.major), int(properties.minor))
    ampere = capability >= (8, 0)
    return Capabilities(
        device="cuda",
        bf16=bool(torch.cuda.is_bf16_supported()) and ampere,
        gpu_name=str(properties.name),
        compute_capability=capability,
        gpu_memory_gib=properties.total_memory / 2**30,
        varlen_attention=ampere and _importable("torch.nn.attention.varlen"),
        flash_attn=ampere and _importable("flash_attn"),
        liger_kernel=_importable("liger_kernel"),
    )


def choose_recipe(
    capabilities: Capabilities,
    *,
    mode: Literal["adapter", "full"],
    tokens_per_batch: int | None = None,
    compile: bool = False,
) -> Recipe:
    """The training recipe for a machine.

    Args:
        capabilities: From :func:`detect_capabilities`, or a described machine (tests).
        mode: ``adapter`` (LoRA) or ``full``.
        tokens_per_batch: Compose each step from whole examples up to this many tokens; ``None`` keeps
            ``batch_size`` examples per step.
        compile: Ask for ``torch.compile`` (honoured on CUDA only).

    Returns:
        The recipe; see the module docstring for the reasons behind each choice.
    """
    if capabilities.device == "cpu":
        return Recipe(
            device="cpu",
            base_dtype="float32",
            autocast_bf16=capabilities.bf16,
            # SDPA keeps packed examples apart with a block-diagonal mask built from the restarting positions; only
            # a token budget packs on CPU, since a padded row of similar-length examples costs less attention.
            attn_implementation="sdpa",
            batches="token_budget" if tokens_per_batch else "padded",
            tokens_per_batch=tokens_per_batch,
        )
    if capabilities.flash_attn:
        attention = "flash_attention_2"
    elif capabilities.varlen_attention:
        attention = VARLEN_ATTENTION
    else:
        attention = "sdpa"
    packed = attention in PACKED_ATTENTION
    batches: Batches = "token_budget" if tokens_per_batch else "padding_free" if packed else "padded"
    return Recipe(
        device="cuda",
        base_dtype="bfloat16" if mode == "adapter" and capabilities.bf16 else "float32",
        autocast_bf16=capabilities.bf16,
        attn_implementation=attention,
        batches=batches,
        tokens_per_batch=tokens_per_batch,
        liger=capabilities.liger_kernel,
        compile=compile,
        log_every_steps=GPU_LOG_EVERY_STEPS,
    )
