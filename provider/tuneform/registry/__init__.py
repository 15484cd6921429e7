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
from tuneform.workspace import state_root

__all__ = [
    "DEFAULT_GC_GRACE_S",
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


def registry_root(repo_root: str | Path) -> Path:
    """The registry of a checkout: its ``.tuneform`` directory (``tuneform.workspace``)."""
    return state_root(repo_root)
