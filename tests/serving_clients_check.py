"""Drives a live endpoint with the official clients, changing only the base URL and key (no tests here).

Run by tests/test_serving_clients.py under two interpreters: the project's (the clients pinned in pyproject.toml)
and the one scripts/client-env.sh builds (the newest). Prints one JSON object of what each call returned.

    python tests/serving_clients_check.py <base url> <key> <model>
"""

from __future__ import annotations

import json
import sys

import openai
from google import genai


def main() -> None:
    url, key, model = sys.argv[1:4]
    seen: dict[str, object] = {"openai": openai.__version__, "genai": genai.__version__}
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=3)
    seen["chat"] = [chat.model, chat.choices[0].message.content, chat.usage.completion_tokens if chat.usage else None]
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=3, stream=True, temperature=0
    )
    seen["chat_stream"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    seen["models"] = [m.id for m in client.models.list()]
    seen["model"] = client.models.retrieve(model).id
    # The Gemini client exactly as its documentation shows it, with the base URL pointed at the endpoint.
    gemini = genai.Client(api_key=key, http_options={"base_url": url})
    answer = gemini.models.generate_content(model=model, contents="hello", config={"max_output_tokens": 3})
    seen["gemini"] = [answer.model_version, answer.text, answer.usage_metadata.candidates_token_count]  # type: ignore[union-attr]
    chunks = list(
        gemini.models.generate_content_stream(
            model=model, contents="hello", config={"max_output_tokens": 3, "temperature": 0}
        )
    )
    seen["gemini_stream"] = "".join(c.text or "" for c in chunks)
    seen["gemini_stream_usage"] = chunks[-1].usage_metadata.total_token_count  # type: ignore[union-attr]
    seen["count_tokens"] = gemini.models.count_tokens(model=model, contents="hello").total_tokens
    seen["gemini_model"] = gemini.models.get(model=model).name
    try:
        gemini.models.generate_content(model=model, contents="x", config={"response_mime_type": "application/json"})
        seen["refused"] = None
    except genai.errors.ClientError as error:
        seen["refused"] = [error.code, error.status]
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
