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
verified as such by counting (see ``canonical.is_canonical``) and copied through; any other line is re-serialised
by orjson, 6-7 times faster than the stdlib encoder, which is only used where the two could write different bytes
(see ``canonical.ORJSON_CANONICAL``), so the canonical form, and with it every identity, is exactly the
``json.dumps`` form above. ``bench/bench_dataset.py`` measures both kinds.

Where the rules live: this module is the pass over a file (reading, parsing, the fast path, counting, file-level
limits); :mod:`tuneform.datasets.gemini` and :mod:`tuneform.datasets.openai_chat` check one example of each format,
with the helpers of :mod:`tuneform.datasets.rules`; :mod:`tuneform.datasets.canonical` writes and verifies the
canonical form.

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
  every non-blank line, valid or not, so that a bad line does not also show up as "too few examples". A dataset
  with any image, document, audio or video part is held to ``max_examples_multimodal`` where the model has one
  (sources.yaml V-sft: "1M text-only examples or 300K multimodal examples" on the 2.5-era page).
- A line is read only up to :data:`MAX_LINE_BYTES`; a longer one is refused and skipped in chunks, so one line of
  200 MB costs no more memory than one of 8 MiB (the longest line otherwise bounds the memory a check takes).
- Numbers beyond a 64-bit float (``1e400``) are refused: Python reads them as infinity, which the converted file
  would then hold as ``Infinity``, which is not JSON.
- A token estimate (no tokenizer: the Vertex AI target) over ``max_tokens_per_example`` refuses an example only
  when the low estimate (``tokens.py``) is over the limit too; otherwise the summary carries a warning that says
  the count is an estimate. An exact count over the limit refuses.
- A problem that a file in the other format has on every line (``messages`` in a Gemini file, ``contents`` in an
  OpenAI one, prompt/completion pairs) is listed once, with the number of lines that have it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from tuneform.datasets._locate import key_column, locate
from tuneform.datasets.canonical import (
    CANONICAL,
    DECODER,
    ORJSON_CANONICAL,
    SCAN,
    BadConstant,
    BadNumber,
    holds_float,
    is_canonical,
)
from tuneform.datasets.gemini import check_gemini
from tuneform.datasets.openai_chat import check_openai
from tuneform.datasets.report import Report, size_text
from tuneform.datasets.rules import Context, Finding, json_type, render_path
from tuneform.datasets.summary import DatasetSummary
from tuneform.datasets.tokens import (
    ESTIMATE_METHOD,
    LOW_BYTES_PER_TOKEN,
    estimate_from_counts,
    estimate_low_from_counts,
)
from tuneform.problems import MAX_PROBLEMS_PER_FILE, Problem

__all__ = [
    "MAX_LINE_BYTES",
    "MODALITIES",
    "DatasetLimits",
    "DatasetProblem",
    "check_dataset",
    "iter_gemini_examples",
]

MODALITIES = frozenset({"text", "image", "audio", "document", "video"})
"""Every modality a limit can allow."""

MAX_LINE_BYTES = 8 << 20
"""Longest line (one example) read, 8 MiB: 64 bytes per token at the largest documented example (131,072 tokens,
sources.yaml V-sft); files belong in Cloud Storage, referenced by ``fileData``, not inside the line."""

_BOM = b"\xef\xbb\xbf"
_PROGRESS_EVERY = 64 * 1024 * 1024
_SKIP_CHUNK = 1 << 20


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
    max_examples_multimodal: int | None = None
    """Limit on the examples of a dataset with media parts, where it differs from ``max_examples``."""


DatasetProblem = Problem
"""One problem in a dataset file, printed as ``file:line:col: path: message`` (:class:`tuneform.problems.Problem`)."""


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
    # The C parser ends some phrases with "at" and leaves the position to the exception's own text.
    what = error.msg.removesuffix(" at")
    if error.pos >= len(error.doc.rstrip()):
        return (
            end_column,
            f"expected a complete JSON object on this line, got the end of the line ({what}). {multi_line}",
        )
    if what == "Invalid control character":
        fix = "Write it escaped (\\t, \\n, \\u0001) or remove it."
        return end_column, f"expected valid JSON, got a raw control character inside a string. {fix}"
    return end_column, f"expected valid JSON, got a syntax error ({what}). Fix the JSON at this column."


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
        self.report = Report(shown, max_problems)
        self.ctx = Context(limits.modalities, count_tokens, limits.max_tokens_per_example)
        self.check_example = check_gemini if format == "gemini" else check_openai
        self.hasher = hashlib.sha256()
        self.examples = self.example_lines = self.tokens_total = self.tokens_max = self.bytes = 0
        self.blank_lines = 0

    def line(self, number: int, raw: bytes) -> bytes | None:
        """Check one line; returns its converted form (with newline) when it is a valid example."""
        report = self.report
        if number == 1 and raw.startswith(_BOM):
            fix = "Save the file as UTF-8 without BOM."
            report.add(1, 1, "", f"expected UTF-8 without a byte-order mark, got the BOM EF BB BF. {fix}")
            raw = raw[3:]
        if not raw or raw.isspace():
            self.blank_lines += 1
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
                obj, end = SCAN(text, 0)
                if end != len(text) and not text[end:].isspace():
                    raise ValueError("extra data")
            except (StopIteration, ValueError):
                # Leading whitespace, or an error: the full decoder parses the former and explains the latter.
                obj = DECODER.decode(text)
        except json.JSONDecodeError as error:
            column, message = _syntax_problem(error)
            report.add(number, column, "", message)
            return None
        except BadConstant as error:
            name = str(error)
            report.add(
                number, text.find(name) + 1, "", f"expected a JSON number, got {name}, which JSON does not allow."
            )
            return None
        except BadNumber as error:
            literal = str(error)
            message = (
                f"expected a finite JSON number, got {literal}, beyond a 64-bit float (about 1.8e308): it would be "
                "uploaded as Infinity, which is not JSON. Write a smaller number."
            )
            report.add(number, text.find(literal) + 1, "", message)
            return None
        except (ValueError, RecursionError) as error:
            # Parser limits: integers of more than 4300 digits, nesting deeper than the recursion limit.
            report.add(
                number, 1, "", f"expected JSON within the parser's limits, got {type(error).__name__}: {error}."
            )
            return None
        if not isinstance(obj, dict):
            shape = '{"contents": [...]}' if self.format == "gemini" else '{"messages": [...]}'
            report.add(number, 1, "", f"expected a JSON object {shape}, got {json_type(obj)}.")
            return None
        errs: list[Finding] = []
        self.ctx.line = number
        self.ctx.opaque.clear()
        self.ctx.counted_partly = False
        # Only an escape can smuggle a lone surrogate through strict UTF-8 decoding. Texts are only searched for one
        # before a tokenizer sees them; otherwise the encoding below finds it, and the check then runs again to say
        # where it is.
        self.ctx.surrogates = self.ctx.count_tokens is not None and (b"\\ud" in raw or b"\\uD" in raw)
        converted, tokens = self.check_example(obj, errs, self.ctx)
        if errs:
            self._report_example(number, text, errs)
            return None
        try:
            canonical = self.ctx.simple and is_canonical(raw, len(text), converted, self.ctx.length)
            encoded = raw if canonical else None
            if encoded is None and not (self.ctx.opaque and holds_float(self.ctx.opaque)):
                # orjson writes the same bytes as the stdlib encoder, 6-7 times faster, except where noted at
                # ORJSON_CANONICAL: floats (left to the stdlib), and what orjson raises on. (Inline, not in a
                # helper: the stdlib encoder's recursion limit must be met at the same depth as ever.)
                with contextlib.suppress(orjson.JSONEncodeError):
                    encoded = orjson.dumps(converted, option=ORJSON_CANONICAL)
            if encoded is None:
                encoded = CANONICAL(converted).encode("utf-8") + b"\n"
        except UnicodeEncodeError as error:
            self.ctx.surrogates = True
            self.check_example(obj, errs, self.ctx)
            if not errs:  # a surrogate outside the texts, e.g. in a file URI
                fix = "Remove the \\uD800-\\uDFFF escape."
                errs.append(Finding((), f"expected valid Unicode, got {error.reason}. {fix}", False))
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
        values), or that holds a float where a valid example can (``Context.opaque``): all rare. The example
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
        ctx.counted_partly = False
        ctx.surrogates = False  # orjson refuses lone surrogates
        errs: list[Finding] = []
        converted, tokens = self.check_example(obj, errs, ctx)
        encoded: bytes | None = None
        if not errs and not (ctx.opaque and holds_float(ctx.opaque)):
            if ctx.simple and is_canonical(raw, len(raw.decode("utf-8")), converted, ctx.length):
                encoded = raw
            else:
                with contextlib.suppress(orjson.JSONEncodeError):  # nesting deeper than 255
                    encoded = orjson.dumps(converted, option=ORJSON_CANONICAL)
        if encoded is None:
            ctx.first_resolution, ctx.seen = first_resolution, seen
            return _SLOW
        return self._accept(number, encoded, tokens)

    def _accept(self, number: int, encoded: bytes, tokens: int) -> bytes | None:
        """Count a checked example in, after its token limit; returns ``encoded``, or None when over the limit."""
        ctx = self.ctx
        if ctx.count_tokens is None:
            tokens = estimate_from_counts(encoded, ctx.frame_other, ctx.frame_cheap, ctx.turns)
        limit = self.limits.max_tokens_per_example
        if limit is not None and tokens > limit and not self._within(number, encoded, tokens, limit):
            return None
        self.hasher.update(encoded)
        self.examples += 1
        self.bytes += len(encoded)
        self.tokens_total += tokens
        self.tokens_max = max(self.tokens_max, tokens)
        return encoded

    def _within(self, number: int, encoded: bytes, tokens: int, limit: int) -> bool:
        """For an example whose count is over ``limit``: refuse it (False), or, when the count is only the high
        estimate and the low one is within the limit, keep it with a warning (True)."""
        if self.ctx.count_tokens is not None:
            got = f"{tokens} ({self.token_method})"
            if self.ctx.counted_partly:
                got = f"more than {limit} ({self.token_method}: {tokens} when counting stopped)"
            self.report.add(
                number, 1, "", f"expected at most {limit} tokens per example, got {got}. Shorten or split it."
            )
            return False
        low = estimate_low_from_counts(encoded, self.ctx.frame_other, self.ctx.frame_cheap)
        if low > limit:
            rule = f"text bytes / {LOW_BYTES_PER_TOKEN}"
            got = f"about {low} even by tuneform's low estimate ({rule}; about {tokens} by its high one)"
            self.report.add(
                number, 1, "", f"expected at most {limit} tokens per example, got {got}. Shorten or split it."
            )
            return False
        self.report.warn(
            number,
            f"expected at most {limit} tokens per example, got about {tokens} by tuneform's high estimate, {low} by "
            "its low one: without Gemini's tokenizer the count is an estimate, so the example is kept. Vertex AI "
            "truncates examples over the limit; shorten it to be sure.",
        )
        return True

    def too_long(self, number: int, size: int) -> None:
        """A line longer than :data:`MAX_LINE_BYTES`, skipped unread."""
        self.example_lines += 1
        fix = "Keep each example under it; put files in Cloud Storage and reference them with fileData."
        whole = MAX_LINE_BYTES % (1 << 20) == 0
        limit = f"{MAX_LINE_BYTES >> 20} MiB" if whole else size_text(MAX_LINE_BYTES)
        self.report.add(
            number, 1, "", f"expected a line (one example) of at most {limit}, got {size_text(size)}. {fix}"
        )

    def _report_example(self, number: int, text: str, errs: list[Finding]) -> None:
        """Report the problems of one example, in column order (columns are only computed under the cap)."""
        report = self.report
        if report.full:
            report.more += len(errs)
            return
        located = [((key_column if err.at_key else locate)(text, err.path), err) for err in errs]
        for column, err in sorted(located, key=lambda problem: problem[0]):
            if err.repeated:
                seen = report.repeats.get(err.repeated)
                if seen is not None:
                    seen[1] += 1
                    continue
                report.repeats[err.repeated] = [len(report.problems) if not report.full else -1, 1]
            report.add(number, column, render_path(err.path), err.message)

    def finish_file(self) -> None:
        """File-level checks, after the last line."""
        report, limits, lines = self.report, self.limits, self.example_lines
        if lines == 0:
            blank = self.blank_lines
            got = f"only blank lines ({blank})" if blank > 1 else "only a blank line" if blank else "an empty file"
            report.add(1, 1, "", f"expected at least one example (one JSON object per line), got {got}.")
        if limits.min_examples is not None and 0 < lines < limits.min_examples:
            report.add(1, 1, "", f"expected at least {limits.min_examples} examples, got {lines}. Add examples.")
        media = sorted(self.ctx.seen - {"text"})
        if media and limits.max_examples_multimodal is not None:
            if lines > limits.max_examples_multimodal:
                most = f"at most {limits.max_examples_multimodal} examples in a multimodal dataset"
                message = f"expected {most} (this one has {', '.join(media)} parts), got {lines}. Remove examples."
                report.add(1, 1, "", message)
        elif limits.max_examples is not None and lines > limits.max_examples:
            fix = "Remove examples (or move them to the training set)."
            report.add(1, 1, "", f"expected at most {limits.max_examples} examples, got {lines}. {fix}")
        if limits.max_file_bytes is not None and self.bytes > limits.max_file_bytes:
            limit, got = size_text(limits.max_file_bytes), size_text(self.bytes)
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
            warnings=self.report.finish_warnings(),
        )


def check_dataset(
    path: str | Path,
    *,
    format: Literal["gemini", "openai-chat"],
    limits: DatasetLimits,
    count_tokens: Callable[[str], int] | None = None,
    token_method: str | None = None,
    convert_to: str | Path | None = None,
    max_problems: int = MAX_PROBLEMS_PER_FILE,
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
        kind = os.stat(path).st_mode
        if not stat.S_ISREG(kind):
            # Opening a FIFO blocks until a writer comes; a directory cannot be read as lines.
            got = "a directory" if stat.S_ISDIR(kind) else "a FIFO (named pipe)" if stat.S_ISFIFO(kind) else None
            state.report.add(
                1, 1, "", f"expected a regular file, got {got or 'a special file'}. Name the .jsonl file."
            )
            return state.summary(None), state.report.finish()
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
            # At most MAX_LINE_BYTES + 1 bytes per read: a line that long is refused and the rest of it skipped in
            # chunks, so no line costs more memory than that.
            lines = iter(functools.partial(source.readline, MAX_LINE_BYTES + 1), b"")
            for number, raw in enumerate(lines, 1):
                size = len(raw)
                if size > MAX_LINE_BYTES and raw[-1:] != b"\n":
                    size += _skip_line(source)
                    state.too_long(number, size)
                    encoded = None
                else:
                    encoded = state.line(number, raw)
                if output is not None and encoded is not None:
                    output.write(encoded)
                if progress is not None:
                    consumed += size
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


def _skip_line(source: BinaryIO) -> int:
    """Read past the rest of the current line in bounded chunks; returns how many bytes that was."""
    skipped = 0
    while True:
        chunk = source.readline(_SKIP_CHUNK)
        skipped += len(chunk)
        if not chunk or chunk[-1:] == b"\n":
            return skipped


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
