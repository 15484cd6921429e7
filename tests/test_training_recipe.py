"""The GPU recipe's choices, made for described machines (an H200, an older GPU, CPUs) on this CPU-only machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneform.training.recipe import (
    GPU_LOG_EVERY_STEPS,
    VARLEN_ATTENTION,
    Capabilities,
    Recipe,
    choose_recipe,
    detect_capabilities,
)
from tuneform.training.trainer import TrainConfig, sft_settings

H200 = Capabilities(
    device="cuda",
    bf16=True,
    gpu_name="NVIDIA H200",
    compute_capability=(9, 0),
    gpu_memory_gib=139.8,
    varlen_attention=True,
)
T4 = Capabilities(device="cuda", bf16=False, gpu_name="Tesla T4", compute_capability=(7, 5), gpu_memory_gib=15.0)
CPU_BF16 = Capabilities(device="cpu", bf16=True)
CPU_PLAIN = Capabilities(device="cpu", bf16=False)


class TestWeightsAndPrecision:
    def test_lora_on_a_bf16_gpu_keeps_the_frozen_base_in_bf16(self) -> None:
        recipe = choose_recipe(H200, mode="adapter")
        assert (recipe.device, recipe.base_dtype, recipe.autocast_bf16) == ("cuda", "bfloat16", True)

    def test_full_fine_tuning_keeps_fp32_master_weights_under_bf16_autocast(self) -> None:
        recipe = choose_recipe(H200, mode="full")
        assert (recipe.base_dtype, recipe.autocast_bf16) == ("float32", True)

    def test_a_gpu_without_bf16_trains_in_fp32(self) -> None:
        recipe = choose_recipe(T4, mode="adapter")
        assert (recipe.base_dtype, recipe.autocast_bf16) == ("float32", False)

    @pytest.mark.parametrize(("capabilities", "autocast"), [(CPU_BF16, True), (CPU_PLAIN, False)])
    def test_cpu_keeps_fp32_weights_and_autocasts_only_with_bf16_hardware(self, capabilities, autocast) -> None:
        for mode in ("adapter", "full"):
            recipe = choose_recipe(capabilities, mode=mode)
            assert (recipe.device, recipe.base_dtype, recipe.autocast_bf16) == ("cpu", "float32", autocast)


class TestAttentionAndBatches:
    def test_pytorch_varlen_kernels_take_padding_free_batches(self) -> None:
        recipe = choose_recipe(H200, mode="adapter")
        assert (recipe.attn_implementation, recipe.batches) == (VARLEN_ATTENTION, "padding_free")

    def test_flash_attn_package_is_preferred_when_installed(self) -> None:
        recipe = choose_recipe(Capabilities(**{**H200.__dict__, "flash_attn": True}), mode="adapter")
        assert (recipe.attn_implementation, recipe.batches) == ("flash_attention_2", "padding_free")

    def test_without_a_varlen_kernel_batches_are_padded(self) -> None:
        for machine in (T4, Capabilities(**{**H200.__dict__, "varlen_attention": False}), CPU_BF16):
            recipe = choose_recipe(machine, mode="adapter")
            assert (recipe.attn_implementation, recipe.batches) == ("sdpa", "padded"), machine

    @pytest.mark.parametrize("machine", [H200, T4, CPU_BF16])
    def test_a_token_budget_composes_steps_on_every_device(self, machine: Capabilities) -> None:
        recipe = choose_recipe(machine, mode="adapter", tokens_per_batch=4096)
        assert (recipe.batches, recipe.tokens_per_batch) == ("token_budget", 4096)


class TestKernelsAndHostWork:
    def test_liger_only_on_cuda_and_only_when_installed(self) -> None:
        assert choose_recipe(Capabilities(**{**H200.__dict__, "liger_kernel": True}), mode="adapter").liger
        assert not choose_recipe(H200, mode="adapter").liger
        assert not choose_recipe(Capabilities(device="cpu", bf16=True, liger_kernel=True), mode="adapter").liger

    def test_compile_only_when_asked_and_only_on_cuda(self) -> None:
        assert not choose_recipe(H200, mode="adapter").compile
        assert choose_recipe(H200, mode="adapter", compile=True).compile
        assert not choose_recipe(CPU_BF16, mode="adapter", compile=True).compile

    def test_gpu_reads_the_loss_back_every_few_steps_cpu_every_step(self) -> None:
        assert choose_recipe(H200, mode="adapter").log_every_steps == GPU_LOG_EVERY_STEPS > 1
        assert choose_recipe(CPU_BF16, mode="adapter").log_every_steps == 1


def _config(tmp_path: Path, **overrides) -> TrainConfig:
    fields = {
        "base_model_dir": tmp_path,
        "train_file": tmp_path / "train.jsonl",
        "validation_file": None,
        "output_dir": tmp_path / "out",
        "mode": "adapter",
        "adapter_size": None,
        "lora": None,
        "batch_size": 8,
        "max_length": 512,
    }
    return TrainConfig(**{**fields, **overrides})


class TestSftSettings:
    def test_cpu_recipe_keeps_the_measured_cpu_settings(self, tmp_path: Path) -> None:
        settings = sft_settings(_config(tmp_path), choose_recipe(CPU_BF16, mode="adapter"))
        assert settings["per_device_train_batch_size"] == 8 and settings["max_length"] == 512
        assert not settings["padding_free"] and not settings["packing"]
        assert settings["train_sampling_strategy"] == "group_by_length"
        assert settings["use_cpu"] and settings["bf16"] and not settings["activation_checkpointing"]
        assert settings["logging_steps"] == 1 and settings["logging_nan_inf_filter"]
        assert "use_liger_kernel" not in settings and not settings["torch_compile"]

    def test_gpu_recipe_is_padding_free_with_the_same_batches(self, tmp_path: Path) -> None:
        settings = sft_settings(_config(tmp_path), choose_recipe(H200, mode="adapter"))
        assert settings["padding_free"] and not settings["packing"] and settings["max_length"] is None
        # The same examples make a step as on CPU: only their layout in memory differs.
        assert settings["per_device_train_batch_size"] == 8
        assert settings["train_sampling_strategy"] == "group_by_length"
        assert not settings["use_cpu"] and settings["bf16"] and settings["dataloader_pin_memory"]
        # No read-back of the loss at every step: neither logging nor the NaN filter.
        assert settings["logging_steps"] == GPU_LOG_EVERY_STEPS and not settings["logging_nan_inf_filter"]
        assert settings["include_num_input_tokens_seen"] == "no"

    def test_token_budget_packs_one_row_per_step(self, tmp_path: Path) -> None:
        settings = sft_settings(_config(tmp_path), choose_recipe(H200, mode="adapter", tokens_per_batch=8192))
        assert settings["packing"] and settings["packing_strategy"] == "bfd"
        assert settings["per_device_train_batch_size"] == 1 and settings["max_length"] == 8192
        assert settings["train_sampling_strategy"] == "random"

    def test_liger_leaves_the_loss_to_trls_fused_head(self, tmp_path: Path) -> None:
        recipe = choose_recipe(Capabilities(**{**H200.__dict__, "liger_kernel": True}), mode="adapter")
        settings = sft_settings(_config(tmp_path), recipe)
        assert settings["use_liger_kernel"]
        assert settings["liger_kernel_config"] == {
            "rope": True,
            "rms_norm": True,
            "swiglu": True,
            "fused_linear_cross_entropy": False,
        }


def test_describe_names_every_choice() -> None:
    recipe = Recipe(
        device="cuda",
        base_dtype="bfloat16",
        autocast_bf16=True,
        attn_implementation=VARLEN_ATTENTION,
        batches="token_budget",
        tokens_per_batch=4096,
        liger=True,
        compile=True,
        log_every_steps=10,
    )
    assert recipe.describe() == (
        "bfloat16 base, bf16 autocast, tuneform_varlen attention, 4096-token batches, liger kernels, torch.compile, "
        "loss read every 10 steps"
    )
    assert H200.describe() == "NVIDIA H200 (sm 9.0, 140 GiB; varlen attention)"


def test_this_machine_is_detected_as_what_it_is() -> None:
    import torch

    detected = detect_capabilities()
    assert detected.device == ("cuda" if torch.cuda.is_available() else "cpu")
    if detected.device == "cuda":
        assert detected.gpu_name and detected.compute_capability and detected.gpu_memory_gib
