"""The local trainer: base models without a hub, TRL + PEFT fine-tuning, checkpoints, evaluation and inference.

Every module here imports torch, transformers, peft and trl inside functions only, so importing this package is cheap
and pickle-safe for Pulumi dynamic providers.
"""

from tuneform.training.base_model import DEFAULT_BASE_MODEL, resolve_base_model
from tuneform.training.evaluate import EvalMetrics, evaluate, load_for_inference, serve_in_bf16
from tuneform.training.trainer import TrainConfig, TrainResult, build_lora_config, train

__all__ = [
    "DEFAULT_BASE_MODEL",
    "EvalMetrics",
    "TrainConfig",
    "TrainResult",
    "build_lora_config",
    "evaluate",
    "load_for_inference",
    "serve_in_bf16",
    "resolve_base_model",
    "train",
]
