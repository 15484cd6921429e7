"""The canonical form of an example, and the fast path that avoids re-serialising lines already in it.

The identity of a dataset is the SHA-256 of its converted form: one line per example,
``json.dumps(example, ensure_ascii=False, separators=(",", ":"), sort_keys=True)`` and ``"\\n"``. This module holds
the parser settings of the slow path (the stdlib's, refusing JSON's ``NaN``/``Infinity`` extensions), the two
encoders that write the canonical line (orjson where it writes the same bytes, the stdlib where it might not), and
the checks that let a line that already is canonical be copied through (:func:`is_canonical`).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = [
    "CANONICAL",
    "DECODER",
    "ORJSON_CANONICAL",
    "PART_CHARS",
    "SCAN",
    "SYSTEM_CHARS",
    "TOP_CHARS",
    "TURN_CHARS",
    "BadConstant",
    "BadNumber",
    "holds_float",
    "is_canonical",
]


class BadConstant(ValueError):
    """A JSON extension constant (``NaN``, ``Infinity``, ``-Infinity``) met by the stdlib parser."""


class BadNumber(ValueError):
    """A JSON number beyond a 64-bit float (``1e400``): Python reads it as infinity, which JSON cannot write back."""


def _reject_constant(name: str) -> None:
    raise BadConstant(name)


def _finite(literal: str) -> float:
    value = float(literal)
    if value - value != 0:  # inf - inf is nan; a finite number minus itself is 0
        raise BadNumber(literal)
    return value


# Only the slow path parses with these: orjson (the fast path) refuses NaN, Infinity and 1e400 itself.
DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)
SCAN = DECODER.scan_once  # type: ignore[attr-defined]
CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, check_circular=False).encode
ORJSON_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
"""orjson's options for the canonical line: ``CANONICAL(example)`` in UTF-8 and a newline, byte for byte, for
what a checked example can hold: strings escaped alike (``\\"``, ``\\\\``, ``\\b\\f\\n\\r\\t``, other control
characters as lowercase ``\\u00XX``; DEL, U+2028/U+2029 and all other characters as UTF-8), keys sorted alike (by
code point, which is UTF-8 byte order), compact separators, ``true``/``false``/``null``, integers within 64 bits.
They differ on floats (orjson writes ``0.00001`` for ``1e-05``, ``null`` for the ``Infinity`` that ``1e400`` parses
to), so an example with a float in a value the checks do not look into (``Context.opaque``, the only place a valid
example can hold one) is left to the stdlib encoder; and orjson raises on integers beyond 64 bits, lone surrogates
and nesting deeper than 255, where the stdlib encoder then does what it always did. ``test_datasets.py`` compares
the converted bytes with ``json.dumps`` on tricky lines."""


# Characters of the canonical framing: {"contents":[]}, {"parts":[],"role":""} (plus the role), {"text":""} and
# ,"systemInstruction":{"parts":[]}; each comma between list items is one more.
TOP_CHARS, TURN_CHARS, PART_CHARS, SYSTEM_CHARS = 15, 22, 11, 33


def is_canonical(raw: bytes, chars: int, example: dict[str, Any], length: int) -> bool:
    """Whether ``raw`` (``chars`` characters long) already is the canonical form of ``example``.

    ``example`` is text-only, with its keys in sorted order (the caller knows from the parse), and ``length`` is
    the length of its canonical form without escapes. Re-serialising costs more than parsing (the stdlib encoder
    escapes about 150-350 MB/s), and files that tuneform converted, or that were written canonically, need none of
    it. Then ``raw`` is canonical exactly when it is as long as the canonical form: anything else a parser accepts
    makes it longer (whitespace between tokens, a duplicate key that the parser dropped, a ``\\u`` escape) except
    ``\\/``, which is refused by name. Escapes add one character each; they are counted from the line's backslashes
    (an escaped backslash has two). ``test_datasets.py`` checks this against ``json.dumps`` on tricky lines.
    """
    if raw[-1:] != b"\n":
        return False
    # Searches for a single byte run at memchr speed; two-byte patterns that start with the frequent backslash
    # run several times slower, so they are only made when a cheaper test says they can matter.
    if b"\\" in raw:
        if b"/" in raw and b"\\/" in raw:
            return False
        length += raw.count(b"\\")
        system = example.get("systemInstruction", {"parts": []})
        texts = [part["text"] for turn in (*example["contents"], system) for part in turn["parts"]]
        if any("\\" in text for text in texts):
            length -= sum(text.count("\\") for text in texts)
    return chars - 1 == length


def holds_float(values: list[Any]) -> bool:
    """Whether a float is anywhere in ``values`` (walked without recursion: nesting may be deep)."""
    stack = list(values)
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is float:
            return True
        if kind is dict:
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
    return False
