"""What every API dialect of the endpoint shares: the parsed request, its answer, client errors, and the checks.

A dialect (``openai_api``, ``gemini_api``) turns a request body into an ``Ask`` and an engine answer back into its
API's JSON; the pipeline in ``app`` does everything in between once. Values a request leaves unset stay ``None`` in
``Ask`` until the pipeline fills them from the served version's decoding defaults (``spec.endpoint.generation``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import orjson

MAX_CANDIDATES = 8
MAX_STOPS = 5


class ApiError(Exception):
    """A client error (or an overloaded server), rendered in the calling API's error shape.

    Args:
        status: The HTTP status.
        message: One sentence or more for people: what is wrong and how to fix it.
        code: A short machine-readable code (OpenAI's ``code``).
        param: The request field at fault, when there is one.
        retry_after: Seconds a client should wait before retrying (sent as ``Retry-After``).
    """

    def __init__(
        self, status: int, message: str, *, code: str, param: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after


@dataclass(frozen=True)
class Decoding:
    """How to decode one answer. In an ``Ask``, ``None`` means "the version's default"."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int | None = None
    stops: tuple[str, ...] | None = None
    seed: int | None = None

    def over(self, defaults: Decoding) -> Decoding:
        """These values, with ``defaults`` wherever this one is unset."""
        return Decoding(
            **{
                key: getattr(defaults, key) if getattr(self, key) is None else getattr(self, key)
                for key in self.__dataclass_fields__
            }
        )


@dataclass(frozen=True)
class Ask:
    """A parsed generation request, whichever API it came through."""

    model: str | None
    """As the client named it (``<name>``, ``<name>@<n>``); ``None``: let the traffic split choose."""
    messages: list[dict[str, str]]
    """``{"role": "user" | "assistant", "content": text}`` turns; the system prompt travels apart."""
    system: str | None
    decoding: Decoding
    count: int = 1
    """Answers to generate (OpenAI ``n``, Gemini ``candidateCount``)."""
    stream: bool = False
    include_usage: bool = False
    """OpenAI ``stream_options.include_usage``: a last chunk with the token counts."""
    user: str | None = None
    """OpenAI ``user``: a request id for the traffic split when no ``X-Request-Id`` is sent."""

    def with_defaults(self, defaults: Decoding) -> Ask:
        return replace(self, decoding=self.decoding.over(defaults))


@dataclass(frozen=True)
class Completion:
    """One generated answer."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """``stop`` (end of turn or a stop sequence) or ``length``."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the endpoint (``ServerConfig`` fills these in)."""

    max_messages: int
    max_new_tokens: int
    max_prompt_tokens: int
    """The model's context minus the answer's budget, or the configured cap if lower."""


def decode_json(body: bytes) -> Any:
    """Decodes a request body strictly: invalid UTF-8, lone surrogates and nesting deeper than 1,024 are refused.

    orjson refuses all three itself (the standard library accepts ``"\\ud800"``, which later fails to encode, and
    recurses until Python's stack runs out on deep nesting).

    Raises:
        ApiError: 400 naming what is wrong.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}.", code="invalid_json") from None


def object_body(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object."""
    data = decode_json(body)
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return data


class Problems:
    """Every problem of one request, reported together in one 400."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.param: str | None = None

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"{where}: {message}")
        self.param = self.param or where

    def unsupported(self, where: str, what: str, instead: str) -> None:
        self.add(where, f"{what} is not supported by the local endpoint; {instead}")

    def fields(
        self,
        body: dict[str, Any],
        accepted: set[str],
        unsupported: dict[str, tuple[Any, str]],
        *,
        prefix: str = "",
        unknown: str = "unknown field; remove it",
    ) -> None:
        """Refuses what cannot be honoured (``unsupported``: field -> (the value that asks for nothing, what it asks
        for)) and what is unknown; ``accepted`` fields pass."""
        for key, value in body.items():
            if key in unsupported:
                neutral, what = unsupported[key]
                if value is not None and value != neutral and value not in ([], {}):
                    self.unsupported(f"{prefix}{key}", what, f"remove `{key}`")
            elif key not in accepted:
                self.add(f"{prefix}{key}", unknown)

    def raise_if_any(self) -> None:
        if self.lines:
            raise ApiError(400, "; ".join(self.lines) + ".", code="invalid_request", param=self.param)

    def number(self, value: Any, where: str, bounds: tuple[float, float]) -> float | None:
        low, high = bounds
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            self.add(where, f"expected a number from {low:g} to {high:g}, got {_shown(value)}")
            return None
        return float(value)

    def count(self, value: Any, where: str, high: int, low: int = 1) -> int | None:
        if value is None:
            return None
        value = _whole(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.add(where, f"expected an integer from {low} to {high}, got {_shown(value)}")
            return None
        return int(value)

    def seed(self, value: Any, where: str) -> int | None:
        if value is None:
            return None
        value = _whole(value)
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
            self.add(where, f"expected an integer, got {_shown(value)}")
            return None
        return int(value)

    def stops(self, value: Any, where: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if (
            isinstance(value, list)
            and len(value) <= MAX_STOPS
            and all(isinstance(s, str) and s and len(s) <= 200 for s in value)
        ):
            return tuple(value)
        self.add(where, f"expected a string or a list of at most {MAX_STOPS} non-empty strings, got {_shown(value)}")
        return None


def _whole(value: Any) -> Any:
    """``5.0`` as ``5``: proto3's JSON mapping takes an integral number for an integer field, and google-genai sends
    ``top_k`` as a float (its type says ``float``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
