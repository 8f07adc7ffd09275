"""Split generation sessions: the phone holds the cache of its blocks, the server the cache of its blocks
per session, and the server batches the decode steps of many phones.

Protocol (REST, under ``/v2/generate/{model}``, served by ``edgellm serve`` next to KServe v2):

- ``POST .../sessions`` with ``{"temperature": 0, "top_k": 0, "seed": 0}`` opens a session:
  ``201 {"session", "max_length", "idle_timeout_s"}``; ``429`` when the server holds its maximum of
  sessions (its cache memory bound). An optional ``"max_length"`` (1 up to the server's) caps this
  session's cache below the server's limit.
- ``POST .../sessions/{id}/steps`` carries one step: the body is the hidden states of the new positions
  encoded by the codec (``fp16`` / ``int8``), the ``Edgellm-Activation`` header the codec's metadata
  and ``Edgellm-Step`` the step number (the names in :mod:`edgellm.partition.wire`) (0: the prompt's prefill, then 1, 2... one token each). The answer
  is ``{"token", "step", "length", "server_ms"}``: the next token, greedy or sampled with the session's
  seed.
- ``DELETE .../sessions/{id}`` frees the session; an idle session is freed after ``idle_timeout_s``
  (a phone that disappears mid-generation loses nothing but its session).

Errors: an unknown or expired session (404), a step out of order or a second step while one runs (409),
a cache longer than ``max_length`` or a decode step of more than one token (400), the session limit
(429), the decode queue full (503, ``Retry-After``). Nothing a client sends reaches the runtime unchecked
(400, naming the field, the bad value and what is allowed): session options (:class:`Sampling`, integer
``max_length``), the activation's metadata and size (:meth:`Codec.decode`), its shape ``[1, new, hidden]``
with ``new >= 1``, finite values and int8 scales finite and > 0; hidden states that are finite but so
large that the server half's logits or cache overflow are refused too, and the session stays as it was.

The server runs prefills one session at a time and decode steps in a continuous batch: every pass takes
whatever sessions have a step waiting (up to ``max_batch_size``), left-pads their caches to the longest with
masked slots, runs the server half once and hands each session its token and its grown cache; sessions
join and leave between passes. The limits are :class:`~edgellm.serve.config.GenerationConfig`
(``ServerConfig.generation``); the phone's side is :class:`edgellm.split.generation_client.GenerationClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.partition.wire import GenerationError
from edgellm.runtime.batch_engines import left_pad
from edgellm.serve.config import GenerationConfig
from edgellm.serve.sampling import Sampling, pick

OPTIONS = ("temperature", "top_k", "seed", "max_length")


@dataclass
class Session:
    id: str
    cache: list[np.ndarray]  # per past input of the server half: [1, kv_heads, length, head_dim]
    temperature: float
    top_k: int
    rng: np.random.Generator
    max_length: int  # positions this session's cache may hold (the server's limit or the session's own)
    length: int = 0
    step: int = 0
    busy: bool = False
    last_used: float = field(default_factory=time.monotonic)


class GenerationService:
    """The server half of a split decoder with per-session caches and a continuous decode batch."""

    def __init__(
        self, name: str, artifact: Any, runner: Any, config: GenerationConfig, metrics: Any = None
    ) -> None:
        from edgellm.runtime.codecs import Codec

        self.name, self.artifact, self.runner, self.config = name, artifact, runner, config
        gen = artifact.manifest["generation"]
        self.info = gen
        self.past_names: list[str] = gen["past_inputs"]
        self.present_names: list[str] = gen["present_outputs"]
        self.kv_heads, self.head_dim = int(gen["kv_heads"]), int(gen["head_dim"])
        self.codecs = {c: Codec(c) for c in ("fp32", "fp16", "int8")}
        # the largest |hidden| whose RMS norm (a sum of squares in fp32) cannot overflow
        self.peak = float(np.sqrt(np.finfo(np.float32).max / int(gen["hidden_size"])))
        self.sessions: dict[str, Session] = {}
        self.queue: asyncio.Queue | None = None
        self.metrics = metrics
        self.stats = {"decode_passes": 0, "decode_steps": 0, "max_batch_seen": 0, "prefills": 0, "expired": 0}
        self._tasks: list[asyncio.Task] = []
        self._lock: asyncio.Lock | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.queue = asyncio.Queue(self.config.max_queue_size)
        self._lock = asyncio.Lock()  # one pass of the server half at a time (prefill or decode batch)
        self._tasks = [asyncio.create_task(self._decode_loop()), asyncio.create_task(self._expire_loop())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        while self.queue is not None and not self.queue.empty():  # waiting steps hear why, not a hang
            _, _, fut = self.queue.get_nowait()
            if not fut.done():
                fut.set_exception(
                    GenerationError("the server is shutting down; retry on another replica", 503)
                )
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.sessions.clear()

    def describe(self) -> dict[str, Any]:
        c = self.config
        per_position = 4 * len(self.past_names) * self.kv_heads * self.head_dim  # fp32 keys and values
        return {
            "name": self.name,
            "sessions": len(self.sessions),
            "max_sessions": c.max_sessions,
            "max_length": c.max_length,
            "idle_timeout_s": c.idle_timeout_s,
            "max_batch": c.max_batch_size,  # the key GET /v2/generate/{model} has always answered
            "cache_bytes_per_position": per_position,
            "cache_bytes_bound": per_position * c.max_length * c.max_sessions,
            "codec": self.info.get("codec"),
            **self.stats,
        }

    # -- sessions -------------------------------------------------------------------------------
    def open(self, options: dict[str, Any]) -> Session:
        if len(self.sessions) >= self.config.max_sessions:
            raise GenerationError(
                f"the server holds {len(self.sessions)} sessions, its limit (cache memory bound); close one or retry later",
                429,
            )
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise GenerationError(f"unknown session options {sorted(unknown)}; use {', '.join(OPTIONS)}", 400)
        try:
            sampling = Sampling(**{k: options[k] for k in ("temperature", "top_k", "seed") if k in options})
        except ValueError as exc:
            raise GenerationError(str(exc), 400) from exc
        limit = self.config.max_length
        max_length = options.get("max_length", limit)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= limit:
            raise GenerationError(
                f"session option 'max_length' is {max_length!r}; use an integer in 1..{limit} (this server's limit)",
                400,
            )
        empty = np.zeros((1, self.kv_heads, 0, self.head_dim), np.float32)
        s = Session(
            secrets.token_hex(8),
            [empty] * len(self.past_names),
            sampling.temperature,
            sampling.top_k,
            np.random.default_rng(sampling.seed),
            max_length,
        )
        self.sessions[s.id] = s
        return s

    def close(self, sid: str) -> None:
        if self.sessions.pop(sid, None) is None:
            raise GenerationError(f"unknown or expired session '{sid}'", 404)

    def _session(self, sid: str) -> Session:
        s = self.sessions.get(sid)
        if s is None:
            raise GenerationError(f"unknown or expired session '{sid}'; open a new one", 404)
        return s

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(1.0, self.config.idle_timeout_s / 4)))
            now = time.monotonic()
            for sid, s in list(self.sessions.items()):
                if not s.busy and now - s.last_used > self.config.idle_timeout_s:
                    del self.sessions[sid]
                    self.stats["expired"] += 1

    # -- steps ----------------------------------------------------------------------------------
    async def step(self, sid: str, step: int, payload: bytes, meta: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        s = self._session(sid)
        if s.busy:
            raise GenerationError(f"session '{sid}' already has a step running; send one step at a time", 409)
        if step != s.step:
            raise GenerationError(f"step {step} is out of order: session '{sid}' expects step {s.step}", 409)
        hidden = self._hidden(s, step, payload, meta)
        s.busy = True
        try:
            if step == 0:
                async with self._lock:
                    token = await asyncio.get_running_loop().run_in_executor(None, self._prefill, s, hidden)
                self.stats["prefills"] += 1
            else:
                fut = asyncio.get_running_loop().create_future()
                try:
                    self.queue.put_nowait((s, hidden, fut))
                except asyncio.QueueFull as exc:
                    raise GenerationError("the decode queue is full; retry shortly", 503) from exc
                token = await fut
        finally:
            s.busy = False
            s.last_used = time.monotonic()
        s.step += 1
        return {
            "token": token,
            "step": step,
            "length": s.length,
            "server_ms": round((time.perf_counter() - t0) * 1000, 3),
        }

    def _hidden(self, s: Session, step: int, payload: bytes, meta: dict[str, Any]) -> np.ndarray:
        """The step's hidden states ``[1, new, hidden]`` (fp32), or a 400 naming what is wrong with them."""
        codec = self.codecs.get(str(meta.get("codec")))
        if codec is None:
            raise GenerationError(
                f"unknown activation codec {meta.get('codec')!r}; use fp32, fp16 or int8", 400
            )
        try:
            hidden = codec.decode(payload, meta).astype(np.float32)
        except (EdgeLLMError, KeyError, ValueError, TypeError) as exc:  # a malformed payload or header
            raise GenerationError(f"the activation does not decode: {exc}", 400) from exc
        width = int(self.info["hidden_size"])
        if hidden.ndim != 3 or hidden.shape[0] != 1 or hidden.shape[2] != width:
            raise GenerationError(
                f"hidden states of shape {list(hidden.shape)}; one session sends [1, new, {width}]", 400
            )
        new = hidden.shape[1]
        if new == 0:
            raise GenerationError(
                f"hidden states of shape {list(hidden.shape)} carry no position; a step sends at least one "
                f"position: [1, new, {width}] with new >= 1",
                400,
            )
        if step > 0 and new != 1:
            raise GenerationError(f"a decode step carries one token, this one {new}", 400)
        if s.length + new > s.max_length:
            raise GenerationError(
                f"the cache would hold {s.length + new} positions, over the limit of {s.max_length}; "
                "close the session and start a shorter one",
                400,
            )
        bad = ~np.isfinite(hidden)
        if bad.any():
            at = [int(i) for i in np.argwhere(bad)[0]]
            raise GenerationError(
                f"hidden states are not finite: {float(hidden[tuple(at)])!r} at {at} ({int(bad.sum())} of "
                f"{hidden.size} values); send finite activations (fp16 overflows past 65504: use fp32 or int8)",
                400,
            )
        peak = float(np.abs(hidden).max())
        if peak >= self.peak:
            raise GenerationError(
                f"hidden states reach |x| = {peak:.3g}; the server half normalizes each position in fp32 and "
                f"its sum of squares overflows from |x| = {self.peak:.3g} ({width} values a position): send the "
                "device half's activations as they are",
                400,
            )
        return hidden

    def _overflow(
        self, out: dict[str, np.ndarray], r: int, new: int, hidden: np.ndarray
    ) -> GenerationError | None:
        """A 400 when row ``r``'s logits or new cache positions are not finite (finite hidden states too
        large for the server half), else ``None``."""
        if np.isfinite(out["logits"][r, -1]).all() and all(
            np.isfinite(out[n][r, :, -new:]).all() for n in self.present_names
        ):
            return None
        peak = float(np.abs(hidden).max())
        return GenerationError(
            f"the server half gives non-finite logits or cache from these hidden states (max |x| = {peak:.3g}); "
            "send the device half's activations as they are: their values are out of the model's range",
            400,
        )

    def _prefill(self, s: Session, hidden: np.ndarray) -> int:
        new = hidden.shape[1]
        feeds = {
            "hidden": hidden,
            "attention_mask": np.ones((1, new), np.int64),
            "position_ids": np.arange(new, dtype=np.int64)[None],
            **dict(zip(self.past_names, s.cache)),
        }
        out = self.runner.run(feeds)
        err = self._overflow(out, 0, new, hidden)
        if err is not None:
            raise err  # the session keeps its empty cache: a corrected prefill may follow
        s.cache = [out[n] for n in self.present_names]
        s.length = new
        return pick(out["logits"][0, -1], s.temperature, s.top_k, s.rng)

    async def _decode_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.config.max_batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            live = [b for b in batch if not b[2].done()]
            if not live:
                continue
            try:
                async with self._lock:
                    tokens = await loop.run_in_executor(None, self._decode, [(s, h) for s, h, _ in live])
            except Exception as exc:  # every waiting session hears of it; the service keeps running
                for _, _, fut in live:
                    if not fut.done():
                        fut.set_exception(
                            GenerationError(f"the server half failed: {type(exc).__name__}: {exc}", 500)
                        )
                continue
            for (_, _, fut), tok in zip(live, tokens):
                if not fut.done():
                    if isinstance(tok, GenerationError):
                        fut.set_exception(tok)
                    else:
                        fut.set_result(tok)

    def _decode(self, items: list[tuple[Session, np.ndarray]]) -> list[int | GenerationError]:
        """One pass for ``items`` (one new token each): caches left-padded to the longest, masked. A row
        whose outputs overflow gets its error and keeps its cache; the other rows are unaffected."""
        b = len(items)
        mask, past, longest = left_pad([s.cache for s, _ in items], [s.length for s, _ in items])
        feeds = {
            "hidden": np.concatenate([h for _, h in items]),
            "attention_mask": mask,
            "position_ids": np.asarray([[s.length] for s, _ in items], np.int64),
            **dict(zip(self.past_names, past)),
        }
        out = self.runner.run(feeds)
        tokens = []
        for r, (s, h) in enumerate(items):
            err = self._overflow(out, r, 1, h)
            if err is not None:
                tokens.append(err)
                continue
            s.cache = [out[n][r : r + 1, :, longest - s.length :] for n in self.present_names]
            s.length += 1
            tokens.append(pick(out["logits"][r, -1], s.temperature, s.top_k, s.rng))
        self.stats["decode_passes"] += 1
        self.stats["decode_steps"] += b
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], b)
        return tokens
