"""The served versions: loaded once at start (in a background thread), each behind its own batching engine."""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tuneform.serving.config import ServerConfig, VersionConfig
from tuneform.serving.engine import Engine
from tuneform.serving.protocol import Decoding

DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0


class Inference(Protocol):
    """What the server needs from the trainer's side (``tuneform.training`` by default).

    ``load_for_inference(base_model_dir, artifact_dir, kind) -> (model, tokenizer)``: a causal LM in eval mode and
    its tokenizer, whose chat template renders prompts as in training. Optionally ``serve_in_bf16(model) -> bool``:
    whether the model is best run in bf16 on this machine (the trainer's side knows the hardware).
    """

    def load_for_inference(self, base_model_dir: Path, artifact_dir: Path, kind: str) -> tuple[Any, Any]: ...


def generation_defaults(generation: dict[str, Any] | None, max_new_tokens: int) -> Decoding:
    """Decoding from a version's saved ``generation`` (``spec.endpoint.generation``), the server's defaults
    (temperature 1, top-p 1, ``max_new_tokens``) for what it leaves unset. Evaluation decodes the test set so too."""
    saved = generation or {}
    return Decoding(
        temperature=float(saved.get("temperature", DEFAULT_TEMPERATURE)),
        top_p=float(saved.get("topP", DEFAULT_TOP_P)),
        top_k=saved.get("topK"),
        max_new_tokens=int(saved.get("maxOutputTokens", max_new_tokens)),
        stops=tuple(saved.get("stop") or ()),
    )


def version_defaults(config: ServerConfig, version: VersionConfig) -> Decoding:
    """A version's decoding defaults, as the endpoint applies them."""
    return generation_defaults(version.generation, min(config.max_new_tokens, config.max_new_tokens_limit))


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ModelPool:
    """Loads every configured version once and serves each through an ``Engine``.

    Args:
        config: The server configuration.
        inference: The loader; ``None`` imports ``config.inference``.
        on_failure: Called (from the loading thread) if loading fails, e.g. to stop the server.
    """

    def __init__(
        self,
        config: ServerConfig,
        inference: Inference | None = None,
        on_failure: Callable[[], None] | None = None,
        *,
        running: dict[int, Engine] | None = None,
    ) -> None:
        self.config = config
        self._inference = inference
        self._on_failure = on_failure
        self.state = "loading"
        self.error: str | None = None
        self.engines: dict[int, Engine] = {}
        self._running = dict(running or {})
        """Engines already serving some of these versions (a reload keeps them rather than loading them again)."""

    def load(self) -> None:
        """Loads all versions (blocking) and starts their engines; records ``failed`` and the error, never raises."""
        try:
            inference = self._inference or importlib.import_module(self.config.inference)
            for number, version in self.config.versions.items():
                if number in self._running:
                    self.engines[number] = self._running[number]
                    continue
                started = time.monotonic()
                _say(f"loading {self.config.name}@{number} ({version.kind}) from {version.artifact_dir}")
                model, tokenizer = inference.load_for_inference(
                    Path(version.base_model_dir), Path(version.artifact_dir), version.kind
                )
                bf16 = getattr(inference, "serve_in_bf16", None)
                engine = Engine(
                    f"{self.config.name}@{number}",
                    model,
                    tokenizer,
                    max_batch=self.config.max_batch,
                    max_waiting=self.config.max_waiting,
                    log=_say,
                    bf16=bool(bf16(model)) if bf16 is not None else False,
                )
                self.engines[number] = engine
                _say(f"loaded {self.config.name}@{number} in {time.monotonic() - started:.1f}s")
            for number, engine in self.engines.items():
                if number not in self._running:
                    engine.start()
            self.state = "ready"
            _say(f"ready: {self.config.name} on http://{self.config.host}:{self.config.port}")
        except Exception as exc:  # noqa: BLE001 - any loading failure must reach /health and the log, not kill a thread silently
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            traceback.print_exc(file=sys.stderr)
            if self._on_failure is not None:
                self._on_failure()

    def stop(self) -> None:
        for engine in self.engines.values():
            engine.stop()

    def stop_loaded(self) -> None:
        """Stop the engines this pool loaded itself (a failed reload: the ones it kept still serve)."""
        for number, engine in self.engines.items():
            if number not in self._running:
                engine.stop()

    def defaults(self, version: int) -> Decoding:
        return version_defaults(self.config, self.config.versions[version])

    def context(self, version: int) -> int:
        """Positions the version's model takes (prompt and answer together)."""
        return self.engines[version].context
