"""The shipped ticket-router data: the hand-written test set stands apart from the generated data (the generator
reproducing its files is checked in ``test_training_data.py``)."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tuning_specs" / "datasets" / "ticket-router"
QUEUES = {"billing", "technical", "account", "shipping", "returns", "sales"}


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def _ticket(row: dict) -> str:
    return str(row["contents"][0]["parts"][0]["text"])


def _queue(row: dict) -> str:
    return str(row["contents"][-1]["parts"][0]["text"])


def _grams(text: str, n: int) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_training_data_is_balanced_and_mostly_without_a_system_prompt() -> None:
    train = _rows("train.jsonl")
    counts = collections.Counter(_queue(row) for row in train)
    assert set(counts) == QUEUES and max(counts.values()) - min(counts.values()) <= 1
    with_system = sum("systemInstruction" in row for row in train) / len(train)
    assert 0.15 < with_system < 0.35
    assert len({_ticket(row) for row in train}) == len(train)


def test_the_test_set_is_hand_written_apart_from_the_generator() -> None:
    test = _rows("test.jsonl")
    assert collections.Counter(_queue(row) for row in test) == dict.fromkeys(QUEUES, 20)
    assert not any("systemInstruction" in row for row in test), "asked as a client asks: no system prompt"
    generated = [_ticket(row) for name in ("train.jsonl", "validation.jsonl") for row in _rows(name)]
    assert not {_ticket(row) for row in test} & set(generated)
    # No run of 6 words of a test ticket appears in any generated ticket: the test measures the task, not recall.
    seen: set[tuple[str, ...]] = set().union(*(_grams(text, 6) for text in generated))
    shared = {(_ticket(row), gram) for row in test for gram in _grams(_ticket(row), 6) if gram in seen}
    assert not shared, sorted(shared)[:5]
