"""Token counts per example: exact with a local tokenizer, otherwise an estimate that errs high.

**Exact** (``count_tokens`` given, e.g. from :func:`tokenizer_counter`): the tokenizer's count of each turn's text
(the turn's text parts joined) and of the ``systemInstruction``, summed. Media parts (``fileData``/``inlineData``)
are not counted: their cost depends on resolution and duration, which a JSONL check cannot see without the file.
The chat template's role markers are *not* included: they are model-specific (ChatML adds 5 tokens per turn:
``<|im_start|>``, the role, a newline, ``<|im_end|>``, a newline) and the trainer adds them when it renders the
conversation.

**Estimate** (no tokenizer), per example: over the example's canonical JSON line (the converted form, which the
check has at hand anyway, so the estimate costs one pass in C per line), ``other_bytes + ceil(cheap_bytes / 3)``
after taking away the JSON framing of the text parts, turns and system instruction, plus 5 per turn. ``cheap_bytes``
are ASCII letters and whitespace, ``other_bytes`` all remaining bytes (digits, punctuation, every byte of a
non-ASCII character). Why it errs high:

- Byte-level BPE tokenizers (SmolLM2, Llama, Qwen) never produce more tokens than UTF-8 bytes, so counting one token
  per "other" byte is an upper bound for that share of the text.
- Digits are split one token per digit by SmolLM2, Llama 3 and Gemini's tokenizers, so they cannot be discounted;
  punctuation is usually a token of its own; non-ASCII scripts take 1-3 tokens per character in English-centred
  vocabularies (SmolLM2: 38 tokens for 22 Japanese characters = 66 bytes).
- ASCII words average 4-5 characters per token in English BPE vocabularies (SmolLM2: 11 tokens for a 45-character
  sentence); 3 leaves a margin of about 1.5x for rare words and identifiers.
- Escapes count as written in JSON (a newline is ``\\n``: one "other" byte more than the character), and whatever
  is not a text part (file URIs, ``generationConfig``) counts as text: both only add.
- The 5 per turn covers the chat template's role markers (ChatML above; Gemma's ``<start_of_turn>user\\n ...
  <end_of_turn>\\n`` is also 5), which the exact count leaves out.

It can undercount text where single letters alternate with digits (hexadecimal ids, base64): SmolLM2 gives 36 tokens
for a 36-character UUID, the estimate 26 + 5. ``tests/test_datasets_tokens.py`` checks the estimate against the
SmolLM2 tokenizer on the example datasets and on mixed text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ESTIMATE_METHOD = "estimate:other-bytes+ascii-letters/3+5-per-turn"
"""The ``token_method`` recorded in summaries whose counts are estimates (see the module docstring)."""

TURN_OVERHEAD = 5
"""Tokens added per turn by the estimate for the chat template's role markers."""

# ASCII letters and whitespace: the bytes that BPE merges into multi-character tokens.
_CHEAP_BYTES = bytes(sorted(set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ \t\n\r")))

# (other, cheap) bytes of the canonical framing pieces: {"contents":[]}, {"parts":[],"role":""} (plus the role),
# {"text":""}, ,"systemInstruction":{"parts":[]}; each comma between list items is one more "other" byte.
TOP_FRAMING, TURN_FRAMING, TEXT_PART_FRAMING, SYSTEM_FRAMING = (7, 8), (13, 9), (7, 4), (11, 22)


def framing(example: dict[str, Any]) -> tuple[int, int, int]:
    """(other, cheap) bytes of the JSON framing of a converted example's canonical form, and its number of turns.

    Args:
        example: A converted (Gemini) example.

    Returns:
        The framing's "other" bytes, its "cheap" bytes, and the turns (the system instruction counts as one).
    """
    other, cheap = TOP_FRAMING
    contents = example["contents"]
    other += len(contents) - 1
    for turn in contents:
        parts = turn["parts"]
        texts = sum(1 for part in parts if "text" in part)
        other += TURN_FRAMING[0] + len(parts) - 1 + TEXT_PART_FRAMING[0] * texts
        cheap += TURN_FRAMING[1] + len(turn["role"]) + TEXT_PART_FRAMING[1] * texts
    turns = len(contents)
    system = example.get("systemInstruction")
    if system is not None:
        parts = system["parts"]
        other += SYSTEM_FRAMING[0] + len(parts) - 1 + TEXT_PART_FRAMING[0] * len(parts)
        cheap += SYSTEM_FRAMING[1] + TEXT_PART_FRAMING[1] * len(parts)
        turns += 1
    return other, cheap, turns


def estimate_from_counts(line: bytes, frame_other: int, frame_cheap: int, turns: int) -> int:
    """The estimate of a canonical ``line`` whose framing (see :func:`framing`) is already counted.

    Args:
        line: The canonical bytes of the example (a trailing newline is ignored).
        frame_other: "Other" bytes of the framing.
        frame_cheap: "Cheap" bytes of the framing.
        turns: Turns, the system instruction included.

    Returns:
        The estimated token count, chat-template overhead included.
    """
    other = len(line.translate(None, _CHEAP_BYTES))
    cheap = len(line) - other - line.endswith(b"\n")
    return other - frame_other + (cheap - frame_cheap + 2) // 3 + TURN_OVERHEAD * turns


def estimate_line_tokens(line: bytes, example: dict[str, Any]) -> int:
    """High estimate of the tokens of ``example`` from its canonical JSON ``line``; the rule is in the module doc.

    Args:
        line: The canonical bytes of ``example`` (a trailing newline is ignored).
        example: The converted (Gemini) example, already checked.

    Returns:
        The estimated token count, chat-template overhead included.
    """
    return estimate_from_counts(line, *framing(example))


def estimate_example_tokens(example: dict[str, Any]) -> int:
    """High estimate of the tokens of one converted (Gemini) example; see the module docstring for the rule.

    Args:
        example: The example, e.g. from ``iter_gemini_examples``.

    Returns:
        The estimated token count, chat-template overhead included.
    """
    line = json.dumps(example, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return estimate_line_tokens(line, example)


def estimate_text_tokens(text: str) -> int:
    """High estimate of the tokens of ``text`` alone, by the same rule (as a JSON string body, no turn overhead).

    Args:
        text: Any text.

    Returns:
        The estimated token count.
    """
    data = json.dumps(text, ensure_ascii=False).encode("utf-8")[1:-1]
    other = len(data.translate(None, _CHEAP_BYTES))
    return other + (len(data) - other + 2) // 3


class TokenCounter:
    """Counts tokens with a Hugging Face tokenizer; a ``Callable[[str], int]`` with a ``name`` for summaries."""

    def __init__(self, encode: Callable[[str], int], name: str) -> None:
        self._count = encode
        self.name = name
        """Shown in ``DatasetSummary.token_method`` as ``exact:<name>``."""

    def __call__(self, text: str) -> int:
        return self._count(text)


def tokenizer_counter(model_dir_or_gguf: str | Path) -> TokenCounter:
    """Load a Hugging Face tokenizer from a local model directory or a GGUF file, for exact token counts.

    Nothing is downloaded. A directory with ``tokenizer.json`` is read with the ``tokenizers`` library directly
    (a fraction of a second; importing transformers alone takes seconds); other directories and GGUF files go
    through ``transformers.AutoTokenizer`` (a GGUF file takes tens of seconds: its vocabulary is parsed in Python).
    Special tokens (BOS/EOS) are not counted: chat templates place them, not the text.

    Args:
        model_dir_or_gguf: A directory holding a tokenizer (``tokenizer.json`` or equivalent) or a ``.gguf`` file.

    Returns:
        A callable that returns the number of tokens of a text.

    Raises:
        FileNotFoundError: If the path does not exist.
    """
    path = Path(model_dir_or_gguf)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: expected a tokenizer directory or a .gguf file, got a path that does not exist"
        )
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        fast = Tokenizer.from_file(str(path / "tokenizer.json"))
        return TokenCounter(lambda text: len(fast.encode(text, add_special_tokens=False).ids), path.name)

    from transformers import AutoTokenizer

    if path.is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
        name = path.stem
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        name = path.name
    return TokenCounter(lambda text: len(tokenizer.encode(text, add_special_tokens=False)), name)
