"""The Gemini dialect: ``generateContent``, ``streamGenerateContent`` (``?alt=sse``), ``countTokens`` and model info.

Served under ``/v1beta/models/{model}``, ``/v1/models/{model}`` (what current google-genai clients call) and the
Vertex AI style ``/v1/projects/{p}/locations/{l}/endpoints/{model}``. Google's JSON mapping accepts both
lowerCamelCase and the proto's snake_case field names, so both are read. What the endpoint cannot honour (tools,
structured output, safety filters, log-probabilities, penalties, thinking) is refused with a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from tuneform.serving.protocol import MAX_CANDIDATES, ApiError, Ask, Completion, Decoding, Limits, Problems

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    408: "DEADLINE_EXCEEDED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

_TOP_LEVEL = {"contents", "systemInstruction", "generationConfig", "labels", "model"}
_UNSUPPORTED_TOP: dict[str, tuple[Any, str]] = {
    "tools": (None, "tools (function calling, search, code execution)"),
    "toolConfig": (None, "tool configuration"),
    "safetySettings": (None, "safety settings (the local model has no safety filter to configure)"),
    "cachedContent": (None, "cached content"),
}
_CONFIG = {"temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences", "seed"}
# generationConfig field -> (value that asks for nothing, what it asks for).
_UNSUPPORTED_CONFIG: dict[str, tuple[Any, str]] = {
    "responseMimeType": ("text/plain", "a response MIME type other than text/plain (structured output)"),
    "responseSchema": (None, "a response schema (structured output)"),
    "responseJsonSchema": (None, "a response JSON schema (structured output)"),
    "presencePenalty": (0, "presence penalty"),
    "frequencyPenalty": (0, "frequency penalty"),
    "responseLogprobs": (False, "log-probabilities"),
    "logprobs": (0, "log-probabilities"),
    "responseModalities": (["TEXT"], "response modalities other than TEXT"),
    "thinkingConfig": (None, "thinking"),
    "speechConfig": (None, "speech output"),
    "imageConfig": (None, "image output"),
    "mediaResolution": (None, "media resolution"),
    "routingConfig": (None, "model routing"),
    "enableEnhancedCivicAnswers": (False, "enhanced civic answers"),
}


def error(err: ApiError) -> tuple[dict[str, Any], int]:
    """Google's error body (``google.rpc.Status`` as JSON)."""
    status = _STATUS.get(err.status, "UNKNOWN")
    return {"error": {"code": err.status, "message": err.message, "status": status}}, err.status


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def _fields(body: dict[str, Any], where: str, problems: Problems) -> dict[str, Any]:
    """The object's fields under their camelCase names (snake_case accepted, as Google's JSON mapping does)."""
    fields: dict[str, Any] = {}
    for key, value in body.items():
        camel = "".join(part.capitalize() if i else part for i, part in enumerate(key.split("_")))
        if camel in fields:
            problems.add(f"{where}{camel}", f"given twice (as {camel} and {_snake(camel)})")
        fields[camel] = value
    return fields


def _parts_text(parts: Any, where: str, problems: Problems) -> str:
    if not isinstance(parts, list) or not parts:
        problems.add(f"{where}.parts", "expected a non-empty list of {'text': ...} parts")
        return ""
    texts = []
    for i, part in enumerate(parts):
        if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought"):
            texts.append(part["text"])
        else:
            kinds = ", ".join(sorted(part)) if isinstance(part, dict) else type(part).__name__
            problems.add(f"{where}.parts[{i}]", f"only text parts are supported by the local endpoint, got {kinds}")
    return "".join(texts)


def _contents(value: Any, limits: Limits, problems: Problems) -> list[dict[str, str]]:
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        problems.add("contents", "expected a non-empty list of {role, parts} objects")
        return []
    if len(value) > limits.max_messages:
        problems.add("contents", f"expected at most {limits.max_messages} turns, got {len(value)}")
        return []
    messages = []
    for i, content in enumerate(value):
        where = f"contents[{i}]"
        if not isinstance(content, dict):
            problems.add(where, "expected an object with role and parts")
            continue
        role = content.get("role") or "user"
        if role not in ("user", "model"):
            problems.add(f"{where}.role", f"expected user or model, got {role!r}")
        text = _parts_text(content.get("parts"), where, problems)
        messages.append({"role": "assistant" if role == "model" else "user", "content": text})
    return messages


def _system(value: Any, problems: Problems) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _parts_text(value.get("parts"), "systemInstruction", problems)
    problems.add("systemInstruction", "expected an object with parts")
    return None


def parse(body: dict[str, Any], model: str, limits: Limits, *, stream: bool = False) -> Ask:
    """A ``generateContent`` request -> ``Ask``, every problem in one 400."""
    problems = Problems()
    fields = _fields(body, "", problems)
    problems.fields(fields, _TOP_LEVEL, _UNSUPPORTED_TOP)
    messages = _contents(fields.get("contents"), limits, problems)
    system = _system(fields.get("systemInstruction"), problems)
    raw = fields.get("generationConfig") or {}
    if not isinstance(raw, dict):
        problems.add("generationConfig", "expected an object")
        raw = {}
    config = _fields(raw, "generationConfig.", problems)
    problems.fields(config, _CONFIG, _UNSUPPORTED_CONFIG, prefix="generationConfig.")
    decoding = Decoding(
        temperature=problems.number(config.get("temperature"), "generationConfig.temperature", (0.0, 2.0)),
        top_p=problems.number(config.get("topP"), "generationConfig.topP", (0.0, 1.0)),
        top_k=problems.count(config.get("topK"), "generationConfig.topK", 1 << 20),
        max_new_tokens=problems.count(
            config.get("maxOutputTokens"), "generationConfig.maxOutputTokens", limits.max_new_tokens
        ),
        stops=problems.stops(config.get("stopSequences"), "generationConfig.stopSequences"),
        seed=problems.seed(config.get("seed"), "generationConfig.seed"),
    )
    count = problems.count(config.get("candidateCount"), "generationConfig.candidateCount", MAX_CANDIDATES) or 1
    problems.raise_if_any()
    return Ask(model=model, messages=messages, system=system, decoding=decoding, count=count, stream=stream)


def parse_count(body: dict[str, Any], model: str, limits: Limits) -> Ask:
    """A ``countTokens`` request (``contents`` or a whole ``generateContentRequest``) -> ``Ask``."""
    problems = Problems()
    fields = _fields(body, "", problems)
    inner = fields.get("generateContentRequest")
    if inner is not None:
        if not isinstance(inner, dict):
            raise ApiError(400, "generateContentRequest: expected an object.", code="invalid_request")
        return parse({k: v for k, v in inner.items() if k != "model"}, model, limits)
    if {"systemInstruction", "generationConfig", "tools"} & set(fields):
        # Vertex AI's CountTokensRequest takes these beside `contents`; the system instruction counts.
        return parse({k: v for k, v in fields.items() if k != "model"}, model, limits)
    for key in set(fields) - {"contents", "model"}:
        problems.add(key, "unknown field; remove it (or send it inside generateContentRequest)")
    messages = _contents(fields.get("contents"), limits, problems)
    problems.raise_if_any()
    return Ask(model=model, messages=messages, system=None, decoding=Decoding())


def _usage(completions: list[Completion]) -> dict[str, int]:
    prompt = completions[0].prompt_tokens if completions else 0
    answer = sum(c.completion_tokens for c in completions)
    return {"promptTokenCount": prompt, "candidatesTokenCount": answer, "totalTokenCount": prompt + answer}


def _finish(completion: Completion) -> str:
    return "MAX_TOKENS" if completion.finish_reason == "length" else "STOP"


def render(label: str, completions: list[Completion], response_id: str) -> dict[str, Any]:
    """A ``GenerateContentResponse``."""
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": c.text}]}, "finishReason": _finish(c), "index": i}
            for i, c in enumerate(completions)
        ],
        "usageMetadata": _usage(completions),
        "modelVersion": label,
        "responseId": response_id,
    }


async def stream(
    label: str, response_id: str, events: AsyncIterator[tuple[int, str, Any]], *, sse: bool
) -> AsyncIterator[bytes]:
    """``GenerateContentResponse`` chunks: server-sent events with ``alt=sse``, else one JSON array (Google's two
    streaming forms); the last chunk carries the usage metadata."""
    done: list[Completion] = []
    first = True

    def frame(payload: dict[str, Any]) -> bytes:
        nonlocal first
        data = orjson.dumps({**payload, "modelVersion": label, "responseId": response_id})
        if sse:
            return b"data: " + data + b"\r\n\r\n"
        prefix = b"[" if first else b",\r\n"
        first = False
        return prefix + data

    async for index, kind, value in events:
        if kind == "text":
            candidate = {"content": {"role": "model", "parts": [{"text": value}]}, "index": index}
            yield frame({"candidates": [candidate]})
        elif kind == "done":
            done.append(value)
            candidate = {"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": _finish(value)}
            yield frame({"candidates": [{**candidate, "index": index}], "usageMetadata": _usage(done)})
        else:
            body, _ = error(ApiError(500, f"Generation failed: {value}", code="generation_failed"))
            yield (
                (b"data: " + orjson.dumps(body) + b"\r\n\r\n")
                if sse
                else (b"[" if first else b",") + orjson.dumps(body)
            )
            first = False
            break
    if not sse:
        yield b"]" if not first else b"[]"


def model_info(name: str, version: str, input_limit: int, output_limit: int, defaults: Decoding) -> dict[str, Any]:
    """A ``Model`` resource as the Gemini API describes one."""
    return {
        "name": f"models/{name}",
        "baseModelId": name,
        "version": version,
        "displayName": name,
        "description": "A model tuned and served locally by tuneform.",
        "inputTokenLimit": input_limit,
        "outputTokenLimit": output_limit,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
        "temperature": defaults.temperature,
        "topP": defaults.top_p,
        "maxTemperature": 2.0,
    }
