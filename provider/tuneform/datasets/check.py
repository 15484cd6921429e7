"""Streaming checks of tuning datasets, conversion to Gemini JSONL, and the dataset's content hash.

:func:`check_dataset` reads a JSONL file once, line by line in binary, and for each example checks the format
(Vertex AI's Gemini tuning format, see ``vertex-sft-facts.md`` section 1, or OpenAI chat ``messages``), converts it
to canonical Gemini JSON, feeds that to SHA-256 and, if asked, to the converted file. Memory does not grow with the
file: one example is held at a time (so the longest line bounds it), and nothing is collected per example except
the first ``max_problems`` problems.

The identity of a dataset is the SHA-256 of its converted form: one line per example,
``json.dumps(example, ensure_ascii=False, separators=(",", ":"), sort_keys=True)`` and ``"\\n"``. So whitespace,
key order, ``\\u`` escapes, CRLF line ends, blank lines and the source format do not change it, and an OpenAI chat
file and its Gemini equivalent are the same dataset. ``systemInstruction.role`` is dropped in the converted form
because Vertex ignores it (the converted form is what gets uploaded).

Speed: parsing is the floor. orjson parses each line, and where its result could differ from the stdlib's (see
``_Pass._fast``), or the line has problems, the stdlib parses it again, so values and messages are the stdlib's. A
line that already is canonical (tuneform's own output, or a file written with sorted keys and compact separators) is
verified as such by counting (see ``_is_canonical``) and copied through; any other line is re-serialised by orjson,
6-7 times faster than the stdlib encoder, which is only used where the two could write different bytes (see
``_ORJSON_CANONICAL``), so the canonical form, and with it every identity, is exactly the ``json.dumps`` form above.
``bench/bench_dataset.py`` measures both kinds.

Decisions on the edge cases:

- Blank (whitespace-only) lines are skipped, not refused: they carry no data, editors and ``cat a.jsonl b.jsonl``
  produce them, and the converted file that is uploaded never contains them.
- A UTF-8 byte-order mark is refused (the rest of the line is still checked): JSON forbids it (RFC 8259 section
  8.1), ``json.loads`` and most JSONL readers fail on it, and it is one click to remove in any editor.
- CRLF line ends and a last line without a newline are accepted.
- JSON's ``NaN``/``Infinity`` extensions, lone surrogate escapes and nesting deeper than the parser allows are
  refused; duplicate keys are not detected (the last one wins, as in every JSON parser the data will meet).
- Function calling (``tools``, ``functionCall`` parts, OpenAI ``tool_calls``/``tool`` messages) is refused with a
  message saying so: tuneform does not tune it.
- ``max_file_bytes`` applies to the converted file (that is what Vertex limits); the example-count limits count
  every non-blank line, valid or not, so that a bad line does not also show up as "too few examples".
"""

from __future__ import annotations

import binascii
import contextlib
import difflib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from tuneform.datasets._locate import PathKey, key_column, locate
from tuneform.datasets.summary import DatasetSummary
from tuneform.datasets.tokens import (
    ESTIMATE_METHOD,
    SYSTEM_FRAMING,
    TEXT_PART_FRAMING,
    TOP_FRAMING,
    TURN_FRAMING,
    estimate_from_counts,
    framing,
)
from tuneform.spec.errors import Problem as SpecProblem

MODALITIES = frozenset({"text", "image", "audio", "document", "video"})
"""Every modality a limit can allow."""

GEMINI_KEYS = ("contents", "systemInstruction", "generationConfig")
"""Top-level keys of a Gemini example that tuneform accepts (``tools`` is refused: no function-calling tuning)."""

PART_KINDS = ("text", "fileData", "inlineData")

_BOM = b"\xef\xbb\xbf"
_MISSING: Any = object()
_PROGRESS_EVERY = 64 * 1024 * 1024
_TOOLS_FIX = "tuneform does not tune function calling; remove the tool definitions and tool-call turns."

Problem = tuple[tuple[PathKey, ...], str, bool]
"""A problem found in one example: path, message, and whether the column is the key's (unknown keys)."""


@dataclass(frozen=True)
class DatasetLimits:
    """What the base model (catalogue) and the split allow; ``None`` means no limit."""

    max_tokens_per_example: int | None = None
    max_examples: int | None = None
    min_examples: int | None = None
    modalities: frozenset[str] = frozenset({"text"})
    """Subset of :data:`MODALITIES` the base model accepts."""
    max_file_bytes: int | None = None
    """Limit on the converted Gemini JSONL, in bytes."""


DatasetProblem = SpecProblem
"""One problem in a dataset file, printed as ``file:line:col: path: message`` (the spec's :class:`Problem`)."""


class _Report:
    """Problems of one file, capped: past the cap only a count is kept."""

    def __init__(self, file: str, cap: int) -> None:
        self.file = file
        self.cap = cap
        self.problems: list[DatasetProblem] = []
        self.more = 0

    @property
    def full(self) -> bool:
        return len(self.problems) >= self.cap

    def add(self, line: int, column: int, path: str, message: str) -> None:
        if self.full:
            self.more += 1
        else:
            self.problems.append(DatasetProblem(self.file, line, column, path, message))

    def finish(self) -> list[DatasetProblem]:
        if self.more:
            noun = "problem" if self.more == 1 else "problems"
            self.problems.append(DatasetProblem(self.file, 0, 0, "", f"... and {self.more} more {noun}"))
        return self.problems


class _Context:
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
        # videoMetadata): the only places where a valid example can hold numbers (see _ORJSON_CANONICAL).
        self.opaque: list[Any] = []
        # Whether texts must be searched for lone surrogates (see _Pass.line).
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
        self.length = _TOP + turns - 1
        self.turns = 0

    def add_turn(self, role: Any, parts: Any, texts: list[str], *, system: bool = False) -> None:
        """Count the framing of one turn (or of the system instruction) in the canonical form."""
        parts_count = len(parts) if isinstance(parts, list) else 0
        fixed_other, fixed_cheap = SYSTEM_FRAMING if system else TURN_FRAMING
        role_length = len(role) if isinstance(role, str) else 0
        self.frame_other += fixed_other + parts_count - 1 + TEXT_PART_FRAMING[0] * len(texts)
        self.frame_cheap += fixed_cheap + role_length + TEXT_PART_FRAMING[1] * len(texts)
        fixed = _SYSTEM if system else _TURN + role_length
        self.length += fixed + (_PART + 1) * parts_count - 1 + sum(map(len, texts))
        self.turns += 1

    def turn_tokens(self, texts: list[str]) -> int:
        # Estimates are made per example from the converted line, once it exists (see _Pass.line).
        if self.count_tokens is None or not texts:
            return 0
        return self.count_tokens("".join(texts))


class _BadConstant(ValueError):
    pass


def _reject_constant(name: str) -> None:
    raise _BadConstant(name)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, check_circular=False).encode
_ORJSON_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
"""orjson's options for the canonical line: ``_CANONICAL(example)`` in UTF-8 and a newline, byte for byte, for
what a checked example can hold: strings escaped alike (``\\"``, ``\\\\``, ``\\b\\f\\n\\r\\t``, other control
characters as lowercase ``\\u00XX``; DEL, U+2028/U+2029 and all other characters as UTF-8), keys sorted alike (by
code point, which is UTF-8 byte order), compact separators, ``true``/``false``/``null``, integers within 64 bits.
They differ on floats (orjson writes ``0.00001`` for ``1e-05``, ``null`` for the ``Infinity`` that ``1e400`` parses
to), so an example with a float in a value the checks do not look into (``_Context.opaque``, the only place a valid
example can hold one) is left to the stdlib encoder; and orjson raises on integers beyond 64 bits, lone surrogates
and nesting deeper than 255, where the stdlib encoder then does what it always did. ``test_datasets.py`` compares
the converted bytes with ``json.dumps`` on tricky lines."""


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


def _describe(value: Any) -> str:
    """A short JSON rendering of a value for a "got ..." clause."""
    if value is _MISSING:
        return "nothing"
    if isinstance(value, dict):
        return "{}" if not value else "an object"
    if isinstance(value, list):
        return "[]" if not value else "a list"
    shown = json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= 40 else shown[:36] + '..."'


def _json_type(value: Any) -> str:
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


def _closest(key: str, candidates: tuple[str, ...]) -> str | None:
    """The known key that a misspelt ``key`` most likely means (snake_case and case slips first), if any."""
    folded = key.replace("_", "").replace("-", "").lower()
    for candidate in candidates:
        if candidate.lower() == folded:
            return candidate
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_key(errs: list[Problem], path: tuple[PathKey, ...], known: tuple[str, ...]) -> str | None:
    """Report an unknown key; returns the known key it seems to mean, so that key is not also reported missing."""
    key = str(path[-1])
    listed = ", ".join(f'"{k}"' for k in known)
    meant = _closest(key, known)
    hint = f' Did you mean "{meant}"?' if meant else f' Remove "{key}".'
    errs.append((path, f'expected one of the keys {listed}, got "{key}".{hint}', True))
    return meant


def _check_keys(
    value: dict[str, Any], path: tuple[PathKey, ...], known: tuple[str, ...], errs: list[Problem]
) -> set[str]:
    """Report the keys of ``value`` that are not ``known``; returns the known keys they seem to mean."""
    meant: set[str] = set()
    for key in value:
        if key not in known:
            meant.add(_unknown_key(errs, (*path, key), known) or "")
    return meant


def _absent(value: dict[str, Any], key: str, meant: set[str]) -> bool:
    """True when ``key`` is missing because a misspelling of it was already reported."""
    return key not in value and key in meant


def _non_empty_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and not value.isspace()


def _valid_unicode(text: str, path: tuple[PathKey, ...], errs: list[Problem], ctx: _Context) -> bool:
    """False (and a problem) for text holding a lone surrogate, which no UTF-8 file or tokenizer can carry."""
    if not ctx.surrogates or text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = f"\\u{ord(text[error.start]):04x}"
        errs.append(
            (
                path,
                f"expected valid Unicode text, got the lone surrogate {code}. Remove it or complete the pair.",
                False,
            )
        )
        return False
    return True


# --- Gemini format -------------------------------------------------------------------------------------------------


def _modality(mime: str) -> str | None:
    if mime in ("application/pdf", "text/plain"):
        return "document"
    major, _, minor = mime.partition("/")
    if major in ("image", "audio", "video") and minor:
        return major
    return None


def _check_mime(mime: Any, path: tuple[PathKey, ...], errs: list[Problem], ctx: _Context) -> None:
    modality = _modality(mime) if isinstance(mime, str) else None
    if modality is None:
        errs.append(
            (
                path,
                "expected the MIME type of an image (image/*), audio (audio/*), video (video/*) or document "
                f'(application/pdf, text/plain), got {_describe(mime)}. Write e.g. "mimeType": "image/jpeg".',
                False,
            )
        )
    elif modality not in ctx.allowed:
        accepted = ", ".join(sorted(ctx.allowed))
        errs.append(
            (
                path,
                f"expected a file type the base model accepts ({accepted}), got {_describe(mime)} ({modality}). "
                f"Choose a base model that accepts {modality} input, or remove this part.",
                False,
            )
        )
    else:
        ctx.seen.add(modality)


def _check_media(
    value: Any, path: tuple[PathKey, ...], errs: list[Problem], ctx: _Context, *, key: str, shape: str
) -> set[str] | None:
    """Check that a ``fileData``/``inlineData`` part is an object ``shape`` with only ``mimeType`` and ``key``, and
    its ``mimeType``; returns the keys its misspelt keys seem to mean, or ``None`` when it is not an object."""
    if not isinstance(value, dict):
        errs.append((path, f"expected an object {shape}, got {_describe(value)}.", False))
        return None
    meant = _check_keys(value, path, ("mimeType", key), errs)
    if not _absent(value, "mimeType", meant):
        _check_mime(value.get("mimeType", _MISSING), (*path, "mimeType"), errs, ctx)
    return meant


def _check_file_data(value: Any, path: tuple[PathKey, ...], errs: list[Problem], ctx: _Context) -> None:
    shape = '{"mimeType": "image/jpeg", "fileUri": "gs://bucket/file.jpg"}'
    meant = _check_media(value, path, errs, ctx, key="fileUri", shape=shape)
    if meant is None:
        return
    uri = value.get("fileUri", _MISSING)
    if _absent(value, "fileUri", meant):
        pass
    elif not isinstance(uri, str) or not uri.startswith(("gs://", "https://")) or uri in ("gs://", "https://"):
        fix = (
            "Use https://; plain http:// is refused."
            if isinstance(uri, str) and uri.startswith("http://")
            else "Upload the file to Cloud Storage and write its gs://bucket/path URI."
        )
        errs.append(((*path, "fileUri"), f"expected a gs:// or https:// URI, got {_describe(uri)}. {fix}", False))


def _check_inline_data(value: Any, path: tuple[PathKey, ...], errs: list[Problem], ctx: _Context) -> None:
    shape = '{"mimeType": "image/png", "data": "<base64>"}'
    meant = _check_media(value, path, errs, ctx, key="data", shape=shape)
    if meant is None:
        return
    data = value.get("data", _MISSING)
    valid = isinstance(data, str) and bool(data) or _absent(value, "data", meant)
    if valid and data is not _MISSING:
        try:
            binascii.a2b_base64(data, strict_mode=True)
        except (binascii.Error, ValueError):
            valid = False
    if not valid:
        shown = "a string that is not base64" if isinstance(data, str) and data else _describe(data)
        errs.append(((*path, "data"), f"expected non-empty base64-encoded bytes, got {shown}.", False))


def _check_parts(
    parts: Any, path: tuple[PathKey, ...], errs: list[Problem], ctx: _Context, *, text_only: bool
) -> list[str]:
    """Check ``parts`` at ``path + ("parts",)``; returns the texts of its text parts."""
    here = (*path, "parts")
    if not isinstance(parts, list) or not parts:
        fix = 'Write "parts": [{"text": "..."}].'
        errs.append((here, f"expected a non-empty list of parts, got {_describe(parts)}. {fix}", False))
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
            fix = f" Write {{{json.dumps('text')}: {_describe(part)}}}." if isinstance(part, str) else ""
            kinds = '"text", "fileData" or "inlineData"'
            errs.append((at, f"expected an object with one of {kinds}, got {_describe(part)}.{fix}", False))
            continue
        unknown = False
        for key in part:
            if key not in known:
                unknown = True
                if key in ("functionCall", "functionResponse"):
                    errs.append(((*at, key), f"expected no function calls, got {key}. {_TOOLS_FIX}", True))
                else:
                    _unknown_key(errs, (*at, key), known)
        kinds_here = [kind for kind in PART_KINDS if kind in part]
        if not kinds_here:
            if not unknown:
                errs.append((at, f'expected one of "text", "fileData" or "inlineData", got {_describe(part)}.', False))
            continue
        if len(kinds_here) > 1:
            both = " and ".join(f'"{kind}"' for kind in kinds_here)
            errs.append(
                (at, f"expected exactly one of text, fileData, inlineData, got {both}. Give each its own part.", False)
            )
            continue
        kind = kinds_here[0]
        if text_only and kind != "text":
            fix = "A system instruction takes text only; put files in a user turn."
            errs.append(((*at, kind), f'expected a text part, got "{kind}". {fix}', True))
        elif kind == "text":
            text = part["text"]
            if not _non_empty_text(text):
                errs.append(((*at, "text"), f"expected a non-empty string, got {_describe(text)}.", False))
            elif _valid_unicode(text, (*at, "text"), errs, ctx):
                texts.append(text)
        elif kind == "fileData":
            _check_file_data(part["fileData"], (*at, "fileData"), errs, ctx)
        else:
            _check_inline_data(part["inlineData"], (*at, "inlineData"), errs, ctx)
        if "videoMetadata" in part:
            ctx.opaque.append(part["videoMetadata"])
            if kind != "fileData":
                errs.append(
                    (
                        (*at, "videoMetadata"),
                        f'expected videoMetadata only beside "fileData", got it beside "{kind}".',
                        True,
                    )
                )
    if texts:
        ctx.seen.add("text")
    return texts


def _check_roles(
    roles: list[tuple[int, str | None]], names: tuple[str, str], prefix: str, errs: list[Problem]
) -> None:
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
            errs.append(((prefix, index, "role"), message, False))
            flagged.add(index)
        elif role == previous:
            other = model if role == user else user
            fix = f'Merge consecutive "{role}" turns into one, or add the missing "{other}" turn between them.'
            errs.append(((prefix, index, "role"), f'expected "{other}" (turns alternate), got "{role}". {fix}', False))
            flagged.add(index)
        previous = role
    if roles:
        index, role = roles[-1]
        if role == user and index not in flagged:
            fix = f"End the example with the {model}'s answer: the {model} turns are what tuning teaches."
            message = f'expected "{model}" (the last turn is the answer), got "{role}". {fix}'
            errs.append(((prefix, index, "role"), message, False))


def _check_gemini(obj: dict[str, Any], errs: list[Problem], ctx: _Context) -> tuple[dict[str, Any], int]:
    """Check one Gemini example; returns its converted (canonical) form and its token count."""
    tokens = 0
    converted = obj
    meant: set[str] = set()
    keys = list(obj)
    # "Simple": only text parts, keys in sorted order, nothing to drop; see _is_canonical for why that matters.
    ctx.simple = keys in (["contents"], ["contents", "systemInstruction"])
    contents = obj.get("contents", _MISSING)
    ctx.start(len(contents) if isinstance(contents, list) else 0)
    for key, value in obj.items():
        if key in GEMINI_KEYS:
            continue
        if key == "tools":
            errs.append((("tools",), f"expected no tools, got {_describe(value)}. {_TOOLS_FIX}", True))
        elif key == "messages" and "contents" not in obj:
            fix = 'This line is OpenAI chat format: set "format: openai-chat" under spec.dataset.'
            errs.append((("messages",), f'expected the Gemini key "contents", got "messages". {fix}', True))
            meant.add("contents")
        else:
            meant.add(_unknown_key(errs, (key,), GEMINI_KEYS) or "")
    system = obj.get("systemInstruction", _MISSING)
    if system is not _MISSING:
        if isinstance(system, dict):
            system_meant = _check_keys(system, ("systemInstruction",), ("parts", "role"), errs)
            if not _absent(system, "parts", system_meant):
                parts = system.get("parts", _MISSING)
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
            errs.append((("systemInstruction",), f"expected an object {shape}, got {_describe(system)}.", False))
    if "generationConfig" in obj:
        ctx.opaque.append(obj["generationConfig"])
        _check_generation_config(obj["generationConfig"], errs, ctx)
    if not isinstance(contents, list) or not contents:
        if not _absent(obj, "contents", meant):
            fix = 'Write "contents": [{"role": "user", "parts": [...]}, {"role": "model", "parts": [...]}].'
            errs.append(
                (("contents",), f"expected a non-empty list of turns, got {_describe(contents)}. {fix}", False)
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
                ctx.length += _TURN + len(role) + (_PART + 1) * len(parts) - 1 + sum(map(len, texts))
                ctx.turns += 1
                if next(iter(turn)) != "parts":
                    ctx.simple = False
                continue
        ctx.simple = False
        if not isinstance(turn, dict):
            shape = '{"role": "user", "parts": [{"text": "..."}]}'
            errs.append((at, f"expected an object {shape}, got {_describe(turn)}.", False))
            roles.append((index, None))
            continue
        turn_meant = _check_keys(turn, at, ("role", "parts"), errs)
        role = turn.get("role", _MISSING)
        if role in ("user", "model"):
            roles.append((index, role))
        else:
            roles.append((index, None))
            if not _absent(turn, "role", turn_meant):
                fix = (
                    {
                        "assistant": ' Gemini calls the assistant "model".',
                        "system": ' Move system text to "systemInstruction": {"parts": [{"text": "..."}]}.',
                    }.get(role, "")
                    if isinstance(role, str)
                    else ""
                )
                errs.append(((*at, "role"), f'expected "user" or "model", got {_describe(role)}.{fix}', False))
        if not _absent(turn, "parts", turn_meant):
            parts = turn.get("parts", _MISSING)
            texts = _check_parts(parts, at, errs, ctx, text_only=False)
            tokens += ctx.turn_tokens(texts)
            ctx.add_turn(role, parts, texts)
    _check_roles(roles, ("user", "model"), "contents", errs)
    return converted, tokens


def _check_generation_config(config: Any, errs: list[Problem], ctx: _Context) -> None:
    if not isinstance(config, dict):
        errs.append((("generationConfig",), f"expected an object, got {_describe(config)}.", False))
        return
    resolution = config.get("mediaResolution")
    if ctx.first_resolution is None:
        ctx.first_resolution = (ctx.line, resolution)
    elif ctx.first_resolution[1] != resolution:
        first_line, first = ctx.first_resolution
        fix = "Vertex requires the same mediaResolution on every line."
        errs.append(
            (
                ("generationConfig", "mediaResolution"),
                f"expected {_describe(first)} as on line {first_line}, got {_describe(resolution)}. {fix}",
                False,
            )
        )


# --- OpenAI chat format --------------------------------------------------------------------------------------------


def _openai_texts(content: Any, path: tuple[PathKey, ...], errs: list[Problem], ctx: _Context) -> list[str]:
    if isinstance(content, str):
        if _non_empty_text(content):
            return [content] if _valid_unicode(content, path, errs, ctx) else []
    elif isinstance(content, list) and content:
        texts: list[str] = []
        for index, part in enumerate(content):
            at = (*path, index)
            if not isinstance(part, dict):
                shape = '{"type": "text", "text": "..."}'
                errs.append((at, f"expected a text part {shape}, got {_describe(part)}.", False))
                continue
            kind = part.get("type", _MISSING)
            if kind != "text":
                fix = ' Only text converts to Gemini tuning data; for files use format "gemini" with fileData parts.'
                errs.append(((*at, "type"), f'expected "text", got {_describe(kind)}.{fix if kind else ""}', False))
                continue
            meant = _check_keys(part, at, ("type", "text"), errs)
            text = part.get("text", _MISSING)
            if not _non_empty_text(text):
                if not _absent(part, "text", meant):
                    errs.append(((*at, "text"), f"expected a non-empty string, got {_describe(text)}.", False))
            elif _valid_unicode(text, (*at, "text"), errs, ctx):
                texts.append(text)
        return texts
    errs.append((path, f"expected a non-empty string or a list of text parts, got {_describe(content)}.", False))
    return []


_OPENAI_REFUSED = {
    "tool_calls": f"expected no tool calls, got {{got}}. {_TOOLS_FIX}",
    "function_call": f"expected no function call, got {{got}}. {_TOOLS_FIX}",
    "name": "expected no name, got {got}. Gemini turns carry no speaker name; fold it into the content or remove "
    '"name".',
    "weight": 'expected no weight, got {got}. Gemini tuning learns every model turn; remove "weight" (and any '
    "message you gave weight 0).",
}
_OPENAI_ROLE_FIXES = {
    "tool": f" {_TOOLS_FIX}",
    "function": f" {_TOOLS_FIX}",
    "developer": ' Write "system" instead.',
    "model": ' OpenAI chat calls the model "assistant" (or set "format: gemini" under spec.dataset).',
}


def _check_openai(obj: dict[str, Any], errs: list[Problem], ctx: _Context) -> tuple[dict[str, Any], int]:
    """Check one OpenAI chat example; returns it converted to canonical Gemini form, and its token count."""
    meant: set[str] = set()
    for key, value in obj.items():
        if key == "messages":
            continue
        if key in ("tools", "functions", "parallel_tool_calls"):
            errs.append(((key,), f"expected no {key}, got {_describe(value)}. {_TOOLS_FIX}", True))
        elif key == "contents" and "messages" not in obj:
            fix = 'This line is Gemini format: set "format: gemini" under spec.dataset.'
            errs.append((("contents",), f'expected the OpenAI chat key "messages", got "contents". {fix}', True))
            meant.add("messages")
        elif key in ("prompt", "completion") and "messages" not in obj:
            if "messages" not in meant:
                shape = '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}'
                message = f'expected "messages", got a prompt/completion pair. Write it as {shape}.'
                errs.append(((key,), message, True))
            meant.add("messages")
        else:
            meant.add(_unknown_key(errs, (key,), ("messages",)) or "")
    messages = obj.get("messages", _MISSING)
    if not isinstance(messages, list) or not messages:
        if not _absent(obj, "messages", meant):
            fix = 'Write "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}].'
            got = _describe(messages)
            errs.append((("messages",), f"expected a non-empty list of messages, got {got}. {fix}", False))
        return {}, 0
    tokens = 0
    system: list[str] | None = None
    contents: list[dict[str, Any]] = []
    roles: list[tuple[int, str | None]] = []
    for index, message in enumerate(messages):
        at: tuple[PathKey, ...] = ("messages", index)
        if not isinstance(message, dict):
            shape = '{"role": "user", "content": "..."}'
            errs.append((at, f"expected an object {shape}, got {_describe(message)}.", False))
            roles.append((index, None))
            continue
        role = message.get("role", _MISSING)
        message_meant: set[str] = set()
        for key, value in message.items():
            if key in _OPENAI_REFUSED:
                errs.append(((*at, key), _OPENAI_REFUSED[key].format(got=_describe(value)), True))
            elif key == "tool_call_id" and role == "tool":
                continue  # the role's own message says it all
            elif key not in ("role", "content"):
                message_meant.add(_unknown_key(errs, (*at, key), ("role", "content")) or "")
        content = message.get("content", _MISSING)
        calls_tools = "tool_calls" in message or "function_call" in message
        if role in ("system", "user", "assistant"):
            texts: list[str] = []
            if not (calls_tools or _absent(message, "content", message_meant)):
                texts = _openai_texts(content, (*at, "content"), errs, ctx)
            if role == "system" and index == 0:
                system = texts
            elif role == "system":
                fix = "Merge it into the system message at the start."
                got = 'expected "user" or "assistant" (system comes first only), got "system"'
                errs.append(((*at, "role"), f"{got}. {fix}", False))
                continue
            else:
                roles.append((index, role))
                contents.append({"role": "user" if role == "user" else "model", "parts": [{"text": t} for t in texts]})
            tokens += ctx.turn_tokens(texts)
            continue
        roles.append((index, None))
        if not _absent(message, "role", message_meant):
            fix = _OPENAI_ROLE_FIXES.get(role, "") if isinstance(role, str) else ""
            errs.append(
                ((*at, "role"), f'expected "system", "user" or "assistant", got {_describe(role)}.{fix}', False)
            )
    _check_roles(roles, ("user", "assistant"), "messages", errs)
    if not roles and system is not None:
        errs.append((("messages",), "expected user and assistant messages after the system message, got none.", False))
    if contents:
        ctx.seen.add("text")
    converted: dict[str, Any] = {"contents": contents}
    if system:
        converted["systemInstruction"] = {"parts": [{"text": t} for t in system]}
    if not errs:
        ctx.frame_other, ctx.frame_cheap, ctx.turns = framing(converted)
    return converted, tokens


# --- The pass over the file ----------------------------------------------------------------------------------------


def _syntax_problem(error: json.JSONDecodeError) -> tuple[int, str]:
    """Column and message for a line that does not parse."""
    multi_line = "Each example must be one JSON object on one line; pretty-printed (multi-line) JSON is not JSONL."
    # The parsed text still ends in its newline; an error past it is at the end of the line, not on a "line 2".
    end_column = error.colno if error.lineno == 1 else len(error.doc.rstrip("\r\n")) + 1
    stripped = error.doc.lstrip()
    if not stripped.startswith("{"):
        # Typically a middle line of a pretty-printed object: point at its start, not where the parser gave up.
        column = len(error.doc) - len(stripped) + 1
        return column, f"expected a JSON object on this line, got text that is not JSON on its own. {multi_line}"
    if error.msg == "Extra data":
        return (
            end_column,
            "expected one JSON object per line, got more text after it. Remove it, or put it on its own line.",
        )
    if error.pos >= len(error.doc.rstrip()):
        return (
            end_column,
            f"expected a complete JSON object on this line, got the end of the line ({error.msg}). {multi_line}",
        )
    return end_column, f"expected valid JSON, got a syntax error ({error.msg}). Fix the JSON at this column."


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit} ({count} bytes)"
    return f"{count} bytes"


_TURN_OTHER, _TURN_CHEAP = TURN_FRAMING
_PART_OTHER, _PART_CHEAP = TEXT_PART_FRAMING

# Characters of the canonical framing: {"contents":[]}, {"parts":[],"role":""} (plus the role), {"text":""} and
# ,"systemInstruction":{"parts":[]}; each comma between list items is one more.
_TOP, _TURN, _PART, _SYSTEM = 15, 22, 11, 33


def _is_canonical(raw: bytes, chars: int, example: dict[str, Any], length: int) -> bool:
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


def _holds_float(values: list[Any]) -> bool:
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


class _Slow:
    """The type of :data:`_SLOW`."""


_SLOW = _Slow()
"""What :meth:`_Pass._fast` returns for a line that the stdlib path must check."""


class _Pass:
    """The state of one pass over a file: counters, hash, problems."""

    def __init__(
        self,
        shown: str,
        format: str,
        *,
        limits: DatasetLimits,
        count_tokens: Callable[[str], int] | None,
        token_method: str,
        max_problems: int,
    ) -> None:
        self.shown = shown
        self.format = format
        self.limits = limits
        self.token_method = token_method
        self.approx = "" if count_tokens else "about "
        self.report = _Report(shown, max_problems)
        self.ctx = _Context(limits.modalities, count_tokens)
        self.check_example = _check_gemini if format == "gemini" else _check_openai
        self.hasher = hashlib.sha256()
        self.examples = self.example_lines = self.tokens_total = self.tokens_max = self.bytes = 0

    def line(self, number: int, raw: bytes) -> bytes | None:
        """Check one line; returns its converted form (with newline) when it is a valid example."""
        report = self.report
        if number == 1 and raw.startswith(_BOM):
            fix = "Save the file as UTF-8 without BOM."
            report.add(1, 1, "", f"expected UTF-8 without a byte-order mark, got the BOM EF BB BF. {fix}")
            raw = raw[3:]
        if not raw or raw.isspace():
            return None
        self.example_lines += 1
        fast = self._fast(number, raw)
        if not isinstance(fast, _Slow):
            return fast
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            column = len(raw[: error.start].decode("utf-8", "replace")) + 1
            fix = "Save the file as UTF-8."
            report.add(number, column, "", f"expected UTF-8 text, got the byte 0x{raw[error.start]:02X}. {fix}")
            return None
        try:
            try:
                obj, end = _SCAN(text, 0)
                if end != len(text) and not text[end:].isspace():
                    raise ValueError("extra data")
            except (StopIteration, ValueError):
                # Leading whitespace, or an error: the full decoder parses the former and explains the latter.
                obj = _DECODER.decode(text)
        except json.JSONDecodeError as error:
            column, message = _syntax_problem(error)
            report.add(number, column, "", message)
            return None
        except _BadConstant as error:
            name = str(error)
            report.add(
                number, text.find(name) + 1, "", f"expected a JSON number, got {name}, which JSON does not allow."
            )
            return None
        except (ValueError, RecursionError) as error:
            # Parser limits: integers of more than 4300 digits, nesting deeper than the recursion limit.
            report.add(
                number, 1, "", f"expected JSON within the parser's limits, got {type(error).__name__}: {error}."
            )
            return None
        if not isinstance(obj, dict):
            shape = '{"contents": [...]}' if self.format == "gemini" else '{"messages": [...]}'
            report.add(number, 1, "", f"expected a JSON object {shape}, got {_json_type(obj)}.")
            return None
        errs: list[Problem] = []
        self.ctx.line = number
        self.ctx.opaque.clear()
        # Only an escape can smuggle a lone surrogate through strict UTF-8 decoding. Texts are only searched for one
        # before a tokenizer sees them; otherwise the encoding below finds it, and the check then runs again to say
        # where it is.
        self.ctx.surrogates = self.ctx.count_tokens is not None and (b"\\ud" in raw or b"\\uD" in raw)
        converted, tokens = self.check_example(obj, errs, self.ctx)
        if errs:
            self._report_example(number, text, errs)
            return None
        try:
            canonical = self.ctx.simple and _is_canonical(raw, len(text), converted, self.ctx.length)
            encoded = raw if canonical else None
            if encoded is None and not (self.ctx.opaque and _holds_float(self.ctx.opaque)):
                # orjson writes the same bytes as the stdlib encoder, 6-7 times faster, except where noted at
                # _ORJSON_CANONICAL: floats (left to the stdlib), and what orjson raises on. (Inline, not in a
                # helper: the stdlib encoder's recursion limit must be met at the same depth as ever.)
                with contextlib.suppress(orjson.JSONEncodeError):
                    encoded = orjson.dumps(converted, option=_ORJSON_CANONICAL)
            if encoded is None:
                encoded = _CANONICAL(converted).encode("utf-8") + b"\n"
        except UnicodeEncodeError as error:
            self.ctx.surrogates = True
            self.check_example(obj, errs, self.ctx)
            if not errs:  # a surrogate outside the texts, e.g. in a file URI
                fix = "Remove the \\uD800-\\uDFFF escape."
                errs.append(((), f"expected valid Unicode, got {error.reason}. {fix}", False))
            self._report_example(number, text, errs)
            return None
        return self._accept(number, encoded, tokens)

    def _fast(self, number: int, raw: bytes) -> bytes | None | _Slow:
        """Check one line parsed by orjson, when that cannot change a result; otherwise :data:`_SLOW`.

        orjson parses about a third faster than the stdlib. A line it accepts the stdlib accepts too, with the same
        value (same strings, key order, last duplicate key winning; UTF-8 as strictly checked), except that orjson
        makes a float of an integer beyond 64 bits where the stdlib keeps it exact (found by fuzzing the two against
        each other, orjson 3.13). It refuses more: ``NaN``/``Infinity``, ``1e400``, lone surrogates, trailing
        whitespace other than JSON's, nesting deeper than 1024. So the stdlib path takes every line that orjson
        refuses (its messages are not the ones tuneform gives), that is not an object or has problems (they quote
        values), or that holds a float where a valid example can (``_Context.opaque``): all rare. The example
        checks then run again, from the state they started from.
        """
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _SLOW
        if type(obj) is not dict:
            return _SLOW
        ctx = self.ctx
        first_resolution, seen = ctx.first_resolution, set(ctx.seen)
        ctx.line = number
        ctx.opaque.clear()
        ctx.surrogates = False  # orjson refuses lone surrogates
        errs: list[Problem] = []
        converted, tokens = self.check_example(obj, errs, ctx)
        encoded: bytes | None = None
        if not errs and not (ctx.opaque and _holds_float(ctx.opaque)):
            if ctx.simple and _is_canonical(raw, len(raw.decode("utf-8")), converted, ctx.length):
                encoded = raw
            else:
                with contextlib.suppress(orjson.JSONEncodeError):  # nesting deeper than 255
                    encoded = orjson.dumps(converted, option=_ORJSON_CANONICAL)
        if encoded is None:
            ctx.first_resolution, ctx.seen = first_resolution, seen
            return _SLOW
        return self._accept(number, encoded, tokens)

    def _accept(self, number: int, encoded: bytes, tokens: int) -> bytes | None:
        """Count a checked example in, after its token limit; returns ``encoded``, or None when over the limit."""
        if self.ctx.count_tokens is None:
            tokens = estimate_from_counts(encoded, self.ctx.frame_other, self.ctx.frame_cheap, self.ctx.turns)
        limit = self.limits.max_tokens_per_example
        if limit is not None and tokens > limit:
            got = f"{self.approx}{tokens} ({self.token_method})"
            message = f"expected at most {limit} tokens per example, got {got}. Shorten or split it."
            self.report.add(number, 1, "", message)
            return None
        self.hasher.update(encoded)
        self.examples += 1
        self.bytes += len(encoded)
        self.tokens_total += tokens
        self.tokens_max = max(self.tokens_max, tokens)
        return encoded

    def _report_example(self, number: int, text: str, errs: list[Problem]) -> None:
        """Report the problems of one example, in column order (columns are only computed under the cap)."""
        report = self.report
        if report.full:
            report.more += len(errs)
            return
        located = [((key_column if at_key else locate)(text, path), path, message) for path, message, at_key in errs]
        for column, path, message in sorted(located, key=lambda problem: problem[0]):
            report.add(number, column, render_path(path), message)

    def finish_file(self) -> None:
        """File-level checks, after the last line."""
        report, limits, lines = self.report, self.limits, self.example_lines
        if lines == 0:
            report.add(1, 1, "", "expected at least one example (one JSON object per line), got an empty file.")
        if limits.min_examples is not None and 0 < lines < limits.min_examples:
            report.add(1, 1, "", f"expected at least {limits.min_examples} examples, got {lines}. Add examples.")
        if limits.max_examples is not None and lines > limits.max_examples:
            fix = "Remove examples (or move them to the training set)."
            report.add(1, 1, "", f"expected at most {limits.max_examples} examples, got {lines}. {fix}")
        if limits.max_file_bytes is not None and self.bytes > limits.max_file_bytes:
            limit, got = _size(limits.max_file_bytes), _size(self.bytes)
            report.add(1, 1, "", f"expected at most {limit} of converted Gemini JSONL, got {got}. Split the dataset.")

    def summary(self, converted_path: str | None) -> DatasetSummary:
        return DatasetSummary(
            source=self.shown,
            format=self.format,
            sha256=self.hasher.hexdigest(),
            examples=self.examples,
            tokens_total=self.tokens_total,
            tokens_max=self.tokens_max,
            tokens_mean=self.tokens_total / self.examples if self.examples else 0.0,
            token_method=self.token_method,
            modalities=frozenset(self.ctx.seen),
            bytes=self.bytes,
            converted_path=converted_path,
        )


def check_dataset(
    path: str | Path,
    *,
    format: Literal["gemini", "openai-chat"],
    limits: DatasetLimits,
    count_tokens: Callable[[str], int] | None = None,
    token_method: str | None = None,
    convert_to: str | Path | None = None,
    max_problems: int = 100,
    display_path: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[DatasetSummary, list[DatasetProblem]]:
    """Check a JSONL dataset in one streaming pass, convert it to Gemini JSONL and compute its identity.

    Args:
        path: The dataset file.
        format: The source format: ``gemini`` (Vertex AI tuning JSONL) or ``openai-chat`` (``messages``).
        limits: What the base model and the split (train/validation) allow.
        count_tokens: Counts the tokens of a text exactly (e.g. :func:`tuneform.datasets.tokenizer_counter`);
            without it the documented high estimate of ``tuneform.datasets.tokens`` is used.
        token_method: Recorded in the summary; defaults to ``exact:<counter.name>`` or the estimate's rule.
        convert_to: Where to write the converted Gemini JSONL (atomically; only when there are no problems).
        max_problems: How many problems to list before summing up the rest in a last "... and N more" entry.
        display_path: The file name to show in problems and the summary (e.g. relative to the repository).
        progress: Receives a line about every 64 MiB read.

    Returns:
        The summary (meaningful only without problems) and the problems, in file order, file-level ones last.

    Raises:
        ValueError: If ``format`` is neither ``gemini`` nor ``openai-chat`` (the spec validator rules that out).
    """
    if format not in ("gemini", "openai-chat"):
        raise ValueError(f"format: expected 'gemini' or 'openai-chat', got {format!r}")
    shown = display_path if display_path is not None else str(path)
    if token_method is None:
        token_method = f"exact:{getattr(count_tokens, 'name', 'custom')}" if count_tokens else ESTIMATE_METHOD
    state = _Pass(
        shown, format, limits=limits, count_tokens=count_tokens, token_method=token_method, max_problems=max_problems
    )
    try:
        source = open(path, "rb")  # noqa: SIM115 - closed by the with block below
    except OSError as error:
        state.report.add(1, 1, "", f"expected a readable file, got {error.strerror or error}. Check the dataset path.")
        return state.summary(None), state.report.finish()
    converted_path: str | None = None
    with source:
        total = os.fstat(source.fileno()).st_size >> 20
        output = None
        temporary: str | None = None
        if convert_to is not None:
            target = Path(convert_to)
            descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            output = os.fdopen(descriptor, "wb", buffering=1 << 20)
        try:
            consumed = 0
            next_progress = _PROGRESS_EVERY
            for number, raw in enumerate(source, 1):
                encoded = state.line(number, raw)
                if output is not None and encoded is not None:
                    output.write(encoded)
                if progress is not None:
                    consumed += len(raw)
                    if consumed >= next_progress:
                        progress(f"{shown}: {consumed >> 20} of {total} MiB checked, {state.examples} examples")
                        next_progress += _PROGRESS_EVERY
            state.finish_file()
            if output is not None:
                output.close()
                if not state.report.problems:
                    os.replace(temporary, target)  # type: ignore[arg-type]
                    converted_path = str(target)
                    temporary = None
        finally:
            if output is not None:
                output.close()
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
    return state.summary(converted_path), state.report.finish()


def iter_gemini_examples(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream the examples of a converted (already checked) Gemini JSONL file, one dict at a time.

    Args:
        path: A file written by :func:`check_dataset` with ``convert_to``.

    Yields:
        Each example, e.g. ``{"contents": [...], "systemInstruction": {...}}``.
    """
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.isspace():
                yield json.loads(raw)
