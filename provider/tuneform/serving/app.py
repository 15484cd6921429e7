"""The endpoint's HTTP API: OpenAI and Gemini dialects over one request pipeline and the batching engines.

Routes (``create_app``):

- ``GET /health``: 200 once every version is loaded, 503 while loading, 500 if loading failed; no key needed (service
  supervision checks liveness without the secret; the route reveals only the model name, versions and pid).
- OpenAI: ``POST /v1/chat/completions`` (``stream: true`` answers server-sent events), ``GET /v1/models`` and
  ``GET /v1/models/{id}``; key as ``Authorization: Bearer``.
- Gemini API: ``POST /v1beta/models/{model}:generateContent``, ``:streamGenerateContent`` (``?alt=sse``) and
  ``:countTokens``, the same under ``/v1/models/`` (current google-genai clients call ``/v1``), ``GET
  /v1beta/models[/{model}]``; and Vertex AI style ``/v1/projects/{p}/locations/{l}/endpoints/{model}:<method>``. Key as
  bearer, ``x-goog-api-key`` or ``?key=``. ``GET /v1/models[/{id}]`` answers in Gemini's shape when the key comes the
  Gemini way, else in OpenAI's.

Every request goes one way (``Endpoint.generate``): read the body within its size limit -> authorise -> the dialect
parses it into an ``Ask`` (400 naming each bad or unsupported field) -> pick the version (``<name>@<n>`` pins one;
otherwise the request id, ``X-Request-Id`` or OpenAI ``user``, hashes into the ``traffic`` split) -> fill unset
decoding from the version's saved defaults -> render the prompt and check it against the model's context -> submit
to that version's engine (503 with ``Retry-After`` when its queue is full) -> the dialect renders the answer, whole
or streamed. A client that disconnects cancels its generation. Every error, unknown routes and methods included,
answers in the calling API's JSON error shape. Every answer carries ``X-Tuneform-Model-Version`` and names
``<name>@<n>`` in ``model`` / ``modelVersion``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import re
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneform.serving import gemini_api, openai_api
from tuneform.serving.config import ServerConfig, VersionConfig, revision
from tuneform.serving.engine import ControlTokenInText, Engine, Job, QueueFull
from tuneform.serving.pool import ModelPool
from tuneform.serving.protocol import ApiError, Ask, Completion, Limits, object_body

__all__ = ["ModelPool", "create_app", "pick_version"]

Events = AsyncIterator[tuple[int, str, Any]]


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


BODY_SECONDS = 30
"""How long a request body may take to arrive."""

_ECHOABLE = re.compile(r"[!-~][ -~]*")
"""A request id that can go back in a response header as it came: printable ASCII, no line breaks."""


def _seed_for(request_id: str) -> int:
    # Sampling is reproducible per request id: retrying the same id gives the same answer.
    return int.from_bytes(hashlib.sha256(b"seed:" + request_id.encode()).digest()[:4], "big")


@dataclass(frozen=True)
class Dialect:
    name: str
    error: Callable[[ApiError], tuple[dict[str, Any], int]]
    google: bool
    """Takes the key as ``x-goog-api-key`` or ``?key=`` too."""


OPENAI = Dialect("OpenAI", openai_api.error, google=False)
GEMINI = Dialect("Gemini", gemini_api.error, google=True)


def dialect_of(request: Request) -> Dialect:
    """The API a request speaks, from its path and how it carries the key (for routes both APIs share)."""
    path = request.url.path
    if path.startswith(("/v1beta", "/v1/projects")) or ":" in path.rsplit("/", 1)[-1]:
        return GEMINI
    if "x-goog-api-key" in request.headers or "key" in request.query_params:
        return GEMINI
    return OPENAI


@dataclass
class Run:
    """The jobs of one request inside an engine, and the events they report."""

    engine: Engine
    jobs: list[Job]
    queue: asyncio.Queue[tuple[int, str, Any]]

    async def events(self) -> Events:
        """``(index, "text" | "done" | "error", value)`` until every job ended; leaving early cancels the rest."""
        remaining = len(self.jobs)
        try:
            while remaining:
                event = await self.queue.get()
                if event[1] != "text":
                    remaining -= 1
                yield event
        finally:
            self.engine.cancel(self.jobs)

    async def completions(self) -> list[Completion]:
        answers: dict[int, Completion] = {}
        async for index, kind, value in self.events():
            if kind == "error":
                raise ApiError(500, f"Generation failed: {value}", code="generation_failed")
            if kind == "done":
                answers[index] = value
        return [answers[i] for i in sorted(answers)]


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


@dataclass(frozen=True)
class _Served:
    """What the endpoint serves now: swapped whole by a reload."""

    config: ServerConfig
    pool: ModelPool
    limits: Limits
    key: bytes


class Endpoint:
    """The request pipeline over a pool of served versions."""

    def __init__(self, config: ServerConfig, pool: ModelPool) -> None:
        self.name = config.name
        self.reloading = threading.Lock()
        self.reload_failure: dict[str, str] | None = None
        """The revision a reload could not serve and why (``/health`` shows it; the old versions keep serving)."""
        self.serve(config, pool)

    def serve(self, config: ServerConfig, pool: ModelPool) -> None:
        """Answer every request from now on with ``config``'s versions in ``pool``: one assignment, so a request
        that reads ``current`` once is served wholly by the old set or wholly by the new, whatever thread reloads."""
        limits = Limits(
            max_messages=config.max_messages,
            max_new_tokens=config.max_new_tokens_limit,
            max_prompt_tokens=config.max_prompt_tokens or 1 << 30,
        )
        self.current = _Served(config, pool, limits, config.api_key.encode())

    @property
    def config(self) -> ServerConfig:
        return self.current.config

    @property
    def pool(self) -> ModelPool:
        return self.current.pool

    @property
    def limits(self) -> Limits:
        return self.current.limits

    def reload(self, config_path: str) -> None:
        """Serve what the configuration file says now, without a gap (the server's answer to SIGHUP).

        The new versions load beside the old ones, which answer meanwhile; versions with the same weights keep their
        engine. Then requests go to the new set, and engines no longer served stop once their running answers are
        done. If anything fails, the old set keeps serving and ``/health`` says what failed.
        """
        from tuneform.serving.config import ConfigError, load_config

        with self.reloading:
            try:
                config = load_config(config_path)
            except ConfigError as exc:
                self.reload_failure = {"revision": "", "error": str(exc)}
                return
            wanted = revision(config)
            if (config.name, config.host, config.port) != (self.name, self.config.host, self.config.port):
                self.reload_failure = {"revision": wanted, "error": "name, host or port changed: restart the server"}
                return
            old = self.pool
            kept = {
                number: engine
                for number, engine in old.engines.items()
                if number in config.versions and _same_weights(old.config.versions[number], config.versions[number])
            }
            pool = ModelPool(config, old._inference, running=kept)
            pool.load()
            if pool.state != "ready":
                pool.stop_loaded()
                self.reload_failure = {"revision": wanted, "error": pool.error or pool.state}
                return
            self.serve(config, pool)
            self.reload_failure = None
            _retire([engine for number, engine in old.engines.items() if kept.get(number) is not engine])

    # The pipeline's steps ------------------------------------------------------------------------------------------

    def reply(self, dialect: Dialect, err: ApiError) -> JSONResponse:
        body, status = dialect.error(err)
        headers = {"Retry-After": str(err.retry_after)} if err.retry_after else None
        return JSONResponse(body, status_code=status, headers=headers)

    def authorize(self, request: Request, dialect: Dialect) -> None:
        header = request.headers.get("authorization", "")
        supplied = [header[7:].strip()] if header[:7].lower() == "bearer " else []
        if dialect.google:
            supplied += [request.headers.get("x-goog-api-key", ""), request.query_params.get("key", "")]
        # Any one right key will do: a proxy may add its own bearer token beside the Gemini key.
        supplied = [key for key in supplied if key]
        if not supplied:
            raise ApiError(
                401,
                "No API key provided. Send `Authorization: Bearer <key>`"
                + (", `x-goog-api-key: <key>` or `?key=<key>`" if dialect.google else "")
                + "; the key is the endpoint's `apiKey` output.",
                code="missing_api_key",
            )
        if not any(hmac.compare_digest(key.encode(), self.current.key) for key in supplied):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    async def body(self, request: Request) -> dict[str, Any]:
        limit = self.config.max_body_bytes
        too_big = ApiError(
            413,
            f"The request body is larger than this endpoint's limit of {limit:,} bytes; send a shorter request.",
            code="request_too_large",
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        chunks, size = [], 0
        try:
            # A client that sends its body slowly, or less than its Content-Length, would hold a connection forever.
            async with asyncio.timeout(BODY_SECONDS):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise too_big
                    chunks.append(chunk)
        except TimeoutError:
            raise ApiError(
                408, f"The request body did not arrive within {BODY_SECONDS} s; send it again.", code="request_timeout"
            ) from None
        return object_body(b"".join(chunks))

    def served(self) -> list[str]:
        return [self.name, *(f"{self.name}@{n}" for n in self.config.versions)]

    def resolve(self, model: str | None, request_id: str, config: ServerConfig | None = None) -> int:
        config = config or self.config
        model = model.removeprefix("models/") if model else model
        if model is None or model == self.name:
            return pick_version(config.traffic, request_id)
        base, sep, number = model.partition("@")
        # ASCII digits only ("²" and "١" are digits to str.isdigit) and a sane length (int() refuses 4,300 digits).
        if base == self.name and sep and number.isascii() and number.isdigit() and len(number) <= 9:
            if int(number) in config.versions:
                return int(number)
        raise ApiError(
            404,
            f"The model {model!r} does not exist on this endpoint; use one of: {', '.join(self.served())}.",
            code="model_not_found",
        )

    def ready(self, pool: ModelPool | None = None) -> None:
        pool = pool or self.pool
        if pool.state != "ready":
            raise ApiError(
                503,
                f"The model is {pool.state}; retry when /health returns 200.",
                code="not_ready",
                retry_after=5,
            )

    async def tokens(self, engine: Engine, ask: Ask) -> list[int]:
        """The rendered prompt's tokens (in a worker thread: a long prompt takes milliseconds to tokenize)."""
        try:
            return await run_in_threadpool(engine.prompt_ids, ask.messages, ask.system)
        except ControlTokenInText as refused:
            raise ApiError(400, f"{refused}.", code="invalid_request", param="messages") from None

    async def prompt(self, engine: Engine, ask: Ask, *, asked: bool) -> tuple[list[int], Ask]:
        """The rendered prompt's tokens, and ``ask`` with an answer budget that fits the model's context.

        A budget the client asked for (``asked``) is refused when prompt and answer do not fit together; the
        version's default budget shrinks to the room the prompt leaves, as OpenAI does when ``max_tokens`` is unset.
        """
        ids = await self.tokens(engine, ask)
        budget = int(ask.decoding.max_new_tokens or 0)
        room = engine.context - len(ids)
        if len(ids) > self.limits.max_prompt_tokens:
            message = (
                f"The prompt is {len(ids):,} tokens; this endpoint takes at most {self.limits.max_prompt_tokens:,}. "
                "Shorten the messages."
            )
        elif room < 1 or asked and budget > room:
            message = (
                f"The prompt is {len(ids):,} tokens and the answer may take {budget if asked else 1:,}: more than the "
                f"model's context of {engine.context:,} tokens, which holds both. "
                + (f"Ask for at most {room:,} output tokens, or shorten the messages." if room >= 1 and asked else "")
                + ("Shorten the messages." if room < 1 else "")
            )
        else:
            if budget > room:
                ask = replace(ask, decoding=replace(ask.decoding, max_new_tokens=room))
            return ids, ask
        raise ApiError(400, message.strip(), code="context_length_exceeded", param="messages")

    def start(self, engine: Engine, ask: Ask, prompt: list[int], seed: int) -> Run:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()

        def sink_for(index: int) -> Callable[[str, Any], None]:
            def sink(kind: str, value: Any) -> None:
                with contextlib.suppress(RuntimeError):  # the loop closed: the server is shutting down
                    loop.call_soon_threadsafe(queue.put_nowait, (index, kind, value))

            return sink

        jobs = [Job.make(prompt, replace(ask.decoding, seed=seed + i), sink_for(i)) for i in range(ask.count)]
        try:
            engine.submit(jobs)
        except QueueFull as full:
            raise ApiError(
                503,
                f"The endpoint is at capacity ({full}); retry in a moment.",
                code="overloaded",
                retry_after=1,
            ) from None
        return Run(engine, jobs, queue)

    async def generate(
        self,
        request: Request,
        dialect: Dialect,
        parse: Callable[[dict[str, Any]], Ask],
        render: Callable[[str, list[Completion], str], dict[str, Any]],
        stream: Callable[[str, Ask, str, Events], AsyncIterator[bytes]],
        *,
        media_type: str = "text/event-stream",
    ) -> Response:
        """The pipeline, the same for every API and method; ``media_type`` is a streamed answer's."""
        try:
            self.authorize(request, dialect)
            ask = parse(await self.body(request))
            supplied = request.headers.get("x-request-id", "")[:200]
            # Echoed in a header, so only a printable-ASCII id is (OpenAI's `user` may be any text: it only routes).
            request_id = supplied if _ECHOABLE.fullmatch(supplied) else f"req-{uuid.uuid4().hex}"
            # One served set for the whole request, whatever a reload swaps in meanwhile.
            current = self.current
            config, pool = current.config, current.pool
            # The same caller stays on the same version of a traffic split.
            version = self.resolve(ask.model, supplied or ask.user or request_id, config)
            self.ready(pool)
            engine = pool.engines[version]
            asked = ask.decoding.max_new_tokens is not None
            ask = ask.with_defaults(pool.defaults(version))
            seed = _seed_for(request_id) if ask.decoding.seed is None else ask.decoding.seed
            prompt, ask = await self.prompt(engine, ask, asked=asked)
            run = self.start(engine, ask, prompt, seed)
        except ApiError as err:
            return self.reply(dialect, err)
        label = f"{self.name}@{version}"
        headers = {"X-Tuneform-Model-Version": str(version), "X-Request-Id": request_id}
        if ask.stream:
            return StreamingResponse(
                stream(label, ask, request_id, run.events()), media_type=media_type, headers=headers
            )
        answer = asyncio.ensure_future(run.completions())
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not answer.done():
            # The client went away: stop generating for it (the answer's generator cancels its jobs).
            answer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answer
            return Response(status_code=499)
        try:
            completions = answer.result()
        except ApiError as err:
            return self.reply(dialect, err)
        return JSONResponse(render(label, completions, request_id), headers=headers)

    # Routes ---------------------------------------------------------------------------------------------------------

    async def health(self, request: Request) -> JSONResponse:
        status = {"ready": 200, "loading": 503}.get(self.pool.state, 500)
        body: dict[str, Any] = {"status": "ok" if status == 200 else self.pool.state, "name": self.name}
        body["versions"] = sorted(self.config.versions)
        body["traffic"] = {str(v): p for v, p in self.config.traffic.items()}
        body["pid"] = os.getpid()
        body["revision"] = revision(self.config)
        if self.reload_failure is not None:
            body["reloadFailure"] = self.reload_failure
        body["waiting"] = {str(n): engine.waiting for n, engine in self.pool.engines.items()}
        body["running"] = {str(n): len(engine.decoder.rows) for n, engine in self.pool.engines.items()}
        if self.pool.error:
            body["error"] = self.pool.error
        return JSONResponse(body, status_code=status)

    async def chat_completions(self, request: Request) -> Response:
        return await self.generate(
            request,
            OPENAI,
            lambda body: openai_api.parse(body, self.limits),
            lambda label, completions, _id: openai_api.render(label, completions),
            lambda label, ask, _id, events: openai_api.stream(label, ask, events),
        )

    async def gemini_method(self, request: Request) -> Response:
        model, method = request.path_params["model"], request.path_params["method"]
        if method == "countTokens":
            return await self.count_tokens(request, model)
        if method not in ("generateContent", "streamGenerateContent"):
            return self.reply(
                GEMINI,
                ApiError(
                    404,
                    f"Method {method!r} is not served; use generateContent, streamGenerateContent or countTokens.",
                    code="not_found",
                ),
            )
        sse = request.query_params.get("alt") == "sse"
        streaming = method == "streamGenerateContent"
        return await self.generate(
            request,
            GEMINI,
            lambda body: gemini_api.parse(body, model, self.limits, stream=streaming),
            gemini_api.render,
            lambda label, _ask, response_id, events: gemini_api.stream(label, response_id, events, sse=sse),
            # Without ?alt=sse Google streams one JSON array, sent as application/json.
            media_type="text/event-stream" if sse else "application/json",
        )

    async def count_tokens(self, request: Request, model: str) -> Response:
        try:
            self.authorize(request, GEMINI)
            ask = gemini_api.parse_count(await self.body(request), model, self.limits)
            current = self.current
            config, pool = current.config, current.pool
            version = self.resolve(ask.model, f"count-{uuid.uuid4().hex}", config)
            self.ready(pool)
            ids = await self.tokens(pool.engines[version], ask)
        except ApiError as err:
            return self.reply(GEMINI, err)
        return JSONResponse({"totalTokens": len(ids)}, headers={"X-Tuneform-Model-Version": str(version)})

    async def list_models(self, request: Request) -> Response:
        dialect = dialect_of(request)
        try:
            self.authorize(request, dialect)
            if dialect is OPENAI:
                return JSONResponse(openai_api.models(self.served()))
            self.ready()
            return JSONResponse({"models": [self._gemini_model(model) for model in self.served()]})
        except ApiError as err:
            return self.reply(dialect, err)

    async def get_model(self, request: Request) -> Response:
        dialect = dialect_of(request)
        model = request.path_params["model"]
        if ":" in model:  # a method's path (`{model}:generateContent`) read with GET
            err = ApiError(405, f"GET is not allowed on {request.url.path}; use POST.", code="method_not_allowed")
            return self.reply(dialect, err)
        try:
            self.authorize(request, dialect)
            if model.removeprefix("models/") not in self.served():
                self.resolve(model, "")  # raises the 404 naming what is served
            if dialect is OPENAI:
                return JSONResponse(openai_api.model_entry(model))
            self.ready()
            return JSONResponse(self._gemini_model(model.removeprefix("models/")))
        except ApiError as err:
            return self.reply(dialect, err)

    def _gemini_model(self, model: str) -> dict[str, Any]:
        traffic = self.config.traffic
        version = self.resolve(model, "") if "@" in model else max(traffic, key=lambda v: traffic[v])
        context = self.pool.context(version)
        # A one-token answer needs one token of context; an answer cannot be longer than the context either.
        output = min(self.config.max_new_tokens_limit, context - 1)
        return gemini_api.model_info(model, str(version), context - 1, output, self.pool.defaults(version))

    async def not_found(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        dialect = dialect_of(request)
        if exc.status_code == 405:
            allowed = exc.headers.get("Allow", "") if exc.headers else ""
            err = ApiError(
                405,
                f"{request.method} is not allowed on {request.url.path}" + (f"; use {allowed}." if allowed else "."),
                code="method_not_allowed",
            )
        else:
            err = ApiError(
                404,
                f"No route {request.method} {request.url.path} on this endpoint. The {dialect.name} API is served "
                + (
                    "under /v1/chat/completions and /v1/models."
                    if dialect is OPENAI
                    else "under /v1beta/models/{model}:generateContent (and /v1/models/...)."
                ),
                code="not_found",
            )
        response = self.reply(dialect, err)
        if exc.status_code == 405 and exc.headers:
            response.headers["Allow"] = exc.headers.get("Allow", "")
        return response

    async def internal_error(self, request: Request, exc: Exception) -> Response:
        """A bug of ours, in the calling API's error shape (the traceback goes to the server's log)."""
        err = ApiError(500, f"Internal error ({type(exc).__name__}); see the endpoint's log.", code="internal_error")
        return self.reply(dialect_of(request), err)


class AccessLog:
    """One line per request on stderr (the server's log), with any ``key`` query parameter masked: keys never reach
    the log. Uvicorn's own access log, which prints the query string as sent, is off."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            query = "&".join(
                # Starlette decodes `k%65y` to `key` and authorises with it; the mask must see the same name.
                "key=***" if urllib.parse.unquote_plus(part.split("=", 1)[0]) == "key" else part
                for part in scope.get("query_string", b"").decode("latin-1").split("&")
                if part
            )
            path = scope.get("path", "") + (f"?{query}" if query else "")
            elapsed = (time.monotonic() - started) * 1000
            print(f"{scope.get('method')} {path} {status} {elapsed:.0f}ms", file=sys.stderr, flush=True)


def create_app(config: ServerConfig, pool: ModelPool | None = None, *, load_in_background: bool = True) -> Starlette:
    """Builds the endpoint's ASGI app.

    Args:
        config: The server configuration.
        pool: The models; ``None`` builds a ``ModelPool`` that imports ``config.inference``.
        load_in_background: Start loading the pool when the app starts (``False`` if the caller loads it).

    Returns:
        The Starlette app; serve it with uvicorn on ``config.host:config.port`` (its access log off: ``AccessLog``
        writes one that masks keys).
    """
    models = pool or ModelPool(config)
    endpoint = Endpoint(config, models)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if load_in_background and models.state == "loading":
            threading.Thread(target=models.load, name="load-models", daemon=True).start()
        yield
        models.stop()

    gemini_paths = [
        "/v1beta/models/{model}:{method}",
        "/v1/models/{model}:{method}",
        "/v1/projects/{project}/locations/{location}/endpoints/{model}:{method}",
        "/v1beta1/projects/{project}/locations/{location}/endpoints/{model}:{method}",
    ]
    routes = [
        Route("/health", endpoint.health, methods=["GET"]),
        Route("/v1/chat/completions", endpoint.chat_completions, methods=["POST"]),
        *(Route(path, endpoint.gemini_method, methods=["POST"]) for path in gemini_paths),
        Route("/v1/models", endpoint.list_models, methods=["GET"]),
        Route("/v1beta/models", endpoint.list_models, methods=["GET"]),
        Route("/v1/models/{model}", endpoint.get_model, methods=["GET"]),
        Route("/v1beta/models/{model}", endpoint.get_model, methods=["GET"]),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        404: endpoint.not_found,
        405: endpoint.not_found,
        Exception: endpoint.internal_error,
    }
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    # `POST /v1/chat/completions/` answers 404 in the API's shape rather than a bare redirect a client won't follow.
    app.router.redirect_slashes = False
    app.add_middleware(AccessLog)
    app.state.pool = models
    app.state.endpoint = endpoint
    return app


def _same_weights(old: VersionConfig, new: VersionConfig) -> bool:
    return (old.artifact_dir, old.base_model_dir, old.kind) == (new.artifact_dir, new.base_model_dir, new.kind)


RETIRE_GRACE_S = 60.0
"""How long an engine no longer served may take to finish the answers it is generating before it stops."""


def _retire(engines: list[Engine]) -> None:
    """Stop engines once their running and waiting answers are done (in the background)."""

    def wait_then_stop() -> None:
        deadline = time.monotonic() + RETIRE_GRACE_S
        while time.monotonic() < deadline and any(e.waiting or e.decoder.rows for e in engines):
            time.sleep(0.1)
        for engine in engines:
            engine.stop()

    if engines:
        threading.Thread(target=wait_then_stop, name="retire-engines", daemon=True).start()
