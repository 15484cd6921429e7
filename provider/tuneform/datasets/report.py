"""The problems and warnings of one dataset file, as the pass collects them: capped, and counted past the cap."""

from __future__ import annotations

from tuneform.problems import Problem, more_problems

__all__ = ["Report", "size_text"]


class Report:
    """Problems and warnings of one file, capped: past the cap only a count is kept."""

    def __init__(self, file: str, cap: int) -> None:
        self.file = file
        self.cap = cap
        self.problems: list[Problem] = []
        self.more = 0
        self.warnings: list[Problem] = []
        self.more_warnings = 0
        # Problems listed once per file (Finding.repeated): template -> [index in problems, lines that had it].
        self.repeats: dict[str, list[int]] = {}

    @property
    def full(self) -> bool:
        return len(self.problems) >= self.cap

    def add(self, line: int, column: int, path: str, message: str) -> None:
        if self.full:
            self.more += 1
        else:
            self.problems.append(Problem(self.file, line, column, path, message))

    def warn(self, line: int, message: str) -> None:
        if len(self.warnings) >= self.cap:
            self.more_warnings += 1
        else:
            self.warnings.append(Problem(self.file, line, 1, "", f"warning: {message}"))

    def finish(self) -> list[Problem]:
        for template, (index, lines) in self.repeats.items():
            if lines > 1 and index >= 0:
                first = self.problems[index]
                message = template.replace("{more}", str(lines - 1))
                self.problems[index] = Problem(first.file, first.line, first.column, first.path, message)
        if self.more:
            self.problems.append(more_problems(self.file, self.more))
        return self.problems

    def finish_warnings(self) -> tuple[str, ...]:
        lines = [str(warning) for warning in self.warnings]
        if self.more_warnings:
            noun = "warning" if self.more_warnings == 1 else "warnings"
            lines.append(f"{self.file}: ... and {self.more_warnings} more {noun}")
        return tuple(lines)


def size_text(count: int) -> str:
    """A byte count as people read it: ``8.0 MiB (8388608 bytes)``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit} ({count} bytes)"
    return f"{count} bytes"
