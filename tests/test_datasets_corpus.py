"""The dataset half of the bad-input corpus: every file is refused (or, for the rules that warn, warned about) with
exactly the messages in its ``.expected``.

``tests/corpus/datasets/<case>.jsonl`` is the input; ``<case>.expected`` holds option lines (``# format:
openai-chat``, ``# min_examples: 16``, ``# modalities: text,image``, ``# max_problems: 3``...) and then one
expected problem per line, as ``str(problem)`` prints it, with the file shown as ``<case>.jsonl``, followed by the
summary's warnings. After a deliberate change of wording, ``TUNEFORM_UPDATE_CORPUS=1`` rewrites the expectations;
review the diff. Each case names the Google source of its rule in a ``# source:`` line (sources.yaml keys; ``tuneform``
for tuneform's own choices).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tuneform.datasets import DatasetLimits, check_dataset

CORPUS = Path(__file__).parent / "corpus" / "datasets"
CASES = sorted(path.stem for path in CORPUS.glob("*.jsonl"))
_INT_OPTIONS = ("max_tokens_per_example", "max_examples", "min_examples", "max_file_bytes", "max_examples_multimodal")


def _read_case(name: str) -> tuple[list[str], dict[str, Any], list[str]]:
    lines = (CORPUS / f"{name}.expected").read_text(encoding="utf-8").splitlines()
    options = [line for line in lines if line.startswith("# ")]
    settings: dict[str, Any] = {}
    for line in options:
        key, _, value = line[2:].partition(": ")
        settings[key] = value
    return options, settings, [line for line in lines if not line.startswith("# ")]


def _run(name: str, settings: dict[str, Any]) -> list[str]:
    limits: dict[str, Any] = {key: int(settings[key]) for key in _INT_OPTIONS if key in settings}
    if "modalities" in settings:
        limits["modalities"] = frozenset(settings["modalities"].split(","))
    summary, problems = check_dataset(
        CORPUS / f"{name}.jsonl",
        format=settings.get("format", "gemini"),
        limits=DatasetLimits(**limits),
        max_problems=int(settings.get("max_problems", 100)),
        display_path=f"{name}.jsonl",
    )
    assert summary.converted_path is None
    return [str(problem) for problem in problems] + list(summary.warnings)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


def test_every_case_names_the_source_of_its_rule() -> None:
    unsourced = [name for name in CASES if "source" not in _read_case(name)[1]]
    assert unsourced == []


@pytest.mark.parametrize("name", CASES)
def test_bad_dataset_is_refused_with_exact_messages(name: str) -> None:
    options, settings, expected = _read_case(name)
    got = _run(name, settings)
    if os.environ.get("TUNEFORM_UPDATE_CORPUS") == "1":
        (CORPUS / f"{name}.expected").write_text("".join(f"{line}\n" for line in options + got), encoding="utf-8")
        return
    assert got, f"{name}: a bad input was accepted"
    assert got == expected
