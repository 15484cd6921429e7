"""The Vertex fault run: several specs through `pulumi up` with a share of Vertex calls faulted (issue 8).

Not a speed benchmark: it prints how a stack converges when the service misbehaves — `pulumi up` runs needed,
duplicate jobs (must be 0), jobs the stack does not hold (0), models and endpoints left after `pulumi destroy` (0) —
with the real Pulumi CLI, the Vertex emulator (429, 503, slow 504 and lost answers at the given rate; E33 in
docs/vertex-emulator.md) and fake-gcs-server. The test suite runs the same scenario
(tests/test_vertex_stack.py::test_fault_run_converges_without_duplicates_or_orphans).

    .venv/bin/python bench/bench_vertex_faults.py --specs 5 --rate 0.3 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from pulumi_cli import PulumiCLI, engine_status  # noqa: E402 (the harness lives with the tests)
from vertex_faults import run_fault_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--specs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    ready, why = engine_status()
    if not ready:
        print(f"the Pulumi engine is not bootstrapped ({why}); run `make bootstrap`", file=sys.stderr)
        return 2
    failed = False
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="tuneform-faults-") as work:
            root = Path(work)
            figures = run_fault_run(
                lambda project, root=root: PulumiCLI(project, root / "backend"),
                root,
                specs=args.specs,
                rate=args.rate,
                seed=seed,
                log=lambda line: print(line, file=sys.stderr),
            )
        print(f"\nseed {seed}:\n{figures.table()}")
        for error in figures.up_errors:
            print(f"  up error: {error}")
        failed |= bool(
            figures.duplicate_jobs or figures.jobs_not_in_state or figures.left_models or figures.left_endpoints
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
