"""Gemini-format examples as chat messages (roles ``system``/``user``/``assistant``).

Two consumers need the same mapping: the local trainer renders messages with the base model's chat template, and
Vertex AI's open-model tuning takes ``{"messages": [{"role": "assistant", ...}]}`` rows (sources.yaml: V-oss), not
the Gemini ``contents`` with role ``model``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["ROLE_NAMES", "MessageConversionError", "gemini_to_messages", "write_messages_jsonl"]

ROLE_NAMES = {"user": "user", "model": "assistant"}


class MessageConversionError(ValueError):
    """An example is not a text-only Gemini conversation that ends with a model turn."""


def _text_of(parts: Any, where: str) -> str:
    if not isinstance(parts, list) or not parts:
        raise MessageConversionError(f"{where}.parts: expected a non-empty list of {{text: ...}}, got {parts!r}.")
    texts = []
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise MessageConversionError(f"{where}.parts[{index}]: expected {{text: <string>}}, got {part!r}.")
        texts.append(part["text"])
    return "".join(texts)


def gemini_to_messages(record: dict[str, Any], where: str) -> list[dict[str, str]]:
    """Convert one Gemini ``generateContent``-style record to chat messages.

    Args:
        record: ``{"systemInstruction"?: {parts}, "contents": [{"role": "user"|"model", "parts": [...]}, ...]}``.
        where: Prefix for error messages, e.g. ``train.jsonl:12``.

    Returns:
        Messages with ``model`` renamed to ``assistant`` and the system instruction as a leading ``system`` message.

    Raises:
        MessageConversionError: If the record is not in that shape or has no model turn to learn from.
    """
    messages: list[dict[str, str]] = []
    system = record.get("systemInstruction")
    if system is not None:
        if not isinstance(system, dict):
            raise MessageConversionError(f"{where}: systemInstruction: expected {{parts: [...]}}, got {system!r}.")
        messages.append({"role": "system", "content": _text_of(system.get("parts"), f"{where}: systemInstruction")})
    contents = record.get("contents")
    if not isinstance(contents, list) or not contents:
        raise MessageConversionError(f"{where}: contents: expected a non-empty list of turns, got {contents!r}.")
    for index, turn in enumerate(contents):
        role = turn.get("role") if isinstance(turn, dict) else None
        if role not in ROLE_NAMES:
            raise MessageConversionError(f"{where}: contents[{index}].role: expected 'user' or 'model', got {role!r}.")
        messages.append(
            {"role": ROLE_NAMES[role], "content": _text_of(turn.get("parts"), f"{where}: contents[{index}]")}
        )
    if messages[-1]["role"] != "assistant":
        raise MessageConversionError(
            f"{where}: contents: expected the last turn to have role 'model', got {contents[-1]!r}."
        )
    return messages


def write_messages_jsonl(gemini_path: str | Path, out_path: str | Path) -> tuple[str, int]:
    """Write a checked Gemini-format JSONL as ``{"messages": [...]}`` rows, streaming.

    Returns:
        The SHA-256 of what was written and the number of rows.

    Raises:
        MessageConversionError: At the first example that is not a text conversation.
    """
    digest = hashlib.sha256()
    rows = 0
    with open(gemini_path, "rb") as source, open(out_path, "wb") as out:
        for number, raw in enumerate(source, start=1):
            if raw.isspace():
                continue
            messages = gemini_to_messages(json.loads(raw), f"{gemini_path}:{number}")
            line = json.dumps({"messages": messages}, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
            digest.update(line)
            out.write(line)
            rows += 1
    return digest.hexdigest(), rows
