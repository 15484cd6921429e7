"""The ``tuneform`` command: ``validate`` specs and datasets, ``plan`` what would be tuned, list ``models``.

A user's mistake is printed as ``file:line:col: field: expected ..., got .... fix`` lines and exit status 1; only an
unexpected exception (a tuneform bug) prints an internal-error line, and never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from tuneform import catalogue
from tuneform.plan import build_plan, render_markdown, render_text
from tuneform.problems import Problem, left_out
from tuneform.spec.errors import SpecErrors
from tuneform.spec.loader import SPEC_DIR, find_repo_root, find_spec_files, load_specs, read_specs, resolve
from tuneform.spec.model import TARGETS, ResolvedSpec, Target, TunedModelDocument
from tuneform.spec.schema import SCHEMA_FILE
from tuneform.spec.source import display_name

__all__ = ["Validation", "main", "run_validation"]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_INTERNAL = 2


class _NoSpecDirectory(Exception):
    """``tuneform`` ran without paths outside a repository that has a ``tuning_specs/`` directory."""


def _spec_files(paths: Sequence[str]) -> list[Path]:
    if not paths:
        root = find_repo_root(Path.cwd())
        if not (root / SPEC_DIR).is_dir():
            raise _NoSpecDirectory(
                f"tuneform: expected a {SPEC_DIR}/ directory in {root}, got none. Run tuneform from "
                "the repository, or name spec files or directories: `tuneform validate path/to/spec.yaml`."
            )
        return find_spec_files(root)
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        found = find_spec_files(path) if path.is_dir() else [path]
        if not found:
            raise _NoSpecDirectory(
                f"tuneform: expected spec files (*.yaml, *.yml) in {given}, got none. Name a directory that holds "
                "specs, or the spec files themselves."
            )
        files.extend(found)
    return files


Pair = tuple[TunedModelDocument, ResolvedSpec]


def _selected(docs: Iterable[TunedModelDocument], target: str) -> tuple[list[Pair], list[Any]]:
    """The (document, resolved spec) pairs to check; a strict target that a spec cannot run on is a problem."""
    pairs: list[Pair] = []
    problems: list[Any] = []
    for doc in docs:
        if target == "any":
            pairs.extend((doc, spec) for spec in doc.resolved.values())
            continue
        names: tuple[Target, ...] = TARGETS if target == "all" else (cast(Target, target),)
        for name in names:
            try:
                pairs.append((doc, resolve(doc, name)))
            except SpecErrors as errors:
                problems.extend(errors.problems)
    return pairs, problems


def _check_datasets(
    pairs: Sequence[Pair], progress: Callable[[str], None] | None
) -> tuple[dict[str, Any], list[Any], list[str]]:
    """Check every local dataset file once per file, format, limits and count, with the program's own step.

    Tokens are counted as ``counting_for(target, base model)`` says (exact on the local target, the documented
    estimate on Vertex AI), the same count the Pulumi program and the review use (``prepare.check_local_dataset``).

    Returns:
        Summaries keyed by absolute path (left out where tokens cannot be counted here), the problems
        (Problem-like objects whose ``str`` is one line), and notes on what could not be counted.
    """
    from tuneform.datasets.tokens import counting_for
    from tuneform.prepare import Split, _limits, _local_path, check_local_dataset

    say = progress or (lambda _line: None)
    summaries: dict[str, Any] = {}
    problems: list[Any] = []
    notes: list[str] = []
    done: set[tuple[str, str, Any, str]] = set()
    for _doc, spec in pairs:
        counting = counting_for(spec.target, spec.base_model)
        if not counting.available:
            note = f"{spec.name} on {spec.target}: tokens not counted ({counting.missing})"
            if note not in notes:
                notes.append(note)
        splits: tuple[Split, ...] = ("train", "validation", "test")
        for split in splits:
            path = _local_path(spec, split)
            if path is None:
                continue
            key = (path, spec.dataset.format, _limits(spec, split), counting.method)
            if key in done:
                continue
            done.add(key)
            summary, found = check_local_dataset(spec, split, counting, say)
            if counting.available and summary is not None:
                summaries[path] = summary
            problems.extend(found)
    return summaries, problems, notes


@dataclass(frozen=True)
class Validation:
    """Validation is the outcome of ``run_validation``: what ``tuneform validate`` prints."""

    docs: list[TunedModelDocument]
    problems: list[Any]
    """Spec ``Problem``s and dataset problems; each ``str`` is one ``file:line:col: path: message`` line."""
    summaries: dict[str, Any]
    """Dataset summaries keyed by absolute path."""
    datasets: int
    """How many distinct local dataset files were checked."""


def run_validation(
    paths: Sequence[str | Path],
    *,
    target: str = "any",
    repo_root: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Validation:
    """Validate spec files and the local datasets they name, collecting every problem.

    Args:
        paths: Spec files (see ``find_spec_files``).
        target: ``local`` or ``vertex`` (every spec must run there), ``all`` (both), or ``any`` (each spec on the
            targets its base model runs on).
        repo_root: The repository root dataset paths must stay inside (default: found per file).
        progress: Receives one line per dataset checked.

    Returns:
        The valid documents, every problem (the datasets of the valid documents are checked even when another
        document is invalid) and the dataset summaries.
    """
    docs, spec_problems = read_specs(paths, repo_root=repo_root)
    pairs, problems = _selected(docs, target)
    problems[:0] = spec_problems
    summaries, dataset_problems, notes = _check_datasets(pairs, progress)
    for note in notes:
        (progress or (lambda _line: None))(f"note: {note}")
    problems.extend(dataset_problems)
    datasets = {path for _, spec in pairs for path in (spec.dataset.train_path, spec.dataset.validation_path) if path}
    return Validation(docs, problems, summaries, len(datasets))


def _stderr(line: str) -> None:
    print(f"tuneform: {line}", file=sys.stderr)


def _print_problems(problems: Sequence[Any]) -> None:
    distinct = {str(problem): problem for problem in problems}
    lines = list(distinct)
    files = {line.split(":", 1)[0] for line in lines}
    # A closing "... and N more problems" entry stands for N problems, not one.
    count = sum(left_out(problem) or 1 if isinstance(problem, Problem) else 1 for problem in distinct.values())
    noun = "problem" if count == 1 else "problems"
    where = "1 file" if len(files) == 1 else f"{len(files)} files"
    print(f"{count} {noun} in {where}:", file=sys.stderr)
    for line in lines:
        print(line, file=sys.stderr)


def _print_warnings(docs: Iterable[TunedModelDocument], more: Sequence[Any] = ()) -> None:
    for warning in dict.fromkeys([*(str(w) for doc in docs for w in doc.warnings), *(str(w) for w in more)]):
        print(warning, file=sys.stderr)


def _stack_rules(docs: Sequence[TunedModelDocument], stack_name: str) -> tuple[list[Any], list[Any]]:
    """The rules that need the stack (region, CMEK, prices), read from ``stacks/Pulumi.<stack>.yaml``."""
    from tuneform.spec.stack import read_stack, stack_file, stack_problems

    root = find_repo_root(Path.cwd())
    stack = read_stack(root, stack_name)
    if not stack.file:
        path = display_name(stack_file(root, stack_name))
        raise _NoSpecDirectory(f"tuneform: expected the stack file {path}, got none. Name an existing stack.")
    target = str(stack.get("target") or "local")
    # An unknown target is among the stack's own problems; a spec that cannot run on the stack's target is one
    # here as it is in the program.
    pairs, unrunnable = _selected(docs, target) if target in TARGETS else ([], [])
    problems, warnings = stack_problems([spec for _, spec in pairs], stack)
    return [*problems, *unrunnable], warnings


def _validate(args: argparse.Namespace) -> int:
    result = run_validation(_spec_files(args.paths), target=args.target, progress=_stderr)
    stack_warnings: list[Any] = []
    if args.stack:
        stack_found, stack_warnings = _stack_rules(result.docs, args.stack)
        result.problems.extend(stack_found)
    _print_warnings(result.docs, stack_warnings)
    if result.problems:
        _print_problems(result.problems)
        return EXIT_PROBLEMS
    noun = "spec" if len(result.docs) == 1 else "specs"
    print(f"ok: {len(result.docs)} {noun}, {result.datasets} datasets")
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    if args.base is not None:
        from tuneform.review import plan_against_base
        from tuneform.review.state import configured_stacks

        stacks = args.stack if args.stack else configured_stacks()
        return plan_against_base(
            args.base, target=args.target, format=args.format, paths=args.paths, progress=_stderr, stacks=stacks
        )
    if args.format == "json":
        print("tuneform: plan: --format json needs --base (it is the review's change plan)", file=sys.stderr)
        return EXIT_PROBLEMS
    target: Target = args.target or "local"
    try:
        docs = load_specs(_spec_files(args.paths))
    except SpecErrors as errors:
        _print_problems(errors.problems)
        return EXIT_PROBLEMS
    _print_warnings(docs)
    pairs = [(doc, doc.resolved[target]) for doc in docs if target in doc.resolved]
    summaries, problems, notes = _check_datasets(pairs, _stderr)
    if problems:
        _print_problems(problems)
        return EXIT_PROBLEMS
    plan = build_plan(docs, target, summaries)
    render = render_markdown if args.format == "markdown" else render_text
    sys.stdout.write(render(plan))
    if notes:
        bullet = "- " if args.format == "markdown" else "note: "
        sys.stdout.write("\n" + "".join(f"{bullet}{note}\n" for note in notes))
    return EXIT_OK


def _models(args: argparse.Namespace) -> int:
    on = catalogue.today()
    for info in catalogue.all_models().values():
        if args.target and info.provider != args.target:
            continue
        life = info.lifecycle
        state = life.status(on)
        if state == "retired" and not args.all:
            continue
        modes = "/".join(info.modes)
        sizes = ",".join(map(str, info.adapter_sizes)) or "-"
        if state == "retired":
            status = f"retired {life.retires}; use {' or '.join(info.current_replacements(on)) or 'another model'}"
        elif life.retires is not None:
            later = " or later" if state == "available" else ""
            status = f"{life.stage or 'GA'}, {state} until {life.retires}{later}"
        else:
            status = life.stage or "-"
        shown = info.regions[:2]
        regions = ",".join(shown) + (f",+{len(info.regions) - len(shown)}" if len(info.regions) > 2 else "") or "-"
        print(
            f"{info.id:<44} {info.provider:<7} modes={modes:<13} adapterSizes={sizes:<13} regions={regions:<26} "
            f"{status}"
        )
    if not args.all:
        print("(retired models are hidden; --all lists them with their replacements)", file=sys.stderr)
    return EXIT_OK


def _schema(_: argparse.Namespace) -> int:
    from importlib import resources

    sys.stdout.write(resources.files("tuneform.spec").joinpath(SCHEMA_FILE).read_text("utf-8"))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuneform", description="Tuned models declared as code.")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser(
        "validate",
        help="check spec files and their datasets; exit 1 with every problem",
        description="Check tuning specs (default: every file under tuning_specs/) and their local datasets.",
    )
    validate.add_argument("paths", nargs="*", help="spec files or directories (default: tuning_specs/)")
    validate.add_argument(
        "--target",
        choices=["local", "vertex", "all", "any"],
        default="any",
        help="check for one target, for both (all), or for whichever targets each spec can run on (any, default)",
    )
    validate.add_argument(
        "--stack",
        metavar="NAME",
        help="also check what the stack's settings allow (region, CMEK, prices), from stacks/Pulumi.NAME.yaml",
    )
    validate.set_defaults(run=_validate)

    plan = commands.add_parser(
        "plan",
        help="show what would be tuned: examples, training tokens, estimated cost",
        description="Per tuned model: base model, mode, examples, tokens per epoch, epochs, training tokens, cost.",
    )
    plan.add_argument("paths", nargs="*", help="spec files or directories (default: tuning_specs/)")
    plan.add_argument("--target", choices=list(TARGETS), help="target to plan for (default: local; with --base: both)")
    plan.add_argument(
        "--base",
        metavar="REF",
        help="compare with this git commit (e.g. origin/main): per model created / re-tuned / updated / removed",
    )
    plan.add_argument(
        "--format", choices=["text", "markdown", "json"], default="text", help="output format (default: text)"
    )
    plan.add_argument(
        "--stack",
        action="append",
        metavar="NAME",
        help="with --base: read current versions from this stack's state (repeatable; default: $TUNEFORM_STACKS)",
    )
    plan.set_defaults(run=_plan)

    models = commands.add_parser("models", help="list the model catalogue")
    models.add_argument("--target", choices=list(TARGETS), help="only models that run on this target")
    models.add_argument("--all", action="store_true", help="also list retired models, with their replacements")
    models.set_defaults(run=_models)

    schema = commands.add_parser("schema", help="print the tuneform/v1 JSON Schema")
    schema.set_defaults(run=_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tuneform`` command line.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 ok, 1 problems found, 2 internal error (argparse uses 2 for usage errors too).
    """
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except (_NoSpecDirectory, catalogue.TodayNotADate) as error:
        print(error if isinstance(error, _NoSpecDirectory) else f"tuneform: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        print("tuneform: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as error:  # noqa: BLE001 - the last line of defence: a user never sees a traceback
        print(
            f"tuneform: internal error: {type(error).__name__}: {error}. This is a bug in tuneform, not in your "
            "spec; please report it with the command you ran.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return status


if __name__ == "__main__":
    sys.exit(main())
