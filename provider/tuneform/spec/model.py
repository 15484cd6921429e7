"""The validated tuning spec: what the rest of tuneform consumes.

The loader (``tuneform.spec.loader``) turns YAML documents into these frozen dataclasses only after every check
passed, so code downstream never re-validates. Field names are the Python spellings of the spec's camelCase keys.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tuneform.spec.errors import Problem

Target = Literal["local", "vertex"]
TARGETS: tuple[Target, ...] = ("local", "vertex")

Mode = Literal["adapter", "full"]
DatasetFormat = Literal["gemini", "openai-chat"]


def camel(name: str) -> str:
    """A Python field name as the spec (and the resources' inputs) spell it: ``learning_rate`` is ``learningRate``."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass(frozen=True)
class Location:
    """Where a value was written: 1-based line and column in ``file``."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int | None = None
    """Passes over the training set; ``None`` lets the target choose (Vertex auto-adjusts, local uses 3)."""
    learning_rate_multiplier: float | None = None
    """Gemini models only."""
    learning_rate: float | None = None
    """Open models only."""
    batch_size: int | None = None
    """Open models only (Vertex) / the local trainer."""


@dataclass(frozen=True)
class DatasetSpec:
    format: DatasetFormat
    train: str
    """As written: a path relative to the spec file, or a ``gs://`` URI."""
    validation: str | None = None
    train_path: str | None = None
    """Absolute local path of ``train`` (``None`` for ``gs://``), checked to stay inside the repository."""
    validation_path: str | None = None
    test: str | None = None
    """Local target only: scored after tuning at the endpoint's default decoding, never trained on."""
    test_path: str | None = None


@dataclass(frozen=True)
class GenerationSpec:
    """``endpoint.generation``: a tuned version's decoding defaults (local target only); ``None`` = the server's."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int | None = None
    stop: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The set fields under the spec's names (what the version records and the endpoint reads)."""
        names = {"top_p": "topP", "top_k": "topK", "max_output_tokens": "maxOutputTokens"}
        return {
            names.get(key, key): list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
            if value is not None
        }


@dataclass(frozen=True)
class EndpointSpec:
    deploy: bool = True
    traffic: dict[str, int] | None = None
    """Version label (e.g. ``"v1"``, ``"latest"``) -> percent; sums to 100."""
    promote: dict[str, Any] | None = None
    """Evaluation gate, e.g. ``{"metric": "exactMatch", "minImprovement": 0.02}`` (see the review issue)."""
    generation: GenerationSpec | None = None


@dataclass(frozen=True)
class LoraSpec:
    """Explicit LoRA settings (``targets.local.lora``); ``None`` fields are derived from ``adapterSize``."""

    rank: int | None = None
    alpha: int | None = None
    dropout: float | None = None
    target_modules: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ResolvedSpec:
    """One tuned model, with ``targets.<target>`` merged over ``spec``, validated for that target."""

    name: str
    target: Target
    description: str
    labels: dict[str, str]
    base_model: str
    """A catalogue id (``gemini-3.5-flash``, ``smollm2-135m-instruct``) or, on the local target, a local path."""
    mode: Mode
    adapter_size: int | None
    hyperparameters: Hyperparameters
    dataset: DatasetSpec
    endpoint: EndpointSpec
    lora: LoraSpec | None = None
    retain: bool = True
    adopt: str | None = None
    continue_from: str | None = None
    """Vertex: ``previous`` or a tuned model's registry name to continue from (``preTunedModel``); ``None``: base."""
    intermediate_checkpoints: bool = False
    """Vertex: keep (and let Vertex deploy) a checkpoint per epoch instead of the final one only."""
    source: Location | None = field(default=None, compare=False)
    """Where ``metadata.name`` was written; for messages, not identity."""

    def training_inputs(self) -> dict[str, Any]:
        """The fields whose change means a new tuning run (a new model version)."""
        inputs = {
            "target": self.target,
            "baseModel": self.base_model,
            "mode": self.mode,
            "adapterSize": self.adapter_size,
            "hyperparameters": {k: v for k, v in asdict(self.hyperparameters).items() if v is not None},
            "datasetFormat": self.dataset.format,
            "lora": None if self.lora is None else {k: v for k, v in asdict(self.lora).items() if v is not None},
        }
        # Only when set, so that the identity (spec hash) of every run declared before these keys existed holds.
        if self.continue_from is not None:
            inputs["continueFrom"] = self.continue_from
        if self.intermediate_checkpoints:
            inputs["intermediateCheckpoints"] = True
        if self.endpoint.generation is not None:
            # Saved with the version and scored with it (the test set is answered at these defaults).
            inputs["generation"] = self.endpoint.generation.to_json()
        return inputs

    def spec_hash(self, dataset_hash: str = "") -> str:
        """Identity of a tuning run: training inputs plus the dataset's content hash."""
        payload = json.dumps({"inputs": self.training_inputs(), "dataset": dataset_hash}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def weights_hash(self, dataset_hash: str = "") -> str:
        """Identity of the weights a run produces: :meth:`spec_hash` without ``endpoint.generation``, which changes
        how a version answers and is scored, not what training makes. Two versions with one weights hash share
        their weights (the local backend tunes once and re-scores)."""
        inputs = {key: value for key, value in self.training_inputs().items() if key != "generation"}
        payload = json.dumps({"inputs": inputs, "dataset": dataset_hash}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class TunedModelDocument:
    """One YAML document as written (before target resolution), kept for plans and reviews."""

    name: str
    source: Location
    raw: dict[str, Any]
    resolved: dict[str, ResolvedSpec]
    """Target -> resolved spec, for each target this document can run on."""
    warnings: tuple[Problem, ...] = ()
    """What is valid but needs attention (a base model retiring soon); each message starts with ``warning:``."""
