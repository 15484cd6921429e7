"""The registry's files: the names it accepts, and JSON written whole (temporary file, fsync, rename) or not at all."""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SPEC_HASH = re.compile(r"^[0-9a-f]{8,128}$")


class RegistryError(Exception):
    """A registry operation was refused; the message says why and what to do."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fout:
            json.dump(data, fout, indent=2, sort_keys=True)
            fout.write("\n")
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fin:
        data: dict[str, Any] = json.load(fin)
    return data


def _check_name(model: str) -> str:
    if not _NAME.match(model):
        raise RegistryError(
            f"model name {model!r}: expected letters, digits, '.', '_' or '-' (at most 128, not starting with "
            "'.' or '-'). Use the spec's `metadata.name`."
        )
    return model


def _check_spec_hash(spec_hash: str) -> str:
    if not _SPEC_HASH.match(spec_hash):
        raise RegistryError(f"spec hash {spec_hash!r}: expected lowercase hex (ResolvedSpec.spec_hash()).")
    return spec_hash
