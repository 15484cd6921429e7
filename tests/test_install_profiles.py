"""Install profiles: the core install (`pip install tuneform`, requirements-core.lock) pulls no torch.

The core profile is what CI's review job installs: validate, plan, the pull-request review, `pulumi preview` with the
policy pack, and the Vertex AI target. The local target's training and serving stack is the `local` extra. These
tests prove it three ways: the dependency closure of the core requirements, resolved from the real metadata of the
packages installed here (which `make bootstrap` pinned to requirements.lock), holds no torch and equals what
requirements-core.lock pins; the two locks agree on every version; and the CLI's validate and plan paths run with
torch and the rest of the local stack made unimportable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from pulumi_cli import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
LOCAL_STACK = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "starlette", "uvicorn")
HEAVY = re.compile(r"^(torch|triton|nvidia-.*|transformers|peft|trl|accelerate|datasets)$")


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _pins(lock: str) -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / lock).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if match:
            pins[_name(match[1])] = match[2]
    return pins


def closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements pull in, from the installed packages' own metadata (no network)."""
    seen: set[str] = set()
    todo = [Requirement(text) for text in requirements]
    while todo:
        requirement = todo.pop()
        name = _name(requirement.name)
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        requires = metadata.distribution(name).requires or []
        for text in requires:
            child = Requirement(text)
            wanted = [""] + sorted(requirement.extras)
            if child.marker is None or any(child.marker.evaluate({"extra": extra}) for extra in wanted):
                todo.append(child)
    return {key.split("[", 1)[0] for key in seen}


def test_the_core_requirements_pull_no_torch() -> None:
    core = closure(PYPROJECT["project"]["dependencies"])
    heavy = sorted(name for name in core if HEAVY.match(name))
    assert heavy == [], f"the core install would pull {heavy}"
    # The local stack is the `local` extra, and it does pull torch: the split is real.
    full = closure([*PYPROJECT["project"]["dependencies"], *PYPROJECT["project"]["optional-dependencies"]["local"]])
    assert {"torch", "transformers", "peft", "trl"} <= full
    assert {_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["local"]} == set(
        LOCAL_STACK
    )


def test_requirements_core_lock_is_the_core_closure_at_the_full_locks_versions() -> None:
    core_lock, full_lock = _pins("requirements-core.lock"), _pins("requirements.lock")
    core = closure(PYPROJECT["project"]["dependencies"])
    assert set(core_lock) == core, "requirements-core.lock is stale: run `make lock`"
    assert not [name for name in core_lock if HEAVY.match(name)]
    assert {name: full_lock.get(name) for name in core_lock} == core_lock
    for text in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(text)
        assert core_lock[_name(requirement.name)] == str(requirement.specifier).removeprefix("=="), text


def test_validate_and_plan_run_without_the_local_stack(tmp_path: Path) -> None:
    """The CLI paths CI runs, with torch, transformers, PEFT, TRL, accelerate, datasets and the server unimportable."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "tuning_specs", repo / "tuning_specs")
    shutil.copy(REPO_ROOT / "Pulumi.yaml", repo / "Pulumi.yaml")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    guard = f"import sys\nfor name in {LOCAL_STACK!r}: sys.modules[name] = None\n"
    runs = {
        "validate": "from tuneform.cli import main; sys.exit(main(['validate']))",
        "plan": "from tuneform.cli import main; sys.exit(main(['plan', '--target', 'local']))",
        "plan --base": "from tuneform.cli import main; sys.exit(main(['plan', '--base', 'HEAD', '--format', 'json']))",
        "program": "import tuneform.program, tuneform.review.comment, tuneform.review.state",
    }
    outputs = {}
    for what, code in runs.items():
        done = subprocess.run(
            [sys.executable, "-c", guard + code],
            cwd=repo,
            env={**os.environ, "TUNEFORM_CACHE": str(tmp_path / "cache"), "TUNEFORM_STACKS": ""},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"{what}:\n{done.stderr}"
        assert "Traceback" not in done.stderr, what
        outputs[what] = done.stdout
    # The local target still counts exactly: its tokenizer needs neither torch nor transformers.
    assert "23,234 (exact, SmolLM2-135M-Instruct.Q4_1 tokenizer)" in outputs["plan"]
    changes = json.loads(outputs["plan --base"])["changes"]
    assert {(c["target"], c["token_method"].split(":")[0]) for c in changes} == {
        ("local", "exact"),
        ("vertex", "estimate"),
    }
