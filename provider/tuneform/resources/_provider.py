"""What every tuneform dynamic provider shares: backend settings, diffing, progress output.

Pulumi pickles provider instances (with dill) into the state file and unpickles them in a separate provider process
(``pulumi-resource-pulumi-python``). So a provider holds only ``BackendSettings`` (plain data) and builds its backend
inside each method; torch, transformers and google-cloud are imported by the backend, never here.
"""

from __future__ import annotations

import pickle
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pulumi.dynamic import DiffResult

# Re-exported: providers pickled into state before it moved name this module as the class's home.
from tuneform.backends.base import BackendSettings
from tuneform.processes import watch_engine

__all__ = ["BackendSettings", "build_backend", "diff_inputs", "progress_printer", "show_backend_errors",
           "unwrap_pickler_patch", "whole_numbers"]  # fmt: skip

if TYPE_CHECKING:
    from tuneform.backends.base import Backend


def unwrap_pickler_patch() -> None:
    """Undo the pickler wrapper that Pulumi's dynamic ``Resource`` leaves behind, before declaring another one.

    Pulumi 3.260's ``serialize_provider`` wraps ``pickle._Pickler._batch_setitems`` (to sort dict items) on every
    dynamic resource and never unwraps it, so each resource adds a stack frame to every later pickling: a program
    with a few hundred dynamic resources (about 80 specs) died with ``RecursionError``, and preview time grew with
    the square of the number of resources. Restoring the original method keeps the sorting (Pulumi wraps it again
    for its own call) without the growth.
    """
    method = pickle._Pickler._batch_setitems  # type: ignore[attr-defined]
    while getattr(method, "__qualname__", "") != "_Pickler._batch_setitems" and getattr(method, "__closure__", None):
        inner = [cell.cell_contents for cell in method.__closure__ if callable(cell.cell_contents)]
        if not inner:
            return
        method = inner[0]
    if getattr(method, "__qualname__", "") == "_Pickler._batch_setitems":
        pickle._Pickler._batch_setitems = method  # type: ignore[attr-defined]


class _ExpectedErrors:
    """Stands in for the ``traceback`` module inside Pulumi's dynamic provider server (see ``show_backend_errors``)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(traceback, name)

    @staticmethod
    def format_exc(*args: Any, **kwargs: Any) -> str:
        from tuneform.backends.base import BackendError

        error = sys.exc_info()[1]
        if isinstance(error, BackendError):
            return str(error)
        return traceback.format_exc(*args, **kwargs)


def show_backend_errors() -> None:
    """Let a backend's refusal (a failed job, a refused request) reach the user as its message, not a traceback.

    Pulumi's dynamic provider server (``python -m pulumi.dynamic``, so ``__main__`` in the provider process) answers
    every exception with ``traceback.format_exc()``. A ``BackendError`` is tuneform telling the user what went
    wrong and what to do; any other exception is a bug, and keeps its traceback. Called when this module is first
    imported, which in the provider process happens while Pulumi unpickles a tuneform provider.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "DynamicResourceProviderServicer", None) is None:
        return
    if hasattr(main, "traceback") and not isinstance(getattr(main, "traceback"), _ExpectedErrors):  # noqa: B009
        setattr(main, "traceback", _ExpectedErrors())  # noqa: B010 - a module attribute mypy cannot know


def build_backend(settings: BackendSettings) -> Backend:
    """Build the target's backend; called inside provider methods, in the provider process."""
    if settings.target == "local":
        from tuneform.backends.local import LocalBackend

        return LocalBackend.from_settings(settings)
    if settings.target == "vertex":
        from tuneform.backends.vertex import VertexBackend

        return VertexBackend.from_settings(settings)
    raise ValueError(f"unknown target {settings.target!r}: expected 'local' or 'vertex'")


def progress_printer(resource: str) -> Callable[[str], None]:
    """A progress callback that prints timestamped lines to stderr, which the Pulumi CLI passes through."""
    started = time.monotonic()

    def emit(line: str) -> None:
        elapsed = int(time.monotonic() - started)
        print(f"[tuneform {resource} +{elapsed // 60}m{elapsed % 60:02d}s] {line}", file=sys.stderr, flush=True)

    return emit


def whole_numbers(props: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``props`` with the counts among ``keys`` as ints: Pulumi carries every number as a float (a protobuf
    ``Struct``), and "32.0 examples" or ``"batchSize": 8.0`` in a version's record is not what was declared."""
    return {
        key: int(value) if key in keys and isinstance(value, float) and value.is_integer() else value
        for key, value in props.items()
    }


def diff_inputs(
    olds: dict[str, Any],
    news: dict[str, Any],
    *,
    replace_on: tuple[str, ...],
    update_on: tuple[str, ...],
    force_update: bool = False,
) -> DiffResult:
    """Compare declared inputs only (never ``__provider`` or computed outputs).

    Keys in ``replace_on`` are training inputs: a change means a new run, hence a replacement whose ``replaces``
    list names exactly what changed (``pulumi preview`` shows it). Keys in ``update_on`` change in place.
    """
    replaces = [key for key in replace_on if olds.get(key) != news.get(key)]
    updates = [key for key in update_on if olds.get(key) != news.get(key)]
    changed = bool(replaces or updates or force_update)
    # Create the replacement before deleting the old one: the last good version keeps serving until the new one exists.
    return DiffResult(changes=changed, replaces=replaces, delete_before_replace=False)


show_backend_errors()
# In the provider process: when `pulumi up` is killed, stop the training runs and starting servers it waits on, and
# leave (tuneform.processes). Anywhere else (the program, tests) there is no engine to watch and this does nothing.
watch_engine()
