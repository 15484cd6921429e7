"""Benchmark: streaming dataset check + hashing against ``sha256sum`` of the same file, and its peak memory.

Run: ``.venv/bin/python bench/bench_dataset.py`` (``--sizes 100`` for a quick run). It generates deterministic
Gemini-format JSONL files of about 100 MB and 1 GB under ``bench/data/`` (git-ignored; kept for later runs), then,
per file, in one run: ``sha256sum`` (best of two), ``check_dataset`` without conversion output and with it, each
check in its own subprocess that reports its peak RSS (``VmHWM``). Goals (issue 2, item 9): the check costs at most
2x the time of ``sha256sum``; peak RSS under 200 MB and flat from 100 MB to 1 GB.

Two styles of the same examples are measured, because the check's cost depends on it:

- ``dumps``: what ``json.dumps(example)`` writes (spaces after separators, ``\\u`` escapes, a
  ``systemInstruction.role``), so every line is re-serialised into the canonical form;
- ``canonical``: compact, sorted keys, UTF-8, no ``systemInstruction.role`` (what tuneform's conversion writes),
  so lines are verified as canonical and copied through.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
SEED = 20260901

_CHILD = r"""
import json, sys, time
from tuneform.datasets import DatasetLimits, check_dataset
path, convert = sys.argv[1], sys.argv[2] or None
limits = DatasetLimits(max_tokens_per_example=131072, modalities=frozenset({"text", "image"}))
start, cpu = time.perf_counter(), time.process_time()
summary, problems = check_dataset(path, format="gemini", limits=limits, convert_to=convert)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
peak_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_kb": peak_kb, "problems": len(problems),
                  "examples": summary.examples, "sha256": summary.sha256, "tokens": summary.tokens_total}))
"""


def _words(rng: random.Random) -> list[str]:
    common = (
        "the of and to a in is you that it he was for on are as with his they at be this have from or one had by "
        "word but not what all were we when your can said there use an each which she do how their if will up other "
        "about out many then them these so some her would make like him into time has look two more write go see "
        "number no way could people my than first water been call who oil its now find long down day did get come "
        "made may part order invoice refund account password billing shipping ticket customer support urgent"
    ).split()
    rare = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(5, 12))) for _ in range(2000)]
    other = ["café", "naïve", "Zürich", "日本語", "данные", "🙂", "2026-09-01", "#48213", "v1.2.3", "x=y+1;"]
    return common * 8 + rare + other


def _examples(rng: random.Random, style: str):
    words = _words(rng)

    def text(low: int, high: int) -> str:
        return " ".join(rng.choices(words, k=rng.randint(low, high))).capitalize() + "."

    index = 0
    while True:
        index += 1
        example: dict = {"contents": []}
        if rng.random() < 0.7:
            example["systemInstruction"] = {"parts": [{"text": text(15, 60)}]}
            if style == "dumps":
                example["systemInstruction"]["role"] = "system"
        for turn in range(rng.choice((1, 1, 1, 2, 3))):
            user: list[dict[str, Any]] = [{"text": f"Ticket {index}-{turn}: " + text(30, 700)}]
            if rng.random() < 0.05:
                user.append({"fileData": {"mimeType": "image/jpeg", "fileUri": f"gs://bench-bucket/img/{index}.jpg"}})
            example["contents"].append({"role": "user", "parts": user})
            example["contents"].append({"role": "model", "parts": [{"text": text(5, 300)}]})
        if style == "dumps":
            yield json.dumps(example) + "\n"
        else:
            yield json.dumps(example, ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n"


def generate(path: Path, size: int, style: str) -> None:
    """Write ``path`` with about ``size`` bytes of examples, unless a previous run already did."""
    marker = path.with_suffix(".done")
    if path.exists() and marker.exists() and marker.read_text() == str(size):
        return
    print(f"generating {path.relative_to(ROOT)} ({size >> 20} MiB)...", file=sys.stderr, flush=True)
    written = 0
    with open(path, "w", encoding="utf-8") as handle:
        for line in _examples(random.Random(SEED), style):
            handle.write(line)
            written += len(line.encode())
            if written >= size:
                break
    marker.write_text(str(size))


def _sha256sum(path: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``sha256sum path``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(path: Path, repeat: int) -> dict:
    """Time sha256sum and the two checks on ``path``, interleaved, best of ``repeat``; returns the figures.

    The machine this runs on may be shared, so each figure is the best of its rounds and CPU seconds are
    reported beside wall seconds (the ratio of CPU seconds moves less when other work competes for the cores).
    """
    subprocess.run(["cat", str(path)], check=True, stdout=subprocess.DEVNULL)  # warm the page cache for all
    converted = str(path.with_suffix(".converted.jsonl"))
    rounds: dict[str, list[dict]] = {"sha256sum": [], "check": [], "check+convert": []}
    for _ in range(repeat):
        wall, cpu = _sha256sum(path)
        rounds["sha256sum"].append({"seconds": wall, "cpu": cpu})
        for label, convert in (("check", ""), ("check+convert", converted)):
            out = subprocess.run([sys.executable, "-c", _CHILD, str(path), convert], check=True, capture_output=True)
            rounds[label].append(json.loads(out.stdout))
            Path(converted).unlink(missing_ok=True)
    sha = min(r["seconds"] for r in rounds["sha256sum"])
    sha_cpu = min(r["cpu"] for r in rounds["sha256sum"])
    figures: dict = {"file": str(path.relative_to(ROOT)), "bytes": path.stat().st_size}
    figures["sha256sum"] = {"seconds": sha, "cpu": sha_cpu}
    for label in ("check", "check+convert"):
        best = min(rounds[label], key=lambda r: r["seconds"])
        cpu = min(r["cpu"] for r in rounds[label])
        peak = max(r["peak_kb"] for r in rounds[label])
        figures[label] = {
            **best,
            "cpu": cpu,
            "peak_kb": peak,
            "ratio": best["seconds"] / sha,
            "cpu_ratio": cpu / sha_cpu,
        }
    return figures


def main() -> None:
    """Generate the files, measure, and print the figures (a table and one JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="file sizes in MB, comma-separated (default 100,1000)")
    parser.add_argument("--styles", default="dumps,canonical", help="line styles to measure (default dumps,canonical)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds per file; each figure is the best (default 2)")
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    results = []
    for style in args.styles.split(","):
        for megabytes in (int(size) for size in args.sizes.split(",")):
            path = DATA / f"gemini-{megabytes}mb-{style}.jsonl"
            generate(path, megabytes * 1_000_000, style)
            results.append(measure(path, args.repeat))
    header = ("file", "MB", "sha256sum s", "check s", "ratio", "cpu ratio", "+convert s", "ratio", "peak RSS MB")
    print("{:38} {:>5} {:>11} {:>8} {:>6} {:>9} {:>10} {:>6} {:>11}".format(*header))
    for row in results:
        sha, check, convert = row["sha256sum"], row["check"], row["check+convert"]
        peak = max(check["peak_kb"], convert["peak_kb"]) / 1024
        print(
            f"{row['file']:38} {row['bytes'] / 1e6:5.0f} {sha['seconds']:11.2f} {check['seconds']:8.2f} "
            f"{check['ratio']:5.2f}x {check['cpu_ratio']:8.2f}x {convert['seconds']:10.2f} {convert['ratio']:5.2f}x "
            f"{peak:11.1f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
