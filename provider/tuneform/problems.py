"""One user mistake, located in the file where it was written: the line every tuneform surface prints.

Specs (``tuneform.spec``) and dataset files (``tuneform.datasets``) report through this one type, so neither depends
on the other and a run prints both kinds in one list. ``tuneform.spec.errors`` re-exports it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MAX_PROBLEMS_PER_FILE", "Problem", "cap_per_file", "left_out", "more_problems"]

MAX_PROBLEMS_PER_FILE = 100
"""Problems listed per file before the rest is summed up in one "... and N more problems" line: enough to fix a file
in one go, few enough that a hostile file (2.6 M unknown keys) cannot print hundreds of megabytes."""


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
    """1-based line; 0 for a file's closing "... and N more problems" entry."""
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


def more_problems(file: str, count: int) -> Problem:
    """The closing entry of a file whose problems were capped: ``file: ... and N more problems``.

    Args:
        file: The file as shown in its problems.
        count: How many problems were left out.

    Returns:
        The entry (line 0, so it sorts after the file's problems).
    """
    noun = "problem" if count == 1 else "problems"
    return Problem(file, 0, 0, "", f"... and {count} more {noun}")


_MORE_PREFIX = "... and "


def left_out(problem: Problem) -> int:
    """How many problems a closing ``... and N more problems`` entry stands for (0 for any other problem)."""
    if problem.line != 0 or not problem.message.startswith(_MORE_PREFIX):
        return 0
    count = problem.message[len(_MORE_PREFIX) :].split(" ", 1)[0]
    return int(count) if count.isdigit() else 0


def cap_per_file(problems: Iterable[Problem], cap: int = MAX_PROBLEMS_PER_FILE) -> list[Problem]:
    """Sorted, distinct problems with at most ``cap`` listed per file and the rest counted in one closing entry.

    A file's existing closing entries (a dataset check caps its own problems) are folded into the new count.

    Args:
        problems: Problems of any number of files.
        cap: How many to list per file.

    Returns:
        The problems to print, in order.
    """
    by_file: dict[str, list[Problem]] = {}
    for problem in sorted(set(problems)):
        by_file.setdefault(problem.file, []).append(problem)
    capped: list[Problem] = []
    for file, found in by_file.items():
        listed = [problem for problem in found if not left_out(problem)]
        omitted = sum(map(left_out, found)) + max(0, len(listed) - cap)
        capped.extend(listed[:cap])
        if omitted:
            capped.append(more_problems(file, omitted))
    return capped
