"""Hostile input (issue 10, items 6 and 7): each input is refused with its exact message, in a child process whose own
peak memory stays within the bound that ``docs/spec.md`` ("Hostile input") states.

Each check runs in a fresh Python that reports its own ``VmHWM`` (not ``ru_maxrss``, which survives ``exec`` and
would report the pytest worker's peak). Before the bounds, the alias bomb died with MemoryError at 6 GB after 72 s,
the 50 MB spec took 250 s and 4.5 GB, and libyaml's composer crashed the process on 100,000 nested ``[``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tuneform.datasets.check import MAX_LINE_BYTES
from tuneform.spec.source import MAX_ALIAS_NODES, MAX_DEPTH, MAX_NODES, MAX_SPEC_BYTES

HEAD = "apiVersion: tuneform/v1\nkind: TunedModel\nmetadata: {name: hostile}\nspec:\n"

_CHILD = r"""
import json, re, sys
from pathlib import Path
kind, path = sys.argv[1], Path(sys.argv[2])
if kind == "spec":
    from tuneform.spec import SpecErrors, load_specs
    try:
        load_specs([path], repo_root=Path.cwd())
        lines = []
    except SpecErrors as errors:
        lines = [str(problem) for problem in errors.problems]
else:
    from tuneform.datasets import DatasetLimits, check_dataset
    limits = DatasetLimits(max_tokens_per_example=131072)
    summary, problems = check_dataset(path, format="gemini", limits=limits, display_path=path.name)
    lines = [str(problem) for problem in problems] + [f"examples: {summary.examples}"]
peak = int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))
print(json.dumps({"lines": lines, "peak_mib": peak / 1024}))
"""


def refuse(kind: str, path: Path) -> dict[str, Any]:
    """Check ``path`` (a spec or a dataset) in a child run from its directory; its problems and peak memory."""
    command = [sys.executable, "-c", _CHILD, kind, path.name]
    out = subprocess.run(command, cwd=path.parent, capture_output=True, text=True, timeout=300, check=False)
    # A crash (libyaml's composer on deep nesting: -11, SIGSEGV) or a MemoryError fails here.
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_alias_bomb_is_refused_at_the_alias_that_crosses_the_budget(tmp_path: Path) -> None:
    # Nine anchors of nine aliases each: about 600 bytes that would expand to 9^9 nodes.
    lines = ["  x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text(HEAD + "\n".join(lines) + "\n")
    result = refuse("spec", path)
    assert result["lines"] == [
        f"bomb.yaml:9:12: yaml: expected YAML whose aliases add at most {MAX_ALIAS_NODES:,} nodes, got more at this "
        "alias (*a3, 7,381 nodes): aliases of aliases multiply. Write the values out, or alias only small blocks."
    ]
    assert result["peak_mib"] < 64


def test_merge_key_bomb_is_refused_too(tmp_path: Path) -> None:
    # `<<: [*m, *m, ...]` copies the merged pairs: the same growth through merge keys.
    lines = ["  m0: &m0 {k: v}"] + [f"  m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 9)}]}}" for i in range(1, 9)]
    path = tmp_path / "merge.yaml"
    path.write_text(HEAD + "\n".join(lines) + "\n")
    result = refuse("spec", path)
    assert len(result["lines"]) == 1
    assert result["lines"][0].startswith("merge.yaml:9:27: yaml: expected YAML whose aliases add at most 10,000 nodes")
    assert result["peak_mib"] < 64


def test_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text(HEAD + "  baseModel: smollm2-135m-instruct\n  labels: &l {a: *l}\n")
    assert refuse("spec", path)["lines"] == [
        "loop.yaml:6:18: yaml: expected an alias outside its own anchor, got *l inside &l: the value would contain "
        "itself. Remove the alias."
    ]


def test_deep_nesting_is_refused_before_libyaml_recurses(tmp_path: Path) -> None:
    # 200 KB: libyaml's composer recursed in C and the process died of SIGSEGV.
    path = tmp_path / "deep.yaml"
    path.write_text(HEAD + "  labels: " + "[" * 100_000 + "]" * 100_000 + "\n")
    result = refuse("spec", path)
    assert result["lines"] == [
        f"deep.yaml:5:{11 + MAX_DEPTH - 2}: yaml: expected YAML nested at most {MAX_DEPTH} levels deep, got deeper "
        "here. Flatten it: a spec nests a few levels only."
    ]
    assert result["peak_mib"] < 64


def test_a_50_mb_spec_of_unknown_keys_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "w") as handle:
        handle.write(HEAD)
        handle.writelines(f"  k{i}: {i}\n" for i in range(2_600_000))
    size = path.stat().st_size
    assert size > 40_000_000
    result = refuse("spec", path)
    assert result["lines"] == [
        f"huge.yaml:1:1: document: expected a spec file of at most 1 MiB, got {size / (1 << 20):.1f} MiB ({size} "
        "bytes). Split it into smaller spec files (a spec is a few kilobytes), or remove what it does not need."
    ]
    assert result["peak_mib"] < 64


def test_a_spec_of_49000_unknown_keys_lists_100_problems_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    keys = 49_000  # 98,000 YAML nodes and 600 KB: just under both caps
    path.write_text(HEAD + "  baseModel: smollm2-135m-instruct\n" + "".join(f"  k{i:05d}: 0\n" for i in range(keys)))
    result = refuse("spec", path)
    lines = result["lines"]
    assert len(lines) == 101
    assert lines[0].startswith("keys.yaml:4:1: spec.dataset: expected a required field, got none.")
    assert lines[1].startswith("keys.yaml:6:3: spec.k00000: expected a field of spec (")
    # The problems of the file: the missing dataset and every unknown key; 100 listed.
    assert lines[-1] == f"keys.yaml: ... and {keys + 1 - 100} more problems"
    assert result["peak_mib"] < 128


def test_a_spec_of_half_a_million_values_is_refused_at_the_node_cap(tmp_path: Path) -> None:
    path = tmp_path / "flat.yaml"
    text = HEAD + "  labels: ["
    text += ",".join(["a"] * ((MAX_SPEC_BYTES - len(text) - 2) // 2)) + "]\n"
    assert len(text) <= MAX_SPEC_BYTES
    path.write_text(text)
    result = refuse("spec", path)
    # Thirteen nodes come before the list's items (the document's mappings, keys and values); each item is 2 columns.
    assert result["lines"] == [
        f"flat.yaml:5:{12 + 2 * (MAX_NODES - 13)}: yaml: expected a spec file of at most {MAX_NODES:,} YAML nodes "
        "(keys, values, lists, mappings; aliases expanded), got more by here. A spec has a few hundred: remove what "
        "it does not need."
    ]
    assert result["peak_mib"] < 64


@pytest.mark.heavy
def test_a_200_mb_single_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "line.jsonl"
    head = b'{"contents": [{"role": "user", "parts": [{"text": "'
    tail = b'"}]}, {"role": "model", "parts": [{"text": "ok"}]}]}\n'
    short = head + b"hi" + tail
    with open(path, "wb") as handle:
        handle.write(head)
        for _ in range(200):
            handle.write(b"lorem ipsum " * (1 << 16) + b"dolor sit " * 26214 + b"amet")
        handle.write(tail)
        handle.write(short)
    first = path.stat().st_size - len(short)
    result = refuse("dataset", path)
    assert result["lines"] == [
        f"line.jsonl:1:1: expected a line (one example) of at most {MAX_LINE_BYTES >> 20} MiB, got "
        f"{first / (1 << 20):.1f} MiB ({first} bytes). Keep each example under it; put files in Cloud Storage and "
        "reference them with fileData.",
        "examples: 1",  # the line after it is still checked
    ]
    assert result["peak_mib"] < 64
