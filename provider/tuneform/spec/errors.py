"""Problems found in tuning specs, and the exception that carries all of them at once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Problem", "SpecErrors"]


@dataclass(frozen=True, order=True)
class Problem:
    """Problem is one mistake in a spec (or its dataset), with where it was written.

    ``str(problem)`` is the one-line form every tuneform surface prints::

        specs/a.yaml:14:5: spec.hyperparameters.epochs: expected integer from 1 to 100, got 0. Set `epochs: 3`.
    """

    file: str
    """The spec file as the user named it (relative to the working directory when inside it)."""
    line: int
    """1-based line."""
    column: int
    """1-based column."""
    path: str
    """Dotted field path, e.g. ``spec.hyperparameters.epochs``; ``document`` for the whole document."""
    message: str
    """``expected ..., got ...`` followed by the fix, in YAML syntax where one exists."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {self.message}"


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
