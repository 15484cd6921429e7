"""The local model registry: a content-addressed object store plus numbered model versions.

``Registry(root)`` is the entry point; ``registry.store`` is its ``ObjectStore``. Its root in a checkout is
``registry_root(repo)`` = ``<repo>/.tuneform`` (git-ignored), which also holds the dataset cache and endpoints.
"""

from pathlib import Path

from tuneform.registry._registry import (
    DEFAULT_GC_GRACE_S,
    DatasetRecord,
    Registry,
    RegistryError,
    RunBusyError,
    RunRecord,
    Version,
)
from tuneform.registry._store import ObjectNotFoundError, ObjectStore, file_sha256, tree_sha256

__all__ = [
    "DEFAULT_GC_GRACE_S",
    "STATE_DIR",
    "DatasetRecord",
    "ObjectNotFoundError",
    "ObjectStore",
    "Registry",
    "RegistryError",
    "RunBusyError",
    "RunRecord",
    "Version",
    "file_sha256",
    "registry_root",
    "tree_sha256",
]

STATE_DIR = ".tuneform"
"""tuneform's working state inside a checkout: registry, dataset cache, run directories, endpoints."""


def registry_root(repo_root: str | Path) -> Path:
    """``<repo_root>/.tuneform``: the one place that names tuneform's directory in a checkout."""
    return Path(repo_root) / STATE_DIR
