"""What the example checks of both formats share: the per-file context, one problem's record, and the wording.

The checks of one example (:mod:`tuneform.datasets.gemini`, :mod:`tuneform.datasets.openai_chat`) append a
:class:`Finding` per problem, with the field path; the pass (:mod:`tuneform.datasets.check`) turns them into located
``Problem`` lines only for the lines that have any, so good lines never pay for locating.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from typing import Any, NamedTuple

from tuneform.datasets._locate import PathKey
from tuneform.datasets.canonical import PART_CHARS, SYSTEM_CHARS, TOP_CHARS, TURN_CHARS
from tuneform.datasets.tokens import SYSTEM_FRAMING, TEXT_PART_FRAMING, TOP_FRAMING, TURN_FRAMING

__all__ = [
    "MISSING",
    "TOOLS_FIX",
    "Context",
    "Finding",
    "absent",
    "check_keys",
    "check_roles",
    "closest",
    "describe",
    "json_type",
    "non_empty_text",
    "render_path",
    "unknown_key",
    "valid_unicode",
]

MISSING: Any = object()
"""What ``dict.get`` returns for a key that is not there (``None`` is a value a line can hold)."""

TOOLS_FIX = "tuneform does not tune function calling; remove the tool definitions and tool-call turns."

_PIECE = 1 << 16
"""Characters of text counted at once by an exact count (see ``Context._count_long``)."""


class Finding(NamedTuple):
    """One problem in one example, before it is located in the line."""

    path: tuple[PathKey, ...]
    """Keys and indices from the example's root, e.g. ``("contents", 2, "role")``."""
    message: str
    at_key: bool
    """Whether the column is the key's (unknown keys) rather than the value's."""
    repeated: str = ""
    """For a problem that, once seen, is likely on every line (a file in the other format): the message to show
    instead when ``{more}`` more lines have it too; they are then counted, not listed. Empty for other problems."""


class Context:
    """Per-file state the example checks share."""

    __slots__ = (
        "allowed",
        "count_tokens",
        "counted_partly",
        "files",
        "first_resolution",
        "frame_cheap",
        "frame_other",
        "length",
        "line",
        "opaque",
        "seen",
        "simple",
        "surrogates",
        "token_budget",
        "turns",
    )

    def __init__(
        self, allowed: frozenset[str], count_tokens: Callable[[str], int] | None, token_budget: int | None = None
    ) -> None:
        self.allowed = allowed
        self.count_tokens = count_tokens
        # Exact counts of long texts stop past this (the limit per example); see _count_long.
        self.token_budget = token_budget
        self.counted_partly = False
        self.seen: set[str] = set()
        self.first_resolution: tuple[int, Any] | None = None
        self.line = 0
        # The values of the current example that the checks accept without looking inside (generationConfig,
        # videoMetadata): the only places where a valid example can hold numbers (see canonical.ORJSON_CANONICAL).
        self.opaque: list[Any] = []
        # Whether texts must be searched for lone surrogates (see check._Pass.line).
        self.surrogates = False
        # Whether the current example has only text parts, with its keys in canonical order.
        self.simple = False
        # The current example's canonical framing bytes (other, cheap: see tokens.py), turns, and canonical length
        # in characters (framing + texts, escapes not counted), summed while its turns are checked.
        self.frame_other = self.frame_cheap = self.turns = self.length = 0
        # The current example's files per modality: (count, path of the first over the limit); see media.py.
        self.files: dict[str, tuple[int, tuple[PathKey, ...]]] = {}

    def start(self, turns: int) -> None:
        """Reset the framing counts for an example with ``turns`` turns in ``contents``."""
        self.frame_other, self.frame_cheap = TOP_FRAMING
        self.frame_other += turns - 1
        self.length = TOP_CHARS + turns - 1
        self.turns = 0
        if self.files:
            self.files = {}

    def add_turn(self, role: Any, parts: Any, texts: list[str], *, system: bool = False) -> None:
        """Count the framing of one turn (or of the system instruction) in the canonical form."""
        parts_count = len(parts) if isinstance(parts, list) else 0
        fixed_other, fixed_cheap = SYSTEM_FRAMING if system else TURN_FRAMING
        role_length = len(role) if isinstance(role, str) else 0
        self.frame_other += fixed_other + parts_count - 1 + TEXT_PART_FRAMING[0] * len(texts)
        self.frame_cheap += fixed_cheap + role_length + TEXT_PART_FRAMING[1] * len(texts)
        fixed = SYSTEM_CHARS if system else TURN_CHARS + role_length
        self.length += fixed + (PART_CHARS + 1) * parts_count - 1 + sum(map(len, texts))
        self.turns += 1

    def turn_tokens(self, texts: list[str]) -> int:
        # Estimates are made per example from the converted line, once it exists (see check._Pass.line).
        if self.count_tokens is None or not texts:
            return 0
        text = "".join(texts)
        if len(text) <= _PIECE:
            return self.count_tokens(text)
        return self._count_long(text, self.count_tokens)

    def _count_long(self, text: str, count: Callable[[str], int]) -> int:
        """Count a long text in pieces, stopping once past ``token_budget`` (then ``counted_partly`` is set).

        Counted whole, an 8 MiB text took SmolLM2's tokenizer 5 s and 1.4 GB; in pieces of 64 Ki characters memory
        stays flat, and an example already over its limit is not counted to the end. Pieces are cut before a space,
        where byte-level pre-tokenizers cut too, so the sum is the whole count except where a run of several spaces
        is cut in two (one token more or less). Only texts over 64 Ki characters take this way: at 4 characters per
        token, longer than every local model's limit.
        """
        total = start = 0
        while start < len(text):
            end = start + _PIECE
            if end < len(text):
                cut = text.rfind(" ", start + _PIECE // 2, end)
                end = cut if cut > start else end
            total += count(text[start:end])
            start = end
            if self.token_budget is not None and total > self.token_budget and start < len(text):
                self.counted_partly = True
                break
        return total


def render_path(path: tuple[PathKey, ...]) -> str:
    """Dotted field path as shown in messages: ``("contents", 2, "role")`` -> ``contents[2].role``.

    Args:
        path: Keys and indices from the example's root.

    Returns:
        The rendered path.
    """
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += f".{key}" if out else key
    return out


def describe(value: Any) -> str:
    """A short JSON rendering of a value for a "got ..." clause."""
    if value is MISSING:
        return "nothing"
    if isinstance(value, dict):
        return "{}" if not value else "an object"
    if isinstance(value, list):
        return "[]" if not value else "a list"
    shown = json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= 40 else shown[:36] + '..."'


def json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def closest(key: str, candidates: tuple[str, ...]) -> str | None:
    """The known key that a misspelt ``key`` most likely means (snake_case and case slips first), if any."""
    folded = key.replace("_", "").replace("-", "").lower()
    for candidate in candidates:
        if candidate.lower() == folded:
            return candidate
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_key(errs: list[Finding], path: tuple[PathKey, ...], known: tuple[str, ...]) -> str | None:
    """Report an unknown key; returns the known key it seems to mean, so that key is not also reported missing."""
    key = str(path[-1])
    listed = ", ".join(f'"{k}"' for k in known)
    meant = closest(key, known)
    hint = f' Did you mean "{meant}"?' if meant else f' Remove "{key}".'
    errs.append(Finding(path, f'expected one of the keys {listed}, got "{key}".{hint}', True))
    return meant


def check_keys(
    value: dict[str, Any], path: tuple[PathKey, ...], known: tuple[str, ...], errs: list[Finding]
) -> set[str]:
    """Report the keys of ``value`` that are not ``known``; returns the known keys they seem to mean."""
    meant: set[str] = set()
    for key in value:
        if key not in known:
            meant.add(unknown_key(errs, (*path, key), known) or "")
    return meant


def absent(value: dict[str, Any], key: str, meant: set[str]) -> bool:
    """True when ``key`` is missing because a misspelling of it was already reported."""
    return key not in value and key in meant


def non_empty_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and not value.isspace()


def valid_unicode(text: str, path: tuple[PathKey, ...], errs: list[Finding], ctx: Context) -> bool:
    """False (and a problem) for text holding a lone surrogate, which no UTF-8 file or tokenizer can carry."""
    if not ctx.surrogates or text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = f"\\u{ord(text[error.start]):04x}"
        errs.append(
            Finding(
                path,
                f"expected valid Unicode text, got the lone surrogate {code}. Remove it or complete the pair.",
                False,
            )
        )
        return False
    return True


def check_roles(roles: list[tuple[int, str | None]], names: tuple[str, str], prefix: str, errs: list[Finding]) -> None:
    """Check that the turns start with the user, alternate and end with the model.

    ``roles`` holds (index in the list at ``prefix``, role or None when the role itself is invalid) for each turn;
    ``names`` is (user, model) in the source format's words.
    """
    user, model = names
    flagged: set[int] = set()
    previous: str | None = None
    for position, (index, role) in enumerate(roles):
        if role is None:
            previous = None
            continue
        if position == 0 and role == model:
            fix = f"Start the example with the {user} turn that the {model} answers."
            message = f'expected "{user}" (a conversation starts with the user), got "{role}". {fix}'
            errs.append(Finding((prefix, index, "role"), message, False))
            flagged.add(index)
        elif role == previous:
            other = model if role == user else user
            fix = f'Merge consecutive "{role}" turns into one, or add the missing "{other}" turn between them.'
            errs.append(
                Finding((prefix, index, "role"), f'expected "{other}" (turns alternate), got "{role}". {fix}', False)
            )
            flagged.add(index)
        previous = role
    if roles:
        index, role = roles[-1]
        if role == user and index not in flagged:
            fix = f"End the example with the {model}'s answer: the {model} turns are what tuning teaches."
            message = f'expected "{model}" (the last turn is the answer), got "{role}". {fix}'
            errs.append(Finding((prefix, index, "role"), message, False))
