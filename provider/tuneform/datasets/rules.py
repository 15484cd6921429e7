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


class Finding(NamedTuple):
    """One problem in one example, before it is located in the line."""

    path: tuple[PathKey, ...]
    """Keys and indices from the example's root, e.g. ``("contents", 2, "role")``."""
    message: str
    at_key: bool
    """Whether the column is the key's (unknown keys) rather than the value's."""


class Context:
    """Per-file state the example checks share."""

    __slots__ = (
        "allowed",
        "count_tokens",
        "first_resolution",
        "frame_cheap",
        "frame_other",
        "length",
        "line",
        "opaque",
        "seen",
        "simple",
        "surrogates",
        "turns",
    )

    def __init__(self, allowed: frozenset[str], count_tokens: Callable[[str], int] | None) -> None:
        self.allowed = allowed
        self.count_tokens = count_tokens
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

    def start(self, turns: int) -> None:
        """Reset the framing counts for an example with ``turns`` turns in ``contents``."""
        self.frame_other, self.frame_cheap = TOP_FRAMING
        self.frame_other += turns - 1
        self.length = TOP_CHARS + turns - 1
        self.turns = 0

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
        return self.count_tokens("".join(texts))


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
