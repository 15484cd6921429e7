"""Support for the serving tests (no tests here): a tiny real model and an inference module for the server.

The server takes its loader/generator from a module named in its configuration (``inference``); until the trainer's
``tuneform.training.load_for_inference``/``generate`` land, the tests point it at this module. It is plain
transformers + PEFT on a randomly initialised two-layer Llama that uses SmolLM2's real tokenizer and chat template,
so every answer is really generated (gibberish, but produced token by token by a model).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training_helpers import smollm2_tokenizer, tiny_llama


def free_port() -> int:
    """Asks the kernel for a free TCP port on 127.0.0.1.

    Returns:
        The port number.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cached_tiny_models() -> dict[str, Path]:
    """Builds the tiny models once per checkout, in the git-ignored ``.cache/`` (building takes ~25 s on 2 cores,
    most of it reading the tokenizer out of the GGUF file).

    Returns:
        ``{"base": dir, "adapter": dir, "full": dir}``.
    """
    cache = Path(__file__).resolve().parents[1] / ".cache" / "tests" / "tiny-llama-v1"
    if not (cache / "full" / "config.json").is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="tiny-llama-", dir=cache.parent))
        build_tiny_models(staging)
        try:
            os.rename(staging, cache)
        except OSError:  # another test process built it first
            shutil.rmtree(staging, ignore_errors=True)
    return {name: cache / name for name in ("base", "adapter", "full")}


def build_tiny_models(root: Path) -> dict[str, Path]:
    """Saves a tiny base model with SmolLM2's tokenizer, a LoRA adapter over it and a different full model.

    Args:
        root: An empty directory.

    Returns:
        ``{"base": dir, "adapter": dir, "full": dir}``.
    """
    from peft import LoraConfig, get_peft_model

    tokenizer = smollm2_tokenizer()
    dirs = {name: root / name for name in ("base", "adapter", "full")}
    base = tiny_llama(tokenizer, seed=0)
    base.save_pretrained(dirs["base"])
    tokenizer.save_pretrained(dirs["base"])
    # init_lora_weights=False: a non-zero adapter, so version 1 really differs from the base.
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(str(dirs["adapter"]))
    tiny_llama(tokenizer, seed=1).save_pretrained(dirs["full"])
    tokenizer.save_pretrained(dirs["full"])
    return dirs


def load_for_inference(base_model_dir: Path, artifact_dir: Path, kind: str) -> tuple[Any, Any]:
    """Loads one version the way the trainer's ``load_for_inference`` will.

    Args:
        base_model_dir: The base model directory.
        artifact_dir: The adapter or full model directory.
        kind: ``adapter`` or ``full``.

    Returns:
        ``(model, tokenizer)`` in eval mode.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    model: Any
    if kind == "full":
        model = AutoModelForCausalLM.from_pretrained(str(artifact_dir))
    else:
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_model_dir)), str(artifact_dir))
    return model.eval(), tokenizer


class SlowModel:
    """The tiny model, each forward pass delayed: generation that takes long enough to watch."""

    def __init__(self, model: Any, delay_s: float) -> None:
        self._model = model
        self._delay_s = delay_s
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        time.sleep(self._delay_s)
        return self._model(*args, **kwargs)


@contextlib.contextmanager
def serve(config: Any, pool: Any) -> Iterator[str]:
    """Serves ``create_app(config, pool)`` with uvicorn in a thread; yields the base URL."""
    import uvicorn

    from tuneform.serving.app import create_app

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, pool), host=config.host, port=config.port, log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_ready(url: str) -> None:
    """Waits until ``/health`` answers 200 (the models loaded)."""
    import httpx

    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/health").status_code != 200:
        assert time.monotonic() < deadline, "models did not load"
        time.sleep(0.1)
