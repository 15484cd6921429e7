"""JSON Schema validation of spec documents, with each jsonschema error turned into a located, actionable message.

The schema (``tuneform-v1.schema.json``, draft 2020-12) is the single source of field names, types, bounds and
descriptions; editors read the same file through the ``yaml-language-server`` comment. This module only translates
its errors: ``expected <what the schema says>, got <what was written>. <fix built from the schema's examples>``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
import re
from importlib import resources
from typing import Any

import yaml

from tuneform.problems import MAX_PROBLEMS_PER_FILE, more_problems
from tuneform.spec.errors import Problem
from tuneform.spec.source import FieldPath, SourceDocument, dotted

__all__ = ["SCHEMA_FILE", "got", "sanitized", "schema", "schema_problems", "whole_numbers", "yaml_inline"]

SCHEMA_FILE = "tuneform-v1.schema.json"

_NAME_RULE = "lower-case letters, digits and '-', starting with a letter, not ending with '-', at most 63 characters"
_LABEL_KEY_RULE = "a label key: lower-case letters, digits, '_' and '-', starting with a letter, at most 63 characters"
_LABEL_VALUE_RULE = "a label value: lower-case letters, digits, '_' and '-', at most 63 characters"


@functools.cache
def schema() -> dict[str, Any]:
    """The tuneform/v1 JSON Schema shipped in the package."""
    loaded: dict[str, Any] = json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text("utf-8"))
    return loaded


@functools.cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema())


def yaml_inline(value: Any) -> str:
    """``value`` in YAML flow syntax, as a person would write it after ``key:``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def got(value: Any) -> str:
    """How a written value is shown after ``got``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _bounds(sub: dict[str, Any]) -> str:
    parts = []
    if "minimum" in sub and "maximum" in sub:
        return f" from {sub['minimum']} to {sub['maximum']}"
    if "minimum" in sub:
        parts.append(f">= {sub['minimum']}")
    if "exclusiveMinimum" in sub:
        parts.append(f"> {sub['exclusiveMinimum']}")
    if "maximum" in sub:
        parts.append(f"<= {sub['maximum']}")
    if "exclusiveMaximum" in sub:
        parts.append(f"< {sub['exclusiveMaximum']}")
    return " " + " and ".join(parts) if parts else ""


def _expected(sub: dict[str, Any]) -> str:
    if "const" in sub:
        return str(sub["const"])
    if "enum" in sub:
        return "one of " + ", ".join(str(v) for v in sub["enum"])
    kind = sub.get("type")
    if kind == "integer":
        return "integer" + _bounds(sub)
    if kind == "number":
        return "number" + _bounds(sub)
    if kind == "boolean":
        return "true or false"
    if kind == "object":
        return "a mapping"
    if kind == "array":
        return "a list"
    if sub.get("pattern") == schema()["$defs"]["name"]["pattern"]:
        return _NAME_RULE
    return "a string"


def _slug(text: str, allowed: str, *, letter_first: bool = True) -> str:
    """``text`` rewritten to lower-case letters, digits and ``allowed``, at most 63 characters."""
    slug = re.sub(f"[^a-z0-9{allowed}]+", "-", str(text).lower()).strip("-_")
    if letter_first:
        slug = slug.lstrip("0123456789-_") or "x"
    return slug[:63].rstrip("-_")


def _name_for(value: Any, doc: SourceDocument) -> str:
    """A valid ``metadata.name`` close to what was written (or to the file name)."""
    text = str(value).strip() if value is not None else ""
    if not text:
        text = doc.path.stem
    if text[:1].isdigit():
        text = f"model-{text}"
    return _slug(text, "-")


def _example(sub: dict[str, Any]) -> Any:
    examples = sub.get("examples")
    return examples[0] if examples else None


def _fix(key: Any, sub: dict[str, Any], value: Any, written: str | None = None) -> str:
    if "enum" in sub and isinstance(value, str):
        close = difflib.get_close_matches(value, [str(v) for v in sub["enum"]], n=1, cutoff=0.5)
        if close:
            return f" Did you mean `{key}: {close[0]}`?"
    if not isinstance(key, str):
        return ""
    free_text = key == "description" or "pattern" in sub and sub["pattern"].startswith("^[a-z0-9_-]")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if (
        sub.get("type") == "string"
        and written
        and (isinstance(value, bool) or free_text and (number or value is None))
    ):
        # YAML read `yes` (or in free text `4711`, `null`) as a boolean (a number, nothing); the user meant the text.
        return f' Quote it: `{key}: "{written}"`.'
    example = _example(sub)
    if example is None:
        return ""
    return f" Set `{key}: {yaml_inline(example)}`."


def _odd_values(data: Any, path: FieldPath = ()) -> list[tuple[FieldPath, Any, bool]]:
    """What JSON Schema cannot see: keys that are not text (YAML reads `1:`, `on:` and `null:` as a number, a
    boolean and nothing, and JSON has no such keys), and numbers that are not finite (`.nan` compares false with
    every bound, so `learningRate: .nan` passes them all). Each as ``(path, the key or value, whether a key)``."""
    found: list[tuple[FieldPath, Any, bool]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                found.append(((*path, key), key, True))
            else:
                found.extend(_odd_values(value, (*path, key)))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            found.extend(_odd_values(item, (*path, index)))
    elif isinstance(data, float) and not math.isfinite(data):
        found.append((path, data, False))
    return found


def _odd_problem(doc: SourceDocument, path: FieldPath, odd: Any, is_key: bool) -> Problem:
    if not is_key:
        return doc.problem(path, f"expected a finite number, got {yaml_inline(odd)}. Write the number you mean.")
    written = doc.key_texts.get(path, str(odd))
    if path[-2:-1] == ("traffic",) and isinstance(odd, int) and not isinstance(odd, bool):
        message = f"expected a version label v1, v2, ... or latest, got the number {odd}. Write `v{odd}: ...`."
    else:
        kind = "nothing" if odd is None else "a boolean" if isinstance(odd, bool) else "a number"
        message = (
            f'expected a text key, got `{written}`, which YAML reads as {kind} unquoted. Quote it: `"{written}": ...`.'
        )
    return doc.problem(path, message, at_key=True, shown=(*path[:-1], written))


def _property_names(doc: SourceDocument, owner: FieldPath, key: Any) -> Problem:
    """A key of a free-form mapping (labels, traffic) breaks the mapping's key rule."""
    child = (*owner, key)
    if owner[-1:] == ("labels",) and (str(key).startswith("tuneform-") or key == "managed-by"):
        message = (
            f"expected a label key of your own, got {got(key)}, which tuneform sets itself on every resource. Rename "
            f"it, e.g. `team-{key}: ...`."
        )
    elif owner[-1:] == ("labels",):
        fix = _slug(key, "_-")
        message = f"expected {_LABEL_KEY_RULE}, got {got(key)}. Rename it: `{fix}: ...`."
    else:
        message = f"expected a version label v1, v2, ... or latest, got {got(key)}. Write e.g. `v1: 90`."
    return doc.problem(child, message, at_key=True)


def message_head(owner: FieldPath, known: list[str], key: Any) -> str:
    """The ``expected ..., got ...`` part of an unknown-field message."""
    where = dotted(owner) if owner else "the document"
    return f"expected a field of {where} ({', '.join(known)}), got unknown field `{key}`."


def _unknown_key(doc: SourceDocument, owner: FieldPath, sub: dict[str, Any], key: Any) -> Problem:
    known = list(sub.get("properties", {}))
    child = (*owner, key)
    value = doc.data
    for part in child:
        value = value[part]
    written = f"`{key}: {yaml_inline(value)}`" if not isinstance(value, dict | list) else f"`{key}:`"
    home = _home_of(str(key))
    if home and home != dotted(owner):
        return doc.problem(
            child,
            f"{message_head(owner, known, key)} `{key}` belongs under `{home}`: move {written} there.",
            at_key=True,
        )
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if not close:
        lowered = {name.lower(): name for name in known}
        close = [lowered[str(key).lower()]] if str(key).lower() in lowered else []
    if owner[-1:] == ("targets",):
        message = f"expected a target ({', '.join(known)}), got unknown target `{key}`."
        return doc.problem(child, message + (f" Did you mean `{close[0]}`?" if close else ""), at_key=True)
    message = message_head(owner, known, key)
    head, _, tail = str(key).partition(" ")
    if tail and value is None and head in known:
        # `{epochs 3}` or `epochs 3` parse as one key with no value: the colon is missing.
        return doc.problem(
            child,
            f"{message} Did you mean `{head}: {tail.strip()}`? Put `: ` between a key and its value.",
            at_key=True,
        )
    if close:
        renamed = f"`{close[0]}: {yaml_inline(value)}`" if not isinstance(value, dict | list) else f"`{close[0]}:`"
        return doc.problem(child, f"{message} Did you mean `{close[0]}`? Rename it: {renamed}.", at_key=True)
    return doc.problem(child, f"{message} Remove it or fix its spelling.", at_key=True)


@functools.cache
def _homes() -> dict[str, str]:
    """Field name -> where it lives in a spec (first place found), for keys written at the wrong level."""
    defs = schema()["$defs"]
    homes: dict[str, str] = {}

    def walk(sub: dict[str, Any], where: str) -> None:
        if "$ref" in sub:
            sub = defs[sub["$ref"].rsplit("/", 1)[1]]
        for name, child in sub.get("properties", {}).items():
            homes.setdefault(name, where)
            if where.count(".") < 3:
                walk(child, f"{where}.{name}" if where else name)

    walk(schema(), "")
    return homes


def _home_of(key: str) -> str | None:
    home = _homes().get(key)
    return home or None


def _resolve(sub: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in sub:
        return _resolve(schema()["$defs"][sub["$ref"].rsplit("/", 1)[1]])
    return sub


def _required(doc: SourceDocument, owner: FieldPath, sub: dict[str, Any], key: str) -> Problem:
    child_schema = _resolve(sub.get("properties", {}).get(key, {}))
    example = _example(child_schema)
    shown = f"`{key}: {yaml_inline(example)}`" if example is not None else f"`{key}`"
    under = f" under `{owner[-1]}:`" if owner else ""
    message = f"expected a required field, got none. Add {shown}{under}."
    line, column = doc.key_at(owner)
    return Problem(doc.file, line, column, dotted((*owner, key)), message)


def schema_problems(doc: SourceDocument) -> list[Problem]:
    """Validate one document against the JSON Schema and report every error, located and with its fix.

    Args:
        doc: A document read by ``read_documents``.

    Returns:
        The problems; empty when the document matches the schema.
    """
    if not isinstance(doc.data, dict):
        kind = got(doc.data) if not isinstance(doc.data, str | int | float) else f"the scalar {got(doc.data)}"
        return [
            doc.problem(
                (),
                f"expected a mapping with apiVersion, kind, metadata and spec, got {kind}. "
                "Start the document with `apiVersion: tuneform/v1`.",
            )
        ]
    # Every problem is placed (cheap: a dict lookup) but only the first ones by position are worded, up to what a
    # file prints: wording a misspelt key costs a YAML dump and a fuzzy match, and a hostile document of 66,000
    # unknown keys took 1.3 s instead of 5.6 s. The rest is counted.
    placed: list[tuple[tuple[int, int], int, Any, Any]] = []
    odd = _odd_values(doc.data)
    for odd_path, value, is_key in odd:
        position = doc.key_at(odd_path) if is_key else doc.value_at(odd_path)
        placed.append((position, -1, (odd_path, value, is_key), _ODD))
    for number, error in enumerate(_validator().iter_errors(doc.data)):
        unknown = _unknown_keys(error)
        if unknown:
            path: FieldPath = tuple(error.absolute_path)
            placed.extend((doc.key_at((*path, key)), number, error, key) for key in unknown)
        else:
            placed.append((_error_position(doc, error), number, error, _MISSING))
    placed.sort(key=lambda item: item[:2])
    problems: list[Problem] = []
    omitted = 0
    for _, _, error, key in placed:
        if len(problems) >= MAX_PROBLEMS_PER_FILE:
            omitted += 1 if key is not _MISSING else _error_count(error)
        elif key is _ODD:
            problems.append(_odd_problem(doc, *error))
        elif key is not _MISSING:
            problems.append(_unknown_key(doc, tuple(error.absolute_path), error.schema, key))
        else:
            problems.extend(_translate(doc, error))
    if omitted:
        problems.append(more_problems(doc.file, omitted))
    return problems


_MISSING = object()
_ODD = object()


def _error_position(doc: SourceDocument, error: Any) -> tuple[int, int]:
    """Where :func:`_translate` will place the problems of an error (for errors other than unknown keys)."""
    path: FieldPath = tuple(error.absolute_path)
    if "propertyNames" in error.absolute_schema_path:
        return doc.key_at((*path, error.instance))
    if error.validator == "required":
        return doc.key_at(path)
    return doc.value_at(path)


def _unknown_keys(error: Any) -> list[Any]:
    sub = error.schema if isinstance(error.schema, dict) else {}
    if error.validator != "additionalProperties" or sub.get("additionalProperties") is not False:
        return []
    # A key that is not text is :func:`_odd_values`' to report.
    return [key for key in error.instance if isinstance(key, str) and key not in sub.get("properties", {})]


def _error_count(error: Any) -> int:
    """How many problems :func:`_translate` makes of one jsonschema error (at most: a required field whose
    misspelling is already reported makes none)."""
    if error.validator == "required":
        return sum(1 for key in error.validator_value if key not in error.instance)
    return 1


def sanitized(data: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of ``data`` without the values the schema refuses, or ``None`` when that does not make it valid.

    The cross-field rules run on this copy, so one run reports a misspelt key and, say, an adapter size that the
    base model does not take; a missing required field leaves nothing sound to check and gives ``None``.
    """
    clean = copy.deepcopy(data)
    doomed: list[FieldPath] = [path for path, _, _ in _odd_values(data)]
    for error in _validator().iter_errors(data):
        path: FieldPath = tuple(error.absolute_path)
        sub = error.schema if isinstance(error.schema, dict) else {}
        if error.validator == "required":
            return None
        if "propertyNames" in error.absolute_schema_path:
            doomed.append((*path, error.instance))
        elif error.validator == "additionalProperties" and sub.get("additionalProperties") is False:
            doomed.extend((*path, key) for key in _unknown_keys(error))
        else:
            doomed.append(path)
    # An aggregate rule (traffic sums to 100) over half a mapping would only mislead: drop the whole mapping.
    doomed = [path[: path.index("traffic") + 1] if "traffic" in path[:-1] else path for path in doomed]
    for path in sorted(set(doomed), key=len, reverse=True):
        if not path:
            return None
        if path in _MARKERS:
            # A wrong apiVersion or kind says nothing about the rest; check it as the version it was meant to be.
            clean[path[0]] = _MARKERS[path]
            continue
        if path == ("metadata", "name"):
            # The name only labels messages and outputs; keep checking the rest under a placeholder.
            clean["metadata"]["name"] = "unnamed"
            continue
        parent: Any = clean
        try:
            for part in path[:-1]:
                parent = parent[part]
            del parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue
    return clean if not any(True for _ in _validator().iter_errors(clean)) else None


_MARKERS: dict[FieldPath, str] = {("apiVersion",): "tuneform/v1", ("kind",): "TunedModel"}


def whole_numbers(data: Any, sub: dict[str, Any] | None = None) -> Any:
    """``data`` with every integer field written as a float (`rank: 4.0`, which JSON Schema takes for an integer)
    made an ``int``, so it trains, hashes and shows like `rank: 4`: rewriting 4 as 4.0 must not re-tune."""
    sub = _resolve(schema() if sub is None else sub)
    if sub.get("type") == "integer" and isinstance(data, float) and data.is_integer():
        return int(data)
    if isinstance(data, dict):
        properties = sub.get("properties", {})
        rest = sub.get("additionalProperties")
        return {
            key: whole_numbers(value, properties.get(key, rest if isinstance(rest, dict) else {}))
            for key, value in data.items()
        }
    if isinstance(data, list) and isinstance(sub.get("items"), dict):
        return [whole_numbers(item, sub["items"]) for item in data]
    return data


def _translate(doc: SourceDocument, error: Any) -> list[Problem]:
    """One jsonschema error as located problems."""
    problems: list[Problem] = []
    path: FieldPath = tuple(error.absolute_path)
    sub: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    keyword = error.validator
    if "propertyNames" in error.absolute_schema_path:
        problems.append(_property_names(doc, path, error.instance))
        return problems
    if keyword == "additionalProperties" and sub.get("additionalProperties") is False:
        for key in _unknown_keys(error):
            problems.append(_unknown_key(doc, path, sub, key))
        return problems
    if keyword == "required":
        unknown = [str(k) for k in error.instance if k not in sub.get("properties", {})]
        for key in error.validator_value:
            # A misspelt `metdata:` already gets "did you mean `metadata`?"; a second line would only repeat it.
            if key not in error.instance and not difflib.get_close_matches(key, unknown, n=1, cutoff=0.6):
                problems.append(_required(doc, path, sub, key))
        return problems
    key = path[-1] if path else None
    value = error.instance
    if keyword == "maxProperties":
        message = f"expected at most {sub['maxProperties']} labels, got {len(value)}. Remove some labels."
    elif keyword == "pattern" and path[-2:-1] == ("labels",):
        message = (
            f"expected {_LABEL_VALUE_RULE}, got {got(value)}. Write `{key}: {_slug(value, '_-', letter_first=False)}`."
        )
    elif key == "name" and path[:1] == ("metadata",) and keyword in ("pattern", "type"):
        name = _name_for(doc.texts.get(path, value), doc)
        message = f"expected {_NAME_RULE}, got {got(value)}. Write `name: {yaml_inline(name)}`."
    elif keyword == "pattern" and key == "adopt":
        message = (
            f"expected a tuning job resource name projects/<project>/locations/<region>/tuningJobs/<id>, "
            f"got {got(value)}. Copy the job's full `name` from `gcloud ai tuning-jobs list` or the console."
        )
    elif keyword == "pattern" and key == "continueFrom":
        message = (
            f"expected `previous` or a tuned model's resource name projects/<project>/locations/<region>/models/<id>"
            f"[@<version>], got {got(value)}. Write `continueFrom: previous` to continue this model's newest version."
        )
    elif keyword == "minLength" and value == "":
        message = f"expected a non-empty value, got an empty string.{_fix(key, sub, value)}"
    elif keyword == "maxLength":
        message = f"expected at most {sub['maxLength']} characters, got {len(value)}. Shorten it."
    elif keyword == "minItems":
        message = f"expected at least {sub['minItems']} item, got an empty list.{_fix(key, sub, value)}"
    elif keyword == "uniqueItems":
        message = "expected each item once, got duplicates. Remove the repeated items."
    else:
        message = f"expected {_expected(sub)}, got {got(value)}.{_fix(key, sub, value, doc.texts.get(path))}"
    problems.append(doc.problem(path, message))
    return problems
