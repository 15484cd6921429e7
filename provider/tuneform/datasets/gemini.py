"""The rules of Vertex AI's Gemini tuning format, one example at a time.

An example is ``{"contents": [{"role": "user" | "model", "parts": [...]}, ...], "systemInstruction"?: {"parts":
[...]}, "generationConfig"?: {...}}`` (sources.yaml: V-prep). :func:`check_gemini` checks one parsed line, appends a
:class:`~tuneform.datasets.rules.Finding` per problem and returns the line's canonical form (the same object, or a
copy without what Vertex ignores) with its exact token count, counting the canonical framing on the way (see
``Context``) so the pass can verify a canonical line by its length alone.
"""

from __future__ import annotations

import json
from typing import Any

from tuneform.datasets._locate import PathKey
from tuneform.datasets.canonical import PART_CHARS, TURN_CHARS
from tuneform.datasets.media import check_file_count, check_mime, check_uri, count_file
from tuneform.datasets.rules import (
    MISSING,
    TOOLS_FIX,
    Context,
    Finding,
    absent,
    check_keys,
    check_roles,
    describe,
    non_empty_text,
    unknown_key,
    valid_unicode,
)
from tuneform.datasets.tokens import TEXT_PART_FRAMING, TURN_FRAMING

__all__ = ["GEMINI_KEYS", "PART_KINDS", "check_gemini"]

GEMINI_KEYS = ("contents", "systemInstruction", "generationConfig")
"""Top-level keys of a Gemini example that tuneform accepts (``tools`` is refused: no function-calling tuning)."""

PART_KINDS = ("text", "fileData", "inlineData")

_SNAKE_SYSTEM = "system_instruction"

_LISTED = ("text", "fileData", "videoMetadata")
"""The part keys a message suggests (``inlineData`` is known, to be refused with its own message)."""

_INLINE_REFUSED = (
    'expected "fileData" (a file in Cloud Storage or at a public URL), got "inlineData": Vertex AI\'s tuning format '
    "takes text and fileData parts only. Upload the file and write "
    '{"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/file.png"}}.'
)

_TURN_OTHER, _TURN_CHEAP = TURN_FRAMING
_PART_OTHER, _PART_CHEAP = TEXT_PART_FRAMING


def _check_file_data(
    value: Any, path: tuple[PathKey, ...], errs: list[Finding], ctx: Context, *, role: str | None
) -> None:
    """A ``fileData`` part: ``{"mimeType": ..., "fileUri": ...}`` with a documented type and URI (see media.py)."""
    if not isinstance(value, dict):
        shape = '{"mimeType": "image/jpeg", "fileUri": "gs://bucket/file.jpg"}'
        errs.append(Finding(path, f"expected an object {shape}, got {describe(value)}.", False))
        return
    meant = check_keys(value, path, ("mimeType", "fileUri"), errs)
    if not absent(value, "mimeType", meant):
        modality = check_mime(value.get("mimeType", MISSING), (*path, "mimeType"), errs, ctx)
        if modality is not None:
            count_file(ctx, modality, path)
    if not absent(value, "fileUri", meant):
        check_uri(value.get("fileUri", MISSING), (*path, "fileUri"), errs)
    if role == "model":
        # The pages show files in user turns only (V-media) and Gemini answers in text: the stricter rule.
        fix = "Tuning teaches the model turns, and Gemini answers in text: move the file to the user turn before it."
        errs.append(Finding(path, f'expected text in a model turn, got "fileData". {fix}', True))


def _check_parts(
    parts: Any, path: tuple[PathKey, ...], errs: list[Finding], ctx: Context, *, text_only: bool, role: Any = None
) -> list[str]:
    """Check ``parts`` at ``path + ("parts",)`` of a turn with ``role``; returns the texts of its text parts."""
    here = (*path, "parts")
    if not isinstance(parts, list) or not parts:
        fix = 'Write "parts": [{"text": "..."}].'
        errs.append(Finding(here, f"expected a non-empty list of parts, got {describe(parts)}. {fix}", False))
        return []
    texts: list[str] = []
    known = (*PART_KINDS, "videoMetadata")
    for index, part in enumerate(parts):
        # Fast path for the common part, {"text": "..."}; anything else takes the full check below.
        if type(part) is dict and len(part) == 1:
            text = part.get("text")
            if type(text) is str and text and not text.isspace() and (not ctx.surrogates or text.isascii()):
                texts.append(text)
                continue
        ctx.simple = False
        at = (*here, index)
        if not isinstance(part, dict):
            fix = f" Write {{{json.dumps('text')}: {describe(part)}}}." if isinstance(part, str) else ""
            kinds = '"text" or "fileData"'
            errs.append(Finding(at, f"expected an object with one of {kinds}, got {describe(part)}.{fix}", False))
            continue
        unknown = False
        for key in part:
            if key not in known:
                unknown = True
                if key in ("functionCall", "functionResponse"):
                    errs.append(Finding((*at, key), f"expected no function calls, got {key}. {TOOLS_FIX}", True))
                else:
                    unknown_key(errs, (*at, key), _LISTED)
        kinds_here = [kind for kind in PART_KINDS if kind in part]
        if not kinds_here:
            if not unknown:
                errs.append(Finding(at, f'expected one of "text" or "fileData", got {describe(part)}.', False))
            continue
        if len(kinds_here) > 1:
            both = " and ".join(f'"{kind}"' for kind in kinds_here)
            errs.append(
                Finding(
                    at,
                    f"expected exactly one of text and fileData, got {both}. Give each its own part.",
                    False,
                )
            )
            continue
        kind = kinds_here[0]
        if text_only and kind != "text":
            fix = "A system instruction takes text only; put files in a user turn."
            errs.append(Finding((*at, kind), f'expected a text part, got "{kind}". {fix}', True))
        elif kind == "text":
            text = part["text"]
            if not non_empty_text(text):
                errs.append(Finding((*at, "text"), f"expected a non-empty string, got {describe(text)}.", False))
            elif valid_unicode(text, (*at, "text"), errs, ctx):
                texts.append(text)
        elif kind == "fileData":
            _check_file_data(part["fileData"], (*at, "fileData"), errs, ctx, role=role)
        else:
            errs.append(Finding((*at, "inlineData"), _INLINE_REFUSED, True))
        if "videoMetadata" in part:
            ctx.opaque.append(part["videoMetadata"])
            if kind != "fileData":
                errs.append(
                    Finding(
                        (*at, "videoMetadata"),
                        f'expected videoMetadata only beside "fileData", got it beside "{kind}".',
                        True,
                    )
                )
    if texts:
        ctx.seen.add("text")
    return texts


def check_gemini(obj: dict[str, Any], errs: list[Finding], ctx: Context) -> tuple[dict[str, Any], int]:
    """Check one Gemini example; returns its converted (canonical) form and its token count."""
    tokens = 0
    converted = obj
    meant: set[str] = set()
    keys = list(obj)
    # "Simple": only text parts, keys in sorted order, nothing to drop; see is_canonical for why that matters.
    ctx.simple = keys in (["contents"], ["contents", "systemInstruction"])
    contents = obj.get("contents", MISSING)
    ctx.start(len(contents) if isinstance(contents, list) else 0)
    for key, value in obj.items():
        if key in GEMINI_KEYS:
            continue
        if key == "tools":
            errs.append(Finding(("tools",), f"expected no tools, got {describe(value)}. {TOOLS_FIX}", True))
        elif key == _SNAKE_SYSTEM:
            if "systemInstruction" in obj:
                message = 'expected one system instruction, got both "systemInstruction" and "system_instruction".'
                errs.append(Finding((key,), f"{message} Keep one.", True))
        elif key == "messages" and "contents" not in obj:
            head = 'expected the Gemini key "contents", got "messages".'
            fix = 'OpenAI chat format: set "format: openai-chat" under spec.dataset.'
            errs.append(
                Finding(
                    ("messages",),
                    f"{head} This line is {fix}",
                    True,
                    repeated=f"{head} This line and {{more}} more are {fix}",
                )
            )
            meant.add("contents")
        else:
            meant.add(unknown_key(errs, (key,), GEMINI_KEYS) or "")
    # Google's own function-calling tuning example writes "system_instruction" (its proto field name, which proto
    # JSON accepts beside systemInstruction); it converts to systemInstruction, so both spellings hash alike.
    name = _SNAKE_SYSTEM if _SNAKE_SYSTEM in obj and "systemInstruction" not in obj else "systemInstruction"
    system = obj.get(name, MISSING)
    if system is not MISSING:
        if isinstance(system, dict):
            system_meant = check_keys(system, (name,), ("parts", "role"), errs)
            if not absent(system, "parts", system_meant):
                parts = system.get("parts", MISSING)
                texts = _check_parts(parts, (name,), errs, ctx, text_only=True)
                tokens += ctx.turn_tokens(texts)
                ctx.add_turn(None, parts, texts, system=True)
            if len(system) != 1:
                ctx.simple = False
            if "role" in system or name == _SNAKE_SYSTEM:
                # Vertex ignores this role; dropping it makes a Gemini file and its OpenAI twin hash alike.
                converted = {key: value for key, value in obj.items() if key != name}
                converted["systemInstruction"] = {k: v for k, v in system.items() if k != "role"}
        else:
            shape = '{"parts": [{"text": "..."}]}'
            errs.append(Finding((name,), f"expected an object {shape}, got {describe(system)}.", False))
    if "generationConfig" in obj:
        ctx.opaque.append(obj["generationConfig"])
        _check_generation_config(obj["generationConfig"], errs, ctx)
    if not isinstance(contents, list) or not contents:
        if not absent(obj, "contents", meant):
            fix = 'Write "contents": [{"role": "user", "parts": [...]}, {"role": "model", "parts": [...]}].'
            errs.append(
                Finding(("contents",), f"expected a non-empty list of turns, got {describe(contents)}. {fix}", False)
            )
        return converted, tokens
    roles: list[tuple[int, str | None]] = []
    for index, turn in enumerate(contents):
        at: tuple[PathKey, ...] = ("contents", index)
        # Fast path for the common turn, {"role": "user" | "model", "parts": [...]}.
        if type(turn) is dict and len(turn) == 2:
            role = turn.get("role")
            parts = turn.get("parts")
            if role in ("user", "model") and type(parts) is list:
                roles.append((index, role))
                texts = _check_parts(parts, at, errs, ctx, text_only=False, role=role)
                if ctx.count_tokens is not None:
                    tokens += ctx.turn_tokens(texts)
                # ctx.add_turn, inlined: this runs for nearly every turn of a file.
                count = len(texts)
                ctx.frame_other += _TURN_OTHER + len(parts) - 1 + _PART_OTHER * count
                ctx.frame_cheap += _TURN_CHEAP + len(role) + _PART_CHEAP * count
                ctx.length += TURN_CHARS + len(role) + (PART_CHARS + 1) * len(parts) - 1 + sum(map(len, texts))
                ctx.turns += 1
                if next(iter(turn)) != "parts":
                    ctx.simple = False
                continue
        ctx.simple = False
        if not isinstance(turn, dict):
            shape = '{"role": "user", "parts": [{"text": "..."}]}'
            errs.append(Finding(at, f"expected an object {shape}, got {describe(turn)}.", False))
            roles.append((index, None))
            continue
        turn_meant = check_keys(turn, at, ("role", "parts"), errs)
        role = turn.get("role", MISSING)
        if role in ("user", "model"):
            roles.append((index, role))
        else:
            roles.append((index, None))
            if not absent(turn, "role", turn_meant):
                fix = (
                    {
                        "assistant": ' Gemini calls the assistant "model".',
                        "system": ' Move system text to "systemInstruction": {"parts": [{"text": "..."}]}.',
                        "user": ' Roles are lower-case: write "user".',
                        "model": ' Roles are lower-case: write "model".',
                    }.get(role.lower() if role.lower() in ("user", "model") else role, "")
                    if isinstance(role, str)
                    else ""
                )
                errs.append(Finding((*at, "role"), f'expected "user" or "model", got {describe(role)}.{fix}', False))
        if not absent(turn, "parts", turn_meant):
            parts = turn.get("parts", MISSING)
            texts = _check_parts(parts, at, errs, ctx, text_only=False, role=role)
            tokens += ctx.turn_tokens(texts)
            ctx.add_turn(role, parts, texts)
    check_roles(roles, ("user", "model"), "contents", errs)
    if ctx.files:
        check_file_count(ctx, errs)
    return converted, tokens


def _check_generation_config(config: Any, errs: list[Finding], ctx: Context) -> None:
    if not isinstance(config, dict):
        errs.append(Finding(("generationConfig",), f"expected an object, got {describe(config)}.", False))
        return
    resolution = config.get("mediaResolution")
    if ctx.first_resolution is None:
        ctx.first_resolution = (ctx.line, resolution)
    elif ctx.first_resolution[1] != resolution:
        first_line, first = ctx.first_resolution
        fix = "Vertex requires the same mediaResolution on every line."
        errs.append(
            Finding(
                ("generationConfig", "mediaResolution"),
                f"expected {describe(first)} as on line {first_line}, got {describe(resolution)}. {fix}",
                False,
            )
        )
