"""One local tuning run, executed as a child process of the Pulumi provider: ``python -m tuneform.backends.local_run``.

Why a separate process: torch holds hundreds of MB that should be freed when the run ends, the provider process
serves several resources at once and must not be blocked by training, and a run killed with ``pulumi up`` leaves its
checkpoints behind in its run directory, from which the next run resumes.

Input: ``<run_dir>/request.json`` (written by ``LocalBackend.tune``). Output: ``<run_dir>/result.json``. Progress:
one line per event on stderr, which the backend forwards to the Pulumi CLI.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(run_dir: Path) -> dict[str, Any]:
    from tuneform.training import TrainConfig, evaluate, resolve_base_model, train

    request = json.loads((run_dir / "request.json").read_text())
    started = time.monotonic()
    base_dir = resolve_base_model(request["baseModel"], cache_dir=Path(request["cacheDir"]), progress=_say)
    hyper = request["hyperparameters"]
    config = TrainConfig(
        base_model_dir=base_dir,
        train_file=Path(request["trainFile"]),
        validation_file=Path(request["validationFile"]) if request.get("validationFile") else None,
        output_dir=run_dir / "output",
        mode=request["mode"],
        # Numbers cross Pulumi's wire as floats; the trainer wants the integers the spec holds.
        adapter_size=None if request.get("adapterSize") is None else int(request["adapterSize"]),
        lora=_integral(request.get("lora")),
        epochs=int(hyper.get("epochs") or 3),
        learning_rate=float(hyper.get("learningRate") or 2e-4),
        batch_size=int(hyper.get("batchSize") or 8),
        seed=int(request.get("seed", 42)),
    )
    result = train(config, _say)
    metrics: dict[str, float] = {
        "trainLoss": float(result.train_loss),
        "trainTokensPerSecond": float(result.tokens_per_second),
    }
    if config.validation_file is not None:
        budget = _answer_budget(config.validation_file)
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
    outcome = {
        "artifactDir": str(result.artifact_dir),
        "kind": result.kind,
        "baseModelDir": str(base_dir),
        "metrics": metrics,
        "steps": result.steps,
        "tokens": result.tokens,
        "resumedFrom": result.resumed_from,
        "logPath": str(result.log_path),
        "seconds": round(time.monotonic() - started, 1),
    }
    tmp = run_dir / "result.json.tmp"
    tmp.write_text(json.dumps(outcome, indent=2))
    tmp.replace(run_dir / "result.json")
    return outcome


def _answer_budget(validation_file: Path) -> int:
    """New tokens to generate per evaluated answer: enough for the longest reference answer, no more.

    Exact match only needs the reference's length (plus slack to see that an answer does not stop); generating a
    base model's rambling beyond that costs minutes on a CPU and changes no score.
    """
    from tuneform.datasets import iter_gemini_examples

    longest = 0
    for example in iter_gemini_examples(validation_file):
        for turn in example["contents"]:
            if turn["role"] == "model":
                longest = max(longest, sum(len(part.get("text", "")) for part in turn["parts"]))
    # Tokens are rarely shorter than 2 characters in these tokenizers; 8 more lets a wrong answer show itself.
    return max(16, min(256, longest // 2 + 8))


def _integral(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {
        k: int(v) if isinstance(v, float) and v.is_integer() and k in ("rank", "alpha") else v
        for k, v in values.items()
    }


def main() -> None:
    run(Path(sys.argv[1]))


if __name__ == "__main__":
    main()
