"""Whole-model text generation on the server with continuous batching across requests.

One :class:`LLMService` per generation artifact (``edgellm export MODEL --generate``). Requests (from the
OpenAI-compatible routes, :mod:`edgellm.serve.openai_api`) wait in a queue; a scheduler task admits them
into the slots of a batch engine (:mod:`edgellm.runtime.batch_engines`) and runs passes, one at a time,
in a worker thread. Each pass is

1. prompt chunks of admitted requests, at most ``prefill_chunk`` tokens in all, so a long prompt is
   spread over several passes and never stalls the running decodes for long;
2. one decode step for every running request that has its prompt in the cache (one batched run).

Requests join between passes as slots free up and leave as soon as they finish (a stop token, a stop
string, ``max_tokens``, the end of the context) or their client goes away; their slot and cache are freed
before the next pass. Bounds (:class:`~edgellm.serve.config.LLMConfig`): ``max_batch_size`` requests in
the batch, a KV-cache token budget (``max_batch_tokens``: prompt + ``max_tokens`` of the running requests),
``max_queue_size`` requests waiting beyond the free slots (then **503** with ``Retry-After``: the queue is
full) and, when set, ``max_concurrent`` running + waiting requests (then **429** with ``Retry-After``: too
many concurrent requests).

Example:
    >>> svc = LLMService("tl", artifact, open_batch_engine(artifact, 8), LLMConfig())  # doctest: +SKIP
    >>> req = svc.request([0, 17, 94], GenerationConfig(max_new_tokens=8))             # doctest: +SKIP
    >>> svc.submit(req)                                                                # doctest: +SKIP
    >>> async for kind, value in svc.events(req): print(kind, value)                   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgellm.partition.wire import GenerationError
from edgellm.runtime.generator import TextStream
from edgellm.runtime.sampling import GenerationConfig, next_token
from edgellm.serve.config import LLMConfig


def plain_chat(messages: list[dict[str, str]]) -> str:
    """The chat prompt of a model whose tokenizer has no chat template: each message as
    ``<|role|>\ncontent\n``, then ``<|assistant|>\n`` for the answer.

    Example:
        >>> plain_chat([{"role": "user", "content": "Hi"}])
        '<|user|>\nHi\n<|assistant|>\n'
    """
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + "<|assistant|>\n"


@dataclass(eq=False)
class LLMRequest:
    """One generation request as the scheduler sees it."""

    id: str
    prompt: list[int]
    config: GenerationConfig
    stop_ids: frozenset[int]
    text: TextStream
    rng: np.random.Generator
    events: asyncio.Queue
    arrived: float = field(default_factory=time.perf_counter)
    state: str = "waiting"  # waiting | prefill | decode | done
    slot: int | None = None
    fed: int = 0  # prompt tokens in the cache
    pending: int | None = None  # the token chosen last, fed by the next decode step
    out: list[int] = field(default_factory=list)
    history: list[int] = field(default_factory=list)
    first_at: float | None = None
    last_at: float | None = None
    finish_reason: str | None = None
    aborted: str | None = None  # why it was withdrawn: disconnect | shutdown

    @property
    def reserved(self) -> int:
        return len(self.prompt) + self.config.max_new_tokens


class LLMService:
    """Continuous batching over one whole-model generation artifact (see the module doc)."""

    def __init__(self, name: str, artifact: Any, engine: Any, config: LLMConfig, metrics: Any = None) -> None:
        self.name, self.artifact, self.engine, self.config, self.metrics = (
            name,
            artifact,
            engine,
            config,
            metrics,
        )
        self.gen = artifact.manifest["generation"]
        self.context = int(engine.context)
        self.slots = int(engine.slots)
        self.max_running = min(config.max_batch_size, self.slots)
        self.token_budget = config.max_batch_tokens or self.max_running * self.context
        self.eos = self.gen.get("eos_token_id")
        self.tokenizer: Any = None
        self.chat_template = False
        self.vocab = int(self.gen.get("vocab") or 0)
        self.waiting: collections.deque[LLMRequest] = collections.deque()
        self.running: list[LLMRequest] = []
        self.draining = False
        self.ready = False
        self.warmup_info: dict[str, Any] = {}
        self.stats = {
            "passes": 0,
            "decode_steps": 0,
            "prefill_tokens": 0,
            "max_batch_seen": 0,
            "finished": 0,
            "aborted": 0,
            "pass_s": 0.0,
            "prefill_s": 0.0,
            "decode_s": 0.0,
        }
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"llm-{name}")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop())

    async def warmup(self) -> dict[str, Any]:
        """One prefill and one decode pass over every slot (buffers allocated before readiness)."""
        t0 = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(self._pool, self._warm)
        return {"slots": self.max_running, "seconds": round(time.perf_counter() - t0, 3)}

    def _warm(self) -> None:
        eng = self.engine
        slots = [eng.acquire() for _ in range(self.max_running)]
        try:
            for s in slots:
                eng.prefill(s, [int(self.gen.get("bos_token_id") or 0)] * 2)
            eng.decode(slots, [0] * len(slots))
        finally:
            for s in slots:
                eng.release(s)

    async def stop(self) -> None:
        self.draining = True
        for req in [*self.waiting, *self.running]:
            self._abort(
                req, "shutdown", GenerationError("the server is shutting down; retry on another replica", 503)
            )
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=False, cancel_futures=True)  # a pass under way ends on its own

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "context": self.context,
            "max_running": self.max_running,
            "max_queue_size": self.config.max_queue_size,
            "max_concurrent": self.config.max_concurrent,
            "max_batch_tokens": self.token_budget,
            "prefill_chunk": self.config.prefill_chunk,
            "running": len(self.running),
            "waiting": len(self.waiting),
            "batch_engine": type(self.engine).__name__,
            **self.stats,
        }

    # -- requests -------------------------------------------------------------------------------
    def request(self, prompt: list[int], config: GenerationConfig, *, ignore_eos: bool = False) -> LLMRequest:
        """A request for ``prompt`` (token ids), checked against the context (400 naming the limit)."""
        if not prompt:
            raise GenerationError("the prompt is empty; give some text", 400)
        room = self.context - len(prompt)
        if room < 1:
            raise GenerationError(
                f"the prompt has {len(prompt)} tokens; this model's context is {self.context} tokens; shorten it",
                400,
            )
        if config.max_new_tokens > room:
            raise GenerationError(
                f"max_tokens {config.max_new_tokens} + the prompt's {len(prompt)} tokens exceed this model's context "
                f"of {self.context} tokens; ask for at most {room}",
                400,
            )
        if config.stop_token_ids is not None:
            stop = frozenset(config.stop_token_ids)
        else:
            stop = frozenset() if ignore_eos or self.eos is None else frozenset({int(self.eos)})
        return LLMRequest(
            id=secrets.token_hex(12),
            prompt=list(prompt),
            config=config,
            stop_ids=stop,
            text=TextStream(self._decode_text, config.stop),
            rng=np.random.default_rng(config.seed),
            events=asyncio.Queue(),
            history=list(prompt) if config.repetition_penalty != 1.0 else [],
        )

    # -- text ---------------------------------------------------------------------------------
    def attach_tokenizer(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.vocab = int(self.gen.get("vocab") or len(tokenizer))

    def encode(self, text: str, *, bos: bool = True) -> list[int]:
        """Token ids of ``text``, with the model's BOS first (once) as :meth:`Generator.encode` does."""
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        b = getattr(self.tokenizer, "bos_token_id", None)
        return [b, *ids] if bos and b is not None and (not ids or ids[0] != b) else ids

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt of a chat: the tokenizer's chat template with the assistant's turn opened, or
        :func:`plain_chat` when the tokenizer has none."""
        if not self.chat_template:
            return self.encode(plain_chat(messages))
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # the template's own checks (roles that must alternate...)
            raise GenerationError(f"the model's chat template refuses these messages: {exc}", 400) from exc
        return self.encode(text)

    def _decode_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def submit(self, req: LLMRequest) -> None:
        """Queue ``req``, or refuse it now with :class:`GenerationError`: 503 while draining or when the
        queue is full, 429 over the concurrency limit."""
        self._admit_check(req)
        self.waiting.append(req)
        self._gauges()
        self._wake.set()

    async def events(self, req: LLMRequest) -> AsyncIterator[tuple[str, Any]]:
        """``req``'s events after :meth:`submit`: ``("token", text)`` as text appears, then ``("done",
        finish_reason)``, or ``("error", GenerationError)``. Leaving early (a client that disconnected:
        the handler is cancelled) withdraws the request and frees its slot."""
        try:
            while True:
                kind, value = await req.events.get()
                yield kind, value
                if kind in ("done", "error"):
                    return
        finally:
            if req.state != "done":
                self.cancel(req, "disconnect")

    def _admit_check(self, req: LLMRequest) -> None:
        if self.draining:
            raise GenerationError("the server is shutting down; retry on another replica", 503)
        limit = self.config.max_concurrent
        if limit is not None and len(self.running) + len(self.waiting) >= limit:
            raise GenerationError(
                f"too many concurrent requests: {len(self.running) + len(self.waiting)} running or waiting, "
                f"the limit is {limit}; retry after a moment",
                429,
            )
        free = self.max_running - len(self.running)
        if len(self.waiting) - free >= self.config.max_queue_size:
            raise GenerationError(
                f"the request queue is full ({self.config.max_queue_size} waiting); retry after a moment", 503
            )

    def cancel(self, req: LLMRequest, reason: str = "disconnect") -> None:
        """Withdraw ``req`` (its client went away): out of the queue now, out of the batch before the
        next pass."""
        if req.state == "done":
            return
        req.aborted = reason
        if req.state == "waiting":
            self._finish(req, None)
        elif self._wake is not None:
            self._wake.set()

    def _abort(self, req: LLMRequest, reason: str, err: GenerationError) -> None:
        if req.state == "done":
            return
        req.aborted = reason
        req.events.put_nowait(("error", err))
        self._finish(req, None)

    # -- the scheduler --------------------------------------------------------------------------
    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for req in [r for r in self.running if r.aborted]:
                self._finish(req, None)
            self._admit()
            prefills, decodes = self._plan()
            if not prefills and not decodes:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                picked = await loop.run_in_executor(self._pool, self._pass, prefills, decodes)
            except Exception as exc:  # every request of the pass hears of it; the service keeps running
                err = GenerationError(f"the model failed: {type(exc).__name__}: {exc}", 500)
                for req in {r for r, _ in prefills} | set(decodes):
                    self._abort(req, "error", err)
                continue
            self._deliver(picked)
            # let the handlers send this pass's tokens before the next pass starts, so the runtime's
            # threads get the cores to themselves while it runs (benchmarks/serve_llm_load.py: +10-20 %
            # tokens/s on 2 cores against writing while the next pass runs)
            for _ in range(8):
                if all(r.events.empty() for r, _ in picked):
                    break
                await asyncio.sleep(0)
            self.stats["passes"] += 1
            if self.metrics is not None:
                self.metrics.llm_pass(self.name, len(decodes), self.max_running)

    def _admit(self) -> None:
        reserved = sum(r.reserved for r in self.running)
        while self.waiting and len(self.running) < self.max_running:
            req = self.waiting[0]
            if req.aborted:
                self.waiting.popleft()
                continue
            if self.running and reserved + req.reserved > self.token_budget:
                break  # first in, first admitted: it waits for room rather than being overtaken
            self.waiting.popleft()
            req.slot = self.engine.acquire()
            req.state = "prefill"
            self.running.append(req)
            reserved += req.reserved
        self._gauges()

    def _plan(self) -> tuple[list[tuple[LLMRequest, list[int]]], list[LLMRequest]]:
        budget = self.config.prefill_chunk
        prefills = []
        for req in self.running:
            if req.state != "prefill" or budget <= 0:
                continue
            take = min(budget, len(req.prompt) - req.fed)
            prefills.append((req, req.prompt[req.fed : req.fed + take]))
            budget -= take
        decodes = [r for r in self.running if r.state == "decode"]
        return prefills, decodes

    def _pass(
        self, prefills: list[tuple[LLMRequest, list[int]]], decodes: list[LLMRequest]
    ) -> list[tuple[LLMRequest, int]]:
        """The worker thread's part: the prompt chunks, then one batched decode; the tokens chosen."""
        eng = self.engine
        picked = []
        t0 = time.perf_counter()
        for req, chunk in prefills:
            logits = eng.prefill(req.slot, chunk)
            req.fed += len(chunk)
            self.stats["prefill_tokens"] += len(chunk)
            if req.fed == len(req.prompt):
                picked.append((req, self._pick(req, logits)))
        t1 = time.perf_counter()
        if decodes:
            logits = eng.decode([r.slot for r in decodes], [r.pending for r in decodes])
            greedy = logits.argmax(axis=1)
            for i, req in enumerate(decodes):
                c = req.config
                tok = (
                    int(greedy[i]) if c.greedy and c.repetition_penalty == 1.0 else self._pick(req, logits[i])
                )
                picked.append((req, tok))
            self.stats["decode_steps"] += len(decodes)
            self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(decodes))
        t2 = time.perf_counter()
        self.stats["prefill_s"] += t1 - t0
        self.stats["decode_s"] += t2 - t1
        self.stats["pass_s"] += t2 - t0
        return picked

    @staticmethod
    def _pick(req: LLMRequest, logits: np.ndarray) -> int:
        return next_token(logits, req.config, req.rng, req.history)

    def _deliver(self, picked: list[tuple[LLMRequest, int]]) -> None:
        now = time.perf_counter()
        for req, tok in picked:
            if req.aborted or req.state == "done":
                continue
            req.state = "decode"
            if req.first_at is None:
                req.first_at = now
                if self.metrics is not None:
                    self.metrics.llm_first_token(self.name, now - req.arrived)
            elif self.metrics is not None:
                self.metrics.llm_token(self.name, now - req.last_at)
            req.last_at = now
            if tok in req.stop_ids:
                self._finish(req, "stop")
                continue
            req.out.append(tok)
            if req.config.repetition_penalty != 1.0:  # the penalty reads the prompt and the output
                req.history.append(tok)
            piece = req.text.push(tok)
            if piece:
                req.events.put_nowait(("token", piece))
            if req.text.stopped:
                self._finish(req, "stop")
            elif len(req.out) >= req.config.max_new_tokens or self.engine.length(req.slot) + 1 > self.context:
                self._finish(req, "length")
            else:
                req.pending = tok

    def _finish(self, req: LLMRequest, reason: str | None) -> None:
        """Take ``req`` out of the queue or the batch and free its slot; ``reason`` None: withdrawn."""
        if req.state == "done":
            return
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        if req.slot is not None:
            self.engine.release(req.slot)
            req.slot = None
        req.state = "done"
        req.finish_reason = reason
        if reason is not None:
            tail = req.text.finish()
            if tail:
                req.events.put_nowait(("token", tail))
            req.events.put_nowait(("done", reason))
            self.stats["finished"] += 1
        else:
            self.stats["aborted"] += 1
        if self.metrics is not None:
            end = time.perf_counter()
            self.metrics.llm_finished(
                self.name,
                reason,
                req.aborted,
                len(req.prompt) if req.fed else 0,
                len(req.out),
                end - req.arrived,
            )
        self._gauges()
        if self._wake is not None:
            self._wake.set()

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.llm_queue(self.name, len(self.running), len(self.waiting))
