"""The batching engine on a tiny real model: batching changes no answer, rows join and leave mid-flight, streams
stop where a stop sequence starts, cancelled and queued work is bounded."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import test_serving_support as support
from tuneform.serving import engine as engine_module
from tuneform.serving.engine import BatchDecoder, Engine, Job, QueueFull, decode_all, render_prompt
from tuneform.serving.protocol import Completion, Decoding

pytestmark = pytest.mark.timeout(120)

PROMPTS = [
    "hello",
    "my router keeps dropping the connection every evening, what can I do",
    "refund",
    "I was charged twice this month and would like to know why, thanks",
    "where is my parcel",
    "ok",
    "please close my account and delete everything you hold about me",
    "do you sell gift cards",
]


@pytest.fixture(scope="module")
def model() -> tuple[Any, Any]:
    """A tiny random Llama with large weights: its greedy answers depend on the prompt (at the usual initial scale
    every prompt gets the same answer, which would hide a batch that mixes rows up)."""
    from transformers import AutoTokenizer

    from training_helpers import tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(str(support.cached_tiny_models()["base"]))
    return tiny_llama(tokenizer, seed=5, initializer_range=0.5).eval(), tokenizer


class Recorder:
    """A job's sink: the streamed pieces and the final answer."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.done: Completion | None = None
        self.errors: list[str] = []
        self.finished = threading.Event()

    def __call__(self, kind: str, value: Any) -> None:
        if kind == "text":
            self.pieces.append(value)
        elif kind == "done":
            self.done = value
            self.finished.set()
        else:
            self.errors.append(value)
            self.finished.set()


def _job(tokenizer: Any, text: str, **decoding: Any) -> tuple[Job, Recorder]:
    recorder = Recorder()
    settings = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8, "stops": (), "seed": 0, **decoding}
    prompt = render_prompt(tokenizer, [{"role": "user", "content": text}], None)
    return Job.make(prompt, Decoding(**settings), recorder), recorder


def _answers(recorders: list[Recorder]) -> list[tuple[str, int, str]]:
    out = []
    for recorder in recorders:
        assert recorder.done is not None and not recorder.errors
        assert "".join(recorder.pieces) == recorder.done.text  # the stream adds up to the answer
        out.append((recorder.done.text, recorder.done.completion_tokens, recorder.done.finish_reason))
    return out


def _one_at_a_time(model: Any, tokenizer: Any, texts: list[str], **decoding: Any) -> list[tuple[str, int, str]]:
    recorders = []
    for text in texts:
        job, recorder = _job(tokenizer, text, **decoding)
        decode_all(model, tokenizer, [job], max_batch=1)
        recorders.append(recorder)
    return _answers(recorders)


def test_a_batch_gives_every_row_the_answer_it_gets_alone(model: tuple[Any, Any]) -> None:
    net, tokenizer = model
    alone = _one_at_a_time(net, tokenizer, PROMPTS)
    pairs = [_job(tokenizer, text) for text in PROMPTS]
    decode_all(net, tokenizer, [job for job, _ in pairs], max_batch=8)
    assert _answers([recorder for _, recorder in pairs]) == alone
    assert len({text for text, _, _ in alone}) > 1  # the prompts really lead to different answers


def test_rows_join_a_running_batch_and_leave_it_when_done(model: tuple[Any, Any]) -> None:
    net, tokenizer = model
    budgets = [12, 3, 9, 5]
    alone = [
        _one_at_a_time(net, tokenizer, [text], max_new_tokens=n)[0]
        for text, n in zip(PROMPTS[:4], budgets, strict=True)
    ]
    decoder = BatchDecoder(net, tokenizer, max_batch=8)
    pairs = [_job(tokenizer, text, max_new_tokens=n) for text, n in zip(PROMPTS[:4], budgets, strict=True)]
    decoder.step([pairs[0][0]])
    decoder.step([])
    decoder.step([])
    # Two rows of other lengths join while the first is 3 tokens in: their caches are merged into the batch.
    decoder.step([pairs[1][0], pairs[2][0]])
    widths = []
    for _ in range(4):
        decoder.step([])
        widths.append(len(decoder.rows))
    decoder.step([pairs[3][0]])
    while decoder.rows:
        decoder.step([])
    assert _answers([recorder for _, recorder in pairs]) == alone
    assert min(widths) < 3  # the 3-token row left while the others went on


def test_the_shared_prompt_prefix_changes_no_answer(model: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    net, tokenizer = model
    prefix, _ = BatchDecoder(net, tokenizer, 8)._shared_prefix()
    prompt = render_prompt(tokenizer, [{"role": "user", "content": "hello"}], None)
    assert len(prefix) >= engine_module.MIN_SHARED_PREFIX and prompt[: len(prefix)] == prefix
    reused = _one_at_a_time(net, tokenizer, PROMPTS[:4])
    monkeypatch.setattr(engine_module, "MIN_SHARED_PREFIX", 10_000)  # no prefix is worth caching: full prefills
    assert BatchDecoder(net, tokenizer, 8)._shared_prefix() == ([], [])
    assert _one_at_a_time(net, tokenizer, PROMPTS[:4]) == reused


def test_sampling_is_seeded_per_row_whatever_shares_the_batch(model: tuple[Any, Any]) -> None:
    net, tokenizer = model
    sampling = {"temperature": 1.0, "top_p": 0.9, "top_k": 50, "max_new_tokens": 8}
    alone = _one_at_a_time(net, tokenizer, ["hello"], seed=7, **sampling)
    pairs = [_job(tokenizer, text, seed=7 if text == "hello" else 99, **sampling) for text in PROMPTS]
    decode_all(net, tokenizer, [job for job, _ in pairs], max_batch=8)
    assert _answers([pairs[0][1]]) == alone
    other_seed = _one_at_a_time(net, tokenizer, ["hello"], seed=8, **sampling)
    greedy = _one_at_a_time(net, tokenizer, ["hello"])
    assert alone != other_seed or alone != greedy  # sampling really samples


def test_a_stop_sequence_ends_the_answer_and_never_streams(model: tuple[Any, Any]) -> None:
    net, tokenizer = model
    full = _one_at_a_time(net, tokenizer, ["hello"], max_new_tokens=10)[0][0]
    assert len(full) >= 6
    stop = full[3:6]
    job, recorder = _job(tokenizer, "hello", max_new_tokens=10, stops=(stop,))
    decode_all(net, tokenizer, [job], max_batch=1)
    assert recorder.done is not None and recorder.done.finish_reason == "stop"
    assert recorder.done.text == full[: full.find(stop)]
    assert stop not in "".join(recorder.pieces) and "".join(recorder.pieces) == recorder.done.text


def test_a_cancelled_row_stops_generating(model: tuple[Any, Any]) -> None:
    net, tokenizer = model
    slow = support.SlowModel(net, 0.02)
    engine = Engine("t@1", slow, tokenizer, max_batch=4, max_waiting=4, log=lambda line: None)
    engine.start()
    try:
        job, recorder = _job(tokenizer, "hello", max_new_tokens=400)
        engine.submit([job])
        deadline = time.monotonic() + 10
        while len(job.generated) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        engine.cancel([job])
        while engine.decoder.rows:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        calls = slow.calls
        time.sleep(0.2)
        assert slow.calls == calls and len(job.generated) < 50 and recorder.done is None
    finally:
        engine.stop()


def test_the_waiting_queue_is_bounded(model: tuple[Any, Any]) -> None:
    net, tokenizer = model
    engine = Engine("t@1", net, tokenizer, max_batch=1, max_waiting=2, log=lambda line: None)  # not started
    engine.submit([_job(tokenizer, "a")[0]])
    with pytest.raises(QueueFull, match="1 requests are waiting"):
        engine.submit([_job(tokenizer, "b")[0], _job(tokenizer, "c")[0]])  # all or none
    engine.submit([_job(tokenizer, "b")[0]])
    with pytest.raises(QueueFull):
        engine.submit([_job(tokenizer, "c")[0]])
    assert engine.waiting == 2


def test_prompts_render_with_the_models_own_template(model: tuple[Any, Any], tmp_path: Path) -> None:
    _, tokenizer = model
    with_system = render_prompt(tokenizer, [{"role": "user", "content": "hi"}], "Route the ticket.")
    text = tokenizer.decode(with_system)
    assert "Route the ticket." in text and "You are a helpful AI assistant" not in text
    assert text.endswith("<|im_start|>assistant\n")
