"""Problems found in tuning specs, and the exception that carries all of them at once."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Problem", "SpecErrors"]


@functools.total_ordering
@dataclass(frozen=True)
class Problem:
    """Problem is one mistake in a spec or in a dataset file, with where it was written.

    ``str(problem)`` is the one-line form every tuneform surface prints::

        specs/a.yaml:14:5: spec.hyperparameters.epochs: expected integer from 1 to 100, got 0. Set `epochs: 3`.
        data/train.jsonl:4:69: contents[1].role: expected "user" or "model", got "assistant". Gemini calls ...
        data/train.jsonl:5:1: expected UTF-8 without a byte-order mark, got the BOM EF BB BF. Save the file ...
        data/train.jsonl: ... and 2 more problems

    Problems sort by file, line and column, except that a file's closing summary (line 0) sorts after its problems.
    """

    file: str
    """The spec or dataset file as the user named it (relative to the working directory when inside it)."""
    line: int
    """1-based line; 0 for a dataset file's closing "... and N more problems" entry."""
    column: int
    """1-based (character) column; 1 for line-level dataset problems."""
    path: str
    """Field path: in a spec dotted, e.g. ``spec.hyperparameters.epochs`` (``document`` for the whole document); in a
    dataset example in its source format, e.g. ``contents[2].role``, empty for line and file problems."""
    message: str
    """``expected ..., got ...`` followed by the fix, in YAML syntax where one exists."""

    def __str__(self) -> str:
        if self.line == 0:
            return f"{self.file}: {self.message}"
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def _order(self) -> tuple[str, bool, int, int, str, str]:
        return (self.file, self.line == 0, self.line, self.column, self.path, self.message)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Problem):
            return NotImplemented
        return self._order() < other._order()


class SpecErrors(Exception):
    """SpecErrors carries every problem found in one run, so a user fixes them all in one go.

    Attributes:
        problems: The problems, sorted by file, line and column.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = sorted(set(problems))
        super().__init__(str(self))

    def __str__(self) -> str:
        files = {problem.file for problem in self.problems}
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        where = f"{len(files)} file" if len(files) == 1 else f"{len(files)} files"
        header = f"{count} {noun} in {where}:"
        return "\n".join([header, *(str(problem) for problem in self.problems)])
