"""Trainer benchmark: tuneform's local trainer vs a plain TRL ``SFTTrainer`` at its defaults.

Same model (SmolLM2-135M-Instruct from the cached dequantised copy), same data (a slice of the ticket-router example),
same LoRA config, same step budget, same learning rate and same CPU threads, in one run on one machine; each trainer
runs in its own subprocess so its peak RSS is its own. Prints tokens/s, final validation loss (teacher-forced, model
turns only, computed by the same code for both) and peak RSS of each, and the ratios. Tokens per CPU second (CPU time
of the training loop, all threads) are printed beside tokens/s: on a machine shared with other work the two trainers,
run one after the other, meet different loads, which moves the wall-clock ratio by tens of percent; CPU time does not
count the time other processes held the cores.

The plain run gets only what it needs to run here: ``use_cpu`` (on CPU), the step budget, the LoRA config and the
learning rate (TRL's default of 2e-5 would make the loss comparison meaningless at a few steps). Everything else is
SFTConfig's default: bf16 autocast, gradient checkpointing, loss on the whole sequence, random batches.

Usage::

    .venv/bin/python bench/bench_trainer.py                 # about 3 minutes on 2 cores
    .venv/bin/python bench/bench_trainer.py --steps 4 --train-examples 32
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from tuneform.backends.local import default_cache_dir

REPO = Path(__file__).resolve().parents[1]
TICKETS = REPO / "tuning_specs" / "datasets" / "ticket-router"
LORA = {"rank": 8, "alpha": 16, "dropout": 0.05, "target_modules": None}


def _slice(source: Path, target: Path, count: int) -> Path:
    target.write_text("".join(source.read_text(encoding="utf-8").splitlines(keepends=True)[:count]))
    return target


def _peak_rss_mib() -> float:
    """Peak RSS of this process so far; taken right after training, before the evaluation loads anything."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _validation_loss(model, tokenizer, validation: Path) -> float:
    from tuneform.training.data import read_conversations
    from tuneform.training.evaluate import _validation_loss

    model.eval()
    return _validation_loss(model, tokenizer, [c.messages for c in read_conversations(validation)])


def run_plain(args: argparse.Namespace) -> dict:
    """TRL's SFTTrainer at its defaults on the conversational ``messages`` form of the same data."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tuneform.training.data import read_conversations
    from tuneform.training.trainer import ThroughputMeter, build_lora_config, meter_callback, pick_device

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(str(args.base))
    model = AutoModelForCausalLM.from_pretrained(str(args.base))
    dataset = Dataset.from_list([{"messages": c.messages} for c in read_conversations(args.train)])
    config = SFTConfig(
        output_dir=str(args.out),
        use_cpu=pick_device() == "cpu",
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        seed=42,
        report_to="none",
        save_strategy="no",
    )
    lora = build_lora_config(None, {k: v for k, v in LORA.items() if v is not None})
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    # Timed from the same callbacks as tuneform's own meter, so both CPU times cover the same part of train().
    meter = ThroughputMeter(lambda state: int(trainer._total_train_tokens))
    trainer.add_callback(meter_callback(meter))
    output = trainer.train()
    tokens = max(entry.get("num_tokens", 0) for entry in trainer.state.log_history)
    return {
        "tokens_per_second": tokens / output.metrics["train_runtime"],
        "tokens_per_cpu_second": tokens / meter.cpu_seconds,
        "peak_rss_mib": _peak_rss_mib(),
        "tokens": tokens,
        "validation_loss": _validation_loss(trainer.model, tokenizer, args.validation),
    }


def run_tuneform(args: argparse.Namespace) -> dict:
    """tuneform's ``train()`` on the Gemini-format file."""
    import torch

    from tuneform.training import TrainConfig, load_for_inference, train

    config = TrainConfig(
        base_model_dir=args.base,
        train_file=args.train,
        validation_file=None,
        output_dir=args.out,
        mode="adapter",
        adapter_size=None,
        lora={k: v for k, v in LORA.items() if v is not None},
        learning_rate=args.learning_rate,
        threads=args.threads,
        extra_args={"max_steps": args.steps, "save_strategy": "no"},
    )
    result = train(config, lambda line: print(line, file=sys.stderr, flush=True))
    peak = _peak_rss_mib()
    model, tokenizer = load_for_inference(args.base, result.artifact_dir, "adapter")
    torch.set_num_threads(args.threads)
    return {
        "tokens_per_second": result.tokens_per_second,
        "tokens_per_cpu_second": result.tokens / result.cpu_seconds,
        "peak_rss_mib": peak,
        "tokens": result.tokens,
        "validation_loss": _validation_loss(model, tokenizer, args.validation),
    }


def child(args: argparse.Namespace) -> None:
    """Run one trainer and print its figures as JSON on the last stdout line."""
    import transformers

    transformers.logging.set_verbosity_error()
    print(json.dumps(run_plain(args) if args.run == "plain" else run_tuneform(args)))


def main() -> None:
    """Run both trainers in subprocesses and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps of batch 8 for each trainer")
    parser.add_argument("--train-examples", type=int, default=64)
    parser.add_argument("--validation-examples", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both (default: idle cores)")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="base-model cache (per user)")
    parser.add_argument("--run", choices=["plain", "tuneform"], help=argparse.SUPPRESS)
    parser.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--validation", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        child(args)
        return

    from tuneform.training import resolve_base_model
    from tuneform.training.trainer import cpu_threads

    base = resolve_base_model("smollm2-135m-instruct", cache_dir=args.cache_dir, progress=print)
    threads = args.threads or cpu_threads(None)
    work = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    train_file = _slice(TICKETS / "train.jsonl", work / "train.jsonl", args.train_examples)
    validation_file = _slice(TICKETS / "validation.jsonl", work / "validation.jsonl", args.validation_examples)
    print(
        f"bench: SmolLM2-135M-Instruct, LoRA r=8 all-linear, {args.steps} steps x batch 8 of "
        f"{args.train_examples} ticket-router examples, lr {args.learning_rate}, {threads} CPU threads"
    )
    results = {}
    for run in ("plain", "tuneform"):
        command = [
            sys.executable,
            __file__,
            "--run",
            run,
            "--base",
            str(base),
            "--train",
            str(train_file),
            "--validation",
            str(validation_file),
            "--out",
            str(work / run),
            "--steps",
            str(args.steps),
            "--learning-rate",
            str(args.learning_rate),
            "--threads",
            str(threads),
        ]
        print(f"bench: running {run} ...", flush=True)
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            sys.exit(f"bench: {run} failed:\n{completed.stderr[-4000:]}")
        results[run] = json.loads(completed.stdout.strip().splitlines()[-1])
        figures = results[run]
        print(
            f"bench: {run:9s} {figures['tokens_per_second']:7.1f} tokens/s, {figures['tokens_per_cpu_second']:7.1f} "
            f"tokens/CPU-s ({figures['tokens']:.0f} tokens), "
            f"validation loss {figures['validation_loss']:.4f}, peak RSS (training) {figures['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    plain, ours = results["plain"], results["tuneform"]
    speedup = ours["tokens_per_second"] / plain["tokens_per_second"]
    loss_ratio = ours["validation_loss"] / plain["validation_loss"]
    cpu_speedup = ours["tokens_per_cpu_second"] / plain["tokens_per_cpu_second"]
    print(f"bench: speed-up {speedup:.2f}x wall clock, {cpu_speedup:.2f}x per CPU second (goal >= 1.5x)")
    print(f"bench: validation loss ours/plain {loss_ratio:.3f} (goal <= 1.05)")
    print(f"bench: peak RSS ours/plain {ours['peak_rss_mib'] / plain['peak_rss_mib']:.2f}")
    print(json.dumps({"threads": threads, "steps": args.steps, **{k: v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
