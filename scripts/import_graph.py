#!/usr/bin/env python3
"""Draw tuneform's import graph between its layers, and check it: no cycle, no edge from a lower layer to a higher one.

    python3 scripts/import_graph.py            # a mermaid graph of the packages, for the README
    python3 scripts/import_graph.py --check    # exit 1 listing every upward edge and cycle

Imports inside functions count: they are dependencies all the same (tuneform defers heavy imports, not layering).
``tests/test_layers.py`` runs the check on every ``make test``.
"""

from __future__ import annotations

import argparse
import ast
import collections
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "provider" / "tuneform"

LAYERS: list[tuple[str, set[str]]] = [
    ("facts", {"problems", "catalogue", "workspace", "processes"}),
    ("datasets", {"datasets"}),
    ("spec", {"spec"}),
    ("preparation", {"plan", "prepare"}),
    ("local machinery", {"training", "registry", "serving"}),
    ("targets", {"backends"}),
    ("Pulumi resources", {"resources"}),
    ("entry points", {"program", "review", "cli", "smoke", "recover"}),
]
"""Bottom to top: a package may import its own layer and the ones below, never one above."""


def unit(path: Path) -> str:
    """The top-level part of tuneform a file belongs to: ``spec`` for ``spec/loader.py``, ``cli`` for ``cli.py``."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0].removesuffix(".py")


def edges(root: Path = PACKAGE) -> dict[tuple[str, str], list[str]]:
    """(importer, imported) -> the files where the import is written."""
    found: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        source = unit(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for module in modules:
                parts = module.split(".")
                if parts[0] == "tuneform" and len(parts) > 1 and parts[1] != source:
                    found[(source, parts[1])].append(str(path.relative_to(root.parent)))
                    break
    return dict(found)


def layer_of(name: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        if name in members:
            return index
    raise KeyError(f"{name} is in no layer of scripts/import_graph.py: add it to LAYERS")


def problems(graph: dict[tuple[str, str], list[str]]) -> list[str]:
    """Every upward edge and every cycle, as lines a person can act on."""
    found = []
    for (source, target), where in sorted(graph.items()):
        if layer_of(target) > layer_of(source):
            found.append(
                f"{source} ({LAYERS[layer_of(source)][0]}) imports {target} ({LAYERS[layer_of(target)][0]}), a "
                f"higher layer, in {', '.join(sorted(set(where)))}"
            )
    succ: dict[str, set[str]] = collections.defaultdict(set)
    for source, target in graph:
        succ[source].add(target)

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            node = stack.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(succ[node])
        return False

    cycles = sorted({tuple(sorted((a, b))) for (a, b) in graph if reaches(b, a)})
    found += [f"import cycle between {a} and {b}" for a, b in cycles]
    return found


def mermaid(graph: dict[tuple[str, str], list[str]]) -> str:
    lines = ["flowchart BT"]
    for index, (title, members) in enumerate(LAYERS):
        lines.append(f'  subgraph L{index}["{title}"]')
        lines += [f"    {member}" for member in sorted(members)]
        lines.append("  end")
    lines += [f"  {source} --> {target}" for source, target in sorted(graph)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="list upward edges and cycles; exit 1 if any")
    args = parser.parse_args()
    graph = edges()
    if args.check:
        found = problems(graph)
        print("\n".join(found) or "ok: no cycle, no upward edge")
        return 1 if found else 0
    print(mermaid(graph))
    return 0


if __name__ == "__main__":
    sys.exit(main())
