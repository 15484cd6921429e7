"""Problems found in tuning specs, and the exception that carries all of them at once.

``Problem`` lives in :mod:`tuneform.problems` (dataset checks report with it too); it is re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable

from tuneform.problems import MAX_PROBLEMS_PER_FILE, Problem, cap_per_file

__all__ = ["Problem", "SpecErrors"]


class SpecErrors(Exception):
    """SpecErrors carries every problem found in one run, so a user fixes them all in one go.

    At most :data:`tuneform.problems.MAX_PROBLEMS_PER_FILE` problems are kept per file; the rest are counted in a
    closing ``file: ... and N more problems`` entry, so a hostile file cannot flood the output.

    Attributes:
        problems: The problems, sorted by file, line and column.
    """

    def __init__(self, problems: Iterable[Problem], *, cap: int = MAX_PROBLEMS_PER_FILE) -> None:
        self.problems: list[Problem] = cap_per_file(problems, cap)
        super().__init__(str(self))

    def __str__(self) -> str:
        files = {problem.file for problem in self.problems}
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        where = f"{len(files)} file" if len(files) == 1 else f"{len(files)} files"
        header = f"{count} {noun} in {where}:"
        return "\n".join([header, *(str(problem) for problem in self.problems)])
