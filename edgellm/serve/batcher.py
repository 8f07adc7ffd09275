"""Dynamic batching per model: requests queue, a batch closes at ``max_batch_size`` rows or after
``max_queue_delay_ms``, and runs on one of the model's runtime instances in a worker thread.

Requests with different sequence lengths share a batch: shorter ones are right-padded (token inputs
with 0, ``attention_mask`` with 0, so padded positions are masked) and each caller gets its own rows
and its own length back. Inputs without a sequence axis batch only with requests of the same shape.
A request of more rows than ``max_batch_size`` is split into parts of at most that many rows, queued
one after another (they batch like any request) and joined again, so no batch is ever larger than the
cap, whatever one client sends. The queue is bounded: a full queue raises :class:`Overloaded` (503 / ``RESOURCE_EXHAUSTED``) instead of
growing; a caller that goes away (timeout, disconnect) is skipped when its turn comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgellm.serve.config import BatchingConfig
from edgellm.utils.specs import TensorSpec

SEQ = "sequence"


class Overloaded(Exception):
    """The model's queue is full."""


class Draining(Exception):
    """The server is shutting down and takes no new requests."""


@dataclass
class _Item:
    feeds: dict[str, np.ndarray]
    future: asyncio.Future
    enqueued: float
    rows: int
    seq: int
    key: tuple


class Batcher:
    """Queue + batch former + workers for one model.

    Args:
        runners: one runtime session per instance (each used by one worker at a time).
        inputs / outputs: the model's specs (a ``sequence`` axis marks what may be padded).
        config: ``max_batch_size`` rows per batch at most (1 disables batching), ``max_queue_delay_ms``
            how long the first request of a batch waits for company, ``max_queue_size`` pending requests
            at most (beyond it :class:`Overloaded`).
        metrics: a :class:`~edgellm.serve.metrics.Metrics` (optional).
    """

    def __init__(
        self,
        name: str,
        runners: list[Any],
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        config: BatchingConfig,
        *,
        metrics: Any = None,
        version: str = "1",
    ) -> None:
        self.name, self.version = name, version
        self.runners = runners
        self.inputs, self.outputs = inputs, outputs
        self.max_batch_size = config.max_batch_size
        self.max_delay = config.max_queue_delay_ms / 1000.0  # seconds
        self.max_queue = config.max_queue_size
        self.metrics = metrics
        self.queue: deque[_Item] = deque()
        self.pool = ThreadPoolExecutor(max_workers=len(runners), thread_name_prefix=f"edgellm-{name}")
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task] = []
        self.inflight = 0
        self.draining = False
        self.pad_value = {s.name: 0 for s in inputs}

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._workers = [asyncio.create_task(self._worker(r)) for r in self.runners]

    async def drain(self) -> None:
        """Stop taking requests and wait until every accepted one has its answer."""
        self.draining = True
        while self.queue or self.inflight:
            self._wakeup.set()
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        for t in self._workers:
            t.cancel()
        for t in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.pool.shutdown(wait=True)

    # -- submitting ---------------------------------------------------------------------------------
    async def submit(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Queue one request; returns its outputs. Cancel the awaiting task to withdraw it.

        A request of more rows than ``max_batch_size`` goes in as several parts (one queue slot lets it
        in), each at most ``max_batch_size`` rows; its outputs are the parts' outputs joined."""
        if self.draining:
            raise Draining(self.name)
        if len(self.queue) >= self.max_queue:
            raise Overloaded(self.name)
        rows = int(feeds[self.inputs[0].name].shape[0])
        seq = max((feeds[s.name].shape[s.shape.index(SEQ)] for s in self.inputs if SEQ in s.shape), default=0)
        key = tuple(
            tuple(d for i, d in enumerate(feeds[s.name].shape[1:], 1) if s.shape[i] != SEQ)
            for s in self.inputs
        )
        loop = asyncio.get_running_loop()
        step = self.max_batch_size
        futs = []
        for lo in range(0, rows, step):
            part = feeds if rows <= step else {k: v[lo : lo + step] for k, v in feeds.items()}
            fut = loop.create_future()
            self.queue.append(_Item(part, fut, time.perf_counter(), min(step, rows - lo), seq, key))
            futs.append(fut)
        if self.metrics:
            self.metrics.pending.labels(self.name, self.version).set(len(self.queue))
        self._wakeup.set()
        if len(futs) == 1:
            return await futs[0]
        parts = await asyncio.gather(*futs)  # cancelling it withdraws every part still queued
        return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}

    # -- forming and running batches ------------------------------------------------------------
    def _take(self) -> list[_Item]:
        """Pop the next batch: the oldest live request plus compatible followers, up to the size cap."""
        while self.queue and self.queue[0].future.done():  # withdrawn (timeout, disconnect)
            self.queue.popleft()
        if not self.queue:
            return []
        first = self.queue.popleft()
        batch, rows = [first], first.rows
        keep: deque[_Item] = deque()
        while self.queue and rows < self.max_batch_size:
            it = self.queue.popleft()
            if it.future.done():
                continue
            if it.key == first.key and rows + it.rows <= self.max_batch_size:
                batch.append(it)
                rows += it.rows
            else:
                keep.append(it)
        self.queue.extendleft(reversed(keep))
        return batch

    def _rows_waiting(self) -> int:
        return sum(i.rows for i in self.queue if not i.future.done())

    async def _worker(self, runner: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            # the first request waits up to max_queue_delay for company, unless the batch is already full
            deadline = self.queue[0].enqueued + self.max_delay
            while self._rows_waiting() < self.max_batch_size and not self.draining:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), left)
            batch = self._take()
            if self.metrics:
                self.metrics.pending.labels(self.name, self.version).set(len(self.queue))
            if not batch:
                continue
            self.inflight += 1
            try:
                await self._run(loop, runner, batch)
            finally:
                self.inflight -= 1

    async def _run(self, loop: asyncio.AbstractEventLoop, runner: Any, batch: list[_Item]) -> None:
        start = time.perf_counter()
        if self.metrics:
            for it in batch:
                self.metrics.queued(self.name, self.version, start - it.enqueued)
        feeds = self._merge(batch)
        try:
            out = await loop.run_in_executor(self.pool, runner.run, feeds)
        except Exception as exc:  # a runtime failure fails this batch's callers, not the server
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(exc)
            return
        end = time.perf_counter()
        rows = sum(i.rows for i in batch)
        if self.metrics:
            self.metrics.batch(self.name, self.version, rows, len(batch), end - start)
        r = 0
        for it in batch:
            part = {}
            for spec in self.outputs:
                y = out[spec.name][r : r + it.rows]
                if SEQ in spec.shape:
                    ax = spec.shape.index(SEQ)
                    y = np.take(y, np.arange(it.seq), axis=ax)
                part[spec.name] = y
            r += it.rows
            if not it.future.done():
                it.future.set_result(part)

    def _merge(self, batch: list[_Item]) -> dict[str, np.ndarray]:
        if len(batch) == 1:
            return batch[0].feeds
        seq = max(i.seq for i in batch)
        feeds = {}
        for spec in self.inputs:
            parts = []
            for it in batch:
                a = it.feeds[spec.name]
                if SEQ in spec.shape and a.shape[spec.shape.index(SEQ)] < seq:
                    pad = [(0, 0)] * a.ndim
                    pad[spec.shape.index(SEQ)] = (0, seq - a.shape[spec.shape.index(SEQ)])
                    a = np.pad(a, pad, constant_values=self.pad_value[spec.name])
                parts.append(a)
            feeds[spec.name] = np.concatenate(parts, axis=0)
        return feeds
