"""The local model registry: a content-addressed object store plus numbered model versions.

``Registry(root)`` is the entry point; ``registry.store`` is its ``ObjectStore``. Default root: ``<repo>/.tuneform``
(git-ignored), chosen by the caller.
"""

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
    "DatasetRecord",
    "ObjectNotFoundError",
    "ObjectStore",
    "Registry",
    "RegistryError",
    "RunBusyError",
    "RunRecord",
    "Version",
    "file_sha256",
    "tree_sha256",
]
