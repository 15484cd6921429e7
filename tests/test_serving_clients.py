"""The endpoint with the official clients at two versions each: those pinned in pyproject.toml (this interpreter)
and the newest (tools/clients/requirements.txt, an environment scripts/client-env.sh builds and caches per user).
Only the base URL and the key change from what the clients' documentation shows."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import test_serving_support as support
from tuneform.serving import parse_config
from tuneform.serving.app import ModelPool

pytestmark = [pytest.mark.timeout(600), pytest.mark.heavy]
REPO = Path(__file__).resolve().parents[1]
NAME = "ticket-router"
KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tiny = support.cached_tiny_models()
    config = parse_config(
        {
            "name": NAME,
            "port": support.free_port(),
            "api_key": KEY,
            "base_model_dir": str(tiny["base"]),
            "versions": {"1": {"artifact_dir": str(tiny["full"]), "kind": "full"}},
            "traffic": {"1": 100},
            "log_path": str(tmp_path_factory.mktemp("clients") / "server.log"),
            "inference": "test_serving_support",
        }
    )
    with support.serve(config, ModelPool(config)) as base_url:
        support.wait_ready(base_url)
        yield base_url


def _newest_python() -> str:
    built = subprocess.run(
        [str(REPO / "scripts" / "client-env.sh")], capture_output=True, text=True, check=False, timeout=540
    )
    assert built.returncode == 0, built.stderr
    return built.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("which", ["pinned", "newest"])
def test_official_clients_need_only_the_base_url_and_key(url: str, which: str) -> None:
    python = sys.executable if which == "pinned" else _newest_python()
    ran = subprocess.run(
        [python, str(REPO / "tests" / "serving_clients_check.py"), url, KEY, NAME],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    seen = json.loads(ran.stdout)
    if which == "newest":
        expected = (REPO / "tools" / "clients" / "requirements.in").read_text()
        assert f"openai=={seen['openai']}" in expected and f"google-genai=={seen['genai']}" in expected
    assert seen["chat"][0] == f"{NAME}@1" and seen["chat"][2] == 3
    assert seen["chat_stream"] and seen["models"] == [NAME, f"{NAME}@1"] and seen["model"] == NAME
    assert seen["gemini"][0] == f"{NAME}@1" and seen["gemini"][2] == 3
    assert seen["gemini_stream"] and seen["gemini_stream_usage"] > 3
    assert seen["count_tokens"] > 0 and seen["gemini_model"] == f"models/{NAME}"
    assert seen["refused"] == [400, "INVALID_ARGUMENT"]
