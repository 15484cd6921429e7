"""Generation for many requests at once: continuous batching over one loaded model.

A CPU forward pass of a small model costs about the same for one row as for several: the weights are read once and
most of the time goes to per-layer overhead. So requests that arrive while others are decoding join them: each
step, waiting requests are prefilled together (their prompts left-padded to one width) and their key/value cache is
merged into the running batch; then every row advances one token. Rows leave as soon as they finish (end of turn, a
stop sequence, their token budget, or a client that went away), so one long answer never holds up short ones.

Each row keeps its own decoding: temperature, top-p, top-k, seed (its own random generator, so a seeded answer does
not depend on what else shares the batch), stop sequences and budget. Text is handed out as it is decoded, holding
back only what could still turn out to be the start of a stop sequence or half of a UTF-8 character.

``BatchDecoder`` is the step loop with no threads (evaluation runs it directly: the test set is scored with the
code that serves); ``Engine`` runs one in a worker thread per served version, behind a bounded waiting queue.
"""

from __future__ import annotations

import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tuneform.serving.protocol import Completion, Decoding

MIN_SHARED_PREFIX = 8
"""A shared prompt prefix shorter than this is not worth a cache of its own."""

Sink = Callable[[str, Any], None]
"""Receives ``("text", delta)``, then ``("done", Completion)`` or ``("error", message)``; from the worker thread."""


class QueueFull(Exception):
    """The engine's waiting queue holds its maximum; the request is refused rather than kept waiting unboundedly."""


@dataclass(eq=False)
class Job:
    """One answer to generate (compared by identity: two requests with the same prompt are still two jobs)."""

    prompt_ids: list[int]
    decoding: Decoding
    """Fully resolved (no ``None`` but ``top_k`` and ``seed``)."""
    sink: Sink
    cancelled: threading.Event
    generated: list[int]
    emitted: int = 0
    """Characters of the answer already handed to ``sink``."""
    generator: Any = None

    @classmethod
    def make(cls, prompt_ids: list[int], decoding: Decoding, sink: Sink) -> Job:
        return cls(list(prompt_ids), decoding, sink, threading.Event(), [])


class ControlTokenInText(ValueError):
    """A message's text holds a control token's string and the chat template changes message text, so the text
    cannot be kept apart from the template's own control tokens."""


def render_prompt(tokenizer: Any, messages: list[dict[str, str]], system: str | None) -> list[int]:
    """The model's own chat template with the cue for its turn, tokenized as in training.

    ``tuneform.training.data.render_prompt`` renders the same way (the served model sees what it was trained on).
    A message's text stays text: ``<|im_end|>`` written by a client is the characters, not the control token that
    would end its turn and let it forge a system turn (OpenAI's API does not let content make control tokens).

    Raises:
        ControlTokenInText: If that cannot be kept (see the class).
    """
    conversation = ([{"role": "system", "content": system}] if system else []) + list(messages)
    text = str(tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True))
    controls = [token.content for token in getattr(tokenizer, "added_tokens_decoder", {}).values() if token.content]
    if not any(control in turn["content"] for turn in conversation for control in controls):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    # Render with a placeholder for each message's text, then tokenize the template's parts as they are and the
    # texts with control strings split into ordinary tokens. Private-use characters: no template writes them.
    marks = [f"\ue000{index}\ue001" for index in range(len(conversation))]
    marked = [{**turn, "content": mark} for turn, mark in zip(conversation, marks, strict=True)]
    skeleton = str(tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=True))
    pieces: list[tuple[str, bool]] = []
    rest = skeleton
    for turn, mark in zip(conversation, marks, strict=True):
        before, found, rest = rest.partition(mark)
        if not found:
            break
        pieces += [(before, False), (turn["content"], True)]
    pieces.append((rest, False))
    if "".join(piece for piece, _ in pieces) != text:
        raise ControlTokenInText(
            "a message contains a control token of the model's chat template ("
            + ", ".join(sorted({c for c in controls if any(c in turn["content"] for turn in conversation)}))
            + "), which this template's rendering cannot keep apart from its own; remove it from the message"
        )
    ids: list[int] = []
    for piece, literal in pieces:
        if piece:
            ids += tokenizer(piece, add_special_tokens=False, split_special_tokens=literal)["input_ids"]
    return ids


def end_tokens(model: Any, tokenizer: Any) -> set[int]:
    """The token ids that end the model's turn: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


def context_length(model: Any) -> int:
    """Positions the model was trained for (``max_position_embeddings``), 2,048 if its config does not say."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(getattr(config, "max_position_embeddings", None) or 2048)


class BatchDecoder:
    """The step loop: rows join between steps, every row advances one token per step, finished rows leave.

    Args:
        model: A causal LM in eval mode (``load_for_inference``).
        tokenizer: Its tokenizer.
        max_batch: Most rows decoded together.
    """

    def __init__(self, model: Any, tokenizer: Any, max_batch: int, *, bf16: bool = False) -> None:
        import torch

        self.torch = torch
        if bf16 and model.dtype != torch.bfloat16:
            # On a CPU with bf16 in hardware: a decode step reads half the bytes (measured here: 19 ms instead of
            # 38 for one row, 39 instead of 72 for eight) and a prefill multiplies in bf16 (about 2x).
            model = model.to(torch.bfloat16)
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.ends = end_tokens(model, tokenizer)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.ends or {0})
        self.device = model.device
        self.rows: list[Job] = []
        self.cache: Any = None
        self.mask: Any = None
        self.positions: Any = None
        self.last: Any = None
        self._prefix: tuple[list[int], list[tuple[Any, Any]]] | None = None

    @property
    def room(self) -> int:
        return self.max_batch - len(self.rows)

    def step(self, joining: list[Job]) -> None:
        """Prefills ``joining`` (at most ``room``) into the batch, or else advances every row by one token."""
        with self.torch.inference_mode():
            self._step(joining)

    def _step(self, joining: list[Job]) -> None:
        torch = self.torch
        if joining:
            logits = self._join(joining)
            rows = joining
            offset = len(self.rows) - len(joining)
        else:
            if not self.rows:
                return
            self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
            out = self.model(
                input_ids=self.last[:, None],
                attention_mask=self.mask,
                position_ids=self.positions[:, None],
                cache=self.cache,
                use_cache=True,
            )
            self.positions = self.positions + 1
            logits = out.logits[:, -1]
            rows = self.rows
            offset = 0
        # The logits of `rows` only; their batch rows start at `offset`. Greedy rows share one argmax over the batch.
        greedy = logits.argmax(-1).tolist()
        tokens = [self._pick(logits[i], job, greedy[i]) for i, job in enumerate(rows)]
        self.last[offset : offset + len(rows)] = torch.tensor(tokens, dtype=self.last.dtype, device=self.device)
        for job, token in zip(rows, tokens, strict=True):
            job.generated.append(token)
        self._settle()

    def fail_all(self, message: str) -> None:
        """Ends every row with an error (the model raised); the batch starts empty again."""
        for job in self.rows:
            job.sink("error", message)
        self.rows, self.cache, self.mask, self.positions, self.last = [], None, None, None, None

    def _shared_prefix(self) -> tuple[list[int], list[tuple[Any, Any]]]:
        """The tokens every prompt without a system prompt starts with (the chat template's default system turn and
        the user turn's header: half of a short ticket's prompt), and their key/value cache, computed once.

        Attention is causal, so the cache of a prompt's first tokens depends on those tokens only: reusing it is
        exact, and prefills compute the rest of each prompt only.
        """
        if self._prefix is None:
            from transformers import DynamicCache

            one = render_prompt(self.tokenizer, [{"role": "user", "content": "x"}], None)
            two = render_prompt(self.tokenizer, [{"role": "user", "content": "7 q"}], None)
            shared = next((i for i, (a, b) in enumerate(zip(one, two, strict=False)) if a != b), 0)
            self._prefix = (one[:shared] if shared >= MIN_SHARED_PREFIX else [], [])
            if self._prefix[0]:
                cache: Any = DynamicCache()
                ids = self.torch.tensor([self._prefix[0]], device=self.device)
                self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
                self._prefix = (self._prefix[0], [(layer.keys, layer.values) for layer in cache.layers])
        return self._prefix

    def _join(self, jobs: list[Job]) -> Any:
        torch = self.torch
        from transformers import DynamicCache

        prefix, prefix_kv = self._shared_prefix()
        shared = len(prefix)
        if not shared or any(len(job.prompt_ids) <= shared or job.prompt_ids[:shared] != prefix for job in jobs):
            shared = 0
        width = max(len(job.prompt_ids) - shared for job in jobs)
        ids = torch.full((len(jobs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(jobs), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for i, job in enumerate(jobs):
            rest = job.prompt_ids[shared:]
            ids[i, width - len(rest) :] = torch.tensor(rest)
            mask[i, shared + width - len(rest) :] = 1
            job.generator = torch.Generator().manual_seed(int(job.decoding.seed or 0) % 2**63)
        ids, mask = ids.to(self.device), mask.to(self.device)
        # Each row's positions count its own tokens: the padding between the shared prefix and the rest has none.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        cache = (
            DynamicCache(
                ddp_cache_data=[
                    (k.expand(len(jobs), -1, -1, -1), v.expand(len(jobs), -1, -1, -1)) for k, v in prefix_kv
                ]
            )
            if shared
            else DynamicCache()
        )
        # Only the last position's logits are needed: the LM head over the whole prompt is wasted work.
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        lengths = mask.sum(-1)
        last = torch.full((len(jobs),), self.pad, dtype=torch.long, device=self.device)
        if not self.rows:
            self.cache, self.mask, self.positions, self.last = cache, mask, lengths, last
        else:
            self._merge(cache, mask)
            self.positions = torch.cat([self.positions, lengths])
            self.last = torch.cat([self.last, last])
        self.rows.extend(jobs)
        return out.logits[:, -1].float()

    def _merge(self, cache: Any, mask: Any) -> None:
        """Appends the rows of ``cache`` to the batch's cache, left-padding the shorter side's positions."""
        torch = self.torch
        width = max(self.mask.shape[1], mask.shape[1])

        def pad(tensor: Any, dim: int) -> Any:
            missing = width - tensor.shape[dim]
            if missing == 0:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = missing
            return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([pad(mine.keys, -2), pad(theirs.keys, -2)], dim=0)
            mine.values = torch.cat([pad(mine.values, -2), pad(theirs.values, -2)], dim=0)
        self.mask = torch.cat([pad(self.mask, 1), pad(mask, 1)], dim=0)

    def _pick(self, logits: Any, job: Job, greedy: int) -> int:
        """The row's next token: ``greedy`` (its logits' argmax) at temperature 0, else a sample from ``logits``."""
        torch = self.torch
        decoding = job.decoding
        temperature = float(decoding.temperature or 0.0)
        if temperature <= 0:
            return greedy
        scores = logits.float() / temperature
        if decoding.top_k:
            kth = torch.topk(scores, min(int(decoding.top_k), scores.shape[-1])).values[-1]
            scores = scores.masked_fill(scores < kth, -float("inf"))
        probs = torch.softmax(scores, dim=-1)
        top_p = float(decoding.top_p if decoding.top_p is not None else 1.0)
        if top_p < 1.0:
            ordered, order = torch.sort(probs, descending=True)
            # Keep the smallest set whose mass reaches top_p (always at least the most likely token).
            outside = ordered.cumsum(-1) - ordered > top_p
            ordered = ordered.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter(0, order, ordered)
        return int(torch.multinomial(probs.cpu(), 1, generator=job.generator))

    def _settle(self) -> None:
        """Hands out new text, ends the rows that are done and drops them from the batch."""
        keep: list[int] = []
        for index, job in enumerate(self.rows):
            finish = self._advance(job)
            if finish is None:
                keep.append(index)
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache = self.mask = self.positions = self.last = None
            return
        torch = self.torch
        index = torch.tensor(keep, device=self.device)
        self.mask = self.mask.index_select(0, index)
        # Columns that are padding in every remaining row are dropped: later steps do not attend over them.
        first = int(self.mask.any(0).long().argmax())
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]
        self.positions = self.positions.index_select(0, index)
        self.last = self.last.index_select(0, index)

    def _advance(self, job: Job) -> str | None:
        """The row's finish reason once it is done (after telling its sink), else ``None``."""
        if job.cancelled.is_set():
            return "cancelled"
        decoding = job.decoding
        ended = job.generated[-1] in self.ends
        tokens = job.generated[:-1] if ended else job.generated
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        stops = decoding.stops or ()
        cut = min((at for at in (text.find(stop) for stop in stops) if at >= 0), default=-1)
        finish = None
        if cut >= 0:
            text, finish = text[:cut], "stop"
        elif ended:
            finish = "stop"
        elif len(job.generated) >= int(decoding.max_new_tokens or 1):
            finish = "length"
        if finish is None:
            # Hold back what may be the start of a stop sequence, and a character still being decoded.
            hold = max((len(stop) - 1 for stop in stops), default=0)
            ready = len(text) - hold
            while ready > job.emitted and text[ready - 1] == "\ufffd":
                ready -= 1
            if ready > job.emitted:
                job.sink("text", text[job.emitted : ready])
                job.emitted = ready
            return None
        if len(text) > job.emitted:
            job.sink("text", text[job.emitted :])
            job.emitted = len(text)
        job.sink("done", Completion(text, len(job.prompt_ids), len(job.generated), finish))
        return finish


def decode_all(model: Any, tokenizer: Any, jobs: list[Job], max_batch: int, *, bf16: bool = False) -> None:
    """Runs ``jobs`` to completion in the calling thread, ``max_batch`` rows at a time (for evaluation)."""
    decoder = BatchDecoder(model, tokenizer, max_batch, bf16=bf16)
    waiting = deque(jobs)
    while waiting or decoder.rows:
        joining = [waiting.popleft() for _ in range(min(decoder.room, len(waiting)))] if not decoder.rows else []
        decoder.step(joining)


class Engine:
    """One served version: a worker thread that runs a ``BatchDecoder`` over the jobs submitted to it.

    Args:
        name: For log lines (``<model>@<version>``).
        model: A causal LM in eval mode.
        tokenizer: Its tokenizer.
        max_batch: Most rows decoded together.
        max_waiting: Most jobs waiting to join the batch; beyond it ``submit`` raises ``QueueFull``.
        log: Receives a line for events worth a log entry (errors).
        bf16: Run the model in bf16 (a CPU with bf16 in hardware).
    """

    def __init__(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        *,
        max_batch: int,
        max_waiting: int,
        log: Callable[[str], None],
        bf16: bool = False,
    ) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.max_waiting = max_waiting
        self.decoder = BatchDecoder(model, tokenizer, max_batch, bf16=bf16)
        self.context = context_length(model)
        self._log = log
        self._waiting: deque[Job] = deque()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def prompt_ids(self, messages: list[dict[str, str]], system: str | None) -> list[int]:
        return render_prompt(self.tokenizer, messages, system)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, jobs: list[Job]) -> None:
        """Queues jobs to join the batch (all or none).

        Raises:
            QueueFull: ``max_waiting`` would be exceeded.
        """
        with self._wake:
            if len(self._waiting) + len(jobs) > self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (at most {self.max_waiting})")
            self._waiting.extend(jobs)
            self._wake.notify()

    def cancel(self, jobs: list[Job]) -> None:
        """Stops jobs: a waiting one never starts, a running one leaves the batch at the next step."""
        with self._wake:
            for job in jobs:
                job.cancelled.set()
                if job in self._waiting:
                    self._waiting.remove(job)
            self._wake.notify()

    def _take(self) -> list[Job] | None:
        with self._wake:
            while not self._stopped and not self._waiting and not self.decoder.rows:
                self._wake.wait()
            if self._stopped:
                return None
            room = self.decoder.room
            return [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]

    def _run(self) -> None:
        while True:
            joining = self._take()
            if joining is None:
                return
            joining = [job for job in joining if not job.cancelled.is_set()]
            try:
                self.decoder.step(joining)
            except Exception as exc:  # noqa: BLE001 - a failed step must fail its requests, not kill the worker
                self._log(f"{self.name}: generation failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
                for job in joining:
                    if job not in self.decoder.rows:
                        job.sink("error", f"{type(exc).__name__}: {exc}")
                self.decoder.fail_all(f"{type(exc).__name__}: {exc}")
