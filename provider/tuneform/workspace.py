"""Where tuneform keeps its working state in a checkout: one name for the directory, used by every layer.

``<repo>/.tuneform`` (git-ignored) holds the local registry (``registry/``'s models and objects), the dataset cache
(``cache/``), training run directories and local endpoints. The Pulumi project's name and a file backend's
directory, which the review and the recovery both look up, are read here too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

__all__ = ["STATE_DIR", "file_backend_dir", "project_name", "project_settings", "state_root"]

STATE_DIR = ".tuneform"


def state_root(repo_root: str | Path) -> Path:
    """``<repo_root>/.tuneform``."""
    return Path(repo_root) / STATE_DIR


def project_settings(project_dir: str | Path) -> dict[str, Any]:
    """``<project_dir>/Pulumi.yaml`` as a mapping; empty when the file is missing, unreadable or not a mapping
    (Pulumi itself refuses a broken one, in its own words)."""
    import yaml

    try:
        project = yaml.safe_load((Path(project_dir) / "Pulumi.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return project if isinstance(project, dict) else {}


def project_name(project_dir: str | Path) -> str:
    """The ``name`` in ``<project_dir>/Pulumi.yaml``; "" when the file is missing or unreadable or names none."""
    return str(project_settings(project_dir).get("name") or "")


def file_backend_dir(url: str) -> Path | None:
    """The directory of a ``file://`` Pulumi backend URL (``~`` expanded, %-escapes decoded); ``None`` for others."""
    if not url.startswith("file://"):
        return None
    parsed = urlparse(url)
    return Path(os.path.expanduser(unquote(parsed.netloc + parsed.path)))
