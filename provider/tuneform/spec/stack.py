"""What a stack's settings allow for a spec: rules that need both the spec and ``stacks/Pulumi.<stack>.yaml``.

A spec is valid on its own, but whether it can run also depends on where the stack points it: Gemini 3.x models tune
only in ``us-central1`` and ``europe-west4`` and take no customer-managed key (catalogue facts from Google's
supervised tuning page). These rules run in ``tuneform validate --stack <name>`` and in the Pulumi program before
anything is declared, and report at the stack file's line and column, with the spec that is affected.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneform import catalogue
from tuneform.spec.errors import Problem
from tuneform.spec.model import ResolvedSpec
from tuneform.spec.schema import got
from tuneform.spec.source import FieldPath, display_name, read_documents
from tuneform.workspace import project_settings

__all__ = ["SETTINGS", "StackSettings", "read_stack", "stack_file", "stack_problems", "training_prices"]

NAMESPACE = "tuneform"


SETTINGS: dict[str, str] = {
    "target": "local or vertex",
    "project": "text",
    "projectNumber": "text",
    "region": "text",
    "bucket": "text",
    "bucketName": "text",
    "bucketLocation": "text",
    "serviceAccount": "text",
    "kmsKeyName": "text",
    "apiEndpoint": "text",
    "storageEndpoint": "text",
    "endpointPort": "port",
    "keepVersions": "count",
    "deadlineSeconds": "seconds",
    "maxTrainingCost": "amount",
    "pollSeconds": "pair",
    "retrySeconds": "pair",
    "trainingPrices": "prices",
    "enableApis": "boolean",
    "openModels": "boolean",
    "forceDestroy": "boolean",
    "labels": "mapping",
}
"""Every ``tuneform:*`` setting a stack may have, and what its value must be: Pulumi keeps any key, so a misspelt
one (``tuneform:regoin``) would be silently ignored without this list. README "The Vertex AI target" says what each
does."""


@dataclass(frozen=True)
class StackSettings:
    """StackSettings holds a stack's ``tuneform:*`` values and where each was written."""

    name: str
    file: str
    """Display path of the stack file ("" when the stack has none)."""
    values: dict[str, Any] = field(default_factory=dict)
    """``region``, ``kmsKeyName``, ``trainingPrices``... without the ``tuneform:`` prefix. Secrets are left out:
    nothing here can decrypt them, and no rule needs one."""
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Key -> 1-based (line, column) of its value in ``file``."""
    problems: tuple[Problem, ...] = ()
    """What is wrong with the file itself: YAML, unknown settings, values of the wrong kind (:func:`read_stack`)."""
    written: dict[str, str] = field(default_factory=dict)
    """Key -> the config key that set it, where that is not ``tuneform:<key>`` (``gcp:region`` for ``region``)."""

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def problem(self, key: str, message: str) -> Problem:
        line, column = self.positions.get(key, (1, 1))
        shown = self.written.get(key, f"{NAMESPACE}:{key}")
        return Problem(self.file or f"stack {self.name}", line, column, f"config.{shown}", message)

    def with_values(self, values: dict[str, Any]) -> StackSettings:
        """The same positions with ``values`` (what the engine resolved) in place of the file's."""
        return dataclasses.replace(self, values={k: v for k, v in values.items() if v is not None})


def stack_file(repo_root: Path, stack: str) -> Path:
    """``stacks/Pulumi.<stack>.yaml``, or wherever ``stackConfigDir`` in ``Pulumi.yaml`` puts it."""
    config_dir = project_settings(repo_root).get("stackConfigDir")
    return repo_root / (config_dir if isinstance(config_dir, str) else ".") / f"Pulumi.{stack}.yaml"


def read_stack(repo_root: Path, stack: str) -> StackSettings:
    """Read a stack's ``tuneform:*`` settings with their positions; a missing file gives empty settings.

    The file is read as spec files are (bounded, every YAML and duplicate-key problem located), and each setting is
    checked against :data:`SETTINGS`; what is wrong is in ``problems``, never raised. Without ``tuneform:region``,
    ``gcp:region`` is the region, as for the Pulumi program.
    """
    path = stack_file(repo_root, stack)
    if not path.exists():
        return StackSettings(stack, "")
    documents, problems = read_documents(path, empty=None)
    file = display_name(path)
    if len(documents) > 1:
        line, column = documents[1].start
        problems.append(
            Problem(
                file,
                line,
                column,
                "document",
                "expected one YAML document in a stack file, got more. Remove "
                "the `---` and merge the settings into one `config:` mapping.",
            )
        )
    if not documents:
        return StackSettings(stack, file, problems=tuple(problems))
    doc = documents[0]
    config = doc.data.get("config") if isinstance(doc.data, dict) else None
    if not isinstance(doc.data, dict) or config is not None and not isinstance(config, dict):
        at: FieldPath = ("config",) if isinstance(doc.data, dict) else ()
        problems.append(
            doc.problem(
                at,
                "expected a mapping of settings under `config:`, got "
                f"{got(config if at else doc.data)}. Write e.g. `config: {{tuneform:target: local}}`.",
            )
        )
        return StackSettings(stack, file, problems=tuple(problems))
    values: dict[str, Any] = {}
    positions: dict[str, tuple[int, int]] = {}
    written: dict[str, str] = {}
    settings: dict[Any, Any] = config or {}
    for key, written_value in settings.items():
        namespace, _, name = str(key).partition(":")
        if namespace != NAMESPACE and key != "gcp:region":
            continue
        if key == "gcp:region":
            if f"{NAMESPACE}:region" in settings:
                continue
            name, written["region"] = "region", key
        positions[name] = doc.value_at(("config", key))
        if name not in SETTINGS:
            close = difflib.get_close_matches(name, list(SETTINGS), n=1, cutoff=0.6)
            hint = f"Did you mean `{NAMESPACE}:{close[0]}`?" if close else "Remove it, or fix its spelling."
            problems.append(
                doc.problem(
                    ("config", key),
                    f"expected a tuneform setting ({', '.join(SETTINGS)}), got `{key}`, which nothing reads. {hint}",
                    at_key=True,
                )
            )
            continue
        if isinstance(written_value, dict) and set(written_value) == {"secure"}:
            continue
        value = _structured(SETTINGS[name], written_value)
        wrong = _wrong_kind(SETTINGS[name], value)
        if wrong is not None:
            problems.append(doc.problem(("config", key), f"expected {wrong}, got {got(value)}."))
            continue
        values[name] = value
    return StackSettings(stack, file, values, positions, tuple(problems), written)


def _number(value: Any) -> float | None:
    """A config number as Pulumi reads one: a YAML number or its text (``"8765"``, as ``pulumi config set``
    writes it); ``None`` for anything else, NaN and infinities included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _price(value: Any) -> float | None:
    """A ``trainingPrices`` entry as a number (a YAML number, finite; text is not a price); ``None`` otherwise."""
    return None if isinstance(value, str) else _number(value)


def _structured(kind: str, value: Any) -> Any:
    """A list or mapping setting written as JSON text, parsed (Pulumi's ``get_object`` takes either)."""
    if isinstance(value, str) and kind in ("pair", "prices", "mapping"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _wrong_kind(kind: str, value: Any) -> str | None:
    """What a setting of ``kind`` must be, when ``value`` is not that; ``None`` when it is."""
    number = _number(value)
    checks: dict[str, tuple[bool, str]] = {
        "local or vertex": (value in ("local", "vertex"), "`local` or `vertex`"),
        "text": (isinstance(value, str | int | float) and not isinstance(value, bool), "a text value"),
        "port": (number is not None and number.is_integer() and 1 <= number <= 65535, "a port from 1 to 65535"),
        "count": (number is not None and number.is_integer() and number >= 1, "a whole number >= 1"),
        "seconds": (number is not None and number > 0, "a number of seconds > 0"),
        "amount": (number is not None and number >= 0, "an amount in USD >= 0"),
        "pair": (
            isinstance(value, list) and len(value) == 2 and all((_number(v) or 0) > 0 for v in value),
            "two numbers of seconds > 0, [first, longest]",
        ),
        "prices": (isinstance(value, dict), "a mapping of catalogue model ids to USD per 1M training tokens"),
        "boolean": (value in (True, False, "true", "false"), "true or false"),
        "mapping": (isinstance(value, dict), "a mapping"),
    }
    ok, expected = checks[kind]
    return None if ok else expected


def training_prices(settings: StackSettings) -> dict[str, float]:
    """The stack's own prices (``tuneform:trainingPrices``, USD per 1M training tokens by base model) that a cost
    estimate may use: numbers only. A malformed value is :func:`stack_problems`' to report; here it is left out."""
    prices = settings.get("trainingPrices")
    if not isinstance(prices, dict):
        return {}
    return {str(model): price for model, written in prices.items() if (price := _price(written)) is not None}


def stack_problems(specs: list[ResolvedSpec], stack: StackSettings) -> tuple[list[Problem], list[Problem]]:
    """Check resolved specs against the stack that will run them.

    Args:
        specs: Specs resolved for the stack's target.
        stack: The stack's settings.

    Returns:
        ``(problems, warnings)``: what is wrong with the stack file itself first (``stack.problems``). A rule whose
        catalogue fact is unconfirmed warns instead of refusing.
    """
    problems: list[Problem] = list(stack.problems)
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
                elif (number := _price(price)) is None or number < 0:
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
