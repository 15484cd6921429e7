"""Loading a tuned model for inference, and scoring a validation set and a test set.

The prompt is always the model's own chat template with the generation cue, tokenized exactly as in training
(:func:`tuneform.training.data.render_prompt`), so the served and evaluated model sees what it was trained on.

The validation set is scored greedily (exact match) and teacher-forced (loss). The test set is scored the way the
endpoint answers a client that sets nothing: the version's own decoding defaults (``spec.endpoint.generation``),
through the endpoint's own batched decoder (:mod:`tuneform.serving.engine`), with each example's conversation as
written (a test set without a system instruction is asked without one).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tuneform.training.data import read_conversations, render_prompt, tokenize_conversation
from tuneform.training.trainer import cpu_threads, pick_device

EVAL_BATCH_SIZE = 16


@dataclass
class EvalMetrics:
    """How a model does on a validation set."""

    validation_loss: float
    """Mean cross-entropy per model-turn token, teacher-forced."""
    exact_match: float
    """Share of examples whose greedy reply equals the reference model turn, both stripped of surrounding space."""
    examples: int


def load_for_inference(
    base_model_dir: Path, artifact_dir: Path | None, kind: Literal["adapter", "full"] | None
) -> tuple[Any, Any]:
    """Load a model ready to generate: the base, the base with a LoRA adapter merged in, or full weights.

    Args:
        base_model_dir: The base model's HF directory.
        artifact_dir: ``TrainResult.artifact_dir``; ``None`` for the base model itself.
        kind: ``"adapter"`` or ``"full"`` (ignored when ``artifact_dir`` is ``None``).

    Returns:
        ``(model, tokenizer)``, the model in eval mode on the GPU when there is one.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device()
    if device == "cpu":
        torch.set_num_threads(cpu_threads(None))
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    weights_dir = artifact_dir if artifact_dir is not None and kind == "full" else base_model_dir
    model: Any = AutoModelForCausalLM.from_pretrained(str(weights_dir), dtype=dtype)
    if artifact_dir is not None and kind == "adapter":
        from peft import PeftModel

        # Merged weights generate as fast as the base model; the adapter is not trained further here.
        model = PeftModel.from_pretrained(model, str(artifact_dir)).merge_and_unload()
    tokenizer_dir = artifact_dir if artifact_dir is not None and (artifact_dir / "tokenizer.json").is_file() else None
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or base_model_dir))
    model.to(device)
    model.eval()
    return model, tokenizer


def serve_in_bf16(model: Any) -> bool:
    """Whether the endpoint's decoder should run the model in bf16: on a CPU with bf16 in hardware (a GPU serves in
    bf16 already, see ``load_for_inference``)."""
    from tuneform.training.recipe import cpu_has_native_bf16

    return bool(model.device.type == "cpu" and cpu_has_native_bf16())


def _generation_kwargs(tokenizer: Any, max_new_tokens: int, temperature: float, top_p: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    }
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def _validation_loss(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]]) -> float:
    import torch

    rows = [tokenize_conversation(tokenizer, messages) for messages in conversations]
    total, count = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(rows), EVAL_BATCH_SIZE):
        batch = rows[start : start + EVAL_BATCH_SIZE]
        width = max(len(row["input_ids"]) for row in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, row in enumerate(batch):
            n = len(row["input_ids"])
            ids[i, :n] = torch.tensor(row["input_ids"])
            attention[i, :n] = 1
            labels[i, :n] = torch.tensor(
                [t if m else -100 for t, m in zip(row["input_ids"], row["assistant_masks"], strict=True)]
            )
        with torch.inference_mode():
            logits = model(input_ids=ids.to(model.device), attention_mask=attention.to(model.device)).logits.float()
        shifted = labels[:, 1:].to(model.device)
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), shifted.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += float(losses)
        count += int((shifted != -100).sum())
    return total / count if count else math.nan


def _exact_matches(
    model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], max_new_tokens: int, progress: Any
) -> int:
    import torch

    # Left padding so every row's generation starts right after its own prompt in a batch.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    matches = 0
    started = time.monotonic()
    for start in range(0, len(conversations), EVAL_BATCH_SIZE):
        batch = conversations[start : start + EVAL_BATCH_SIZE]
        prompts = [render_prompt(tokenizer, messages[:-1]) for messages in batch]
        encoded = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            output = model.generate(**encoded, **_generation_kwargs(tokenizer, max_new_tokens, 0.0, 1.0))
        replies = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        matches += sum(
            reply.strip() == messages[-1]["content"].strip() for reply, messages in zip(replies, batch, strict=True)
        )
        done = start + len(batch)
        progress(f"eval: {done}/{len(conversations)} generated, {time.monotonic() - started:.0f} s")
    return matches


@dataclass
class TestMetrics:
    """How a model answers a test set at the endpoint's default decoding."""

    accuracy: float
    """Share of examples whose answer, stripped of surrounding space, equals the reference model turn."""
    examples: int


def score_test_set(
    base_model_dir: Path,
    artifact_dir: Path | None,
    test_file: Path,
    *,
    kind: Literal["adapter", "full"] | None = None,
    generation: dict[str, Any] | None = None,
    max_new_tokens: int = 256,
    progress: Callable[[str], None],
) -> TestMetrics:
    """Answer every test example as the endpoint would, and count the answers equal to the reference.

    Args:
        base_model_dir: The base model's HF directory.
        artifact_dir: The tuned adapter or weights; ``None`` scores the base model.
        test_file: Gemini-format JSONL; the last model turn of each example is the reference.
        kind: ``"adapter"`` or ``"full"`` for ``artifact_dir``.
        generation: The version's decoding defaults (``spec.endpoint.generation``); ``None``: the endpoint's.
        max_new_tokens: The endpoint's answer budget where ``generation`` sets none.
        progress: Receives a line every few seconds.

    Returns:
        The accuracy and the number of examples.
    """
    from dataclasses import replace

    from tuneform.serving.engine import Job, decode_all
    from tuneform.serving.engine import render_prompt as prompt_ids
    from tuneform.serving.pool import generation_defaults

    label = "base model" if artifact_dir is None else "tuned model"
    model, tokenizer = load_for_inference(base_model_dir, artifact_dir, kind)
    conversations = [conversation.messages for conversation in read_conversations(test_file)]
    decoding = generation_defaults(generation, max_new_tokens)
    answers: dict[int, str] = {}
    started = last = time.monotonic()

    def sink_for(index: int) -> Callable[[str, Any], None]:
        def sink(kind: str, value: Any) -> None:
            nonlocal last
            if kind == "done":
                answers[index] = value.text
                if time.monotonic() - last >= 5 or len(answers) == len(conversations):
                    last = time.monotonic()
                    progress(f"eval: test set, {label}: {len(answers)}/{len(conversations)} answered")

        return sink

    jobs = []
    for index, messages in enumerate(conversations):
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        turns = [m for m in messages[:-1] if m["role"] != "system"]
        # Seeded per example: a sampling default gives the same score for the same model every time.
        seeded = replace(decoding, seed=index)
        jobs.append(Job.make(prompt_ids(tokenizer, turns, system), seeded, sink_for(index)))
    decode_all(model, tokenizer, jobs, EVAL_BATCH_SIZE, bf16=serve_in_bf16(model))
    right = sum(answers[i].strip() == m[-1]["content"].strip() for i, m in enumerate(conversations))
    metrics = TestMetrics(accuracy=right / len(conversations), examples=len(conversations))
    progress(
        f"eval: test set, {label}: {right}/{len(conversations)} right ({metrics.accuracy:.3f}) in "
        f"{time.monotonic() - started:.0f} s"
    )
    return metrics


def evaluate(
    base_model_dir: Path,
    artifact_dir: Path | None,
    validation_file: Path,
    *,
    kind: Literal["adapter", "full"] | None = None,
    max_new_tokens: int = 64,
    progress: Callable[[str], None],
) -> EvalMetrics:
    """Score a model on a validation set: teacher-forced loss on the model turns, and greedy exact match.

    Args:
        base_model_dir: The base model's HF directory.
        artifact_dir: The tuned adapter or weights; ``None`` scores the base model.
        validation_file: Gemini-format JSONL; the last model turn of each example is the reference.
        kind: ``"adapter"`` or ``"full"`` for ``artifact_dir``.
        max_new_tokens: Generation budget per example.
        progress: Receives a line per batch.

    Returns:
        Validation loss, exact match (0..1) and the number of examples.
    """
    label = "base model" if artifact_dir is None else f"{kind} {artifact_dir}"
    progress(f"eval: {label} on {validation_file}")
    model, tokenizer = load_for_inference(base_model_dir, artifact_dir, kind)
    conversations = [conversation.messages for conversation in read_conversations(validation_file)]
    loss = _validation_loss(model, tokenizer, conversations)
    matches = _exact_matches(model, tokenizer, conversations, max_new_tokens, progress)
    metrics = EvalMetrics(validation_loss=loss, exact_match=matches / len(conversations), examples=len(conversations))
    progress(f"eval: {label}: validation loss {loss:.4f}, exact match {metrics.exact_match:.3f}")
    return metrics
