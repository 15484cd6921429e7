"""Streaming dataset checks: identity, conversion, summaries, limits and memory, on real files in tmp_path."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import tuneform.datasets.check as check_module
from tuneform.datasets import (
    DatasetLimits,
    DatasetProblem,
    DatasetSummary,
    check_dataset,
    estimate_example_tokens,
    iter_gemini_examples,
    read_summary,
    write_summary,
)
from tuneform.spec import Problem, SpecErrors

TEXT = DatasetLimits()
SYSTEM = "You route support tickets. Answer with one queue name."
TICKETS = [
    ("My card was charged twice for order #48213.", "billing"),
    ("The app crashes when I open settings on Android 14.", "technical"),
    ("Où est mon colis ? Il devait arriver le 3 mars.", "shipping"),
]


def gemini_example(user: str, model: str, *, system_role: str | None = None) -> dict[str, Any]:
    system: dict[str, Any] = {"parts": [{"text": SYSTEM}]}
    if system_role is not None:
        system["role"] = system_role
    return {
        "systemInstruction": system,
        "contents": [{"role": "user", "parts": [{"text": user}]}, {"role": "model", "parts": [{"text": model}]}],
    }


def openai_example(user: str, model: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
            {"role": "assistant", "content": [{"type": "text", "text": model}]},
        ]
    }


def write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes("".join(line + newline for line in lines).encode())
    return path


def check(path: Path, **kwargs: Any) -> tuple[DatasetSummary, list[DatasetProblem]]:
    kwargs.setdefault("format", "gemini")
    kwargs.setdefault("limits", TEXT)
    return check_dataset(path, **kwargs)


def test_identity_ignores_formatting_key_order_escapes_and_line_ends(tmp_path: Path) -> None:
    examples = [gemini_example(user, model) for user, model in TICKETS]
    canonical = [json.dumps(e, separators=(",", ":"), sort_keys=True, ensure_ascii=False) for e in examples]
    compact = write(tmp_path / "compact.jsonl", canonical)
    spaced = write(tmp_path / "spaced.jsonl", [json.dumps(e, indent=None, ensure_ascii=True) for e in examples])
    reordered = [{"contents": e["contents"], "systemInstruction": e["systemInstruction"]} for e in examples]
    crlf_blank = write(
        tmp_path / "crlf.jsonl",
        ["", *(" " + json.dumps(e, ensure_ascii=False) + "  " for e in reordered), "   "],
        newline="\r\n",
    )
    summaries = [check(path)[0] for path in (compact, spaced, crlf_blank)]
    assert len({summary.sha256 for summary in summaries}) == 1
    assert len({(summary.tokens_total, summary.tokens_max, summary.bytes) for summary in summaries}) == 1
    assert all(summary.examples == 3 for summary in summaries)
    assert [check(path)[1] for path in (compact, spaced, crlf_blank)] == [[], [], []]


def test_openai_chat_file_and_its_gemini_twin_are_the_same_dataset(tmp_path: Path) -> None:
    gemini = write(tmp_path / "g.jsonl", [json.dumps(gemini_example(u, m, system_role="system")) for u, m in TICKETS])
    openai = write(tmp_path / "o.jsonl", [json.dumps(openai_example(u, m)) for u, m in TICKETS])
    converted = tmp_path / "converted.jsonl"
    from_gemini, problems_gemini = check(gemini)
    from_openai, problems_openai = check(openai, format="openai-chat", convert_to=converted)
    assert problems_gemini == problems_openai == []
    assert from_gemini.sha256 == from_openai.sha256
    assert (from_gemini.tokens_total, from_gemini.tokens_max) == (from_openai.tokens_total, from_openai.tokens_max)
    assert from_openai.format == "openai-chat"
    first = next(iter_gemini_examples(converted))
    assert first == {
        "contents": [
            {"parts": [{"text": TICKETS[0][0]}], "role": "user"},
            {"parts": [{"text": TICKETS[0][1]}], "role": "model"},
        ],
        "systemInstruction": {"parts": [{"text": SYSTEM}]},
    }


def test_changed_content_changes_identity(tmp_path: Path) -> None:
    one = write(tmp_path / "a.jsonl", [json.dumps(gemini_example("Refund please", "billing"))])
    other = write(tmp_path / "b.jsonl", [json.dumps(gemini_example("Refund please", "shipping"))])
    assert check(one)[0].sha256 != check(other)[0].sha256


def test_converted_file_is_canonical_and_its_sha256_is_the_identity(tmp_path: Path) -> None:
    source = write(tmp_path / "train.jsonl", [json.dumps(gemini_example(u, m), indent=None) for u, m in TICKETS])
    target = tmp_path / "out" / "train.gemini.jsonl"
    target.parent.mkdir()
    summary, problems = check(source, convert_to=target)
    assert problems == []
    data = target.read_bytes()
    assert summary.converted_path == str(target)
    assert summary.sha256 == hashlib.sha256(data).hexdigest()
    assert summary.bytes == len(data)
    canonical = "".join(
        json.dumps(gemini_example(u, m), ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n"
        for u, m in TICKETS
    )
    assert data == canonical.encode()
    assert [p.name for p in target.parent.iterdir()] == ["train.gemini.jsonl"]
    # A converted file is a fixed point: checking it again gives the same identity.
    assert check(target)[0].sha256 == summary.sha256


def test_no_converted_file_and_no_temporary_left_when_there_are_problems(tmp_path: Path) -> None:
    bad = gemini_example("hi", "hello")
    bad["contents"][1]["role"] = "assistant"
    source = write(tmp_path / "train.jsonl", [json.dumps(gemini_example("hi", "hello")), json.dumps(bad)])
    out = tmp_path / "out"
    out.mkdir()
    summary, problems = check(source, convert_to=out / "train.jsonl")
    assert [p.path for p in problems] == ["contents[1].role"]
    assert summary.converted_path is None
    assert list(out.iterdir()) == []


def test_summary_counts_tokens_and_roundtrips_through_its_file(tmp_path: Path) -> None:
    source = write(tmp_path / "train.jsonl", [json.dumps(gemini_example(u, m)) for u, m in TICKETS])
    words = check(source, count_tokens=lambda text: len(text.split()))[0]
    per_example = [len(SYSTEM.split()) + len(u.split()) + len(m.split()) for u, m in TICKETS]
    assert words.token_method == "exact:custom"
    assert words.tokens_total == sum(per_example)
    assert words.tokens_max == max(per_example)
    assert words.tokens_mean == pytest.approx(sum(per_example) / 3)
    assert words.modalities == frozenset({"text"})
    estimated = check(source)[0]
    assert estimated.token_method.startswith("estimate:")
    assert estimated.tokens_total > words.tokens_total
    write_summary(estimated, tmp_path / "summary.json")
    assert read_summary(tmp_path / "summary.json") == estimated
    assert json.loads((tmp_path / "summary.json").read_text())["sha256"] == estimated.sha256


def test_summary_from_json_refuses_an_unknown_version() -> None:
    with pytest.raises(ValueError, match="version: expected 1, got 7"):
        DatasetSummary.from_json({"version": 7})


def test_media_parts_record_their_modalities(tmp_path: Path) -> None:
    example = gemini_example("What is in this picture?", "A cat.")
    example["contents"][0]["parts"].append({"fileData": {"mimeType": "image/png", "fileUri": "gs://b/cat.png"}})
    example["contents"][0]["parts"].append({"fileData": {"mimeType": "application/pdf", "fileUri": "https://x/a.pdf"}})
    example["systemInstruction"]["role"] = "system"
    example["generationConfig"] = {"mediaResolution": "MEDIA_RESOLUTION_LOW"}
    source = write(tmp_path / "mm.jsonl", [json.dumps(example)])
    converted = tmp_path / "mm.gemini.jsonl"
    limits = DatasetLimits(modalities=frozenset({"text", "image", "document"}))
    summary, problems = check(source, limits=limits, convert_to=converted)
    assert problems == []
    assert summary.modalities == frozenset({"text", "image", "document"})
    # The framing counted during the check is the framing of the converted example.
    assert summary.tokens_total == estimate_example_tokens(next(iter_gemini_examples(converted)))
    _, refused = check(source)
    assert [p.path for p in refused] == [
        "contents[0].parts[1].fileData.mimeType",
        "contents[0].parts[2].fileData.mimeType",
    ]


def test_problems_are_capped_with_a_count_of_the_rest(tmp_path: Path) -> None:
    source = write(tmp_path / "bad.jsonl", ["[]"] * 7)
    summary, problems = check(source, max_problems=3, display_path="data/bad.jsonl")
    assert [str(p) for p in problems] == [
        'data/bad.jsonl:1:1: expected a JSON object {"contents": [...]}, got an array.',
        'data/bad.jsonl:2:1: expected a JSON object {"contents": [...]}, got an array.',
        'data/bad.jsonl:3:1: expected a JSON object {"contents": [...]}, got an array.',
        "data/bad.jsonl: ... and 4 more problems",
    ]
    assert summary.source == "data/bad.jsonl"
    assert summary.examples == 0


def test_dataset_problems_join_spec_problems_in_one_spec_errors(tmp_path: Path) -> None:
    # `pulumi preview` (prepare.py) raises dataset problems in the same SpecErrors as spec problems, which sorts them.
    source = write(tmp_path / "bad.jsonl", ["[]"] * 7)
    _, problems = check(source, max_problems=2, display_path="data/bad.jsonl")
    spec_problem = Problem("specs/a.yaml", 3, 5, "spec.dataset.train", "expected a file, got nothing.")
    assert str(SpecErrors([*reversed(problems), spec_problem])).splitlines() == [
        "4 problems in 2 files:",
        'data/bad.jsonl:1:1: expected a JSON object {"contents": [...]}, got an array.',
        'data/bad.jsonl:2:1: expected a JSON object {"contents": [...]}, got an array.',
        "data/bad.jsonl: ... and 5 more problems",
        "specs/a.yaml:3:5: spec.dataset.train: expected a file, got nothing.",
    ]


def test_missing_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    summary, problems = check(tmp_path / "nope.jsonl", display_path="nope.jsonl")
    assert [str(p) for p in problems] == [
        "nope.jsonl:1:1: expected a readable file, got No such file or directory. Check the dataset path."
    ]
    assert summary.examples == 0


def test_deep_nesting_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    source = write(tmp_path / "deep.jsonl", ['{"contents": ' + "[" * 100_000 + "]" * 100_000 + "}"])
    _, problems = check(source)
    assert len(problems) == 1
    assert problems[0].message.startswith("expected JSON within the parser's limits, got RecursionError")


def test_progress_reports_while_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check_module, "_PROGRESS_EVERY", 1024)
    source = write(tmp_path / "train.jsonl", [json.dumps(gemini_example("x" * 500, "billing"))] * 10)
    lines: list[str] = []
    check(source, progress=lines.append, display_path="train.jsonl")
    assert lines[0].startswith("train.jsonl: 0 of 0 MiB checked, ")
    assert len(lines) >= 4


def _write_large(path: Path, size: int) -> int:
    """Write about ``size`` bytes of varied examples; returns how many."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        written = 0
        while written < size:
            user, model = TICKETS[count % len(TICKETS)]
            line = json.dumps(gemini_example(f"{user} (case {count}) " + "details " * (count % 700), model)) + "\n"
            handle.write(line)
            written += len(line)
            count += 1
    return count


@pytest.mark.timeout(120)
def test_memory_stays_flat_on_a_50_mb_file(tmp_path: Path) -> None:
    source = tmp_path / "big.jsonl"
    count = _write_large(source, 50_000_000)
    target = tmp_path / "big.gemini.jsonl"
    tracemalloc.start()
    try:
        summary, problems = check(source, convert_to=target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problems == []
    assert summary.examples == count
    # The file is 50 MB; what stays alive is one example plus the 1 MiB output buffer.
    assert peak < 4_000_000, f"peak traced memory {peak} bytes"


TRICKY_TEXTS = [
    'He said "stop": now',
    'C:\\ then "\\": and \\\\":',
    "tab\there, cr\rhere, newline\nhere, \b and \f",
    "control \x01 and \x1f",
    "unicode é 日本 🙂, line separator \u2028 and DEL \x7f",
    "slash / and \\/ literal",
    " leading and trailing spaces ",
]


def _raw_variants(text: str) -> list[str]:
    example = {
        "contents": [
            {"parts": [{"text": text}, {"text": "second part"}], "role": "user"},
            {"parts": [{"text": "ok"}], "role": "model"},
            {"parts": [{"text": "more"}], "role": "user"},
            {"parts": [{"text": "done"}], "role": "model"},
        ],
        "systemInstruction": {"parts": [{"text": "system one"}, {"text": "system two"}]},
    }
    canonical = json.dumps(example, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    duplicate_role = (
        '{"contents":[{"parts":[{"text":"x"}],"role":"user","role":"user"},{"parts":[{"text":"ok"}],"role":"model"}]}'
    )
    return [
        canonical,
        json.dumps(example, ensure_ascii=True, separators=(",", ":"), sort_keys=True),
        json.dumps(example, ensure_ascii=False),
        canonical.replace('"role":"user"', '"role" :"user"'),
        canonical.replace('{"parts":[{"text":"ok"}],"role":"model"}', '{"role":"model","parts":[{"text":"ok"}]}'),
        canonical.replace('"role":"model"}', '"role":"model","role":"model"}'),
        canonical.replace('{"text":"ok"}', '{"text":"x\\\\y","text":"ok"}'),
        canonical.replace('{"text":"ok"}', '{"text":"\\\\\\\\","text":"ok"}'),
        canonical.replace('"ok"', '"\\u006fk"'),
        canonical.replace('"ok"', '"o\\u006B"'),
        canonical.replace('"done"', '"d\\u005cne"'),
        canonical.replace("/", "\\/"),
        duplicate_role,
    ]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_converted_bytes_equal_json_dumps_canonical_form(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression guard for the copy-through of already canonical lines (``canonical.is_canonical``)."""
    copied: list[bytes] = []

    def spy(raw: bytes, chars: int, example: dict[str, Any], length: int) -> bool:
        result = is_canonical(raw, chars, example, length)
        if result:
            copied.append(raw)
        return result

    is_canonical = check_module.is_canonical
    monkeypatch.setattr(check_module, "is_canonical", spy)
    variants = _raw_variants(text)
    for number, raw in enumerate(variants):
        for ending in ("\n", "\r\n", ""):
            source = tmp_path / f"{number}.jsonl"
            source.write_bytes((raw + ending).encode())
            target = tmp_path / "converted.jsonl"
            summary, problems = check(source, convert_to=target)
            assert problems == []
            expected = json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n"
            assert target.read_bytes() == expected.encode(), (raw, ending)
            assert summary.sha256 == hashlib.sha256(expected.encode()).hexdigest()
    # The canonical variant with a plain newline is copied through (unless it holds the byte pairs that the check
    # refuses without looking closer: backslash-u, backslash-slash); nothing else is.
    copy_expected = "\\u" not in variants[0] and "\\/" not in variants[0]
    assert set(copied) == ({(variants[0] + "\n").encode()} if copy_expected else set())


# --- Google's rules that accept (the corpus holds the refusals) ---------------------------------------------------


def test_system_instruction_in_snake_case_is_accepted_and_hashes_like_camel_case(tmp_path: Path) -> None:
    # Google's function-calling tuning example writes "system_instruction" with a role.
    camel = [json.dumps(gemini_example(u, m)) for u, m in TICKETS]
    snake = [
        json.dumps({"system_instruction": {"role": "system", "parts": [{"text": SYSTEM}]}, "contents": e["contents"]})
        for e in map(json.loads, camel)
    ]
    converted = tmp_path / "converted.jsonl"
    from_camel, problems_camel = check(write(tmp_path / "camel.jsonl", camel))
    from_snake, problems_snake = check(write(tmp_path / "snake.jsonl", snake), convert_to=converted)
    assert problems_camel == problems_snake == []
    assert from_snake.sha256 == from_camel.sha256
    assert "systemInstruction" in next(iter_gemini_examples(converted))


def test_documented_files_are_accepted_up_to_the_documented_counts(tmp_path: Path) -> None:
    def file(mime: str, uri: str) -> dict[str, Any]:
        return {"fileData": {"mimeType": mime, "fileUri": uri}}

    parts = [file("image/jpeg", f"gs://bucket/{i}.jpg") for i in range(29)]
    parts += [file("image/png", "https://example.com/a.png"), file("application/pdf", "http://example.com/a.pdf")]
    parts += [file("text/plain", f"gs://bucket/{i}.txt") for i in range(3)]
    parts += [file("audio/mpeg", "gs://bucket/a.mp3"), file("video/mp4", "gs://bucket/a.mp4"), {"text": "which?"}]
    example = {"contents": [{"role": "user", "parts": parts}, {"role": "model", "parts": [{"text": "the third"}]}]}
    limits = DatasetLimits(modalities=frozenset({"text", "image", "document", "audio", "video"}))
    summary, problems = check(write(tmp_path / "media.jsonl", [json.dumps(example)]), limits=limits)
    assert problems == []
    assert summary.modalities == {"text", "image", "document", "audio", "video"}


def test_an_estimate_over_the_limit_warns_and_a_cached_summary_keeps_the_warning(tmp_path: Path) -> None:
    long = " ".join(["word"] * 60)
    source = write(tmp_path / "long.jsonl", [json.dumps(gemini_example(long, "billing"))])
    summary, problems = check(source, limits=DatasetLimits(max_tokens_per_example=60), display_path="long.jsonl")
    assert problems == []
    assert summary.examples == 1
    assert [line.split(": warning: ")[0] for line in summary.warnings] == ["long.jsonl:1:1"]
    assert "the count is an estimate, so the example is kept" in summary.warnings[0]
    write_summary(summary, tmp_path / "summary.json")
    assert read_summary(tmp_path / "summary.json").warnings == summary.warnings
    # The same example counted exactly is refused: only an estimate gets the benefit of the doubt.
    _, exact = check(source, limits=DatasetLimits(max_tokens_per_example=5), count_tokens=len)
    assert [problem.message.split(",")[0] for problem in exact] == ["expected at most 5 tokens per example"]


def test_summaries_cached_before_warnings_existed_still_read(tmp_path: Path) -> None:
    summary, _ = check(write(tmp_path / "a.jsonl", [json.dumps(gemini_example("hi", "billing"))]))
    data = summary.to_json()
    del data["warnings"]
    assert DatasetSummary.from_json(data).warnings == ()


def test_an_over_long_line_is_refused_and_the_next_line_still_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check_module, "MAX_LINE_BYTES", 4096)
    monkeypatch.setattr(check_module, "_SKIP_CHUNK", 1000)
    long = json.dumps(gemini_example("x" * 10_000, "billing"))
    source = write(tmp_path / "long.jsonl", [long, json.dumps(gemini_example("hi", "billing"))])
    summary, problems = check(source, display_path="long.jsonl")
    assert [str(problem) for problem in problems] == [
        f"long.jsonl:1:1: expected a line (one example) of at most 4.0 KiB (4096 bytes), got "
        f"{(len(long) + 1) / 1024:.1f} KiB ({len(long) + 1} bytes). Keep each example under it; put files in Cloud "
        "Storage and reference them with fileData."
    ]
    assert summary.examples == 1


def test_a_long_text_is_counted_exactly_in_pieces_and_stops_past_the_limit(tmp_path: Path) -> None:
    calls: list[int] = []

    def count(text: str) -> int:
        calls.append(len(text))
        return len(text.split())

    words = " ".join(f"w{i}" for i in range(60_000))  # about 350,000 characters
    source = write(tmp_path / "long.jsonl", [json.dumps(gemini_example(words, "billing"))])
    summary, problems = check(source, count_tokens=count)
    assert problems == []
    assert summary.tokens_total == 60_000 + len(SYSTEM.split()) + 1  # the pieces sum to the whole count
    assert max(calls) <= 1 << 16
    calls.clear()
    _, problems = check(source, count_tokens=count, limits=DatasetLimits(max_tokens_per_example=100))
    assert len(calls) == 1 + 1 + 1  # the system instruction, one piece of the user turn, the model turn
    assert problems[0].message.startswith("expected at most 100 tokens per example, got more than 100 (exact:custom: ")


@pytest.mark.parametrize(("kind", "make"), [("a directory", Path.mkdir), ("a FIFO (named pipe)", os.mkfifo)])
def test_a_directory_or_fifo_is_named_not_called_missing(tmp_path: Path, kind: str, make: Any) -> None:
    path = tmp_path / "train.jsonl"
    make(path)
    summary, problems = check(path, display_path="train.jsonl")  # a FIFO would block an open() without a writer
    assert [str(problem) for problem in problems] == [
        f"train.jsonl:1:1: expected a regular file, got {kind}. Name the .jsonl file."
    ]
    assert summary.examples == 0


def test_openai_weight_1_is_the_default_and_weight_0_is_refused_with_a_fix_that_validates(tmp_path: Path) -> None:
    from tuneform.datasets import DatasetLimits, check_dataset

    def problems(rows: list[dict]) -> list[str]:
        path = tmp_path / "rows.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return [str(p) for p in check_dataset(path, format="openai-chat", limits=DatasetLimits())[1]]

    turn = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "weight": 1}]
    assert problems([{"messages": turn}]) == []
    two = [
        *turn[:1],
        {**turn[1], "weight": 0},
        {"role": "user", "content": "and?"},
        {"role": "assistant", "content": "ok"},
    ]
    (refused,) = problems([{"messages": two}])
    assert "expected no weight (or weight 1), got 0" in refused
    # The fix: remove that reply with the user message before it.
    assert problems([{"messages": two[2:]}]) == []
