"""What changed in a dataset between two versions of a JSONL file, in bounded memory and without a line diff.

Examples are compared as a multiset, not as a sequence: a reviewer wants to know which examples were added, removed
or changed, not where lines moved. The passes:

1. Stream the old file and count a 16-byte BLAKE2b digest of every non-blank line (line end and surrounding
   whitespace stripped).
2. Stream the new file: a line whose digest is still counted in the old multiset is common (the count goes down);
   any other line is *added*. Every new line is parsed once here, for the token total after the change.
3. Only if old digests are left over: stream the old file again and parse just those lines, the *removed* ones.

Then the raw added and removed lines are matched twice more, on parsed content:

- by the hash of the canonical JSON (``sort_keys``, compact separators, no ASCII escaping): a line only
  re-formatted (key order, spacing, ``\\u`` escapes) is *reformatted*, not changed;
- by the hash of the canonical JSON of the example without its final answer (the last ``model``/``assistant``
  turn): same prompt, different answer is *changed*.

What is left is *added* or *removed*. Memory holds one digest and a count per distinct old line, plus two digests,
a token count and, for the first few hundred, a short excerpt per added or removed line: about 100 bytes per line,
never the lines themselves. Tokens are counted by the rule the caller passes (``tuneform.datasets.tokens.
counting_for``: exact on the local target, the documented estimate on Vertex AI), so the totals equal what
``tuneform validate``/``plan`` and ``pulumi preview`` count for the same model.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tuneform.datasets.tokens import ESTIMATE_METHOD, TokenCounting, TokenTally, turn_texts

__all__ = ["DatasetDiff", "Sample", "diff_dataset", "to_gemini"]

LineSource = Callable[[], Iterable[bytes]]
"""Opens the file afresh each call and yields its raw lines (it is read up to twice)."""

EXCERPT_CHARS = 160
"""Longest excerpt of a prompt or answer kept for sample diffs."""

_KEEP_EXCERPTS = 200
"""Excerpts kept per side: enough to find a few changed pairs, small whatever the file size."""


def _lines(source: LineSource) -> Iterator[bytes]:
    """Iterate a source's lines and close it (file or generator) however the loop ends."""
    opened = source()
    try:
        yield from opened
    finally:
        close = getattr(opened, "close", None)
        if close is not None:
            close()


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _openai_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content] if content.strip() else []
    if not isinstance(content, list):
        return []
    return [
        p["text"]
        for p in content
        if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
    ]


def to_gemini(example: dict[str, Any], format: str) -> dict[str, Any]:
    """The canonical Gemini form of a (valid) example, as the dataset checker converts and hashes it.

    Args:
        example: The parsed JSON line.
        format: ``gemini`` or ``openai-chat``.

    Returns:
        The example with ``systemInstruction.role`` dropped (Gemini) or converted from ``messages`` (OpenAI chat).
    """
    if format != "openai-chat":
        system = example.get("systemInstruction")
        if isinstance(system, dict) and "role" in system:
            return {**example, "systemInstruction": {k: v for k, v in system.items() if k != "role"}}
        return example
    contents: list[dict[str, Any]] = []
    system_texts: list[str] = []
    for index, message in enumerate(example.get("messages") or []):
        if not isinstance(message, dict):
            continue
        texts = _openai_texts(message.get("content"))
        if message.get("role") == "system" and index == 0:
            system_texts = texts
        elif message.get("role") in ("user", "assistant"):
            role = "user" if message["role"] == "user" else "model"
            contents.append({"role": role, "parts": [{"text": t} for t in texts]})
    converted: dict[str, Any] = {"contents": contents}
    if system_texts:
        converted["systemInstruction"] = {"parts": [{"text": t} for t in system_texts]}
    return converted


def _count_line(raw: bytes, format: str, tally: TokenTally) -> None:
    try:
        example = json.loads(raw)
    except ValueError:
        return
    if isinstance(example, dict):
        tally.add(to_gemini(example, format))


def _canonical(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8", "replace")


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


@dataclass(frozen=True)
class Sample:
    """A short view of one example: its last prompt turn and its answer, clipped."""

    prompt: str
    answer: str


@dataclass
class _Line:
    canonical: bytes
    prompt: bytes
    sample: Sample | None


def _parse(raw: bytes, format: str, keep_sample: bool, tally: TokenTally) -> _Line:
    try:
        example = json.loads(raw)
    except ValueError:
        # Not JSON: `tuneform validate` reports it; here it counts as content without tokens.
        sample = Sample(_clip(raw.decode("utf-8", "replace")), "") if keep_sample else None
        return _Line(_digest(raw), _digest(raw), sample)
    if not isinstance(example, dict):
        return _Line(_digest(_canonical(example)), _digest(_canonical(example)), None)
    converted = to_gemini(example, format)
    canonical = _canonical(converted)
    tally.add(converted, canonical)
    turns = [t for t in converted.get("contents") or [] if isinstance(t, dict)]
    # Everything but the final answer identifies "the same question" across versions.
    answered = bool(turns) and turns[-1].get("role") == "model"
    prompt = {**converted, "contents": turns[:-1]} if answered else converted
    sample = None
    if keep_sample:
        asks = [t for t in (turns[:-1] if answered else turns) if t.get("role") == "user"]
        sample = Sample(_clip(_turn_text(asks[-1]) if asks else ""), _clip(_turn_text(turns[-1]) if answered else ""))
    return _Line(_digest(canonical), _digest(_canonical(prompt)), sample)


def _turn_text(turn: dict[str, Any]) -> str:
    return " ".join(turn_texts(turn))


@dataclass(frozen=True)
class DatasetDiff:
    """How one dataset file changed between the base and the working tree."""

    examples_before: int
    examples_after: int
    tokens_before: int
    tokens_after: int
    added: int
    """Examples whose prompt is new."""
    removed: int
    """Examples whose prompt is gone."""
    changed: int
    """Examples with the same prompt (everything but the final answer) and a different answer."""
    reformatted: int
    """Lines whose text changed but whose JSON content did not."""
    identical: bool
    """The file is byte-for-byte the same (nothing else was computed from its lines)."""
    reordered: bool = False
    """The same lines in another order (which changes the training file, hence the run)."""
    token_method: str = ESTIMATE_METHOD
    """How the tokens were counted (``exact:<tokenizer>``, the estimate's rule, or ``unavailable``)."""
    added_samples: tuple[Sample, ...] = ()
    removed_samples: tuple[Sample, ...] = ()
    changed_samples: tuple[tuple[Sample, Sample], ...] = ()
    """``(before, after)`` pairs."""

    @property
    def content_changed(self) -> bool:
        """Whether the examples differ (a re-format alone does not count)."""
        return bool(self.added or self.removed or self.changed)


def _pair(
    removed: list[_Line], added: list[_Line], samples: int
) -> tuple[int, int, list[tuple[Sample, Sample]], list[_Line], list[_Line]]:
    """Match removed with added lines: first same content (re-formatted), then same prompt (changed)."""
    by_content: dict[bytes, list[int]] = {}
    for index, line in enumerate(added):
        by_content.setdefault(line.canonical, []).append(index)
    taken = [False] * len(added)
    left_removed: list[_Line] = []
    reformatted = 0
    for line in removed:
        candidates = by_content.get(line.canonical)
        if candidates:
            taken[candidates.pop()] = True
            reformatted += 1
        else:
            left_removed.append(line)
    by_prompt: dict[bytes, list[int]] = {}
    for index, line in enumerate(added):
        if not taken[index]:
            by_prompt.setdefault(line.prompt, []).append(index)
    changed = 0
    pairs: list[tuple[Sample, Sample]] = []
    gone: list[_Line] = []
    for line in left_removed:
        candidates = by_prompt.get(line.prompt)
        if candidates:
            index = candidates.pop(0)
            taken[index] = True
            changed += 1
            after = added[index].sample
            if len(pairs) < samples and line.sample is not None and after is not None:
                pairs.append((line.sample, after))
        else:
            gone.append(line)
    new = [line for index, line in enumerate(added) if not taken[index]]
    return reformatted, changed, pairs, gone, new


def diff_dataset(
    old: LineSource | None,
    new: LineSource | None,
    format: str,
    *,
    samples: int = 3,
    progress: Callable[[str], None] | None = None,
    name: str = "dataset",
    counting: TokenCounting | None = None,
) -> DatasetDiff:
    """Compare two versions of a JSONL dataset (see the module docstring for how).

    Args:
        old: The base version's lines, or ``None`` when the file did not exist.
        new: The working tree's lines, or ``None`` when the file is gone.
        format: ``gemini`` or ``openai-chat`` (the new version's, else the old one's).
        samples: How many sample excerpts to keep per kind of change.
        progress: Receives a line per pass.
        name: How to name the file in progress lines.
        counting: How to count tokens (``counting_for(target, base model)``); ``None`` for the documented estimate.

    Returns:
        The counts, token totals and samples.
    """
    say = progress or (lambda _line: None)
    remaining: Counter[bytes] = Counter()
    examples_before = 0
    # Digests of the lines in order, to tell a reordering from no change when the multisets are equal.
    order_before, order_after = hashlib.blake2b(digest_size=16), hashlib.blake2b(digest_size=16)
    if old is not None:
        say(f"{name}: hashing the base version")
        for raw in _lines(old):
            stripped = raw.strip()
            if stripped:
                digest = _digest(stripped)
                remaining[digest] += 1
                order_before.update(digest)
                examples_before += 1
    added: list[_Line] = []
    examples_after = 0
    # Tokens of the lines both versions share, of the new version's other lines, and of the old one's removed lines.
    common, fresh, gone_tally = TokenTally(counting), TokenTally(counting), TokenTally(counting)
    if new is not None:
        say(f"{name}: hashing and counting the new version")
        for raw in _lines(new):
            stripped = raw.strip()
            if not stripped:
                continue
            examples_after += 1
            digest = _digest(stripped)
            order_after.update(digest)
            if remaining[digest] > 0:
                remaining[digest] -= 1
                _count_line(stripped, format, common)
            else:
                added.append(_parse(stripped, format, len(added) < _KEEP_EXCERPTS, fresh))
    leftover = +remaining
    removed: list[_Line] = []
    if old is not None and leftover:
        say(f"{name}: reading the {sum(leftover.values()):,} removed lines of the base version")
        for raw in _lines(old):
            stripped = raw.strip()
            if not stripped:
                continue
            digest = _digest(stripped)
            if leftover[digest] > 0:
                leftover[digest] -= 1
                removed.append(_parse(stripped, format, len(removed) < _KEEP_EXCERPTS, gone_tally))
    tokens_common = common.total
    tokens_before = tokens_common + gone_tally.total
    tokens_after = tokens_common + fresh.total
    reformatted, changed, pairs, gone, new_lines = _pair(removed, added, samples)
    return DatasetDiff(
        examples_before=examples_before,
        examples_after=examples_after,
        tokens_before=tokens_before,
        tokens_after=tokens_after,
        added=len(new_lines),
        removed=len(gone),
        changed=changed,
        reformatted=reformatted,
        identical=False,
        reordered=not (added or removed) and old is not None and order_before.digest() != order_after.digest(),
        token_method=counting.method if counting is not None else ESTIMATE_METHOD,
        added_samples=tuple(line.sample for line in new_lines if line.sample is not None)[:samples],
        removed_samples=tuple(line.sample for line in gone if line.sample is not None)[:samples],
        changed_samples=tuple(pairs),
    )
