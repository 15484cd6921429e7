"""What a stack's settings allow for a spec: rules that need both the spec and ``stacks/Pulumi.<stack>.yaml``.

A spec is valid on its own, but whether it can run also depends on where the stack points it: Gemini 3.x models tune
only in ``us-central1`` and ``europe-west4`` and take no customer-managed key (catalogue facts from Google's
supervised tuning page). These rules run in ``tuneform validate --stack <name>`` and in the Pulumi program before
anything is declared, and report at the stack file's line and column, with the spec that is affected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuneform import catalogue
from tuneform.spec.errors import Problem
from tuneform.spec.model import ResolvedSpec
from tuneform.spec.source import display_name

__all__ = ["StackSettings", "read_stack", "stack_file", "stack_problems", "training_prices"]

NAMESPACE = "tuneform"


@dataclass(frozen=True)
class StackSettings:
    """StackSettings holds a stack's ``tuneform:*`` values and where each was written."""

    name: str
    file: str
    """Display path of the stack file ("" when the stack has none)."""
    values: dict[str, Any] = field(default_factory=dict)
    """``region``, ``kmsKeyName``, ``trainingPrices``... without the ``tuneform:`` prefix."""
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Key -> 1-based (line, column) of its value in ``file``."""

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def problem(self, key: str, message: str) -> Problem:
        line, column = self.positions.get(key, (1, 1))
        return Problem(self.file or f"stack {self.name}", line, column, f"config.{NAMESPACE}:{key}", message)

    def with_values(self, values: dict[str, Any]) -> StackSettings:
        """The same positions with ``values`` (what the engine resolved) in place of the file's."""
        return StackSettings(self.name, self.file, {k: v for k, v in values.items() if v is not None}, self.positions)


def stack_file(repo_root: Path, stack: str) -> Path:
    """``stacks/Pulumi.<stack>.yaml``, or wherever ``stackConfigDir`` in ``Pulumi.yaml`` puts it."""
    config_dir = "."
    project = repo_root / "Pulumi.yaml"
    if project.is_file():
        data = yaml.safe_load(project.read_text(encoding="utf-8")) or {}
        config_dir = str(data.get("stackConfigDir") or ".")
    return repo_root / config_dir / f"Pulumi.{stack}.yaml"


def read_stack(repo_root: Path, stack: str) -> StackSettings:
    """Read a stack's ``tuneform:*`` settings with their positions; a missing file gives empty settings.

    Secure values (``{secure: ...}``) are kept as they are: no rule here reads a secret.
    """
    path = stack_file(repo_root, stack)
    if not path.is_file():
        return StackSettings(stack, "")
    node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    values: dict[str, Any] = {}
    positions: dict[str, tuple[int, int]] = {}
    config = _child(node, "config")
    if isinstance(config, yaml.MappingNode):
        for key_node, value_node in config.value:
            key = str(key_node.value)
            if key.startswith(f"{NAMESPACE}:"):
                name = key.removeprefix(f"{NAMESPACE}:")
                values[name] = yaml.safe_load(yaml.serialize(value_node))
                positions[name] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
    return StackSettings(stack, display_name(path), values, positions)


def training_prices(settings: StackSettings) -> dict[str, float]:
    """The stack's own prices (``tuneform:trainingPrices``, USD per 1M training tokens by base model) that a cost
    estimate may use: numbers only. A malformed value is :func:`stack_problems`' to report; here it is left out."""
    prices = settings.get("trainingPrices")
    if not isinstance(prices, dict):
        return {}
    return {
        str(model): float(price)
        for model, price in prices.items()
        if isinstance(price, int | float) and not isinstance(price, bool)
    }


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == key:
                return value_node
    return None


def stack_problems(specs: list[ResolvedSpec], stack: StackSettings) -> tuple[list[Problem], list[Problem]]:
    """Check resolved specs against the stack that will run them.

    Args:
        specs: Specs resolved for the stack's target.
        stack: The stack's settings.

    Returns:
        ``(problems, warnings)``. A rule whose catalogue fact is unconfirmed warns instead of refusing.
    """
    problems: list[Problem] = []
    warnings: list[Problem] = []
    prices = stack.get("trainingPrices")
    if prices is not None:
        if not isinstance(prices, dict):
            problems.append(
                stack.problem(
                    "trainingPrices",
                    f"expected a mapping of catalogue model ids to USD per 1M training tokens, got {prices!r}. "
                    "Write e.g. `tuneform:trainingPrices: {gemini-3.5-flash: 5.0}`.",
                )
            )
        else:
            for model, price in prices.items():
                if catalogue.get(str(model)) is None:
                    problems.append(
                        stack.problem(
                            "trainingPrices",
                            f"expected catalogue model ids as keys, got {model!r}. See `tuneform models`.",
                        )
                    )
                elif isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
                    problems.append(
                        stack.problem(
                            "trainingPrices",
                            f"expected a number of USD per 1M training tokens for {model}, got {price!r}. "
                            f"Write e.g. `{model}: 5.0`.",
                        )
                    )
    for spec in specs:
        if spec.target != "vertex":
            continue
        info = catalogue.get(spec.base_model)
        if info is None:
            continue
        where = f"{spec.name} ({spec.source})" if spec.source else spec.name
        region = stack.get("region")
        if region and info.regions and region not in info.regions:
            fact = info.facts["regions"]
            message = (
                f"expected a region where {info.id} can be tuned ({', '.join(info.regions)}), got {region}, "
                f"for {where}. Set `tuneform:region: {info.regions[0]}`, or choose a base model tuned in {region}."
            )
            (warnings if fact.unconfirmed else problems).append(
                stack.problem("region", ("warning: " if fact.unconfirmed else "") + message)
            )
        if stack.get("kmsKeyName") and info.cmek.value is False:
            message = (
                f"expected no customer-managed key for {info.id} (Google's supervised tuning page: CMEK not "
                f"supported), got one, for {where}. Remove `tuneform:kmsKeyName` from this stack, or tune a model "
                "that supports CMEK in a stack of its own."
            )
            (warnings if info.cmek.unconfirmed else problems).append(
                stack.problem("kmsKeyName", ("warning: " if info.cmek.unconfirmed else "") + message)
            )
        source = spec.continue_from
        if source and source != "previous" and region:
            location = source.split("/")[3]
            if location != region:
                problems.append(
                    stack.problem(
                        "region",
                        f"expected continueFrom of {where} to name a model in {region} (where this stack tunes), "
                        f"got one in {location}. Continue from a model tuned in {region}, or set "
                        f"`tuneform:region: {location}`.",
                    )
                )
    return sorted(problems), sorted(warnings)
