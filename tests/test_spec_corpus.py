"""The spec half of the bad-input corpus: every case is refused with exactly the messages in its ``.expected`` file.

A case is ``tests/corpus/specs/<case>.yaml`` (or a directory ``<case>/`` whose files are loaded together) with the
expected lines in ``<case>.expected``. A first line ``# target: local`` validates the case for that target only.
Messages are compared byte for byte: they are the product. To add a case, write the YAML, run
``tuneform validate <case>.yaml`` from ``tests/corpus/specs`` (see its README) and check every line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneform.cli import run_validation

CORPUS = Path(__file__).parent / "corpus" / "specs"
SKIP = {"datasets", "models"}


def _cases() -> list[str]:
    names = [path.stem for path in CORPUS.glob("*.yaml")]
    names += [path.name for path in CORPUS.iterdir() if path.is_dir() and path.name not in SKIP]
    return sorted(names)


def corpus_output(case: str) -> str:
    """The problems that ``tuneform validate`` reports for a corpus case, one per line, run from the corpus dir."""
    path = CORPUS / f"{case}.yaml"
    files = sorted(p.relative_to(CORPUS) for p in (CORPUS / case).glob("*.yaml")) if not path.exists() else [path.name]
    first = (CORPUS / files[0]).read_text().splitlines()[:1]
    target = first[0].removeprefix("# target:").strip() if first and first[0].startswith("# target:") else "any"
    result = run_validation([Path(f) for f in files], target=target, repo_root=Path("."))
    return "\n".join(dict.fromkeys(str(problem) for problem in result.problems)) + "\n"


def test_corpus_has_enough_cases() -> None:
    assert len(_cases()) >= 60


@pytest.mark.parametrize("case", _cases())
def test_corpus_case(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    expected = (CORPUS / f"{case}.expected").read_text(encoding="utf-8")
    actual = corpus_output(case)
    assert actual.strip(), f"{case}: expected problems, got none"
    assert actual == expected
