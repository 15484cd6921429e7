"""The tuning-spec language: YAML documents -> validated, per-target ``ResolvedSpec`` objects.

``load_specs`` reads and checks files (JSON Schema first, then the catalogue-driven cross-field rules),
``resolve`` picks one target, ``find_spec_files`` lists a repository's specs (``tuneform.plan`` turns them into what
``tuneform plan`` and ``pulumi preview`` show).
"""

from tuneform.spec.errors import Problem, SpecErrors
from tuneform.spec.loader import LoadedDocument, find_repo_root, find_spec_files, load_specs, resolve

__all__ = [
    "LoadedDocument",
    "Problem",
    "SpecErrors",
    "find_repo_root",
    "find_spec_files",
    "load_specs",
    "resolve",
]
