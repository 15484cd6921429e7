"""The rules of Vertex AI's Gemini tuning format, one example at a time.

An example is ``{"contents": [{"role": "user" | "model", "parts": [...]}, ...], "systemInstruction"?: {"parts":
[...]}, "generationConfig"?: {...}}`` (sources.yaml: V-prep). :func:`check_gemini` checks one parsed line, appends a
:class:`~tuneform.datasets.rules.Finding` per problem and returns the line's canonical form (the same object, or a
copy without what Vertex ignores) with its exact token count, counting the canonical framing on the way (see
``Context``) so the pass can verify a canonical line by its length alone.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from tuneform.datasets._locate import PathKey
from tuneform.datasets.canonical import PART_CHARS, TURN_CHARS
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

_TURN_OTHER, _TURN_CHEAP = TURN_FRAMING
_PART_OTHER, _PART_CHEAP = TEXT_PART_FRAMING


def _modality(mime: str) -> str | None:
    if mime in ("application/pdf", "text/plain"):
        return "document"
    major, _, minor = mime.partition("/")
    if major in ("image", "audio", "video") and minor:
        return major
    return None


def _check_mime(mime: Any, path: tuple[PathKey, ...], errs: list[Finding], ctx: Context) -> None:
    modality = _modality(mime) if isinstance(mime, str) else None
    if modality is None:
        errs.append(
            Finding(
                path,
                "expected the MIME type of an image (image/*), audio (audio/*), video (video/*) or document "
                f'(application/pdf, text/plain), got {describe(mime)}. Write e.g. "mimeType": "image/jpeg".',
                False,
            )
        )
    elif modality not in ctx.allowed:
        accepted = ", ".join(sorted(ctx.allowed))
        errs.append(
            Finding(
                path,
                f"expected a file type the base model accepts ({accepted}), got {describe(mime)} ({modality}). "
                f"Choose a base model that accepts {modality} input, or remove this part.",
                False,
            )
        )
    else:
        ctx.seen.add(modality)


def _check_media(
    value: Any, path: tuple[PathKey, ...], errs: list[Finding], ctx: Context, *, key: str, shape: str
) -> set[str] | None:
    """Check that a ``fileData``/``inlineData`` part is an object ``shape`` with only ``mimeType`` and ``key``, and
    its ``mimeType``; returns the keys its misspelt keys seem to mean, or ``None`` when it is not an object."""
    if not isinstance(value, dict):
        errs.append(Finding(path, f"expected an object {shape}, got {describe(value)}.", False))
        return None
    meant = check_keys(value, path, ("mimeType", key), errs)
    if not absent(value, "mimeType", meant):
        _check_mime(value.get("mimeType", MISSING), (*path, "mimeType"), errs, ctx)
    return meant


def _check_file_data(value: Any, path: tuple[PathKey, ...], errs: list[Finding], ctx: Context) -> None:
    shape = '{"mimeType": "image/jpeg", "fileUri": "gs://bucket/file.jpg"}'
    meant = _check_media(value, path, errs, ctx, key="fileUri", shape=shape)
    if meant is None:
        return
    uri = value.get("fileUri", MISSING)
    if absent(value, "fileUri", meant):
        pass
    elif not isinstance(uri, str) or not uri.startswith(("gs://", "https://")) or uri in ("gs://", "https://"):
        fix = (
            "Use https://; plain http:// is refused."
            if isinstance(uri, str) and uri.startswith("http://")
            else "Upload the file to Cloud Storage and write its gs://bucket/path URI."
        )
        errs.append(
            Finding((*path, "fileUri"), f"expected a gs:// or https:// URI, got {describe(uri)}. {fix}", False)
        )


def _check_inline_data(value: Any, path: tuple[PathKey, ...], errs: list[Finding], ctx: Context) -> None:
    shape = '{"mimeType": "image/png", "data": "<base64>"}'
    meant = _check_media(value, path, errs, ctx, key="data", shape=shape)
    if meant is None:
        return
    data = value.get("data", MISSING)
    valid = isinstance(data, str) and bool(data) or absent(value, "data", meant)
    if valid and data is not MISSING:
        try:
            binascii.a2b_base64(data, strict_mode=True)
        except (binascii.Error, ValueError):
            valid = False
    if not valid:
        shown = "a string that is not base64" if isinstance(data, str) and data else describe(data)
        errs.append(Finding((*path, "data"), f"expected non-empty base64-encoded bytes, got {shown}.", False))


def _check_parts(
    parts: Any, path: tuple[PathKey, ...], errs: list[Finding], ctx: Context, *, text_only: bool
) -> list[str]:
    """Check ``parts`` at ``path + ("parts",)``; returns the texts of its text parts."""
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
            kinds = '"text", "fileData" or "inlineData"'
            errs.append(Finding(at, f"expected an object with one of {kinds}, got {describe(part)}.{fix}", False))
            continue
        unknown = False
        for key in part:
            if key not in known:
                unknown = True
                if key in ("functionCall", "functionResponse"):
                    errs.append(Finding((*at, key), f"expected no function calls, got {key}. {TOOLS_FIX}", True))
                else:
                    unknown_key(errs, (*at, key), known)
        kinds_here = [kind for kind in PART_KINDS if kind in part]
        if not kinds_here:
            if not unknown:
                errs.append(
                    Finding(at, f'expected one of "text", "fileData" or "inlineData", got {describe(part)}.', False)
                )
            continue
        if len(kinds_here) > 1:
            both = " and ".join(f'"{kind}"' for kind in kinds_here)
            errs.append(
                Finding(
                    at,
                    f"expected exactly one of text, fileData, inlineData, got {both}. Give each its own part.",
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
            _check_file_data(part["fileData"], (*at, "fileData"), errs, ctx)
        else:
            _check_inline_data(part["inlineData"], (*at, "inlineData"), errs, ctx)
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
        elif key == "messages" and "contents" not in obj:
            fix = 'This line is OpenAI chat format: set "format: openai-chat" under spec.dataset.'
            errs.append(Finding(("messages",), f'expected the Gemini key "contents", got "messages". {fix}', True))
            meant.add("contents")
        else:
            meant.add(unknown_key(errs, (key,), GEMINI_KEYS) or "")
    system = obj.get("systemInstruction", MISSING)
    if system is not MISSING:
        if isinstance(system, dict):
            system_meant = check_keys(system, ("systemInstruction",), ("parts", "role"), errs)
            if not absent(system, "parts", system_meant):
                parts = system.get("parts", MISSING)
                texts = _check_parts(parts, ("systemInstruction",), errs, ctx, text_only=True)
                tokens += ctx.turn_tokens(texts)
                ctx.add_turn(None, parts, texts, system=True)
            if len(system) != 1:
                ctx.simple = False
            if "role" in system:
                # Vertex ignores this role; dropping it makes a Gemini file and its OpenAI twin hash alike.
                converted = {**obj, "systemInstruction": {k: v for k, v in system.items() if k != "role"}}
        else:
            shape = '{"parts": [{"text": "..."}]}'
            errs.append(Finding(("systemInstruction",), f"expected an object {shape}, got {describe(system)}.", False))
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
                texts = _check_parts(parts, at, errs, ctx, text_only=False)
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
                    }.get(role, "")
                    if isinstance(role, str)
                    else ""
                )
                errs.append(Finding((*at, "role"), f'expected "user" or "model", got {describe(role)}.{fix}', False))
        if not absent(turn, "parts", turn_meant):
            parts = turn.get("parts", MISSING)
            texts = _check_parts(parts, at, errs, ctx, text_only=False)
            tokens += ctx.turn_tokens(texts)
            ctx.add_turn(role, parts, texts)
    check_roles(roles, ("user", "model"), "contents", errs)
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
