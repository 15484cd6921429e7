"""The cross-field rules of one (document, target) pair: what the catalogue allows for the merged spec.

``loader.py`` reads files, checks the schema and merges ``targets.<target>`` over ``spec``; each rule here reads one
part of the merged spec, reports every mistake at the place it was written (through ``RuleContext``), and
``resolve_target`` builds the ``ResolvedSpec`` when none was found. The rules read the model catalogue rather than
branching on model names.
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneform import catalogue
from tuneform.catalogue import ModelInfo
from tuneform.spec.errors import Problem
from tuneform.spec.model import (
    DatasetSpec,
    EndpointSpec,
    GenerationSpec,
    Hyperparameters,
    Location,
    LoraSpec,
    ResolvedSpec,
    Target,
)
from tuneform.spec.schema import got, yaml_inline
from tuneform.spec.source import FieldPath, SourceDocument, display_name

__all__ = ["LR_KNOBS", "RuleContext", "resolve_target"]

LR_KNOBS = ("learningRate", "learningRateMultiplier")
"""The two learning-rate knobs: a model takes one (catalogue ``learningRateKnob``), never both."""
_GS_URI = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]/[^\s]+$")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class RuleContext:
    """Everything the rules of one (document, target) pair need."""

    doc: SourceDocument
    target: Target
    merged: dict[str, Any]
    origin: dict[FieldPath, FieldPath]
    repo_root: Path
    problems: list[Problem]
    name: str
    warnings: list[Problem] = field(default_factory=list)
    today: datetime.date | None = None
    """The day lifecycle rules judge by; ``None`` skips them (a review loading an old commit's specs)."""

    def at(self, path: FieldPath) -> FieldPath:
        """The written (raw document) path of a merged ``spec`` path."""
        return self.origin.get(path) or self.origin[()] + path

    def report(self, path: FieldPath, message: str) -> None:
        self.problems.append(self.doc.problem(self.at(path), message))

    def warn(self, path: FieldPath, message: str) -> None:
        self.warnings.append(self.doc.problem(self.at(path), "warning: " + message))


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.endswith(".gguf") or os.sep in name and "@" not in name


def _unreadable_model(path: Path) -> str | None:
    """Why a local model cannot be loaded, from what a glance tells (no weights read); ``None`` when it looks sound.

    A corrupt or truncated file would otherwise pass validation and `pulumi preview`, and fail minutes into
    `pulumi up`."""
    try:
        if path.is_file():
            with open(path, "rb") as handle:
                magic = handle.read(4)
            if magic != b"GGUF":
                return f"{display_name(path)} does not start with the GGUF magic bytes (not a GGUF file, or corrupt)"
            return None
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return f"{display_name(path)} cannot be read ({error})"
    if not isinstance(config, dict) or not ("model_type" in config or "architectures" in config):
        return (
            f"{display_name(path / 'config.json')} names no model_type or architectures (not a Hugging Face "
            "model config). Point baseModel at the directory `save_pretrained` wrote"
        )
    return None


def _model_for(ctx: RuleContext) -> ModelInfo | None:
    """The catalogue facts for the base model on this target, or ``None`` (reported or just not runnable)."""
    name = ctx.merged["baseModel"]
    from_override = ctx.at(("baseModel",))[:3] == ("spec", "targets", ctx.target)
    info = catalogue.get(name)
    if info is not None:
        if info.provider == ctx.target:
            return info if _lifecycle_rules(ctx, info) else None
        if from_override:
            on = ctx.today or catalogue.today()
            runnable = [
                m.id
                for m in catalogue.all_models().values()
                if m.provider == ctx.target and m.lifecycle.status(on) != "retired"
            ]
            listed = ", ".join(runnable[:4]) + (", ..." if len(runnable) > 4 else "")
            extra = ", a local Hugging Face model directory or a .gguf file" if ctx.target == "local" else ""
            ctx.report(
                ("baseModel",),
                f"expected a model that runs on the {ctx.target} target ({listed}{extra}), "
                f"got {name}, a {info.provider} model. Set `baseModel: {runnable[0]}`.",
            )
        return None
    if _looks_like_path(name):
        if ctx.target != "local":
            if from_override:
                ctx.report(
                    ("baseModel",),
                    f"expected a catalogue model for the vertex target, got the local path {got(name)}. "
                    f"Set `baseModel: {catalogue.suggested('vertex')}` (see `tuneform models`).",
                )
            return None
        path = Path(os.path.expanduser(name))
        path = path if path.is_absolute() else ctx.doc.path.parent / path
        if path.is_dir() and (path / "config.json").is_file() or path.is_file() and path.suffix == ".gguf":
            unreadable = _unreadable_model(path)
            if unreadable is None:
                return catalogue.local_path_info(str(path.resolve()))
            ctx.report(("baseModel",), f"expected a model the local target can load, got {got(name)}: {unreadable}.")
            return None
        if path.is_dir():
            found = f"a directory without config.json ({display_name(path)})"
        elif path.exists():
            found = f"a file that is not .gguf ({display_name(path)})"
        else:
            found = f"which is not there (looked at {display_name(path)})"
        ctx.report(
            ("baseModel",),
            f"expected a local Hugging Face model directory (with config.json) or a .gguf file, got {got(name)}, "
            f"{found}. Fix the path or use `baseModel: smollm2-135m-instruct`.",
        )
        return None
    close = difflib.get_close_matches(name, list(catalogue.all_models()), n=1, cutoff=0.6)
    if not close and "@" not in name:
        close = [m for m in catalogue.all_models() if m.endswith("@" + name)][:1]
    hint = f" Did you mean `baseModel: {close[0]}`?" if close else " Run `tuneform models` for the list."
    ctx.report(
        ("baseModel",),
        f"expected a model from the catalogue or, for the local target, a local model directory or .gguf file, "
        f"got {got(name)}.{hint}",
    )
    return None


def _lifecycle_rules(ctx: RuleContext, info: ModelInfo) -> bool:
    """Refuse a retired base model, naming what replaces it; warn about one that retires soon. False = refused."""
    if ctx.today is None:
        return True
    life = info.lifecycle
    status = life.status(ctx.today)
    if status in ("available", "unreleased") or life.retires is None:
        return True
    source = catalogue.sources().get(life.source)
    cite = f' (Google\'s "{source.title}" page)' if source else ""
    replacements = info.current_replacements(ctx.today)
    named = " or ".join(f"`baseModel: {model}`" for model in replacements)
    if status == "retired":
        if replacements:
            fix = f"Did you mean {named}? Tuned models do not outlive their base model, so plan a re-tune."
        else:
            fix = "Choose a current model from `tuneform models`."
        ctx.report(
            ("baseModel",),
            f"expected a model Google still offers for tuning, got {info.id}, retired on {life.retires.isoformat()}"
            f"{cite}. {fix}",
        )
        return False
    days = (life.retires - ctx.today).days
    move = f" Move to {named} before then." if replacements else ""
    ctx.warn(
        ("baseModel",),
        f"{info.id} retires on {life.retires.isoformat()}, in {days} days{cite}; requests to it and to models tuned "
        f"from it fail after that day.{move}",
    )
    return True


def _mode_rules(ctx: RuleContext, info: ModelInfo) -> str:
    mode: str = ctx.merged.get("mode", "adapter")
    if mode in info.modes:
        return mode
    allowed = ", ".join(info.modes)
    if "mode" in ctx.merged:
        if mode == "full" and info.family == "gemini":
            why = f"{info.id} (Gemini models are tuned with adapters only)"
        else:
            why = f"{info.id} (its catalogue modes)"
        ctx.report(
            ("mode",),
            f"expected {allowed} for {why}, got {mode}. Set `mode: {info.modes[0]}`"
            + (" or choose a base model that takes full tuning." if mode == "full" else "."),
        )
    else:
        ctx.report(
            ("baseModel",),
            f"expected a model that takes the default mode adapter, got {info.id}, which takes {allowed} only. "
            f"Add `mode: {info.modes[0]}` next to `baseModel`.",
        )
    return mode


def _adapter_rules(ctx: RuleContext, info: ModelInfo, mode: str) -> int | None:
    size = ctx.merged.get("adapterSize")
    if size is None:
        return info.default_adapter_size if mode == "adapter" else None
    if mode == "full":
        ctx.report(
            ("adapterSize",),
            f"expected no adapterSize with mode full (every weight is tuned), got {size}. "
            "Remove `adapterSize`, or set `mode: adapter`.",
        )
        return None
    sizes = info.adapter_sizes
    if size not in sizes:
        nearest = min(sizes, key=lambda s: (abs(s - size), -s))
        ctx.report(
            ("adapterSize",),
            f"expected one of {', '.join(map(str, sizes))} for {info.id}, got {size}. Set `adapterSize: {nearest}`.",
        )
        return None
    return int(size)


def _hyperparameter_rules(ctx: RuleContext, info: ModelInfo) -> Hyperparameters:
    hp: dict[str, Any] = ctx.merged.get("hyperparameters", {})
    knob = info.learning_rate_knob
    if all(k in hp for k in LR_KNOBS):
        drop = next(k for k in LR_KNOBS if k != knob)
        ctx.report(
            ("hyperparameters", drop),
            f"expected one of learningRate or learningRateMultiplier, got both. {info.id} takes {knob}: "
            f"remove `{drop}`.",
        )
    for key, value in hp.items():
        if key in info.hyperparameters or all(k in hp for k in LR_KNOBS) and key in LR_KNOBS:
            continue
        if key in LR_KNOBS:
            hint = info.value("learningRateHint", 1.0 if knob == "learningRateMultiplier" else 0.0002)
            kind = (
                "Gemini models scale the service's learning rate"
                if knob == "learningRateMultiplier"
                else "open and local models take an absolute learning rate"
            )
            override = ("spec", "targets", ctx.target)
            if ctx.at(("baseModel",))[:3] == override and ctx.at(("hyperparameters", key))[:3] != override:
                # The target swaps the base model; the spec-wide knob suits the other one, so the fix is the
                # target's own knob (which replaces the spec-wide one), not editing the line both targets read.
                fix = (
                    f"Add `targets: {{{ctx.target}: {{hyperparameters: {{{knob}: {yaml_inline(hint)}}}}}}}`: a "
                    "target's own learning-rate knob replaces the spec's."
                )
                kind = f"the {ctx.target} target's base model; {kind}"
            else:
                fix = f"Write `{knob}: {yaml_inline(hint)}` instead."
            ctx.report(("hyperparameters", key), f"expected {knob} for {info.id} ({kind}), got {key}. {fix}")
        else:
            ctx.report(
                ("hyperparameters", key),
                f"expected one of {', '.join(info.hyperparameters)} for {info.id}, got {key}. Remove `{key}: "
                f"{yaml_inline(value)}`.",
            )
    return Hyperparameters(
        epochs=int(hp["epochs"]) if "epochs" in hp else None,
        learning_rate_multiplier=float(hp["learningRateMultiplier"]) if "learningRateMultiplier" in hp else None,
        learning_rate=float(hp["learningRate"]) if "learningRate" in hp else None,
        batch_size=int(hp["batchSize"]) if "batchSize" in hp else None,
    )


def _dataset_path(ctx: RuleContext, split: str, written: str) -> str | None:
    """Check one dataset reference; return the absolute local path (``None`` for gs:// or on error)."""
    where = ("dataset", split)
    example = f"datasets/{ctx.name}/{split}.jsonl"
    if written.startswith("gs://"):
        if ctx.target == "local":
            ctx.report(
                where,
                f"expected a file in the repository for the local target, got {got(written)}. Add "
                f"`targets: {{local: {{dataset: {{{split}: datasets/<name>/{split}.jsonl}}}}}}`.",
            )
        elif not _GS_URI.match(written) or not written.endswith(".jsonl"):
            ctx.report(
                where,
                f"expected gs://<bucket>/<object>.jsonl, got {got(written)}. Name the JSONL object, e.g. "
                f"`{split}: gs://my-bucket/{split}.jsonl`.",
            )
        return None
    if _URI_SCHEME.match(written):
        ctx.report(
            where,
            f"expected a path relative to the spec file or a gs:// URI, got {got(written)}. Copy the file into the "
            f"repository and write e.g. `{split}: {example}`.",
        )
        return None
    if os.path.isabs(written) or written.startswith("~"):
        kind = "a home-directory path" if written.startswith("~") else "the absolute path"
        ctx.report(
            where,
            f"expected a path relative to the spec file, got {kind} {got(written)}. Copy the file into "
            f"the repository and write e.g. `{split}: {example}`.",
        )
        return None
    if "\0" in written:
        ctx.report(where, f"expected a file path, got {got(written)}, which holds a NUL character. Fix the path.")
        return None
    spec_dir = ctx.doc.path.parent
    lexical = Path(os.path.normpath(spec_dir / written))
    try:
        resolved = (spec_dir / written).resolve()
        what = _file_kind(resolved)
    except (OSError, RuntimeError) as error:
        # A symlink loop (RuntimeError), a name longer than the file system takes, a path through a file...
        reason = getattr(error, "strerror", None) or str(error)
        ctx.report(where, f"expected a readable file path, got {got(written)} ({reason}). Fix the path.")
        return None
    root = ctx.repo_root.resolve()
    if not lexical.is_relative_to(ctx.repo_root.absolute()) and not lexical.is_relative_to(root):
        ctx.report(
            where,
            f"expected a path that stays inside the repository, got {got(written)}, which leaves it. Keep datasets "
            f"in the repository next to the specs, e.g. `{split}: {example}`.",
        )
        return None
    if not resolved.is_relative_to(root):
        ctx.report(
            where,
            f"expected a file inside the repository, got {got(written)}, a symlink to {resolved} outside it. "
            "Replace the symlink with the file itself.",
        )
        return None
    if what not in ("file", None):
        # A directory or a FIFO is there, just not a file (and a FIFO would block the dataset check's read).
        ctx.report(
            where,
            f"expected a regular file, got {got(written)}, which is {what} (looked at {display_name(lexical)}). "
            "Point it at the .jsonl file itself.",
        )
        return None
    if not written.endswith(".jsonl"):
        ctx.report(where, f"expected a .jsonl file, got {got(written)}. Save the examples as JSON Lines.")
        return None
    if what is None:
        ctx.report(
            where,
            f"expected an existing file, got {got(written)}, which is not there (looked at "
            f"{display_name(lexical)}). Fix the path; it is relative to the spec file.",
        )
        return None
    return str(resolved)


def _file_kind(path: Path) -> str | None:
    """``"file"``, what else is at ``path`` (a directory, a FIFO...), or ``None`` when nothing is."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return "file"
    return "a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a special file"


def _dataset_rules(ctx: RuleContext) -> DatasetSpec:
    dataset: dict[str, Any] = ctx.merged["dataset"]
    train: str = dataset["train"]
    validation: str | None = dataset.get("validation")
    test: str | None = dataset.get("test")
    if test is not None and ctx.target != "local":
        ctx.report(
            ("dataset", "test"),
            f"expected no test set on the {ctx.target} target (tuneform scores a test set on the local target only), "
            f"got {got(test)}. Move it under `targets: {{local: {{dataset: {{test: {test}}}}}}}`.",
        )
        test = None
    return DatasetSpec(
        format=dataset.get("format", "gemini"),
        train=train,
        validation=validation,
        train_path=_dataset_path(ctx, "train", train),
        validation_path=_dataset_path(ctx, "validation", validation) if validation is not None else None,
        test=test,
        test_path=_dataset_path(ctx, "test", test) if test is not None else None,
    )


def _endpoint_rules(ctx: RuleContext, info: ModelInfo | None = None) -> EndpointSpec:
    endpoint: dict[str, Any] = ctx.merged.get("endpoint", {})
    deploys = info is None or info.deploys
    deploy = bool(endpoint.get("deploy", deploys))
    if deploy and not deploys:
        assert info is not None
        ctx.report(
            ("endpoint", "deploy"),
            f"expected `deploy: false` for {info.id} on the {ctx.target} target (its tuning job writes the tuned "
            "weights to Cloud Storage and deploys nothing; tuneform does not deploy open models), got true. Remove "
            "`deploy: true` (it defaults to false for open models), or serve the model on the local target.",
        )
    traffic = endpoint.get("traffic")
    promote = endpoint.get("promote")
    if traffic is not None:
        total = sum(traffic.values())
        if not deploy:
            ctx.report(
                ("endpoint", "traffic"),
                "expected no traffic split with `deploy: false`, got one. Remove `traffic`, or set `deploy: true`.",
            )
        elif total != 100:
            shares = " + ".join(str(v) for v in traffic.values()) or "an empty mapping, 0"
            ctx.report(
                ("endpoint", "traffic"),
                f"expected percents that sum to 100, got {shares} = {total}. Adjust them, e.g. "
                "`traffic: {v1: 90, latest: 10}`.",
            )
    if promote is not None and not deploy:
        ctx.report(
            ("endpoint", "promote"),
            "expected no promotion gate with `deploy: false`, got one. Remove `promote`, or set `deploy: true`.",
        )
    return EndpointSpec(
        deploy=deploy,
        traffic=dict(traffic) if traffic else None,
        promote=promote,
        generation=_generation_rules(ctx, endpoint.get("generation"), deploy),
    )


def _generation_rules(ctx: RuleContext, generation: dict[str, Any] | None, deploy: bool) -> GenerationSpec | None:
    """``endpoint.generation``: local target only (Vertex AI saves no decoding defaults with a tuned model)."""
    if generation is None:
        return None
    if ctx.target != "local":
        ctx.report(
            ("endpoint", "generation"),
            f"expected no generation on the {ctx.target} target (Vertex AI keeps no decoding defaults with a tuned "
            "model: send them with each request), got some. Move it under `targets: {local: {endpoint: "
            "{generation: ...}}}`.",
        )
        return None
    if not deploy:
        ctx.report(
            ("endpoint", "generation"),
            "expected no decoding defaults with `deploy: false` (nothing serves them), got some. Remove "
            "`generation`, or set `deploy: true`.",
        )
        return None
    stop = generation.get("stop")
    return GenerationSpec(
        temperature=float(generation["temperature"]) if "temperature" in generation else None,
        top_p=float(generation["topP"]) if "topP" in generation else None,
        top_k=generation.get("topK"),
        max_output_tokens=generation.get("maxOutputTokens"),
        stop=tuple(stop) if stop is not None else None,
    )


def _continuation_rules(ctx: RuleContext, info: ModelInfo) -> str | None:
    """``continueFrom``: only where the target and the model offer continuous tuning (V-continuous)."""
    value = ctx.merged.get("continueFrom")
    if value is None:
        return None
    if ctx.target == "local":
        ctx.report(
            ("continueFrom",),
            f"expected no continueFrom on the local target (every local run starts from the base model), got "
            f"{got(value)}. Move it under `targets: {{vertex: {{continueFrom: {value}}}}}`.",
        )
        return None
    if not info.continuous_tuning:
        on = ctx.today or catalogue.today()
        offered = [
            m.id
            for m in catalogue.all_models().values()
            if m.continuous_tuning and m.lifecycle.status(on) != "retired"
        ]
        ctx.report(
            ("continueFrom",),
            f"expected a base model that offers continuous tuning ({', '.join(offered)}), got {info.id}. Remove "
            "`continueFrom` to tune from the base model, or choose one of those models.",
        )
        return None
    return str(value)


def resolve_target(ctx: RuleContext, metadata: dict[str, Any]) -> ResolvedSpec | None:
    before = len(ctx.problems)
    info = _model_for(ctx)
    if info is None:
        if len(ctx.problems) > before:
            # A wrong base model: still report the rules that do not depend on it, so one run shows everything.
            _dataset_rules(ctx)
            _endpoint_rules(ctx)
        return None
    mode = _mode_rules(ctx, info)
    adapter_size = _adapter_rules(ctx, info, mode)
    hyperparameters = _hyperparameter_rules(ctx, info)
    dataset = _dataset_rules(ctx)
    endpoint = _endpoint_rules(ctx, info)
    lora_raw = ctx.merged.get("lora")
    if lora_raw is not None and mode == "full":
        ctx.report(
            ("lora",), "expected no lora settings with mode full, got some. Remove `lora`, or set `mode: adapter`."
        )
    adopt = ctx.merged.get("adopt")
    if adopt is not None and ctx.target == "local":
        ctx.report(
            ("adopt",),
            "expected no adopt on the local target (it adopts a Vertex AI tuning job), got one. Move it under "
            f"`targets: {{vertex: {{adopt: {adopt}}}}}`.",
        )
    continue_from = _continuation_rules(ctx, info)
    checkpoints = bool(ctx.merged.get("intermediateCheckpoints", False))
    if "intermediateCheckpoints" in ctx.merged and ctx.target == "local":
        ctx.report(
            ("intermediateCheckpoints",),
            "expected no intermediateCheckpoints on the local target (it keeps a checkpoint per epoch to resume "
            f"from), got {yaml_inline(checkpoints)}. Move it under `targets: {{vertex: {{intermediateCheckpoints: "
            f"{yaml_inline(checkpoints)}}}}}`.",
        )
    elif "intermediateCheckpoints" in ctx.merged and info.family != "gemini":
        ctx.report(
            ("intermediateCheckpoints",),
            f"expected no intermediateCheckpoints for {info.id} (an open-model job writes up to 10 checkpoints under "
            f"its outputUri anyway), got {yaml_inline(checkpoints)}. Remove `intermediateCheckpoints`.",
        )
    if len(ctx.problems) > before:
        return None
    lora = None
    if lora_raw is not None:
        modules = lora_raw.get("targetModules")
        lora = LoraSpec(
            rank=lora_raw.get("rank"),
            alpha=lora_raw.get("alpha"),
            dropout=float(lora_raw["dropout"]) if "dropout" in lora_raw else None,
            target_modules=tuple(modules) if modules is not None else None,
        )
    line, column = ctx.doc.value_at(("metadata", "name"))
    return ResolvedSpec(
        name=metadata["name"],
        target=ctx.target,
        description=metadata.get("description", ""),
        labels=dict(metadata.get("labels", {})),
        base_model=info.id,
        mode=mode,  # type: ignore[arg-type]
        adapter_size=adapter_size,
        hyperparameters=hyperparameters,
        dataset=dataset,
        endpoint=endpoint,
        lora=lora,
        retain=bool(ctx.merged.get("retain", True)),
        adopt=adopt,
        continue_from=continue_from,
        intermediate_checkpoints=checkpoints,
        source=Location(ctx.doc.file, line, column),
    )
