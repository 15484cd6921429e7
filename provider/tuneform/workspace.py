"""Where tuneform keeps its working state in a checkout: one name for the directory, used by every layer.

``<repo>/.tuneform`` (git-ignored) holds the local registry (``registry/``'s models and objects), the dataset cache
(``cache/``), training run directories and local endpoints.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STATE_DIR", "state_root"]

STATE_DIR = ".tuneform"


def state_root(repo_root: str | Path) -> Path:
    """``<repo_root>/.tuneform``."""
    return Path(repo_root) / STATE_DIR
