"""The OpenAI dialect: ``/v1/chat/completions`` (with ``stream: true`` as server-sent events) and ``/v1/models``.

Parameters the endpoint cannot honour (tools, structured output, log-probabilities, penalties, audio) are refused
with a 400 naming the field rather than ignored; unknown parameters too, as OpenAI's own API does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tuneform.serving.protocol import MAX_CANDIDATES, ApiError, Ask, Completion, Decoding, Limits, Problems

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
}

# Fields accepted as they are: they change nothing about the answer (or are honoured).
_ACCEPTED = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "seed",
    "user",
    "store",
    "metadata",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
}

# Field -> (value that asks for nothing, what it asks for): present with any other value, the request is refused.
_UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "tools": ([], "tool calling"),
    "tool_choice": ("none", "tool calling"),
    "parallel_tool_calls": (None, "tool calling"),
    "functions": ([], "function calling"),
    "function_call": ("none", "function calling"),
    "response_format": ({"type": "text"}, "structured output (JSON mode, JSON schema)"),
    "logprobs": (False, "log-probabilities"),
    "top_logprobs": (0, "log-probabilities"),
    "logit_bias": ({}, "logit bias"),
    "presence_penalty": (0, "presence penalty"),
    "frequency_penalty": (0, "frequency penalty"),
    "audio": (None, "audio output"),
    "modalities": (["text"], "output modalities other than text"),
    "prediction": (None, "predicted outputs"),
    "web_search_options": (None, "web search"),
    "reasoning_effort": (None, "reasoning effort"),
    "verbosity": (None, "verbosity"),
}


def error(err: ApiError) -> tuple[dict[str, Any], int]:
    """OpenAI's error body."""
    kind = _TYPES.get(err.status, "server_error")
    return {"error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}}, err.status


def _text(content: Any, where: str, problems: Problems) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else None
                problems.add(
                    f"{where}.content[{i}]",
                    f"expected a text part {{'type': 'text', 'text': ...}}, got {kind or type(part).__name__}"
                    + (" (the local model reads text only)" if kind else ""),
                )
        return "".join(texts)
    problems.add(f"{where}.content", f"expected a string or a list of text parts, got {type(content).__name__}")
    return ""


def parse(body: dict[str, Any], limits: Limits) -> Ask:
    """A chat completion request -> ``Ask``, every problem in one 400."""
    problems = Problems()
    problems.fields(body, _ACCEPTED, _UNSUPPORTED, unknown="unknown parameter; remove it")
    raw = body.get("messages")
    system_parts: list[str] = []
    messages: list[dict[str, str]] = []
    if not isinstance(raw, list) or not raw:
        problems.add("messages", "expected a non-empty list of {role, content} objects")
        raw = []
    elif len(raw) > limits.max_messages:
        problems.add("messages", f"expected at most {limits.max_messages} messages, got {len(raw)}")
        raw = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("tool", "function"):
            problems.unsupported(f"{where}.role", f"role {role!r} (tool results)", "send user and assistant turns")
            continue
        if role not in ("system", "developer", "user", "assistant"):
            problems.add(f"{where}.role", f"expected system, developer, user or assistant, got {role!r}")
            continue
        assert isinstance(message, dict)
        if message.get("tool_calls") or message.get("function_call"):
            problems.unsupported(f"{where}.tool_calls", "tool calls", "send the assistant's text only")
        content = message.get("content")
        text = "" if content is None and role == "assistant" else _text(content, where, problems)
        if role in ("system", "developer"):
            system_parts.append(text)
        else:
            messages.append({"role": str(role), "content": text})
    if raw and not messages:
        problems.add("messages", "expected at least one user or assistant message")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        problems.add("stream", f"expected true or false, got {stream!r}")
    options = body.get("stream_options")
    if options is not None and (
        not isinstance(options, dict) or set(options) - {"include_usage", "include_obfuscation"}
    ):
        problems.add("stream_options", "expected {'include_usage': true|false}")
        options = None
    limit = limits.max_new_tokens
    max_tokens = problems.count(body.get("max_completion_tokens"), "max_completion_tokens", limit)
    if max_tokens is None:
        max_tokens = problems.count(body.get("max_tokens"), "max_tokens", limit)
    decoding = Decoding(
        temperature=problems.number(body.get("temperature"), "temperature", (0.0, 2.0)),
        top_p=problems.number(body.get("top_p"), "top_p", (0.0, 1.0)),
        max_new_tokens=max_tokens,
        stops=problems.stops(body.get("stop"), "stop"),
        seed=problems.seed(body.get("seed"), "seed"),
    )
    count = problems.count(body.get("n"), "n", MAX_CANDIDATES) or 1
    model = body.get("model")
    if not isinstance(model, str):
        problems.add("model", f"expected a string naming the model, got {model!r}")
    user = body.get("user")
    problems.raise_if_any()
    return Ask(
        model=str(model),
        messages=messages,
        system="\n".join(system_parts) or None,
        decoding=decoding,
        count=count,
        stream=bool(stream),
        include_usage=bool(options and options.get("include_usage")),
        user=user if isinstance(user, str) else None,
    )


def _usage(completions: list[Completion]) -> dict[str, int]:
    prompt = completions[0].prompt_tokens if completions else 0
    answer = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": answer, "total_tokens": prompt + answer}


def render(label: str, completions: list[Completion]) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": label,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(completions)
        ],
        "usage": _usage(completions),
    }


async def stream(label: str, ask: Ask, events: AsyncIterator[tuple[int, str, Any]]) -> AsyncIterator[bytes]:
    """``chat.completion.chunk`` events (``data: {...}``), then ``data: [DONE]``; an error ends the stream with one."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time())}
    head["model"] = label

    if ask.include_usage:
        head["usage"] = None  # OpenAI: with include_usage every chunk has the field, null until the last

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + orjson.dumps({**head, "choices": choices, **extra}) + b"\n\n"

    for index in range(ask.count):
        yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    done: list[Completion] = []
    async for index, kind, value in events:
        if kind == "text":
            yield chunk([{"index": index, "delta": {"content": value}, "finish_reason": None}])
        elif kind == "done":
            done.append(value)
            yield chunk([{"index": index, "delta": {}, "finish_reason": value.finish_reason}])
        else:
            body, _ = error(ApiError(500, f"Generation failed: {value}", code="generation_failed"))
            yield b"data: " + orjson.dumps(body) + b"\n\n"
            return
    if ask.include_usage:
        yield chunk([], usage=_usage(done))
    yield b"data: [DONE]\n\n"


def model_entry(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": "tuneform"}


def models(ids: list[str]) -> dict[str, Any]:
    return {"object": "list", "data": [model_entry(i) for i in ids]}
