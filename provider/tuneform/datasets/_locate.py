"""Columns of values inside one JSON line, computed only for lines that have a problem.

The stdlib parser returns no positions, so a problem's column is found afterwards by walking the line's text to the
value at the problem's path, with the stdlib's own ``raw_decode`` skipping over sibling values. This costs a second
parse of a bad line only; good lines never pay for it.
"""

from __future__ import annotations

import json
import re

PathKey = str | int

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _skip(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    return match.end() if match else index


def _member_start(text: str, index: int, key: PathKey) -> int | None:
    """Start index of member ``key`` of the object or array opening at ``index``, or None if it is not there."""
    opening = text[index]
    if (opening == "{") != isinstance(key, str) or opening not in "{[":
        return None
    closing = "}" if opening == "{" else "]"
    position = _skip(text, index + 1)
    element = 0
    while position < len(text) and text[position] != closing:
        name: PathKey = element
        if opening == "{":
            name, position = json.decoder.scanstring(text, position + 1)  # type: ignore[attr-defined]
            position = _skip(text, _skip(text, position) + 1)  # past the ':'
        if name == key:
            return position
        _, position = _DECODER.raw_decode(text, position)
        position = _skip(text, position)
        if position < len(text) and text[position] == ",":
            position = _skip(text, position + 1)
        element += 1
    return None


def locate(text: str, path: tuple[PathKey, ...]) -> int:
    """1-based column of the value at ``path`` in the JSON ``text``, or of its deepest existing ancestor.

    Args:
        text: One line holding a JSON value (already known to parse).
        path: Keys and indices from the root, e.g. ``("contents", 2, "role")``.

    Returns:
        The character column (1-based) where the value starts; for a missing key, where its parent starts.
    """
    position = _skip(text, 0)
    try:
        for key in path:
            found = _member_start(text, position, key)
            if found is None:
                break
            position = found
    except (ValueError, IndexError):
        # A line that parsed once parses again; this only guards against a path that does not fit the value.
        pass
    return position + 1


def key_column(text: str, path: tuple[PathKey, ...]) -> int:
    """1-based column of the *key* that ends ``path`` (for unknown keys, whose value is not the problem).

    Args:
        text: One line holding a JSON value.
        path: Path whose last element is an object key.

    Returns:
        The column of the opening quote of the key, or of the parent object if the key is not found.
    """
    parent = locate(text, path[:-1]) - 1
    value = locate(text, path) - 1
    if value == parent:
        return parent + 1
    # Walk back from the value over whitespace, the colon and the key string to the key's opening quote.
    quote = text.rfind('"', parent, text.rfind(":", parent, value))
    return text.rfind('"', parent, quote) + 1
