"""The trainer's own error: a run that cannot start or a file it cannot read, with the message for the user.

Training sits below the backends (``tuneform.backends.local`` runs it), so it does not borrow their error type; the
local backend reports a ``TrainingError`` from a child run through its log, and turns one raised in-process into its
own ``BackendError``.
"""

from __future__ import annotations

__all__ = ["TrainingError"]


class TrainingError(Exception):
    """A training run refused its inputs or failed; the message says what and how to fix it."""
