"""Batch engines: one generation artifact serving many sequences at once, a slot per sequence.

A :class:`~edgellm.runtime.engines.StepEngine` holds one sequence. A batch engine holds ``slots`` of them
and runs any set of those slots together, so a server can batch decode steps across requests at token
granularity (continuous batching, :mod:`edgellm.serve.llm`) and prefill a prompt in chunks between them:

- ``acquire() -> slot`` / ``release(slot)``: a free slot (lowest first) with an empty cache / back to free;
- ``prefill(slot, ids) -> logits [vocab]``: append ``ids`` (a prompt, or a chunk of one) to the slot's cache;
- ``decode(slots, ids) -> logits [len(slots), vocab]``: one new token for each of ``slots``, in one pass.

What makes it one pass depends on the artifact's cache layout:

- ``shared`` (:class:`PoolEngine`): one key/value pool ``[slots, kv_heads, context, head_dim]`` per layer,
  bound in place with IOBinding. A decode pass runs the pool's first ``k`` rows (``k`` = the highest slot
  in the pass + 1); each row's attention mask covers its own length, so rows of any length run together
  (GroupQueryAttention reads ``seqlens_k`` per row) and nothing is copied. A row in the prefix that is not
  decoding (free, or between prefill chunks) writes one position past its length, which its next feed
  overwrites.
- ``concat`` (:class:`ConcatBatchEngine`): per-slot caches, left-padded to the longest and masked for a
  decode pass (:func:`left_pad`, the same batching as split generation's server half).
- every other layout (:class:`SerialEngine`): one step engine per slot, run one after another (no batching).

Example:
    >>> eng = open_batch_engine("out/tl-fp32", slots=8)       # doctest: +SKIP
    >>> a, b = eng.acquire(), eng.acquire()                  # doctest: +SKIP
    >>> eng.prefill(a, [0, 17, 94]); eng.prefill(b, [0, 5])  # doctest: +SKIP
    >>> eng.decode([a, b], [311, 7]).shape                   # doctest: +SKIP
    (2, 4096)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.runtime.base import context_full
from edgellm.runtime.engines import ConcatEngine, load_generation_artifact, open_engine


class BatchEngine(Protocol):
    slots: int
    context: int
    gen: dict[str, Any]

    def acquire(self) -> int: ...

    def release(self, slot: int) -> None: ...

    def length(self, slot: int) -> int: ...

    def prefill(self, slot: int, ids: list[int]) -> np.ndarray: ...

    def decode(self, slots: list[int], ids: list[int]) -> np.ndarray: ...


class _Slots:
    """Slot bookkeeping shared by the engines: which slots are taken and how long each cache is."""

    def __init__(self, slots: int, context: int) -> None:
        if slots < 1:
            raise EdgeLLMError(f"a batch engine needs at least one slot, not {slots}", "use slots >= 1")
        self.slots, self.context = int(slots), int(context)
        self.lengths = [0] * self.slots
        self.busy = [False] * self.slots

    @property
    def free(self) -> int:
        return self.busy.count(False)

    def acquire(self) -> int:
        for i, b in enumerate(self.busy):
            if not b:
                self.busy[i] = True
                self.lengths[i] = 0
                self._reset(i)
                return i
        raise EdgeLLMError(f"all {self.slots} slots are taken", "release one, or open more slots")

    def release(self, slot: int) -> None:
        self.busy[slot] = False
        self.lengths[slot] = 0

    def length(self, slot: int) -> int:
        return self.lengths[slot]

    def _reset(self, slot: int) -> None:  # engines that keep per-slot state clear it here
        return None

    def _room(self, slot: int, new: int) -> None:
        if not self.busy[slot]:
            raise EdgeLLMError(f"slot {slot} is not acquired", "acquire() a slot before feeding it")
        if self.lengths[slot] + new > self.context:
            raise context_full(self.context, self.lengths[slot], new)


class PoolEngine(_Slots):
    """A ``shared``-layout graph (:mod:`edgellm.export.decoder_graph`) over a pool of ``slots`` caches."""

    def __init__(
        self,
        model_path: str | Path,
        slots: int,
        *,
        threads: int | None = None,
        gen: dict | None = None,
        session_options: dict[str, str] | None = None,
    ) -> None:
        from edgellm.runtime.ort_generation import SharedGraph

        g = SharedGraph(model_path, threads=threads, session_options=session_options)
        super().__init__(slots, g.context)
        self.session, self.vocab, self.last_only, self._ort = g.session, g.vocab, g.last_only, g.ort
        self.gen = gen or {}
        shape = (self.slots, g.kv_heads, g.context, g.head_dim)
        self.pools = {n: np.zeros(shape, np.float32) for n in g.past}
        self._bindings: dict[tuple[int, int], Any] = {}
        self._logits = np.zeros((self.slots, 1, self.vocab), np.float32)
        self.cache_bytes = sum(p.nbytes for p in self.pools.values())

    def _binding(self, lo: int, hi: int) -> Any:
        """An IOBinding with the pool rows ``lo:hi`` bound as past and present (made once per range)."""
        b = self._bindings.get((lo, hi))
        if b is None:
            b = self.session.io_binding()
            ov = self._ort.OrtValue
            for name, pool in self.pools.items():
                v = ov.ortvalue_from_numpy(pool[lo:hi])  # a view: ONNX Runtime writes into the pool
                b.bind_ortvalue_input(name, v)
                b.bind_ortvalue_output(name.replace("past_", "present_", 1), v)
            if self.last_only:
                b.bind_ortvalue_output("logits", ov.ortvalue_from_numpy(self._logits[: hi - lo]))
            self._bindings[(lo, hi)] = b
        return b

    def _run(self, lo: int, hi: int, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        b = self._binding(lo, hi)
        b.bind_cpu_input("input_ids", ids)
        b.bind_cpu_input("attention_mask", mask)
        if self.last_only:
            self.session.run_with_iobinding(b)
            return self._logits[: hi - lo, -1]
        out = np.empty((hi - lo, ids.shape[1], self.vocab), np.float32)
        b.bind_ortvalue_output("logits", self._ort.OrtValue.ortvalue_from_numpy(out))
        self.session.run_with_iobinding(b)
        return out[:, -1]

    def prefill(self, slot: int, ids: list[int]) -> np.ndarray:
        n = len(ids)
        if n == 0:
            raise EdgeLLMError("prefill() got no token ids", "pass at least one id")
        self._room(slot, n)
        total = self.lengths[slot] + n
        logits = self._run(slot, slot + 1, np.asarray([ids], np.int64), np.ones((1, total), np.int64))
        self.lengths[slot] = total
        return logits[0].copy()  # the engine's buffer is overwritten by the next pass

    def decode(self, slots: list[int], ids: list[int]) -> np.ndarray:
        for s in slots:
            self._room(s, 1)
        k = max(slots) + 1
        feed = np.zeros((k, 1), np.int64)
        fill = [self.lengths[r] + 1 for r in range(k)]  # rows not in the pass write past their length
        if any(f > self.context for f in fill):  # an idle row with a full cache: each row on its own
            return np.stack([self._one(s, t) for s, t in zip(slots, ids)])
        mask = np.zeros((k, max(fill)), np.int64)
        for r, f in enumerate(fill):
            mask[r, :f] = 1
        for s, t in zip(slots, ids):
            feed[s, 0] = t
        logits = self._run(0, k, feed, mask)
        for s in slots:
            self.lengths[s] += 1
        return logits[slots]

    def _one(self, slot: int, token: int) -> np.ndarray:
        n = self.lengths[slot] + 1
        out = self._run(slot, slot + 1, np.asarray([[token]], np.int64), np.ones((1, n), np.int64))[0].copy()
        self.lengths[slot] = n
        return out


def left_pad(caches: list[list[np.ndarray]], lengths: list[int]) -> tuple[np.ndarray, list[np.ndarray], int]:
    """Rows of per-sequence caches (each ``[1, kv, length, hd]``) stacked for one decode pass: the caches
    right-aligned to the longest (``longest``), and an attention mask ``[rows, longest + 1]`` of zeros on the
    pads and ones over each cache and the new position. Returns ``(mask, past, longest)``; row ``r``'s new
    cache is ``present[r:r+1, :, longest - lengths[r]:]``."""
    b, longest = len(lengths), max(lengths)
    mask = np.zeros((b, longest + 1), np.int64)
    past = []
    for j in range(len(caches[0])):
        kv, hd = caches[0][j].shape[1], caches[0][j].shape[3]
        p = np.zeros((b, kv, longest, hd), np.float32)
        for r, n in enumerate(lengths):
            p[r, :, longest - n :] = caches[r][j][0]
        past.append(p)
    for r, n in enumerate(lengths):
        mask[r, longest - n :] = 1
    return mask, past, longest


class ConcatBatchEngine(_Slots):
    """A ``concat``-layout step graph (past in, past + new out): a :class:`ConcatEngine` per slot, whose
    caches a decode pass left-pads into one run."""

    def __init__(self, runner: Any, gen: dict[str, Any], slots: int) -> None:
        super().__init__(slots, int(gen["context"]))
        self.runner, self.gen = runner, gen
        self.past_names = gen["cache"]["past_inputs"]
        self.present_names = gen["cache"]["present_outputs"]
        self.seqs = [ConcatEngine(runner, gen) for _ in range(self.slots)]

    def _reset(self, slot: int) -> None:
        self.seqs[slot].reset()

    def release(self, slot: int) -> None:
        super().release(slot)
        self._reset(slot)

    def prefill(self, slot: int, ids: list[int]) -> np.ndarray:
        if not ids:
            raise EdgeLLMError("prefill() got no token ids", "pass at least one id")
        self._room(slot, len(ids))
        logits = self.seqs[slot].step(list(ids))
        self.lengths[slot] = self.seqs[slot].length
        return logits

    def decode(self, slots: list[int], ids: list[int]) -> np.ndarray:
        for s in slots:
            self._room(s, 1)
        lengths = [self.lengths[s] for s in slots]
        caches = [[self.seqs[s].past[p] for p in self.past_names] for s in slots]
        mask, past, longest = left_pad(caches, lengths)
        res = self.runner.run(
            {
                "input_ids": np.asarray(ids, np.int64)[:, None],
                "attention_mask": mask,
                "position_ids": np.asarray(lengths, np.int64)[:, None],
                **dict(zip(self.past_names, past)),
            }
        )
        for r, s in enumerate(slots):
            seq = self.seqs[s]
            seq.past = {
                p: res[q][r : r + 1, :, longest - lengths[r] :]
                for p, q in zip(self.past_names, self.present_names)
            }
            seq.length = self.lengths[s] = seq.length + 1
        return np.asarray(res["logits"][:, -1], np.float32)


class SerialEngine(_Slots):
    """Any step engine, one per slot, run one after another: a layout whose graph holds one sequence
    (static-shape TFLite slots, ExecuTorch, OpenVINO state, llama.cpp)."""

    def __init__(self, engines: list[Any]) -> None:
        super().__init__(len(engines), min(int(e.context) for e in engines))
        self.engines = engines
        self.gen = getattr(engines[0], "gen", {})

    def _reset(self, slot: int) -> None:
        self.engines[slot].reset()

    def prefill(self, slot: int, ids: list[int]) -> np.ndarray:
        self._room(slot, len(ids))
        out = np.array(self.engines[slot].step(list(ids)), np.float32)
        self.lengths[slot] += len(ids)
        return out

    def decode(self, slots: list[int], ids: list[int]) -> np.ndarray:
        rows = []
        for s, t in zip(slots, ids):
            self._room(s, 1)
            rows.append(np.array(self.engines[s].step([int(t)]), np.float32))
            self.lengths[s] += 1
        return np.stack(rows)


def open_batch_engine(
    source: Any,
    slots: int,
    *,
    threads: int | None = None,
    serial_slots: int = 1,
    session_options: dict[str, str] | None = None,
) -> Any:
    """The batch engine of a whole-model generation artifact (a path or a loaded artifact) with ``slots``
    slots; a layout that cannot batch gets ``serial_slots`` step engines instead (each holds its own copy
    of the weights, so it defaults to one). ``session_options``: ONNX Runtime config entries."""
    from edgellm.runtime import make_runner

    art, gen = load_generation_artifact(source)
    layout = gen["cache"]["layout"]
    ort = art.manifest["target"]["runtime"] in ("onnxruntime", "onnxruntime-mobile")
    if layout == "shared" and ort:
        return PoolEngine(art.model_path, slots, threads=threads, gen=gen, session_options=session_options)
    if layout == "concat" and ort:
        opts: dict[str, Any] = {"session_options": dict(session_options or {})}
        if threads:
            opts["intra_op_threads"] = threads
        return ConcatBatchEngine(make_runner(art, "onnxruntime", **opts), gen, slots)
    return SerialEngine([open_engine(art, threads=threads) for _ in range(max(1, serial_slots))])
