"""The endpoint's HTTP API: OpenAI chat completions and Gemini ``generateContent`` over locally tuned versions.

Routes (``create_app``):

- ``GET /health``: 200 ``{"status": "ok"}`` once every version is loaded, 503 while loading, 500 if loading failed.
  It needs no key: service supervision (``service.status``, ``pulumi refresh``) must check liveness without holding
  the secret, and the route reveals only the model name, versions and pid.
- ``GET /v1/models`` and ``POST /v1/chat/completions``: OpenAI shapes; ``Authorization: Bearer <key>``.
- ``POST /v1beta/models/{model}:generateContent`` (Gemini API) and
  ``POST /v1/projects/{project}/locations/{location}/endpoints/{endpoint}:generateContent`` (Vertex AI style; any
  project and location, the endpoint is the model name): Gemini shapes; key as bearer, ``x-goog-api-key`` or
  ``?key=``.

The model name is the config's ``name``; ``<name>@<n>`` pins version ``n``. Otherwise the version is picked by
hashing the request id (``X-Request-Id``, else OpenAI ``user``, else a fresh id) into ``[0, 100)`` against the
``traffic`` split, so one id always reaches the same version. Every answer carries ``X-Tuneform-Model-Version`` and
names ``<name>@<n>`` in ``model`` / ``modelVersion``. Streaming is not offered: ``stream: true`` gets a 400.

Every version is loaded once at start, in a background thread (memory: one copy of the base per version; the
inference module decides whether adapters share it). Generation runs in a worker thread, one request at a time per
version, since a CPU-bound model gains nothing from interleaving and its memory stays bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tuneform.serving.config import ServerConfig

Message = dict[str, str]
"""``{"role": "user" | "assistant", "content": text}``; the system prompt travels separately."""


class Inference(Protocol):
    """What the server needs from the trainer's side (``tuneform.training`` by default).

    ``load_for_inference(base_model_dir, artifact_dir, kind) -> (model, tokenizer)`` and
    ``generate(model, tokenizer, messages, *, system, max_new_tokens, temperature, top_p, seed)
    -> (text, prompt_tokens, completion_tokens, finish_reason)`` where ``finish_reason`` is ``stop`` or ``length``.
    """

    def load_for_inference(self, base_model_dir: Path, artifact_dir: Path, kind: str) -> tuple[Any, Any]: ...

    def generate(
        self,
        model: Any,
        tokenizer: Any,
        messages: list[Message],
        *,
        system: str | None,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> tuple[str, int, int, str]: ...


@dataclass(frozen=True)
class Completion:
    """One generated answer."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """``stop`` (end of turn or a stop sequence) or ``length``."""


def pick_version(traffic: dict[int, int], request_id: str) -> int:
    """Chooses the version for a request, deterministically.

    Args:
        traffic: Version -> percent (sums to 100).
        request_id: The request's id.

    Returns:
        The version whose share of ``[0, 100)`` holds the id's hash bucket.
    """
    bucket = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") % 100
    upper = 0
    for version in sorted(traffic):
        upper += traffic[version]
        if bucket < upper:
            return version
    return max(traffic, key=lambda v: traffic[v])


def _seed_for(request_id: str) -> int:
    # Sampling is reproducible per request id: retrying the same id gives the same answer.
    return int.from_bytes(hashlib.sha256(b"seed:" + request_id.encode()).digest()[:4], "big")


class ModelPool:
    """Loads every configured version once and runs generation on them, one request per version at a time.

    Args:
        config: The server configuration.
        inference: The loader/generator; ``None`` imports ``config.inference``.
        on_failure: Called (from the loading thread) if loading fails, e.g. to stop the server.
    """

    def __init__(
        self, config: ServerConfig, inference: Inference | None = None, on_failure: Callable[[], None] | None = None
    ) -> None:
        self.config = config
        self._inference = inference
        self._on_failure = on_failure
        self.state = "loading"
        self.error: str | None = None
        self._models: dict[int, tuple[Any, Any]] = {}
        self._locks = {version: threading.Lock() for version in config.versions}

    def load(self) -> None:
        """Loads all versions (blocking); records ``failed`` and the error instead of raising."""
        try:
            inference = self._inference or importlib.import_module(self.config.inference)
            for number, version in self.config.versions.items():
                started = time.monotonic()
                print(
                    f"loading {self.config.name}@{number} ({version.kind}) from {version.artifact_dir}",
                    file=sys.stderr,
                )
                self._models[number] = inference.load_for_inference(
                    Path(version.base_model_dir), Path(version.artifact_dir), version.kind
                )
                print(f"loaded {self.config.name}@{number} in {time.monotonic() - started:.1f}s", file=sys.stderr)
            self._inference = inference
            self.state = "ready"
            print(f"ready: {self.config.name} on http://{self.config.host}:{self.config.port}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - any loading failure must reach /health and the log, not kill a thread silently
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            traceback.print_exc(file=sys.stderr)
            if self._on_failure is not None:
                self._on_failure()

    def generate(
        self,
        version: int,
        messages: list[Message],
        *,
        system: str | None,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> Completion:
        """Generates one answer with a loaded version (blocking; call from a worker thread).

        Args:
            version: The version number.
            messages: The conversation, ending with a user turn.
            system: The system prompt, if any.
            max_new_tokens: Upper bound on generated tokens.
            temperature: 0 means greedy.
            top_p: Nucleus sampling mass.
            seed: Sampling seed.

        Returns:
            The answer and its token counts.
        """
        assert self._inference is not None and self.state == "ready"
        model, tokenizer = self._models[version]
        with self._locks[version]:
            text, prompt_tokens, completion_tokens, finish = self._inference.generate(
                model,
                tokenizer,
                messages,
                system=system,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
            )
        return Completion(text, int(prompt_tokens), int(completion_tokens), finish)


class ApiError(Exception):
    """A client error, rendered in the calling API's error shape."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error"}
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def _openai_error(err: ApiError) -> JSONResponse:
    kind = _OPENAI_TYPES.get(err.status, "server_error")
    body = {"error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}}
    return JSONResponse(body, status_code=err.status)


def _google_error(err: ApiError) -> JSONResponse:
    status = _GOOGLE_STATUS.get(err.status, "UNKNOWN")
    return JSONResponse({"error": {"code": err.status, "message": err.message, "status": status}}, err.status)


def _number(body: dict[str, Any], key: str, default: float, bounds: tuple[float, float], problems: list[str]) -> float:
    low, high = bounds
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        problems.append(f"{key}: expected a number from {low:g} to {high:g}, got {value!r}")
        return default
    return float(value)


def _count(body: dict[str, Any], key: str, default: int, high: int, problems: list[str]) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        problems.append(f"{key}: expected an integer from 1 to {high}, got {value!r}")
        return default
    return value


def _stop_list(value: Any, key: str, problems: list[str]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and len(value) <= 5 and all(isinstance(s, str) and s for s in value):
        return list(value)
    problems.append(f"{key}: expected a string or a list of at most 5 non-empty strings, got {value!r}")
    return []


def _apply_stop(completion: Completion, stops: list[str]) -> Completion:
    # The inference seam has no stop sequences, so they cut the finished text (the API's own semantics: the stop
    # sequence is not part of the answer); token counts stay those actually generated.
    cut = min((i for i in (completion.text.find(s) for s in stops) if i >= 0), default=-1)
    if cut < 0:
        return completion
    return Completion(completion.text[:cut], completion.prompt_tokens, completion.completion_tokens, "stop")


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def _text_of(content: Any, where: str, problems: list[str]) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                problems.append(f"{where}.content[{i}]: expected a text part {{'type': 'text', 'text': ...}}")
        return "".join(texts)
    problems.append(f"{where}.content: expected a string or a list of text parts, got {content!r}")
    return ""


def _parts_text(parts: Any, where: str, problems: list[str]) -> str:
    if not isinstance(parts, list) or not parts:
        problems.append(f"{where}.parts: expected a non-empty list of {{'text': ...}} parts")
        return ""
    texts = []
    for i, part in enumerate(parts):
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            problems.append(f"{where}.parts[{i}]: only text parts are supported by the local endpoint")
    return "".join(texts)


def _request_id(request: Request, user: Any) -> str:
    supplied = request.headers.get("x-request-id") or (user if isinstance(user, str) else None)
    # Bounded: the id is echoed in a header and hashed per request.
    return supplied[:200] if supplied else f"req-{uuid.uuid4().hex}"


def _camel(body: dict[str, Any], key: str) -> Any:
    # Google's JSON mapping accepts both lowerCamelCase and the proto's snake_case field names.
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
    return body.get(key, body.get(snake))


def create_app(config: ServerConfig, pool: ModelPool | None = None, *, load_in_background: bool = True) -> Starlette:
    """Builds the endpoint's ASGI app.

    Args:
        config: The server configuration.
        pool: The models; ``None`` builds a ``ModelPool`` that imports ``config.inference``.
        load_in_background: Start loading the pool when the app starts (``False`` if the caller loads it).

    Returns:
        The Starlette app; serve it with uvicorn on ``config.host:config.port``.
    """
    models = pool or ModelPool(config)
    key = config.api_key.encode()
    name = config.name

    def authorized(request: Request, *, google: bool) -> None:
        supplied = None
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            supplied = header[7:].strip()
        elif google:
            supplied = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not supplied:
            raise ApiError(
                401,
                "No API key provided. Send `Authorization: Bearer <key>`"
                + (" or `x-goog-api-key: <key>`" if google else "")
                + "; the key is the endpoint's `apiKey` output.",
                code="missing_api_key",
            )
        if not hmac.compare_digest(supplied.encode(), key):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    def ready() -> None:
        if models.state != "ready":
            raise ApiError(503, f"The model is {models.state}; retry when /health returns 200.", code="not_ready")

    def resolve(model: str | None, request_id: str) -> int:
        if model is None or model == name:
            return pick_version(config.traffic, request_id)
        base, sep, number = model.partition("@")
        if base == name and sep and number.isdigit() and int(number) in config.versions:
            return int(number)
        served = ", ".join([name, *(f"{name}@{n}" for n in config.versions)])
        raise ApiError(
            404, f"The model {model!r} does not exist on this endpoint; use one of: {served}.", code="model_not_found"
        )

    def headers(version: int, request_id: str) -> dict[str, str]:
        return {"X-Tuneform-Model-Version": str(version), "X-Request-Id": request_id}

    async def answers(
        version: int,
        messages: list[Message],
        *,
        system: str | None,
        count: int,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        request_id: str,
        stops: list[str],
    ) -> list[Completion]:
        """``count`` answers (OpenAI ``n``, Gemini ``candidateCount``), seeded ``seed``, ``seed + 1``, ... (from the
        request id when no seed is given), each cut at its first stop sequence."""
        base_seed = seed if seed is not None else _seed_for(request_id)
        completions = []
        for i in range(count):
            completion = await run_in_threadpool(
                models.generate,
                version,
                messages,
                system=system,
                max_new_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=base_seed + i,
            )
            completions.append(_apply_stop(completion, stops))
        return completions

    async def health(request: Request) -> JSONResponse:
        status = {"ready": 200, "loading": 503}.get(models.state, 500)
        body: dict[str, Any] = {"status": "ok" if status == 200 else models.state, "name": name}
        body["versions"] = sorted(config.versions)
        body["traffic"] = {str(v): p for v, p in config.traffic.items()}
        body["pid"] = os.getpid()
        if models.error:
            body["error"] = models.error
        return JSONResponse(body, status_code=status)

    async def list_models(request: Request) -> JSONResponse:
        try:
            authorized(request, google=False)
        except ApiError as err:
            return _openai_error(err)
        created = int(time.time())
        ids = [name, *(f"{name}@{n}" for n in config.versions)]
        data = [{"id": i, "object": "model", "created": created, "owned_by": "tuneform"} for i in ids]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(request: Request) -> JSONResponse:
        try:
            authorized(request, google=False)
            body = await _json_body(request)
            problems: list[str] = []
            if body.get("stream"):
                raise ApiError(
                    400,
                    "stream: streaming is not supported by the local endpoint; send `stream: false`.",
                    code="unsupported_parameter",
                    param="stream",
                )
            raw_messages = body.get("messages")
            system_parts, messages = [], []
            if not isinstance(raw_messages, list) or not raw_messages:
                problems.append("messages: expected a non-empty list of {role, content} objects")
                raw_messages = []
            for i, message in enumerate(raw_messages):
                where = f"messages[{i}]"
                role = message.get("role") if isinstance(message, dict) else None
                if role not in ("system", "developer", "user", "assistant"):
                    problems.append(f"{where}.role: expected system, developer, user or assistant, got {role!r}")
                    continue
                text = _text_of(message.get("content"), where, problems)
                if role in ("system", "developer"):
                    system_parts.append(text)
                else:
                    messages.append({"role": str(role), "content": text})
            if raw_messages and not messages:
                problems.append("messages: expected at least one user message")
            temperature = _number(body, "temperature", 1.0, (0.0, 2.0), problems)
            top_p = _number(body, "top_p", 1.0, (0.0, 1.0), problems)
            limit = config.max_new_tokens_limit
            max_tokens = _count(body, "max_completion_tokens", 0, limit, problems) or _count(
                body, "max_tokens", config.max_new_tokens, limit, problems
            )
            n = _count(body, "n", 1, 8, problems)
            stops = _stop_list(body.get("stop"), "stop", problems)
            seed = body.get("seed")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                problems.append(f"seed: expected an integer, got {seed!r}")
            model = body.get("model")
            if not isinstance(model, str):
                problems.append(f"model: expected a string such as {name!r}, got {model!r}")
            if problems:
                raise ApiError(400, "; ".join(problems) + ".", code="invalid_request")
            request_id = _request_id(request, body.get("user"))
            version = resolve(str(model), request_id)
            ready()
        except ApiError as err:
            return _openai_error(err)
        completions = await answers(
            version,
            messages,
            system="\n".join(system_parts) or None,
            count=n,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            request_id=request_id,
            stops=stops,
        )
        prompt_tokens = completions[0].prompt_tokens
        completion_tokens = sum(c.completion_tokens for c in completions)
        response = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": f"{name}@{version}",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(completions)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return JSONResponse(response, headers=headers(version, request_id))

    async def generate_content(request: Request, model: str) -> JSONResponse:
        try:
            authorized(request, google=True)
            body = await _json_body(request)
            problems: list[str] = []
            contents = body.get("contents")
            messages = []
            if not isinstance(contents, list) or not contents:
                problems.append("contents: expected a non-empty list of {role, parts} objects")
                contents = []
            for i, content in enumerate(contents):
                where = f"contents[{i}]"
                if not isinstance(content, dict):
                    problems.append(f"{where}: expected an object with role and parts")
                    continue
                role = content.get("role", "user")
                if role not in ("user", "model"):
                    problems.append(f"{where}.role: expected user or model, got {role!r}")
                text = _parts_text(content.get("parts"), where, problems)
                messages.append({"role": "assistant" if role == "model" else "user", "content": text})
            system = None
            instruction = _camel(body, "systemInstruction")
            if instruction is not None:
                if isinstance(instruction, dict):
                    system = _parts_text(instruction.get("parts"), "systemInstruction", problems)
                else:
                    problems.append("systemInstruction: expected an object with parts")
            gen = _camel(body, "generationConfig") or {}
            if not isinstance(gen, dict):
                problems.append("generationConfig: expected an object")
                gen = {}
            gen = {
                k: _camel(gen, k)
                for k in ("temperature", "topP", "maxOutputTokens", "candidateCount", "stopSequences", "seed")
            }
            temperature = _number(gen, "temperature", 1.0, (0.0, 2.0), problems)
            top_p = _number(gen, "topP", 0.95, (0.0, 1.0), problems)
            max_tokens = _count(gen, "maxOutputTokens", config.max_new_tokens, config.max_new_tokens_limit, problems)
            candidates = _count(gen, "candidateCount", 1, 8, problems)
            stops = _stop_list(gen.get("stopSequences"), "generationConfig.stopSequences", problems)
            seed = gen.get("seed")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                problems.append(f"generationConfig.seed: expected an integer, got {seed!r}")
            if problems:
                raise ApiError(400, "; ".join(problems) + ".", code="invalid_request")
            request_id = _request_id(request, None)
            version = resolve(model, request_id)
            ready()
        except ApiError as err:
            return _google_error(err)
        completions = await answers(
            version,
            messages,
            system=system,
            count=candidates,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            request_id=request_id,
            stops=stops,
        )
        prompt_tokens = completions[0].prompt_tokens
        candidate_tokens = sum(c.completion_tokens for c in completions)
        response = {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": c.text}]},
                    "finishReason": "MAX_TOKENS" if c.finish_reason == "length" else "STOP",
                    "index": i,
                }
                for i, c in enumerate(completions)
            ],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": candidate_tokens,
                "totalTokenCount": prompt_tokens + candidate_tokens,
            },
            "modelVersion": f"{name}@{version}",
            "responseId": request_id,
        }
        return JSONResponse(response, headers=headers(version, request_id))

    async def gemini_route(request: Request) -> JSONResponse:
        return await generate_content(request, request.path_params["model"])

    async def vertex_route(request: Request) -> JSONResponse:
        return await generate_content(request, request.path_params["endpoint"])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if load_in_background and models.state == "loading":
            threading.Thread(target=models.load, name="load-models", daemon=True).start()
        yield

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1beta/models/{model}:generateContent", gemini_route, methods=["POST"]),
        Route(
            "/v1/projects/{project}/locations/{location}/endpoints/{endpoint}:generateContent",
            vertex_route,
            methods=["POST"],
        ),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.pool = models
    return app
