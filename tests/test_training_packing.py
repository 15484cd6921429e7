"""Packed and padding-free batches change no example's loss; the GPU recipe's wiring, run for real on CPU.

The reference is the padded batch (each row one example, padding masked). A padding-free row concatenates the same
examples with positions restarting at each; SDPA then keeps them apart with the block-diagonal mask transformers
builds from the positions, and ``tuneform_varlen`` with the example boundaries (PyTorch's varlen FlashAttention on
CUDA, one SDPA call per example elsewhere). On a CUDA machine the same tests also run the varlen kernel itself.
"""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest

from training_helpers import TICKETS, bpe_tokenizer, build_tiny_model, tiny_llama, tiny_train_config, write_slice
from tuneform.training.data import read_conversations, tokenize_conversation
from tuneform.training.packing import register_varlen_attention
from tuneform.training.recipe import VARLEN_ATTENTION, Recipe
from tuneform.training.trainer import TrainConfig, build_trainer, last_checkpoint, train

pytestmark = pytest.mark.training

DEVICES = ["cpu"] + (["cuda"] if __import__("torch").cuda.is_available() else [])


@pytest.fixture(scope="module")
def tokenizer():
    return bpe_tokenizer()


@pytest.fixture(scope="module")
def rows(tokenizer) -> list[dict[str, list[int]]]:
    """Eight real ticket conversations of different lengths, labels on the model turns only."""
    conversations = read_conversations(TICKETS / "train.jsonl")[:8]
    out = []
    for conversation in conversations:
        row = tokenize_conversation(tokenizer, conversation.messages)
        labels = [t if m else -100 for t, m in zip(row["input_ids"], row["assistant_masks"], strict=True)]
        out.append({"input_ids": row["input_ids"], "labels": labels})
    assert len({len(row["input_ids"]) for row in out}) > 3, "the examples should differ in length"
    return out


def _per_example_losses(model, rows, attention: str, padding_free: bool, device: str):
    """Summed model-turn cross-entropy of each example, and the model's gradients of their total."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model.config._attn_implementation = attention
    model.zero_grad()
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free)(rows)
    labels = batch.pop("labels").to(device)
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    # use_cache=False as in training: with a cache, transformers skips the packed-sequence mask for SDPA.
    logits = model(**inputs, use_cache=False).logits.float()
    targets = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), targets.clamp(min=0), reduction="none") * (
        targets != -100
    )
    if padding_free:
        bounds = batch["cu_seq_lens_q"].tolist()
        losses = torch.stack([nll[0, start : end - 1].sum() for start, end in pairwise(bounds)])
    else:
        losses = nll.sum(dim=1)
    losses.sum().backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return losses.detach().cpu(), grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("attention", ["sdpa", VARLEN_ATTENTION])
def test_packing_changes_no_examples_loss(tokenizer, rows, attention: str, device: str) -> None:
    import torch

    register_varlen_attention()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # the varlen kernels take bf16/fp16
    model = tiny_llama(tokenizer, seed=3, initializer_range=0.2).to(device=device, dtype=dtype)  # GQA: 4 q, 2 kv heads
    reference, reference_grads = _per_example_losses(model, rows, "sdpa", padding_free=False, device=device)
    packed, packed_grads = _per_example_losses(model, rows, attention, padding_free=True, device=device)

    assert reference.shape == packed.shape == (len(rows),)
    tolerance = {"rtol": 2e-2, "atol": 2e-2} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-4}
    torch.testing.assert_close(packed, reference, **tolerance)
    assert reference_grads.keys() == packed_grads.keys()
    for name, grad in reference_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, **tolerance, msg=name)


def test_examples_attending_to_each_other_would_be_caught(tokenizer, rows) -> None:
    """The check above can fail: one causal mask over the whole packed row changes every example but the first."""
    import torch

    model = tiny_llama(tokenizer, seed=3, initializer_range=0.2)
    reference, _ = _per_example_losses(model, rows, "sdpa", padding_free=False, device="cpu")
    # Without restarting positions, transformers sees one long sequence: examples attend to their predecessors.
    flat = [{"input_ids": sum((r["input_ids"] for r in rows), []), "labels": sum((r["labels"] for r in rows), [])}]
    model.config._attn_implementation = "sdpa"
    logits = model(input_ids=torch.tensor([flat[0]["input_ids"]]), use_cache=False).logits.float()
    labels = torch.tensor([flat[0]["labels"]])[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels.clamp(min=0), reduction="none")
    nll = nll * (labels != -100)
    starts = [0]
    for row in rows:
        starts.append(starts[-1] + len(row["input_ids"]))
    mixed = torch.stack([nll[0, s : e - 1].sum() for s, e in pairwise(starts)]).detach()
    assert torch.allclose(mixed[0], reference[0], atol=1e-4)
    assert not torch.allclose(mixed[1:], reference[1:], atol=1e-2)


# ---- the recipe's wiring through train(), on CPU ----


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_slice(TICKETS / "train.jsonl", tmp_path_factory.mktemp("data") / "train.jsonl", 24)


def _config(tiny: Path, data: Path, output: Path, **overrides) -> TrainConfig:
    return tiny_train_config(tiny, data, output, **overrides)


PADDED = Recipe(device="cpu", base_dtype="float32", autocast_bf16=False, attn_implementation="sdpa", batches="padded")
PADDING_FREE = replace(PADDED, attn_implementation=VARLEN_ATTENTION, batches="padding_free", log_every_steps=2)


def _step_losses(output: Path) -> list[float]:
    checkpoint = last_checkpoint(output)
    assert checkpoint is not None
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def test_padding_free_trains_as_the_padded_batches_do(tiny: Path, data: Path, tmp_path: Path) -> None:
    """Same examples per step (length-grouped, same seed), one row instead of padded rows: the same training."""
    no_dropout = {"dropout": 0.0}  # LoRA dropout draws its masks by tensor shape, which differs between the layouts
    padded = train(_config(tiny, data, tmp_path / "padded", recipe=PADDED, lora=no_dropout), lambda _: None)
    lines: list[str] = []
    free = train(_config(tiny, data, tmp_path / "free", recipe=PADDING_FREE, lora=no_dropout), lines.append)

    assert free.steps == padded.steps == 6
    assert free.tokens == padded.tokens  # padding-free counts tokens from the row's shape: no padding in it
    losses = {"padded": _step_losses(tmp_path / "padded"), "free": _step_losses(tmp_path / "free")}
    # Logged every step vs every 2 steps (and the first, and at each epoch's end: 3 steps an epoch); the Trainer logs
    # the mean loss since the last log.
    p = losses["padded"]
    assert len(p) == 6
    assert losses["free"] == pytest.approx([p[0], p[1], p[2], p[3], (p[4] + p[5]) / 2], rel=1e-4)
    assert free.recipe == PADDING_FREE.describe() and f"train: {PADDING_FREE.describe()}" in lines
    assert free.warmup_seconds > 0 and free.steady_tokens_per_second > 0
    assert any("tokens/s (first 3 steps" in line for line in lines), lines
    # The attention implementation is a training-time choice: the saved adapter does not carry it.
    assert VARLEN_ATTENTION not in (free.artifact_dir / "adapter_config.json").read_text()


def test_bf16_base_keeps_lora_weights_and_optimizer_state_fp32(tiny: Path, data: Path, tmp_path: Path) -> None:
    import torch

    recipe = replace(PADDING_FREE, base_dtype="bfloat16", autocast_bf16=True)
    config = _config(tiny, data, tmp_path / "run", recipe=recipe, extra_args={"max_steps": 1, "save_strategy": "no"})
    trainer, _, _ = build_trainer(config, recipe, lambda _: None)
    trainer.train()
    dtypes = {(p.requires_grad, p.dtype) for p in trainer.model.parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}
    states = [s for s in trainer.optimizer.state.values() if "exp_avg" in s]
    assert states and all(s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.float32 for s in states)


def test_token_budget_fills_steps_with_whole_examples(tiny: Path, data: Path, tmp_path: Path) -> None:
    import torch

    budget = 512
    recipe = replace(PADDING_FREE, batches="token_budget", tokens_per_batch=budget)
    config = _config(tiny, data, tmp_path / "run", recipe=recipe)
    trainer, tokenizer, _ = build_trainer(config, recipe, lambda _: None)
    examples = sorted(tokenize_conversation(tokenizer, c.messages)["input_ids"] for c in read_conversations(data))
    seen: list[list[int]] = []
    for batch in trainer.get_train_dataloader():
        ids, positions = batch["input_ids"], batch["position_ids"]
        assert ids.shape[0] == 1 and ids.shape[1] <= budget
        starts = (positions[0] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
        assert torch.equal(batch["cu_seq_lens_q"].cpu(), torch.tensor(starts, dtype=torch.int32))
        for start, end in pairwise(starts):
            assert positions[0, start:end].tolist() == list(range(end - start))
            assert batch["labels"][0, start] == -100  # no example predicts the next one's first token
            seen.append(ids[0, start:end].tolist())
    assert sorted(seen) == examples  # every example exactly once, whole
    # Best-fit decreasing fills the bins: about as many steps as the budget divides the tokens into.
    total = sum(len(e) for e in examples)
    assert len(trainer.get_train_dataloader()) <= -(-total // budget) + 1

    result = train(_config(tiny, data, tmp_path / "trained", recipe=recipe, epochs=6), lambda _: None)
    losses = _step_losses(tmp_path / "trained")
    assert result.tokens == 6 * total
    assert losses[-1] < losses[0] * 0.8, losses


def test_a_token_budget_below_max_length_is_refused(tiny: Path, data: Path, tmp_path: Path) -> None:
    from tuneform.training.errors import TrainingError

    recipe = replace(PADDING_FREE, batches="token_budget", tokens_per_batch=64)
    with pytest.raises(TrainingError, match=r"tokens_per_batch: expected at least maxLength \(256\), got 64"):
        train(_config(tiny, data, tmp_path / "run", recipe=recipe), lambda _: None)


def test_full_fine_tuning_padding_free(tiny: Path, data: Path, tmp_path: Path) -> None:
    from tuneform.training import load_for_inference

    result = train(_config(tiny, data, tmp_path / "run", mode="full", learning_rate=1e-3, recipe=PADDING_FREE), print)
    assert VARLEN_ATTENTION not in (result.artifact_dir / "config.json").read_text()
    model, _ = load_for_inference(tiny, result.artifact_dir, "full")
    assert model.config._attn_implementation == "sdpa"


def test_cpu_loss_on_model_turns_equals_trls_fused_head(tiny: Path, data: Path, tmp_path: Path) -> None:
    import torch

    from tuneform.training.trainer import model_turn_loss, plain_lm_head

    for recipe in (PADDED, PADDING_FREE):
        trainer, _, _ = build_trainer(_config(tiny, data, tmp_path / recipe.batches, recipe=recipe), recipe, print)
        assert plain_lm_head(trainer.model.config)
        trainer.model.train()
        for batch in list(trainer.get_train_dataloader())[:2]:
            batch["use_cache"] = False
            ours = model_turn_loss(trainer.model, dict(batch))
            fused = trainer.model(**batch, fused_lm_head=True)  # TRL's head: what the GPU path trains on
            theirs = -fused.log_probs.sum() / fused.label_mask.sum()
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
            # The loss the trainer trains on is this one.
            torch.testing.assert_close(trainer.compute_loss(trainer.model, dict(batch)), ours)


def test_soft_capped_logits_keep_trls_head() -> None:
    from transformers import Gemma2Config, LlamaConfig

    from tuneform.training.trainer import plain_lm_head

    assert plain_lm_head(LlamaConfig())
    assert not plain_lm_head(Gemma2Config())  # final_logit_softcapping: only TRL's head applies it


@pytest.mark.parametrize("autocast", [True, False])
def test_training_steps_run_under_the_recipes_autocast(tiny: Path, data: Path, tmp_path: Path, autocast) -> None:
    """The CPU loss calls the decoder itself, not the forward Accelerate wraps in autocast: it must autocast too."""
    import torch

    recipe = replace(PADDED, autocast_bf16=autocast)
    config = _config(tiny, data, tmp_path / "run", recipe=recipe, extra_args={"max_steps": 1, "save_strategy": "no"})
    trainer, _, _ = build_trainer(config, recipe, lambda _: None)
    seen: list[torch.dtype] = []
    projection = trainer.model.get_base_model().model.layers[0].self_attn.q_proj
    projection.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    trainer.train()
    assert seen and set(seen) == {torch.bfloat16 if autocast else torch.float32}


def test_examples_cut_before_their_model_turn_are_counted_and_none_left_is_refused(
    tiny: Path, data: Path, tmp_path: Path
) -> None:
    from tuneform.training.errors import TrainingError

    # Every ticket's model turn starts after its first 8 tokens: nothing would be left to learn.
    with pytest.raises(TrainingError, match=r"model turn starts within the first 8 tokens .* got none of 24"):
        train(_config(tiny, data, tmp_path / "run", max_length=8, recipe=PADDED), lambda _: None)
    said: list[str] = []
    train(_config(tiny, data, tmp_path / "run2", max_length=130, epochs=1, recipe=PADDED), said.append)
    warning = next(line for line in said if "longer than 130 tokens and are cut" in line)
    assert "have no model-turn token left and are left out" in warning


def test_a_misspelt_lora_target_module_is_refused(tiny: Path, data: Path, tmp_path: Path) -> None:
    from tuneform.training.errors import TrainingError

    lora = {"target_modules": ["q_prj", "v_proj"]}
    with pytest.raises(
        TrainingError, match=r"targetModules: expected names of the base model's linear layers \(.*q_proj"
    ):
        train(_config(tiny, data, tmp_path / "run", lora=lora, recipe=PADDED), lambda _: None)


def test_the_evaluation_budget_counts_tokens_not_characters(tiny: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from tuneform.training.run import _answer_budget

    answer = "我们已经收到您的退款申请，将在三个工作日内处理完毕。" * 2 + "🎉" * 10
    row = {"contents": [{"role": "user", "parts": [{"text": "退款"}]}, {"role": "model", "parts": [{"text": answer}]}]}
    validation = tmp_path / "validation.jsonl"
    validation.write_text(json.dumps(row, ensure_ascii=False) + "\n")
    tokens = len(AutoTokenizer.from_pretrained(str(tiny))(answer, add_special_tokens=False)["input_ids"])
    assert tokens > len(answer) // 2 + 8, "a character count would have cut this answer"
    assert _answer_budget(validation, tiny) >= tokens + 1


def test_the_last_epochs_loss_does_not_depend_on_how_often_loss_is_logged(
    tiny: Path, data: Path, tmp_path: Path
) -> None:
    # A GPU logs every GPU_LOG_EVERY_STEPS steps; each logged loss is a mean over several steps, and an epoch's
    # last steps are logged at its end. 3 steps an epoch, logged every 2: windows straddle nothing, miss nothing.
    losses = []
    for every in (1, 2):
        config = _config(tiny, data, tmp_path / f"every-{every}", epochs=2, recipe=PADDED)
        config = replace(config, extra_args={"logging_steps": every})
        losses.append(train(config, lambda _: None).train_loss)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
