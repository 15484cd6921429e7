"""One local tuning run, executed as a child process of the Pulumi provider: ``python -m tuneform.training.run``.

Why a separate process: torch holds hundreds of MB that should be freed when the run ends, the provider process
serves several resources at once and must not be blocked by training, and a run killed with ``pulumi up`` leaves its
checkpoints behind in its run directory, from which the next run resumes.

Input: ``<run_dir>/request.json``, a ``RunRequest`` (written by ``LocalBackend.tune``; this class is the one mapping
across that process boundary). Output: ``<run_dir>/result.json``.

Output is two streams. **Progress**: tuneform's own lines only (step, epoch, loss, tokens/s, ETA; evaluation), on
stdout, which the backend forwards to the Pulumi CLI. **Everything else** (library warnings, progress bars, logging,
tracebacks) goes to ``<run_dir>/run.log``, which also gets every progress line, and whose path the backend names
first: the child points its own stdout and stderr file descriptors at the log, so nothing a library prints reaches
the person running ``pulumi up``. Warnings a person should know about are rephrased once on the progress stream.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TextIO

if TYPE_CHECKING:
    from tuneform.training.trainer import TrainConfig, TrainResult

__all__ = ["RunRequest", "run"]


@dataclass(frozen=True)
class RunRequest:
    """One local run: what the backend asks the child process to train, with every default already resolved."""

    base_model: str
    """A catalogue id or the absolute path of a local model (``ResolvedSpec.base_model``)."""
    cache_dir: str
    train_file: str
    validation_file: str | None
    mode: str
    adapter_size: int | None
    lora: dict[str, Any] | None
    """``LoraSpec``'s set fields (``rank``, ``alpha``, ``dropout``, ``target_modules``)."""
    epochs: int
    learning_rate: float
    batch_size: int
    seed: int = 42
    test_file: str | None = None
    """Gemini-format JSONL scored after tuning at the endpoint's default decoding (``spec.dataset.test``)."""
    generation: dict[str, Any] | None = None
    """The version's decoding defaults (``spec.endpoint.generation``): the test set is answered with them."""
    weights_dir: str | None = None
    """Weights an earlier version already has (only ``generation`` differs): nothing is trained, the test set is
    scored with them at ``generation``."""
    weights_kind: str | None = None
    """``adapter`` or ``full``: what ``weights_dir`` holds."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunRequest:
        data = json.loads(text)
        # Numbers cross Pulumi's wire as floats; the trainer wants the integers the spec holds.
        for key in ("adapter_size", "epochs", "batch_size", "seed"):
            if data.get(key) is not None:
                data[key] = int(data[key])
        return cls(**data)

    def train_config(self, base_model_dir: Path, output_dir: Path) -> TrainConfig:
        from tuneform.training import TrainConfig

        lora = None
        if self.lora is not None:
            lora = {
                k: int(v) if k in ("rank", "alpha") and isinstance(v, float) and v.is_integer() else v
                for k, v in self.lora.items()
            }
        return TrainConfig(
            base_model_dir=base_model_dir,
            train_file=Path(self.train_file),
            validation_file=Path(self.validation_file) if self.validation_file else None,
            output_dir=output_dir,
            mode=self.mode,  # type: ignore[arg-type]
            adapter_size=self.adapter_size,
            lora=lora,
            epochs=self.epochs,
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            seed=self.seed,
            max_length=context_length(base_model_dir),
        )


def context_length(model_dir: Path) -> int:
    """Positions the base model was made for (``max_position_embeddings``; 2,048 when its config does not say).

    A run trains on whole examples up to this length: validation accepts examples up to the catalogue's
    ``maxTokensPerExample`` (SmolLM2: its 8,192-token context), so cutting them shorter would drop what was accepted.
    """
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return 2048
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    return int(text.get("max_position_embeddings") or 2048)


_PROGRESS: list[IO[str]] = []
"""The progress stream (the backend's pipe), once ``quiet_output`` moved stdout and stderr to the log."""


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # the log (stderr itself before quiet_output)
    for stream in _PROGRESS:
        stream.write(line + "\n")
        stream.flush()


# Library warnings worth a person's attention, each said once in tuneform's words (the original goes to the log).
_REPHRASED: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        # transformers' tokenizer, when an example is longer than the model's configured maximum length.
        re.compile(r"Token indices sequence length is longer than the specified maximum sequence length"),
        "note: an example is longer than the base model's maximum length; training cuts it to maxLength",
    ),
)


class _Rephrase(logging.Handler):
    """Says each ``_REPHRASED`` line once when a matching warning or log record passes."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.said: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.check(record.getMessage())

    def check(self, text: str) -> None:
        for pattern, line in _REPHRASED:
            if pattern.search(text) and line not in self.said:
                self.said.add(line)
                _say(line)


def quiet_output(log_path: Path) -> None:
    """Points stdout and stderr (the file descriptors, so C libraries too) at ``log_path``; progress keeps the pipe.

    Progress bars are switched off (in a log file they are pages of carriage returns), and warnings go to the log,
    those in ``_REPHRASED`` also once, rephrased, to the progress stream.
    """
    os.environ.update(
        TQDM_DISABLE="1",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    _PROGRESS.append(os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8"))
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    rephrase = _Rephrase()
    # Libraries log through `logging` (transformers' own loggers do not propagate to the root) and `warnings`.
    for name in ("", "transformers", "datasets", "peft", "trl", "accelerate"):
        logging.getLogger(name).addHandler(rephrase)
    shown = warnings.showwarning

    def show(  # noqa: PLR0917 - the signature of warnings.showwarning
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        shown(message, category, filename, lineno, file, line)
        rephrase.check(str(message))

    warnings.showwarning = show


def run(run_dir: Path) -> dict[str, Any]:
    from tuneform.training import evaluate, resolve_base_model, train

    request = RunRequest.from_json((run_dir / "request.json").read_text())
    started = time.monotonic()
    base_dir = resolve_base_model(request.base_model, cache_dir=Path(request.cache_dir), progress=_say)
    if request.weights_dir is not None:
        return _rescore(request, run_dir, base_dir, started)
    config = request.train_config(base_dir, run_dir / "output")
    result = train(config, _say)
    metrics = _training_figures(run_dir, result)
    if config.validation_file is not None:
        budget = _answer_budget(config.validation_file, base_dir)
        _say(f"evaluating the base model on the validation set (up to {budget} new tokens per answer)")
        base = evaluate(base_dir, None, config.validation_file, kind=result.kind, max_new_tokens=budget, progress=_say)
        _say("evaluating the tuned model on the validation set")
        tuned = evaluate(
            base_dir,
            result.artifact_dir,
            config.validation_file,
            kind=result.kind,
            max_new_tokens=budget,
            progress=_say,
        )
        metrics.update(
            baseValidationLoss=float(base.validation_loss),
            baseExactMatch=float(base.exact_match),
            validationLoss=float(tuned.validation_loss),
            exactMatch=float(tuned.exact_match),
        )
        _say(
            f"exact match: base {base.exact_match:.3f} -> tuned {tuned.exact_match:.3f}; "
            f"validation loss: base {base.validation_loss:.4f} -> tuned {tuned.validation_loss:.4f}"
        )
    if request.test_file is not None:
        metrics.update(_score_test_set(request, base_dir, result.artifact_dir, result.kind))
    outcome = {
        "artifactDir": str(result.artifact_dir),
        "kind": result.kind,
        "baseModelDir": str(base_dir),
        "metrics": metrics,
        "steps": result.steps,
        "tokens": result.tokens,
        "resumedFrom": result.resumed_from,
        "logPath": str(_kept_log(run_dir, result.log_path)),
        "seconds": round(time.monotonic() - started, 1),
    }
    _write_result(run_dir, outcome)
    return outcome


def _write_result(run_dir: Path, outcome: dict[str, Any]) -> None:
    tmp = run_dir / "result.json.tmp"
    tmp.write_text(json.dumps(outcome, indent=2))
    tmp.replace(run_dir / "result.json")


def _rescore(request: RunRequest, run_dir: Path, base_dir: Path, started: float) -> dict[str, Any]:
    """A version whose weights an earlier version has: score its test set at its own decoding defaults, no more."""
    weights = Path(str(request.weights_dir))
    kind: Literal["adapter", "full"] = "full" if request.weights_kind == "full" else "adapter"
    metrics = _score_test_set(request, base_dir, weights, kind) if request.test_file is not None else {}
    outcome = {
        "artifactDir": str(weights),
        "kind": kind,
        "baseModelDir": str(base_dir),
        "metrics": metrics,
        "logPath": str(run_dir / "run.log") if (run_dir / "run.log").is_file() else None,
        "seconds": round(time.monotonic() - started, 1),
    }
    _write_result(run_dir, outcome)
    return outcome


def _kept_log(run_dir: Path, step_log: Path) -> Path:
    """The log the version keeps: the run's log (progress and library output) with the trainer's step log appended,
    or the step log alone when this run wrote no run log (``run`` called without ``quiet_output``)."""
    run_log = run_dir / "run.log"
    if not run_log.is_file():
        return step_log
    try:
        steps = step_log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return run_log
    with run_log.open("a", encoding="utf-8") as log:
        log.write(f"--- every step, from {step_log} ---\n{steps}")
    return run_log


def _score_test_set(
    request: RunRequest, base_dir: Path, weights: Path, kind: Literal["adapter", "full"]
) -> dict[str, float]:
    """Base and tuned model on the test set, answered as the endpoint answers a request that sets nothing."""
    from tuneform.training.evaluate import score_test_set

    assert request.test_file is not None
    test_file = Path(request.test_file)
    shown = ", ".join(f"{k} {v!r}" for k, v in (request.generation or {}).items()) or "the endpoint's defaults"
    scores = {}
    for label, artifact in (("base", None), ("tuned", weights)):
        _say(f"evaluating the {label} model on the test set at the endpoint's default decoding ({shown})")
        scores[label] = score_test_set(
            base_dir, artifact, test_file, kind=kind, generation=request.generation, progress=_say
        ).accuracy
    _say(f"test set accuracy: base {scores['base']:.3f} -> tuned {scores['tuned']:.3f}")
    return {"baseTestAccuracy": float(scores["base"]), "testAccuracy": float(scores["tuned"])}


FIGURES = "training-figures.json"
"""In the run directory: how training went, kept for a later attempt that resumes from the final checkpoint."""


def _training_figures(run_dir: Path, result: TrainResult) -> dict[str, float]:
    """The loss and throughput of the attempt that trained, recorded in the run directory as soon as it ends.

    An attempt that resumes from the final checkpoint (the previous one was killed during evaluation, or before
    the version was registered) trains no step, so its own loss is NaN and its rate 0: it reports the figures the
    training attempt left. Without them (that attempt was killed between its last checkpoint and this file), the
    loss comes from the checkpoint's log and the rate, which no checkpoint keeps, is left out rather than made up.
    """
    path = run_dir / FIGURES
    if math.isfinite(result.train_loss) and result.tokens_per_second > 0:
        figures = {"trainLoss": float(result.train_loss), "trainTokensPerSecond": float(result.tokens_per_second)}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(figures, indent=2))
        tmp.replace(path)
        return figures
    try:
        figures = {k: float(v) for k, v in json.loads(path.read_text()).items() if math.isfinite(float(v))}
        _say(f"train: nothing left to train; the figures of the attempt that trained are in {path}")
        return figures
    except (OSError, ValueError):
        pass
    loss = _last_epoch_loss(result.resumed_from)
    _say(
        "train: nothing left to train and no figures from the attempt that trained; "
        + (
            f"its loss ({loss:.4f}) comes from {result.resumed_from}, its tokens/s are unknown"
            if loss is not None
            else "no loss"
        )
    )
    return {"trainLoss": loss} if loss is not None else {}


def _last_epoch_loss(checkpoint: str | None) -> float | None:
    """Mean logged loss of the last epoch in a Trainer checkpoint's ``trainer_state.json``."""
    try:
        state = json.loads((Path(str(checkpoint)) / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    logged = [(float(e["epoch"]), float(e["loss"])) for e in state.get("log_history", []) if "loss" in e]
    if not logged:
        return None
    # Epoch e's steps are logged at fractional epochs in (e - 1, e]: the last epoch's start is one below its end.
    last_epoch_start = math.ceil(logged[-1][0] - 1e-6) - 1
    losses = [loss for epoch, loss in logged if epoch > last_epoch_start + 1e-6 and math.isfinite(loss)]
    return sum(losses) / len(losses) if losses else None


def _answer_budget(validation_file: Path, base_dir: Path) -> int:
    """New tokens to generate per evaluated answer: enough for the longest reference answer, no more.

    Exact match only needs the reference's length in the model's own tokens (plus slack to see that an answer does
    not stop): counted with its tokenizer, since a character is a token or more in Chinese, Hebrew or emoji.
    Generating a base model's rambling beyond that costs minutes on a CPU and changes no score.
    """
    from transformers import AutoTokenizer

    from tuneform.datasets import iter_gemini_examples

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    longest = 0
    for example in iter_gemini_examples(validation_file):
        for turn in example["contents"]:
            if turn["role"] == "model":
                text = "".join(part.get("text", "") for part in turn["parts"])
                longest = max(longest, len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    # 8 more lets a wrong answer show itself (and the end-of-turn token fit).
    return max(16, min(ANSWER_TOKENS_CAP, longest + 8))


ANSWER_TOKENS_CAP = 1024
"""The most new tokens an evaluated answer may take: a reference longer than this cannot match exactly."""


def main() -> None:
    from tuneform.processes import exit_with_parent

    # Started by the provider and watched by it; should the provider itself be killed, nobody would read our
    # progress or record our result, and our run would block its successor.
    exit_with_parent()
    from tuneform.training.errors import TrainingError

    run_dir = Path(sys.argv[1])
    quiet_output(run_dir / "run.log")
    try:
        run(run_dir)
    except TrainingError as refused:
        # The data or the spec cannot be trained as it is: the person's to fix, said without a traceback.
        (run_dir / REFUSED).write_text(str(refused))
        _say(f"error: {refused}")
        sys.exit(EXIT_REFUSED)


EXIT_REFUSED = 3
"""The child's exit status when training refuses the request (a ``TrainingError``); its message is in ``REFUSED``."""
REFUSED = "refused.txt"


if __name__ == "__main__":
    main()
