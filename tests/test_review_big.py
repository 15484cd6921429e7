"""A 200 MB dataset change: ``tuneform plan --base`` answers in seconds and its comment stays under the limit.

The base commit holds a ~200 MB training set (300,000 examples); the working tree removes 10,000 of them, changes
the answer of 10,000 others and appends 20,000. The plan must report exactly those counts, streaming both versions
(the base one from git) in bounded memory. The model tunes on the local target, so every token of the new version
is counted exactly with SmolLM2's tokenizer (in batches): most of the time goes there.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from pulumi_cli import REPO_ROOT
from tuneform.review import COMMENT_LIMIT

pytestmark = [pytest.mark.heavy, pytest.mark.timeout(300)]

PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
EXAMPLES = 300_000
SPEC = """\
apiVersion: tuneform/v1
kind: TunedModel
metadata:
  name: big-router
spec:
  baseModel: smollm2-135m-instruct
  hyperparameters: {epochs: 1}
  dataset:
    train: datasets/big/train.jsonl
"""
# About 600 bytes of prompt per example, so that 300,000 examples make ~200 MB.
FILLER = " ".join(["the parcel arrived late and the invoice shows a double charge for shipping"] * 8)


def line(index: int, answer: str = "billing") -> bytes:
    example = {
        "contents": [
            {"role": "user", "parts": [{"text": f"Ticket {index}: {FILLER}"}]},
            {"role": "model", "parts": [{"text": answer}]},
        ]
    }
    return json.dumps(example).encode() + b"\n"


def git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    subprocess.run(["git", "-C", str(repo), *args], capture_output=True, env=env, check=True)


def test_200_mb_dataset_change_answers_in_seconds_within_the_limit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    data = repo / "tuning_specs" / "datasets" / "big" / "train.jsonl"
    data.parent.mkdir(parents=True)
    (repo / "Pulumi.yaml").write_text("name: big\n")
    (repo / "tuning_specs" / "big-router.yaml").write_text(SPEC)
    with open(data, "wb") as handle:
        handle.writelines(line(i) for i in range(EXAMPLES))
    size = data.stat().st_size
    assert size > 190_000_000
    git(repo, "init", "-q")
    # Stored without compression: the test is about the plan's speed, not zlib's.
    git(repo, "-c", "core.compression=0", "-c", "core.looseCompression=0", "add", "-A")
    git(repo, "commit", "-qm", "base")
    with open(data, "wb") as handle:
        for i in range(EXAMPLES):
            if i % 30 == 0:
                continue
            handle.write(line(i, "escalate") if i % 30 == 15 else line(i))
        handle.writelines(line(i) for i in range(EXAMPLES, EXAMPLES + 20_000))

    # The CLI in a child Python that reports its own peak memory (git's processes are not counted: a loose object
    # is inflated whole by `git cat-file`; objects in packs are streamed).
    # VmHWM, not getrusage's ru_maxrss: the latter survives exec, so a child of a big pytest worker would report
    # the worker's peak instead of its own.
    measure = (
        "import re, sys; from tuneform.cli import main; status = main(sys.argv[1:]); "
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
        "print(f'peak-rss-kb={hwm}', file=sys.stderr); "
        "sys.exit(status)"
    )
    started = time.monotonic()
    result = subprocess.run(
        [str(PYTHON), "-c", measure, "plan", "--base", "HEAD", "--format", "markdown", "--target", "local"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    peak_mb = int(result.stderr.rsplit("peak-rss-kb=", 1)[1]) / 1024 if "peak-rss-kb=" in result.stderr else 0.0
    print(f"\nplan --base on a {size / 1e6:.0f} MB dataset change: {elapsed:.1f} s, peak RSS {peak_mb:.0f} MB")
    assert result.returncode == 0, result.stderr
    markdown = result.stdout
    assert len(markdown) < COMMENT_LIMIT
    assert "+20,000 added, -10,000 removed, 10,000 changed; 300,000 -> 310,000 examples" in markdown
    assert "| `big-router` | re-tuned |" in markdown
    # On 2 shared CPU cores: measured 27-34 s with exact counts (7-10 s when tokens were only estimated); the bound
    # leaves room for a busy machine.
    assert elapsed < 120
    assert 0 < peak_mb < 256
