"""Gemini JSONL -> chat messages -> token ids with a model-turn mask; the shipped example data and its generator."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from training_helpers import TICKETS, build_tiny_model
from tuneform.training.data import gemini_to_messages, read_conversations, render_prompt, tokenize_conversation
from tuneform.training.errors import TrainingError


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(build_tiny_model(tmp_path_factory.mktemp("tiny"))))


def _example(system: str | None, *turns: tuple[str, str]) -> dict:
    record: dict = {"contents": [{"role": role, "parts": [{"text": text}]} for role, text in turns]}
    if system is not None:
        record["systemInstruction"] = {"role": "system", "parts": [{"text": system}]}
    return record


class TestGeminiToMessages:
    def test_roles_and_system_instruction(self) -> None:
        record = _example("Be brief.", ("user", "Hi"), ("model", "Hello"), ("user", "Bye"), ("model", "Bye!"))
        assert gemini_to_messages(record, "x") == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Bye!"},
        ]

    def test_parts_are_joined(self) -> None:
        record = {"contents": [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}, _model("c")]}
        assert gemini_to_messages(record, "x")[0] == {"role": "user", "content": "ab"}

    def test_every_bad_line_is_reported_at_once(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.jsonl"
        lines = [
            json.dumps(_example(None, ("user", "ok"), ("model", "fine"))),
            "{not json",
            json.dumps(_example(None, ("user", "no answer"))),
            json.dumps({"contents": [{"role": "bot", "parts": [{"text": "x"}]}]}),
        ]
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(TrainingError) as raised:
            read_conversations(path)
        message = str(raised.value)
        assert message.splitlines()[0] == f"3 problems in {path}:"
        assert f"{path}:2:2: expected JSON" in message
        assert f"{path}:3: contents: expected the last turn to have role 'model'" in message
        assert f"{path}:4: contents[0].role: expected 'user' or 'model', got 'bot'." in message


def _model(text: str) -> dict:
    return {"role": "model", "parts": [{"text": text}]}


class TestTokenizeConversation:
    def test_mask_covers_exactly_the_model_turns_and_their_end(self, tokenizer) -> None:
        messages = gemini_to_messages(
            _example(
                "Route it.", ("user", "my parcel is late"), ("model", "shipping"), ("user", "and?"), ("model", "x")
            ),
            "x",
        )
        row = tokenize_conversation(tokenizer, messages)
        learned = [token for token, bit in zip(row["input_ids"], row["assistant_masks"], strict=True) if bit]
        # Up to each turn's end token: the template's "\n" after it is not the model's to say.
        assert tokenizer.decode(learned) == "shipping<|im_end|>x<|im_end|>"

    def test_ids_equal_the_whole_rendered_conversation(self, tokenizer) -> None:
        # Segment-wise tokenization must not change the tokens the chat template gives for the whole text.
        for conversation in read_conversations(TICKETS / "validation.jsonl")[:16]:
            row = tokenize_conversation(tokenizer, conversation.messages)
            whole = tokenizer.apply_chat_template(conversation.messages, tokenize=False)
            assert row["input_ids"] == tokenizer(whole, add_special_tokens=False)["input_ids"]

    def test_prompt_is_the_unmasked_prefix(self, tokenizer) -> None:
        messages = read_conversations(TICKETS / "train.jsonl")[0].messages
        row = tokenize_conversation(tokenizer, messages)
        prompt_ids = tokenizer(render_prompt(tokenizer, messages[:-1]), add_special_tokens=False)["input_ids"]
        assert row["input_ids"][: len(prompt_ids)] == prompt_ids
        answer = len(row["input_ids"]) - len(prompt_ids) - 1  # the trailing "\n" after <|im_end|> is not learned
        assert row["assistant_masks"] == [0] * len(prompt_ids) + [1] * answer + [0]
        assert tokenizer.decode(row["input_ids"][-1:]) == "\n"

    def test_template_without_prefix_property_is_refused(self, tokenizer) -> None:
        original = tokenizer.chat_template
        # Renders only the last message: an earlier render is not a prefix of a later one.
        tokenizer.chat_template = "{{ messages[-1]['content'] }}{% if add_generation_prompt %}>{% endif %}"
        try:
            with pytest.raises(TrainingError, match="prefix-consistent template"):
                tokenize_conversation(
                    tokenizer, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
                )
        finally:
            tokenizer.chat_template = original


class TestTicketRouterData:
    def test_generator_reproduces_the_committed_files(self, tmp_path: Path) -> None:
        subprocess.run(
            [sys.executable, str(TICKETS / "generate.py"), "--out", str(tmp_path)], check=True, capture_output=True
        )
        for name in ("train.jsonl", "validation.jsonl"):
            assert (tmp_path / name).read_bytes() == (TICKETS / name).read_bytes(), name

    def test_sizes_balance_and_no_overlap(self) -> None:
        train = read_conversations(TICKETS / "train.jsonl")
        validation = read_conversations(TICKETS / "validation.jsonl")
        assert len(train) >= 300 and len(validation) >= 60
        for split in (train, validation):
            counts = Counter(c.messages[-1]["content"] for c in split)
            assert set(counts) == {"billing", "technical", "account", "shipping", "returns", "sales"}
            assert max(counts.values()) - min(counts.values()) <= 1
            # Most examples ask without the system prompt, as clients of the tuned model do; some carry it.
            assert 0 < sum(c.messages[0]["role"] == "system" for c in split) < len(split) / 2
        tickets = {c.messages[-2]["content"] for c in train}
        assert not tickets & {c.messages[-2]["content"] for c in validation}
