"""The endpoint server over real HTTP on 127.0.0.1 with a tiny real model, driven by the official clients."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

import test_serving_support as support
from tuneform.serving import ConfigError, ServerConfig, parse_config
from tuneform.serving.app import ModelPool, pick_version

pytestmark = pytest.mark.timeout(120)
NAME = "ticket-router"
KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def tiny() -> dict[str, Path]:
    return support.cached_tiny_models()


def _config(tiny: dict[str, Path], tmp: Path, traffic: dict[str, int] | None = None) -> ServerConfig:
    return parse_config(
        {
            "name": NAME,
            "host": "127.0.0.1",
            "port": support.free_port(),
            "api_key": KEY,
            "base_model_dir": str(tiny["base"]),
            "versions": {
                "1": {"artifact_dir": str(tiny["adapter"]), "kind": "adapter"},
                "2": {"artifact_dir": str(tiny["full"]), "kind": "full"},
            },
            "traffic": traffic or {"1": 90, "2": 10},
            "log_path": str(tmp / "server.log"),
            "inference": "test_serving_support",
            "max_new_tokens": 6,
        }
    )


@pytest.fixture(scope="module")
def url(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = _config(tiny, tmp_path_factory.mktemp("server"))
    with support.serve(config, ModelPool(config)) as base_url:
        support.wait_ready(base_url)
        yield base_url


def _gemini(url: str, key: str = KEY) -> genai.Client:
    return genai.Client(api_key=key, http_options=genai_types.HttpOptions(base_url=url))


class TestHealth:
    def test_503_while_loading_then_200_without_a_key(self, tiny: dict[str, Path], tmp_path: Path) -> None:
        gate = threading.Event()

        class GatedInference:
            """The real loader, held back until the test has seen the loading state."""

            @staticmethod
            def load_for_inference(base: Path, artifact: Path, kind: str) -> tuple[Any, Any]:
                assert gate.wait(30)
                return support.load_for_inference(base, artifact, kind)

        config = _config(tiny, tmp_path)
        with support.serve(config, ModelPool(config, GatedInference())) as base_url:
            loading = httpx.get(f"{base_url}/health")
            assert loading.status_code == 503 and loading.json()["status"] == "loading"
            early = httpx.post(
                f"{base_url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {KEY}"},
                json={"model": NAME, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
            gate.set()
            support.wait_ready(base_url)
            body = httpx.get(f"{base_url}/health").json()
            assert body["status"] == "ok" and body["name"] == NAME and body["versions"] == [1, 2]

    def test_failed_load_is_reported(self, tmp_path: Path, tiny: dict[str, Path]) -> None:
        config = _config({**tiny, "full": tmp_path / "missing"}, tmp_path)
        pool = ModelPool(config)
        pool.load()
        assert pool.state == "failed" and pool.error and "missing" in pool.error
        with support.serve(config, pool) as base_url:
            response = httpx.get(f"{base_url}/health")
            assert response.status_code == 500 and response.json()["status"] == "failed"


class TestWithTheTrainersInference:
    def test_default_inference_module_serves_both_apis(self, tiny: dict[str, Path], tmp_path: Path) -> None:
        """The production seam (``tuneform.training``), not this suite's own loader, behind both clients."""
        config = parse_config({**_config(tiny, tmp_path).to_json(), "inference": "tuneform.training"})
        with support.serve(config, ModelPool(config)) as base_url:
            support.wait_ready(base_url)
            client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY)
            chat = client.chat.completions.create(
                model=f"{NAME}@1", messages=[{"role": "user", "content": "hello"}], max_tokens=3, temperature=0
            )
            assert chat.model == f"{NAME}@1" and chat.usage is not None and chat.usage.completion_tokens == 3
            gemini = _gemini(base_url)
            answer = gemini.models.generate_content(
                model=f"{NAME}@1",
                contents="hello",
                config=genai_types.GenerateContentConfig(temperature=0, max_output_tokens=3),
            )
            assert answer.text == chat.choices[0].message.content  # same greedy answer through either API


class TestOpenAI:
    def test_models_list(self, url: str) -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
        assert [m.id for m in client.models.list()] == [NAME, f"{NAME}@1", f"{NAME}@2"]

    def test_chat_completion_with_the_official_client(self, url: str) -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
        raw = client.chat.completions.with_raw_response.create(
            model=NAME,
            messages=[{"role": "system", "content": "Route the ticket."}, {"role": "user", "content": "VPN is down"}],
            max_tokens=5,
            temperature=0,
            extra_headers={"X-Request-Id": "ticket-42"},
        )
        completion = raw.parse()
        version = pick_version({1: 90, 2: 10}, "ticket-42")
        assert raw.headers["x-tuneform-model-version"] == str(version)
        assert completion.model == f"{NAME}@{version}"
        choice = completion.choices[0]
        assert choice.message.role == "assistant" and choice.message.content
        assert choice.finish_reason in ("stop", "length")
        assert completion.usage is not None
        assert completion.usage.completion_tokens <= 5 and completion.usage.prompt_tokens > 5
        assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens

    def test_pinned_version_n_choices_and_stop(self, url: str) -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
        ask = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 6, "temperature": 0}
        first = client.chat.completions.create(model=f"{NAME}@2", n=2, **ask)  # type: ignore[call-overload]
        assert first.model == f"{NAME}@2" and len(first.choices) == 2
        text = first.choices[0].message.content or ""
        assert first.choices[0].finish_reason == "length" and first.choices[1].message.content == text  # greedy
        assert len(text) >= 4
        stop = text[2:4]
        cut = client.chat.completions.create(model=f"{NAME}@2", stop=[stop], **ask)  # type: ignore[call-overload]
        assert cut.choices[0].message.content == text[: text.find(stop)]
        assert cut.choices[0].finish_reason == "stop"

    def test_versions_really_differ(self, url: str) -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
        ask = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 6, "temperature": 0}
        one = client.chat.completions.create(model=f"{NAME}@1", **ask)  # type: ignore[call-overload]
        two = client.chat.completions.create(model=f"{NAME}@2", **ask)  # type: ignore[call-overload]
        assert one.choices[0].message.content != two.choices[0].message.content

    def test_errors_have_openai_shape(self, url: str) -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(
                model=NAME, messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"}
            )
        assert bad.value.code == "invalid_request" and "response_format: structured output" in bad.value.message
        with pytest.raises(openai.NotFoundError, match="'other' does not exist"):
            client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
        response = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": NAME, "messages": [{"role": "robot", "content": "x"}], "temperature": 9, "n": 0},
        )
        error = response.json()["error"]
        assert response.status_code == 400 and error["type"] == "invalid_request_error"
        for part in ("messages[0].role", "temperature: expected a number from 0 to 2, got 9", "n: expected"):
            assert part in error["message"]


class TestGemini:
    def test_generate_content_with_the_official_client(self, url: str) -> None:
        client = _gemini(url)
        response = client.models.generate_content(
            model=NAME,
            contents=[genai_types.Content(role="user", parts=[genai_types.Part(text="VPN is down")])],
            config=genai_types.GenerateContentConfig(
                system_instruction="Route the ticket.", temperature=0, max_output_tokens=4, candidate_count=1
            ),
        )
        assert response.text
        assert response.candidates and response.candidates[0].finish_reason in (
            genai_types.FinishReason.MAX_TOKENS,
            genai_types.FinishReason.STOP,
        )
        usage = response.usage_metadata
        assert usage is not None and usage.candidates_token_count is not None and usage.prompt_token_count
        assert usage.candidates_token_count <= 4
        assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
        assert response.model_version in (f"{NAME}@1", f"{NAME}@2")

    def test_pinned_version_and_candidates(self, url: str) -> None:
        client = _gemini(url)  # keep a reference: a collected client closes its HTTP connection pool
        response = client.models.generate_content(
            model=f"{NAME}@1",
            contents="hello",
            config=genai_types.GenerateContentConfig(temperature=0, max_output_tokens=3, candidate_count=2),
        )
        assert response.model_version == f"{NAME}@1"
        assert response.candidates and [c.index for c in response.candidates] == [0, 1]
        assert response.candidates[0].finish_reason == genai_types.FinishReason.MAX_TOKENS

    def test_vertex_style_endpoint_path(self, url: str) -> None:
        path = f"/v1/projects/p/locations/us-central1/endpoints/{NAME}:generateContent"
        body = {
            "contents": [{"role": "user", "parts": [{"text": "hello"}]}],
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "generationConfig": {"temperature": 0, "maxOutputTokens": 3, "stopSequences": ["zzz"]},
        }
        response = httpx.post(f"{url}{path}", headers={"Authorization": f"Bearer {KEY}"}, json=body)
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["candidates"][0]["content"]["role"] == "model"
        assert data["candidates"][0]["finishReason"] == "MAX_TOKENS"
        assert data["usageMetadata"]["candidatesTokenCount"] == 3
        assert data["modelVersion"] == f"{NAME}@{response.headers['x-tuneform-model-version']}"
        missing = httpx.post(
            f"{url}{path.replace(NAME, 'nope')}", headers={"Authorization": f"Bearer {KEY}"}, json=body
        )
        assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"

    def test_vertex_path_with_the_official_client_in_vertex_mode(self, url: str) -> None:
        client = genai.Client(
            vertexai=True, api_key=KEY, http_options=genai_types.HttpOptions(base_url=url, api_version="v1")
        )
        response = client.models.generate_content(
            model=f"projects/p/locations/us-central1/endpoints/{NAME}",
            contents="hello",
            config=genai_types.GenerateContentConfig(max_output_tokens=2, temperature=0),
        )
        assert response.text and response.model_version in (f"{NAME}@1", f"{NAME}@2")
        assert response.usage_metadata is not None and response.usage_metadata.candidates_token_count == 2

    def test_errors_have_google_shape(self, url: str) -> None:
        response = httpx.post(
            f"{url}/v1beta/models/{NAME}:generateContent",
            params={"key": KEY},
            json={"contents": [{"role": "bot", "parts": [{"inlineData": {}}]}], "generationConfig": {"topP": 3}},
        )
        error = response.json()["error"]
        assert response.status_code == 400 and error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
        for part in ("contents[0].role", "contents[0].parts[0]: only text parts", "topP: expected"):
            assert part in error["message"]


class TestAuth:
    @pytest.mark.parametrize("key", [None, "wrong-key"])
    def test_openai_routes_refuse(self, url: str, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
            response = httpx.request(method, f"{url}{path}", headers=headers, json={})
            assert response.status_code == 401
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["code"] == ("invalid_api_key" if key else "missing_api_key")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong-key").models.list()

    def test_gemini_routes_refuse_and_accept_each_key_form(self, url: str) -> None:
        client = _gemini(url, key="wrong-key")
        with pytest.raises(genai_errors.ClientError) as refused:
            client.models.generate_content(model=NAME, contents="hi")
        assert refused.value.code == 401 and refused.value.status == "UNAUTHENTICATED"
        path = f"{url}/v1beta/models/{NAME}:generateContent"
        body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 1}}
        assert httpx.post(path, json=body).status_code == 401
        assert httpx.post(path, json=body, params={"key": "nope"}).status_code == 401
        assert httpx.post(path, json=body, params={"key": KEY}).status_code == 200
        assert httpx.post(path, json=body, headers={"x-goog-api-key": KEY}).status_code == 200
        assert httpx.post(path, json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200

    def test_health_needs_no_key(self, url: str) -> None:
        assert httpx.get(f"{url}/health").status_code == 200


class TestTrafficSplit:
    def test_proportions_and_determinism(self) -> None:
        counts = collections.Counter(pick_version({1: 90, 2: 10}, f"req-{i}") for i in range(1000))
        assert 870 <= counts[1] <= 930 and counts[1] + counts[2] == 1000
        assert all(
            pick_version({1: 90, 2: 10}, f"req-{i}") == pick_version({2: 10, 1: 90}, f"req-{i}") for i in range(50)
        )
        assert {pick_version({1: 0, 2: 100}, f"r{i}") for i in range(100)} == {2}
        thirds = collections.Counter(pick_version({1: 34, 2: 33, 3: 33}, str(i)) for i in range(3000))
        assert all(900 <= thirds[v] <= 1100 for v in (1, 2, 3))

    def test_over_http_the_same_id_reaches_the_same_version(self, url: str) -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
        # Ids chosen to cover both versions (10 for version 1, 4 for version 2); the server is checked against them.
        by_version: dict[int, list[str]] = {1: [], 2: []}
        for request_id in (f"ticket-{i}" for i in range(200)):
            bucket = by_version[pick_version({1: 90, 2: 10}, request_id)]
            if len(bucket) < (10 if bucket is by_version[1] else 4):
                bucket.append(request_id)
        for version, request_ids in by_version.items():
            for request_id in request_ids:
                answers = []
                for _ in range(2):
                    raw = client.chat.completions.with_raw_response.create(
                        model=NAME,
                        messages=[{"role": "user", "content": "hello"}],
                        max_tokens=2,
                        extra_headers={"X-Request-Id": request_id},
                    )
                    answers.append((raw.headers["x-tuneform-model-version"], raw.parse().choices[0].message.content))
                assert answers[0] == answers[1]  # same version, and the same sampled text (seeded by the id)
                assert answers[0][0] == str(version)

    def test_openai_user_field_routes_like_a_request_id(self, url: str) -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
        for user in ("alice", "bob", "carol", "dave"):
            raw = client.chat.completions.with_raw_response.create(
                model=NAME, messages=[{"role": "user", "content": "x"}], max_tokens=1, user=user
            )
            assert raw.headers["x-tuneform-model-version"] == str(pick_version({1: 90, 2: 10}, user))
            assert raw.headers["x-request-id"].startswith("req-")  # `user` may be any text; it is not echoed


class TestConfig:
    def test_every_problem_is_listed(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as caught:
            parse_config(
                {
                    "name": "m",
                    "host": "0.0.0.0",
                    "port": 70000,
                    "api_key": "",
                    "base_model_dir": "b",
                    "versions": {"1": {"artifact_dir": "a", "kind": "lora"}},
                    "traffic": {"1": 80, "3": 20},
                    "log_path": "l",
                    "colour": "red",
                },
                "endpoint.json",
            )
        lines = str(caught.value).splitlines()
        assert lines[0] == "6 problems in endpoint.json:"
        assert "endpoint.json: colour: unknown key." in lines[1]
        assert lines[2] == "endpoint.json: api_key: expected a non-empty string, got ''."
        assert lines[3].startswith("endpoint.json: host: expected a loopback address") and '"127.0.0.1"' in lines[3]
        assert lines[4] == "endpoint.json: port: expected an integer from 1 to 65535, got 70000."
        assert lines[5] == "endpoint.json: versions.1.kind: expected one of adapter, full, got 'lora'."
        assert lines[6] == "endpoint.json: traffic.3: expected one of the configured versions (1)."

    def test_traffic_must_sum_to_100(self) -> None:
        base = {"name": "m", "port": 1, "api_key": "k", "base_model_dir": "b", "log_path": "l.log"}
        versions = {"1": {"artifact_dir": "a", "kind": "full"}, "2": {"artifact_dir": "b", "kind": "adapter"}}
        with pytest.raises(ConfigError, match="traffic: expected percents that sum to 100, got 95"):
            parse_config({**base, "versions": versions, "traffic": {"1": 90, "2": 5}})
        config = parse_config({**base, "versions": versions, "traffic": {"2": 10, "1": 90}})
        assert config.traffic == {1: 90, 2: 10} and config.pid_path == "l.pid"
        assert parse_config(config.to_json()) == config
