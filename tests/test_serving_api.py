"""The endpoint's API surface over real HTTP with the official clients: streaming, countTokens, model routes, the
Gemini API under /v1, the version's decoding defaults, refused parameters, limits, overload and disconnects."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from google import genai
from google.genai import types as genai_types

import test_serving_support as support
from tuneform.serving import ServerConfig, parse_config
from tuneform.serving.app import ModelPool

pytestmark = pytest.mark.timeout(180)
NAME = "ticket-router"
KEY = "test-key-0123456789"
BEARER = {"Authorization": f"Bearer {KEY}"}
GENERATION = {"temperature": 0, "maxOutputTokens": 4}


def _config(tmp: Path, **extra: Any) -> ServerConfig:
    tiny = support.cached_tiny_models()
    return parse_config(
        {
            "name": NAME,
            "port": support.free_port(),
            "api_key": KEY,
            "base_model_dir": str(tiny["base"]),
            "versions": {
                "1": {"artifact_dir": str(tiny["adapter"]), "kind": "adapter"},
                # Version 2 carries decoding defaults, as a version tuned with spec.endpoint.generation does.
                "2": {"artifact_dir": str(tiny["full"]), "kind": "full", "generation": GENERATION},
            },
            "traffic": {"1": 50, "2": 50},
            "log_path": str(tmp / "server.log"),
            "inference": "test_serving_support",
            "max_new_tokens": 6,
            **extra,
        }
    )


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = _config(tmp_path_factory.mktemp("api"), max_body_bytes=300_000, max_messages=16)
    with support.serve(config, ModelPool(config)) as base_url:
        support.wait_ready(base_url)
        yield base_url


def _openai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)


def _gemini(url: str, version: str | None = None) -> genai.Client:
    options = genai_types.HttpOptions(base_url=url, api_version=version) if version else {"base_url": url}
    return genai.Client(api_key=KEY, http_options=options)


class TestStreaming:
    def test_openai_stream_adds_up_to_the_whole_answer(self, url: str) -> None:
        client = _openai(url)
        ask: dict[str, Any] = {"model": f"{NAME}@1", "messages": [{"role": "user", "content": "hello"}]}
        whole = client.chat.completions.create(**ask, max_tokens=6, temperature=0)
        chunks = list(
            client.chat.completions.create(
                **ask, max_tokens=6, temperature=0, stream=True, stream_options={"include_usage": True}
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishes == [whole.choices[0].finish_reason]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
        assert all(c.model == f"{NAME}@1" for c in chunks)

    def test_gemini_stream_over_sse_adds_up_to_the_whole_answer(self, url: str) -> None:
        client = _gemini(url)
        config = genai_types.GenerateContentConfig(temperature=0, max_output_tokens=6)
        whole = client.models.generate_content(model=f"{NAME}@1", contents="hello", config=config)
        chunks = list(client.models.generate_content_stream(model=f"{NAME}@1", contents="hello", config=config))
        assert "".join(c.text or "" for c in chunks) == whole.text
        assert chunks[-1].usage_metadata is not None
        assert chunks[-1].usage_metadata.candidates_token_count == whole.usage_metadata.candidates_token_count  # type: ignore[union-attr]
        assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == whole.candidates[0].finish_reason  # type: ignore[index]

    def test_gemini_stream_without_sse_is_one_json_array(self, url: str) -> None:
        body = {"contents": [{"parts": [{"text": "hello"}]}], "generationConfig": {"temperature": 0}}
        response = httpx.post(f"{url}/v1beta/models/{NAME}@2:streamGenerateContent", params={"key": KEY}, json=body)
        chunks = response.json()
        assert response.status_code == 200 and isinstance(chunks, list) and chunks[-1]["usageMetadata"]


class TestGeminiUnderV1:
    def test_the_client_on_v1_works_unchanged(self, url: str) -> None:
        client = _gemini(url, "v1")
        answer = client.models.generate_content(
            model=NAME, contents="hello", config=genai_types.GenerateContentConfig(max_output_tokens=2)
        )
        assert answer.text is not None and answer.model_version in (f"{NAME}@1", f"{NAME}@2")
        streamed = list(client.models.generate_content_stream(model=f"{NAME}@2", contents="hello"))
        assert streamed and streamed[-1].usage_metadata is not None
        assert client.models.count_tokens(model=NAME, contents="hello").total_tokens


class TestModelRoutes:
    def test_count_tokens_is_the_prompt_that_generation_reports(self, url: str) -> None:
        client = _gemini(url)
        counted = client.models.count_tokens(model=f"{NAME}@1", contents="how many tokens is this?")
        answer = client.models.generate_content(
            model=f"{NAME}@1",
            contents="how many tokens is this?",
            config=genai_types.GenerateContentConfig(max_output_tokens=1),
        )
        assert counted.total_tokens == answer.usage_metadata.prompt_token_count  # type: ignore[union-attr]

    def test_get_one_model_in_each_apis_shape(self, url: str) -> None:
        assert _openai(url).models.retrieve(f"{NAME}@2").id == f"{NAME}@2"
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            _openai(url).models.retrieve("other")
        gemini = _gemini(url)  # keep a reference: a collected client closes its connection pool
        model = gemini.models.get(model=NAME)
        assert model.name == f"models/{NAME}" and model.input_token_limit == 511  # the tiny model's context - 1
        assert model.output_token_limit == 511  # the configured 1,024 does not fit the tiny model's context
        listed = httpx.get(f"{url}/v1beta/models", headers={"x-goog-api-key": KEY}).json()
        assert [m["name"] for m in listed["models"]] == [f"models/{NAME}", f"models/{NAME}@1", f"models/{NAME}@2"]

    @pytest.mark.parametrize(
        ("method", "path", "google", "status"),
        [
            ("GET", "/nothing/here", False, 404),
            ("POST", "/v1/completions", False, 404),
            ("DELETE", "/v1/chat/completions", False, 405),
            ("GET", "/v1beta/nothing", True, 404),
            ("GET", f"/v1beta/models/{NAME}:generateContent", True, 405),
            ("PUT", f"/v1beta/models/{NAME}:generateContent", True, 405),
            ("POST", f"/v1beta/models/{NAME}:embedContent", True, 404),
        ],
    )
    def test_unknown_routes_and_methods_answer_in_the_apis_shape(
        self, url: str, method: str, path: str, google: bool, status: int
    ) -> None:
        response = httpx.request(method, f"{url}{path}", headers=BEARER)
        error = response.json()["error"]
        assert response.status_code == status
        if google:
            assert error["code"] == status and error["status"] in ("NOT_FOUND", "INVALID_ARGUMENT")
        else:
            assert error["type"] == "invalid_request_error" and error["code"] in ("not_found", "method_not_allowed")
        assert path.split(":", maxsplit=1)[0] in error["message"] or "Method" in error["message"]


class TestDecodingDefaults:
    def test_a_request_that_sets_nothing_gets_the_versions_defaults(self, url: str) -> None:
        client = _openai(url)
        answers = [
            client.chat.completions.create(
                model=f"{NAME}@2", messages=[{"role": "user", "content": "hello"}], user=f"u{i}"
            )
            for i in range(3)
        ]
        # temperature 0: one answer whatever the request id (the seed); maxOutputTokens 4.
        assert len({a.choices[0].message.content for a in answers}) == 1
        assert {a.usage.completion_tokens for a in answers} == {4}  # type: ignore[union-attr]
        longer = client.chat.completions.create(
            model=f"{NAME}@2", messages=[{"role": "user", "content": "hello"}], max_tokens=6
        )
        assert longer.usage is not None and longer.usage.completion_tokens == 6  # the request's own value wins
        gemini = _gemini(url)
        assert (
            gemini.models.generate_content(model=f"{NAME}@2", contents="hello").text
            == answers[0].choices[0].message.content
        )

    def test_a_version_without_defaults_samples(self, url: str) -> None:
        client = _openai(url)
        answers = {
            client.chat.completions.create(
                model=f"{NAME}@1", messages=[{"role": "user", "content": "hello"}], user=f"u{i}"
            )
            .choices[0]
            .message.content
            for i in range(4)
        }
        assert len(answers) > 1  # temperature 1, seeded per request id


class TestRefused:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
            ("tool_choice", "required"),
            ("response_format", {"type": "json_object"}),
            ("logprobs", True),
            ("top_logprobs", 2),
            ("frequency_penalty", 0.5),
            ("colour", "red"),
        ],
    )
    def test_openai_parameters_the_endpoint_cannot_honour(self, url: str, field: str, value: Any) -> None:
        body = {"model": NAME, "messages": [{"role": "user", "content": "x"}], field: value}
        response = httpx.post(f"{url}/v1/chat/completions", headers=BEARER, json=body)
        error = response.json()["error"]
        assert response.status_code == 400 and error["param"] == field and error["message"].startswith(f"{field}: ")

    def test_harmless_neutral_values_pass(self, url: str) -> None:
        body = {
            "model": NAME,
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 1,
            "logprobs": False,
            "response_format": {"type": "text"},
            "tools": [],
            "store": False,
        }
        assert httpx.post(f"{url}/v1/chat/completions", headers=BEARER, json=body).status_code == 200

    @pytest.mark.parametrize(
        ("config", "field"),
        [
            (genai_types.GenerateContentConfig(response_mime_type="application/json"), "responseMimeType"),
            (
                genai_types.GenerateContentConfig(
                    response_mime_type="application/json",
                    response_schema={"type": "OBJECT", "properties": {"q": {"type": "STRING"}}},
                ),
                "responseSchema",
            ),
            (genai_types.GenerateContentConfig(tools=[genai_types.Tool(code_execution={})]), "tools"),
            (genai_types.GenerateContentConfig(response_logprobs=True), "responseLogprobs"),
            (
                genai_types.GenerateContentConfig(
                    safety_settings=[
                        genai_types.SafetySetting(
                            category=genai_types.HarmCategory.HARM_CATEGORY_HARASSMENT,
                            threshold=genai_types.HarmBlockThreshold.BLOCK_LOW_AND_ABOVE,
                        )
                    ]
                ),
                "safetySettings",
            ),
        ],
    )
    def test_gemini_fields_the_endpoint_cannot_honour(self, url: str, config: Any, field: str) -> None:
        gemini = _gemini(url)
        with pytest.raises(genai.errors.ClientError) as refused:
            gemini.models.generate_content(model=NAME, contents="x", config=config)
        assert refused.value.code == 400 and refused.value.status == "INVALID_ARGUMENT"
        assert field in str(refused.value.message) and "not supported" in str(refused.value.message)


class TestLimits:
    def test_a_body_over_the_limit_is_413_in_each_shape(self, url: str) -> None:
        big = {"model": NAME, "messages": [{"role": "user", "content": "x" * 400_000}]}
        openai_reply = httpx.post(f"{url}/v1/chat/completions", headers=BEARER, json=big)
        assert openai_reply.status_code == 413 and "300,000 bytes" in openai_reply.json()["error"]["message"]
        google = httpx.post(
            f"{url}/v1beta/models/{NAME}:generateContent",
            params={"key": KEY},
            json={"contents": [{"parts": [{"text": "x" * 400_000}]}]},
        )
        assert google.status_code == 413 and google.json()["error"]["code"] == 413

    def test_too_many_messages(self, url: str) -> None:
        body = {"model": NAME, "messages": [{"role": "user", "content": "x"}] * 17}
        response = httpx.post(f"{url}/v1/chat/completions", headers=BEARER, json=body)
        assert response.status_code == 400 and "expected at most 16 messages, got 17" in response.text

    def test_a_prompt_longer_than_the_context(self, url: str) -> None:
        words = " ".join(["ticket"] * 600)
        with pytest.raises(openai.BadRequestError) as refused:
            _openai(url).chat.completions.create(model=NAME, messages=[{"role": "user", "content": words}])
        assert refused.value.code == "context_length_exceeded" and "the model's context of 512 tokens" in str(
            refused.value.message
        )
        response = httpx.post(
            f"{url}/v1/models/{NAME}:generateContent",
            headers={"x-goog-api-key": KEY},
            json={"contents": [{"parts": [{"text": words}]}]},
        )
        assert response.status_code == 400 and response.json()["error"]["status"] == "INVALID_ARGUMENT"

    @pytest.mark.parametrize(
        "body",
        [
            b'{"model": "ticket-router", "messages": [{"role": "user", "content": "\\ud800"}]}',
            b"[" * 100_000 + b"]" * 100_000,
            b'{"model": "ticket-router", "messages": [{"role": "user", "content": "\xff"}]}',
            b'{"model": "ticket-router", "temperature": 1e400, "messages": []}',
        ],
        ids=["lone-surrogate", "deep-nesting", "invalid-utf8", "infinite-number"],
    )
    def test_hostile_json_is_a_400(self, url: str, body: bytes) -> None:
        headers = {**BEARER, "Content-Type": "application/json"}
        response = httpx.post(f"{url}/v1/chat/completions", headers=headers, content=body)
        assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
        google = httpx.post(f"{url}/v1beta/models/{NAME}:generateContent", headers=headers, content=body)
        assert google.status_code == 400 and google.json()["error"]["status"] == "INVALID_ARGUMENT"


class TestClientsAsTheyAre:
    """What real clients send that once broke the endpoint (found by a hostile pass over it)."""

    @pytest.mark.parametrize("user", ["用户-42", "José 🎉", "line\nbreak", "café"])
    @pytest.mark.parametrize("stream", [False, True])
    def test_any_openai_user_text_is_accepted(self, url: str, user: str, stream: bool) -> None:
        # `user` routes the traffic split; it once went into the X-Request-Id header as it was (500, or no answer).
        body = {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "user": user}
        response = httpx.post(f"{url}/v1/chat/completions", headers=BEARER, json={**body, "stream": stream})
        assert response.status_code == 200
        assert response.headers["x-request-id"].startswith("req-")

    @pytest.mark.parametrize("model", [f"{NAME}@²", f"{NAME}@١", f"{NAME}@" + "9" * 5000])
    def test_odd_version_numbers_are_404_in_each_shape(self, url: str, model: str) -> None:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        response = httpx.post(f"{url}/v1/chat/completions", headers=BEARER, json=body)
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
        gemini = httpx.get(f"{url}/v1beta/models/{model}", headers={"x-goog-api-key": KEY})
        assert gemini.status_code == 404 and gemini.json()["error"]["status"] == "NOT_FOUND"

    def test_google_genai_sends_top_k_as_a_float(self, url: str) -> None:
        config = genai_types.GenerateContentConfig(top_k=5, max_output_tokens=2.0)  # type: ignore[arg-type]
        assert _gemini(url).models.generate_content(model=f"{NAME}@1", contents="hi", config=config).text is not None

    def test_seed_zero_is_a_seed(self, url: str) -> None:
        ask = {"model": f"{NAME}@1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
        answers = {
            _openai(url).chat.completions.create(**ask, temperature=1, seed=0).choices[0].message.content  # type: ignore[call-overload]
            for _ in range(3)
        }
        assert len(answers) == 1

    def test_control_tokens_in_a_message_stay_text(self, url: str) -> None:
        def count(text: str) -> int:
            body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
            response = httpx.post(f"{url}/v1beta/models/{NAME}@1:countTokens", params={"key": KEY}, json=body)
            return int(response.json()["totalTokens"])

        # One control token would be one token; as text, `<|im_start|>` is several.
        assert count("<|im_start|>system") - count("system") > 3

    def test_without_max_tokens_the_answer_takes_the_room_left(self, url: str) -> None:
        def tokens(words: int) -> int:
            body = {"contents": [{"parts": [{"text": " ".join(["ticket"] * words)}]}]}
            response = httpx.post(f"{url}/v1beta/models/{NAME}@1:countTokens", params={"key": KEY}, json=body)
            return int(response.json()["totalTokens"])

        words = 480
        while tokens(words) < 508:  # the context is 512; the version's default budget is 6 answer tokens
            words += 1
        room = 512 - tokens(words)
        ask = {"model": f"{NAME}@1", "messages": [{"role": "user", "content": " ".join(["ticket"] * words)}]}
        answer = _openai(url).chat.completions.create(**ask, temperature=0)  # type: ignore[call-overload]
        assert answer.usage.completion_tokens <= room
        with pytest.raises(openai.BadRequestError, match=f"Ask for at most {room} output tokens"):
            _openai(url).chat.completions.create(**ask, max_tokens=6)  # type: ignore[call-overload]

    def test_vertex_count_tokens_takes_a_system_instruction(self, url: str) -> None:
        options = genai_types.HttpOptions(base_url=url, api_version="v1")
        client = genai.Client(vertexai=True, api_key=KEY, http_options=options)
        model = f"projects/p/locations/us-central1/endpoints/{NAME}@1"
        counts = [
            client.models.count_tokens(
                model=model, contents="hi", config=genai_types.CountTokensConfig(system_instruction=system)
            ).total_tokens
            for system in ("be brief", "be brief, polite and kind to every customer")
        ]
        assert counts[0] is not None and counts[1] is not None and counts[1] > counts[0]

    def test_a_body_that_never_arrives_is_408(self, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        from tuneform.serving import app

        monkeypatch.setattr(app, "BODY_SECONDS", 1)
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            conn.sendall(head.encode())
            answer = ""
            while '"code":"request_timeout"' not in answer:  # the answer may come in more than one read
                chunk = conn.recv(65536).decode()
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith("HTTP/1.1 408") and '"code":"request_timeout"' in answer

    def test_protocol_details(self, url: str) -> None:
        body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 2}}
        array = httpx.post(f"{url}/v1beta/models/{NAME}@1:streamGenerateContent", params={"key": KEY}, json=body)
        assert array.headers["content-type"].startswith("application/json")
        ask = {"model": f"{NAME}@1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        chunks = list(
            _openai(url).chat.completions.create(**ask, stream=True, stream_options={"include_usage": True})  # type: ignore[call-overload]
        )
        assert all(c.usage is None for c in chunks[:-1]) and chunks[-1].usage is not None
        raw = httpx.post(
            f"{url}/v1/chat/completions",
            headers=BEARER,
            json={**ask, "stream": True, "stream_options": {"include_usage": True}},
        )
        assert all('"usage":' in line for line in raw.text.splitlines() if line.startswith("data: {"))
        slash = httpx.post(f"{url}/v1/chat/completions/", headers=BEARER, json=ask)
        assert slash.status_code == 404 and slash.json()["error"]["code"] == "not_found"
        both = {"Authorization": "Bearer proxy-token", "x-goog-api-key": KEY}
        assert httpx.post(f"{url}/v1beta/models/{NAME}@1:generateContent", headers=both, json=body).status_code == 200


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[tuple[str, ModelPool]]:
    """One slow version (each forward pass takes 50 ms), one row at a time, one request waiting at most."""

    class SlowInference:
        @staticmethod
        def load_for_inference(base: Path, artifact: Path, kind: str) -> tuple[Any, Any]:
            model, tokenizer = support.load_for_inference(base, artifact, kind)
            return support.SlowModel(model, 0.05), tokenizer

    config = _config(tmp_path, max_batch=1, max_waiting=1, max_new_tokens_limit=400)
    pool = ModelPool(config, SlowInference())
    with support.serve(config, pool) as base_url:
        support.wait_ready(base_url)
        yield base_url, pool


class TestOverload:
    def test_a_full_queue_answers_503_with_retry_after(self, slow_server: tuple[str, ModelPool]) -> None:
        url, _ = slow_server
        body = {"model": f"{NAME}@1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 20}

        def post(_: int) -> httpx.Response:
            return httpx.post(f"{url}/v1/chat/completions", headers=BEARER, json=body, timeout=60)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(post, range(4)))
        statuses = sorted(r.status_code for r in replies)
        assert statuses.count(200) >= 2 and 503 in statuses
        refused = next(r for r in replies if r.status_code == 503)
        assert refused.headers["retry-after"] == "1" and refused.json()["error"]["code"] == "overloaded"
        google = httpx.post(
            f"{url}/v1beta/models/{NAME}@1:generateContent",
            params={"key": KEY},
            json={"contents": [{"parts": [{"text": "x"}]}]},
            timeout=60,
        )
        assert google.status_code in (200, 503)

    def test_a_client_that_leaves_stops_its_generation(self, slow_server: tuple[str, ModelPool]) -> None:
        url, pool = slow_server
        model: Any = pool.engines[1].model
        body = json.dumps({"model": f"{NAME}@1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 400})
        host, port = url.removeprefix("http://").split(":")
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        )
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(request.encode())
            time.sleep(0.5)  # generation is under way: 400 tokens would take 20 s
        deadline = time.monotonic() + 5
        while httpx.get(f"{url}/health").json()["running"]["1"]:
            assert time.monotonic() < deadline, "generation went on after the client left"
            time.sleep(0.05)
        calls = model.calls
        time.sleep(0.3)
        assert model.calls == calls and calls < 60
