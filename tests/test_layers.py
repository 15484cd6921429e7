"""The layers of tuneform stay in order: no package imports one above it, and no two packages import each other.

The layers follow the way of the data (scripts/import_graph.py, drawn in the README's "How it is built"). An upward
import is how a "settings" class ends up beside the providers that the backends below them need, or a trainer
borrows the backends' error; this test names the file that does it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import import_graph  # noqa: E402 (a script beside the Makefile's, not a package)


def test_every_package_is_in_a_layer() -> None:
    packages = {path.name.removesuffix(".py") for path in import_graph.PACKAGE.iterdir()}
    packages -= {"__init__", "__pycache__", "py.typed"}
    placed = set().union(*(members for _, members in import_graph.LAYERS))
    assert packages <= placed, f"not in a layer: {sorted(packages - placed)}"


def test_no_upward_import_and_no_cycle() -> None:
    assert import_graph.problems(import_graph.edges()) == []


def test_the_check_finds_an_upward_edge() -> None:
    """The rule itself bites: a trainer importing the backends' error is reported with the file."""
    graph = {("training", "backends"): ["tuneform/training/data.py"], ("backends", "training"): ["x.py"]}
    found = import_graph.problems(graph)
    assert found[0].startswith("training (local machinery) imports backends (targets), a higher layer, in")
    assert "import cycle between backends and training" in found
