"""The small summary of a checked dataset: its identity, size and token statistics, as a JSON file."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUMMARY_VERSION = 1


@dataclass(frozen=True)
class DatasetSummary:
    """What one pass over a dataset file learnt about it.

    Only meaningful when the check returned no problems; with problems, the counts cover the examples that passed.
    """

    source: str
    """The file as shown to the user (``display_path``, else the path given)."""
    format: str
    """``gemini`` or ``openai-chat``: the format of the source file."""
    sha256: str
    """SHA-256 of the converted, canonical Gemini JSONL: the dataset's identity across formatting and formats."""
    examples: int
    tokens_total: int
    tokens_max: int
    tokens_mean: float
    token_method: str
    """``exact:<tokenizer name>`` or ``estimate:<rule>`` (see ``tuneform.datasets.tokens``)."""
    modalities: frozenset[str]
    """Modalities the examples use: ``text`` and any of ``image``, ``audio``, ``video``, ``document``."""
    bytes: int
    """Size of the converted Gemini JSONL (what is hashed and uploaded)."""
    converted_path: str | None
    """Where the converted file was written (``convert_to``), or ``None``."""
    warnings: tuple[str, ...] = ()
    """What is valid but needs attention, one printed line each (``file:line:col: warning: ...``): an example whose
    estimated token count is over the limit while its low estimate is not. Kept with the summary, so a cached
    summary repeats them."""

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict (``modalities`` as a sorted list).

        Returns:
            A dict that :meth:`from_json` turns back into an equal summary.
        """
        return {
            "version": SUMMARY_VERSION,
            "source": self.source,
            "format": self.format,
            "sha256": self.sha256,
            "examples": self.examples,
            "tokensTotal": self.tokens_total,
            "tokensMax": self.tokens_max,
            "tokensMean": self.tokens_mean,
            "tokenMethod": self.token_method,
            "modalities": sorted(self.modalities),
            "bytes": self.bytes,
            "convertedPath": self.converted_path,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetSummary:
        """Rebuild a summary from :meth:`to_json` output.

        Args:
            data: The dict, e.g. read from a summary file.

        Returns:
            The summary.

        Raises:
            ValueError: If ``data`` was written by an unknown summary version or lacks a field.
        """
        if data.get("version") != SUMMARY_VERSION:
            raise ValueError(f"version: expected {SUMMARY_VERSION}, got {data.get('version')!r}")
        try:
            return cls(
                source=data["source"],
                format=data["format"],
                sha256=data["sha256"],
                examples=data["examples"],
                tokens_total=data["tokensTotal"],
                tokens_max=data["tokensMax"],
                tokens_mean=data["tokensMean"],
                token_method=data["tokenMethod"],
                modalities=frozenset(data["modalities"]),
                bytes=data["bytes"],
                converted_path=data["convertedPath"],
                # Summaries cached before warnings existed have none.
                warnings=tuple(data.get("warnings", ())),
            )
        except KeyError as missing:
            raise ValueError(f"{missing.args[0]}: expected a summary field, got nothing") from None


def write_summary(summary: DatasetSummary, path: str | Path) -> None:
    """Write ``summary`` as JSON to ``path`` atomically (a temporary file renamed over it).

    Args:
        summary: The summary to write.
        path: Destination file; its directory must exist.
    """
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(summary.to_json(), handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_summary(path: str | Path) -> DatasetSummary:
    """Read a summary written by :func:`write_summary`.

    Args:
        path: The summary file.

    Returns:
        The summary.
    """
    with open(path, encoding="utf-8") as handle:
        return DatasetSummary.from_json(json.load(handle))
