"""Gemini-format JSONL -> chat messages -> token ids with a mask over the model turns.

Why not TRL's ``assistant_only_loss``: it needs ``{% generation %}`` markers in the chat template, and SmolLM2's
template (like most shipped ones) has none. A hand-written marked copy of the template would have to be kept
identical to the model's own template forever. Instead each conversation is rendered with the model's *own*
template once per model turn: the text before a model turn is the render of the earlier messages with
``add_generation_prompt=True`` (exactly the prompt the model sees at inference), and the model turn is what the
render of one more message adds (its content plus the end-of-turn token, so the model learns to stop). Segments are
tokenized separately, as inference tokenizes the prompt alone and then generates, and handed to ``SFTTrainer`` as
``input_ids`` + ``assistant_masks``, from which TRL itself builds the ``labels``. Every model turn is trained,
as on Vertex AI. A template for which a prefix render is not a prefix of the longer render is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneform.datasets import messages
from tuneform.training.errors import TrainingError


@dataclass(frozen=True)
class Conversation:
    """One training example as chat messages, with where it came from."""

    messages: list[dict[str, str]]
    """``[{"role": "system"|"user"|"assistant", "content": str}, ...]``; the last one is an assistant turn."""
    line: int
    """1-based line in the JSONL file."""


def gemini_to_messages(record: dict[str, Any], where: str) -> list[dict[str, str]]:
    """``tuneform.datasets.messages.gemini_to_messages``, with its error as the trainer's ``TrainingError``."""
    try:
        return messages.gemini_to_messages(record, where)
    except messages.MessageConversionError as error:
        raise TrainingError(str(error)) from None


def read_conversations(path: Path) -> list[Conversation]:
    """Read a Gemini-format JSONL file.

    Args:
        path: The JSONL file, one example per line; blank lines are skipped.

    Returns:
        The examples in file order.

    Raises:
        TrainingError: Listing every malformed line at once.
    """
    conversations: list[Conversation] = []
    problems: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise TrainingError(f"{where}: expected a JSON object, got {type(record).__name__}.")
                conversations.append(Conversation(gemini_to_messages(record, where), number))
            except json.JSONDecodeError as error:
                problems.append(f"{where}:{error.colno}: expected JSON, got {error.msg}.")
            except TrainingError as error:
                problems.append(str(error))
    if problems:
        raise TrainingError("\n".join([f"{len(problems)} problems in {path}:", *problems]))
    if not conversations:
        raise TrainingError(f"{path}: expected at least one example, got an empty file.")
    return conversations


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The model's own chat template applied to ``messages``, ending with the cue for the model's turn."""
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def tokenize_conversation(tokenizer: Any, messages: list[dict[str, str]]) -> dict[str, list[int]]:
    """Token ids of a whole conversation and a mask that is 1 on the model turns.

    Args:
        tokenizer: A tokenizer with a chat template.
        messages: Chat messages; every ``assistant`` message is learned.

    Returns:
        ``{"input_ids": [...], "assistant_masks": [...]}`` of equal length.

    Raises:
        TrainingError: If the chat template does not render conversations prefix-consistently.
    """
    input_ids: list[int] = []
    masks: list[int] = []
    done = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_prompt(tokenizer, messages[:index])
        full = str(tokenizer.apply_chat_template(messages[: index + 1], tokenize=False))
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise TrainingError(
                "baseModel: its chat template does not render a conversation's beginning as a prefix of the whole "
                "conversation, so the model turns cannot be located for the loss. Use a model with a "
                "prefix-consistent template (ChatML, Llama 3, Gemma)."
            )
        context = tokenizer(prompt[len(done) :], add_special_tokens=False)["input_ids"]
        turn = full[len(prompt) :]
        # The turn is learned up to its end-of-turn token; what the template writes after it (ChatML's "\n") is
        # not the model's to say (generation stops at the end token), and learning it would flatter the loss.
        end = tokenizer.eos_token or ""
        cut = turn.rfind(end) + len(end) if end and end in turn else len(turn)
        answer = tokenizer(turn[:cut], add_special_tokens=False)["input_ids"]
        after = tokenizer(turn[cut:], add_special_tokens=False)["input_ids"] if cut < len(turn) else []
        input_ids += context + answer + after
        masks += [0] * len(context) + [1] * len(answer) + [0] * len(after)
        done = full
    return {"input_ids": input_ids, "assistant_masks": masks}
