"""Times `pulumi preview` of a tuneform project against `pulumi preview` of N trivial dynamic resources.

The baseline isolates what any Python program with dynamic resources pays (engine start, language host, program
import, one provider process, N Check calls); the ratio is what tuneform adds on top. Goal from issue 2: at most 1.5x
for 100 specs against 100 trivial resources. Both sides run on a fresh stack in a temporary file backend, with the
engine `make bootstrap` built, and report the median of several runs (the machine is shared: medians, not means).

    .venv/bin/python bench/bench_preview.py                       # baseline only
    .venv/bin/python bench/bench_preview.py --project DIR --config tuneform:target=local
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from pulumi_cli import PulumiCLI, engine_status, write_program  # noqa: E402 (the harness lives with the tests)

PROVIDER = """
from pulumi.dynamic import CreateResult, ResourceProvider


class NoopProvider(ResourceProvider):
    def create(self, props):
        return CreateResult(id_=props["key"], outs=props)
"""

PROGRAM = """
import pulumi
from pulumi.dynamic import Resource

from noopprovider import NoopProvider


class Noop(Resource, module="bench", name="Noop"):
    def __init__(self, name, key):
        super().__init__(NoopProvider(), name, {"key": key})


for i in range(int(pulumi.Config().require("count"))):
    Noop(f"noop-{i:03d}", f"key-{i}")
"""

_NOT_COPIED = (".venv", ".pulumi", ".git", ".tuneform", ".cache", ".state", "__pycache__")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _time_previews(cli: PulumiCLI, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        started = time.monotonic()
        cli.preview()
        times.append(time.monotonic() - started)
        _log(f"  preview {i + 1}/{repeats}: {times[-1]:.2f}s")
    return times


def time_baseline(count: int = 100, repeats: int = 5, workdir: Path | None = None) -> list[float]:
    """Times `pulumi preview` of a program declaring ``count`` trivial dynamic resources.

    Args:
        count: Number of resources.
        repeats: Number of timed previews (after one untimed warm-up that fills OS and Python caches).
        workdir: Where to put the project and state; a temporary directory by default.

    Returns:
        Wall-clock seconds of each timed preview.
    """
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        project = write_program(Path(tmp) / "baseline", "baseline", PROGRAM, {"noopprovider.py": PROVIDER})
        cli = PulumiCLI(project, Path(tmp) / "backend")
        cli.stack_init("bench", {"baseline:count": count})
        _log(f"baseline: {count} trivial dynamic resources")
        cli.preview()
        return _time_previews(cli, repeats)


def time_project(
    project_dir: Path,
    stack: str = "local",
    config: Mapping[str, object] | None = None,
    repeats: int = 5,
    workdir: Path | None = None,
) -> list[float]:
    """Times `pulumi preview` of a copy of a Pulumi project on a fresh stack.

    The project is copied (without state, caches or its virtualenv) so stack creation cannot modify it; the copy uses
    the project's ``.venv`` if it has one, else this checkout's.

    Args:
        project_dir: Directory holding ``Pulumi.yaml`` (e.g. a generated 100-spec tuneform project).
        stack: Stack name; its ``Pulumi.<stack>.yaml`` in the project's stack config dir applies.
        config: Extra stack config (namespaced keys), set on top of that file.
        repeats: Number of timed previews, after one untimed warm-up.
        workdir: Where to put the copy and state; a temporary directory by default.

    Returns:
        Wall-clock seconds of each timed preview.
    """
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        copy = Path(tmp) / "project"
        shutil.copytree(project_dir, copy, symlinks=True, ignore=shutil.ignore_patterns(*_NOT_COPIED))
        venv = project_dir / ".venv" if (project_dir / ".venv").exists() else REPO_ROOT / ".venv"
        (copy / ".venv").symlink_to(venv.resolve(), target_is_directory=True)
        cli = PulumiCLI(copy, Path(tmp) / "backend")
        cli.stack_init(stack, config or {})
        _log(f"project: {project_dir} (stack {stack})")
        cli.preview()
        return _time_previews(cli, repeats)


SPEC_TEMPLATE = """\
apiVersion: tuneform/v1
kind: TunedModel
metadata:
  name: {name}
  labels: {{team: bench}}
spec:
  baseModel: smollm2-135m-instruct
  mode: adapter
  adapterSize: 4
  hyperparameters: {{epochs: 2, learningRate: 0.0002}}
  dataset:
    format: gemini
    train: datasets/{name}/train.jsonl
    validation: datasets/{name}/validation.jsonl
  endpoint: {{deploy: true}}
"""


def generate_spec_project(directory: Path, count: int) -> Path:
    """Writes a tuneform project with ``count`` specs, each with its own slice of the ticket-router example data.

    Args:
        directory: Where to create the project.
        count: Number of tuned-model specs.

    Returns:
        The project directory.
    """
    examples = (REPO_ROOT / "tuning_specs" / "datasets" / "ticket-router" / "train.jsonl").read_text().splitlines()
    specs = directory / "tuning_specs"
    for index in range(count):
        name = f"model-{index:03d}"
        data = specs / "datasets" / name
        data.mkdir(parents=True)
        # Distinct slices: each spec has its own dataset hash, as in a real repository.
        start = (index * 7) % (len(examples) - 40)
        (data / "train.jsonl").write_text("\n".join(examples[start : start + 30]) + "\n")
        (data / "validation.jsonl").write_text("\n".join(examples[start + 30 : start + 36]) + "\n")
        (specs / f"{name}.yaml").write_text(SPEC_TEMPLATE.format(name=name))
    shutil.copy(REPO_ROOT / "Pulumi.yaml", directory / "Pulumi.yaml")
    shutil.copy(REPO_ROOT / "__main__.py", directory / "__main__.py")
    return directory


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints the medians and their ratio.

    Args:
        argv: Command-line arguments (see ``--help``).

    Returns:
        Process exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="trivial resources in the baseline (default 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed previews per side (default 5)")
    parser.add_argument("--project", type=Path, help="Pulumi project to compare against the baseline")
    parser.add_argument("--specs", type=int, help="generate a tuneform project with this many specs and compare it")
    parser.add_argument("--stack", default="local", help="stack of --project (default local)")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="extra stack config")
    args = parser.parse_args(argv)

    ready, why = engine_status()
    if not ready:
        print(f"bench_preview: the Pulumi engine is not bootstrapped ({why}); run `make bootstrap`", file=sys.stderr)
        return 1

    baseline = statistics.median(time_baseline(args.count, args.repeats))
    print(f"pulumi preview, {args.count} trivial dynamic resources: {baseline:.2f}s (median of {args.repeats})")
    if args.project is None and args.specs is None:
        return 0
    config = dict(item.split("=", 1) for item in args.config)
    with tempfile.TemporaryDirectory() as tmp:
        project_dir = args.project or generate_spec_project(Path(tmp) / "specs", args.specs)
        label = args.project or f"{args.specs} tuneform specs"
        project = statistics.median(time_project(project_dir, args.stack, config, args.repeats))
    print(f"pulumi preview, {label}: {project:.2f}s (median of {args.repeats})")
    print(f"ratio: {project / baseline:.2f}x (goal: <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
