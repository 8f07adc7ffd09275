"""Profiling for the planner: per block, the latency on this host (torch, forward hooks), the weights it
holds, and the shape and size of the activation at every possible cut.

Example:
    >>> prof = profile_blocks(load("tiny-llama"), seq=128)       # doctest: +SKIP
    >>> [(b.name, b.latency_ms, b.out_bytes) for b in prof.blocks]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class BlockStats:
    name: str
    latency_ms: float  # median over runs, this host, torch
    weight_bytes: int
    out_shape: list[int]  # the activation this block hands to the next one
    out_bytes: int  # at fp32
    # per codec, on this block's real output: bytes on the wire (after compression), encode and decode ms
    codecs: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class Profile:
    model: str
    batch: int
    seq: int
    runs: int
    input_bytes: int
    blocks: list[BlockStats]
    side_bytes: int = 0  # model inputs the server half needs besides the activation (attention mask)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_tensor(out: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    return None


def codec_stats(x: np.ndarray, codecs: tuple[str, ...], reps: int = 3) -> dict[str, dict[str, float]]:
    """Bytes on the wire and encode / decode time (ms, best of ``reps``) of each codec on ``x``."""
    from edgellm.runtime.codecs import Codec

    out = {}
    for name in codecs:
        c = Codec(name)
        enc, dec = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            payload, meta = c.encode(x)
            t1 = time.perf_counter()
            c.decode(payload, meta)
            enc.append(t1 - t0)
            dec.append(time.perf_counter() - t1)
        out[name] = {"bytes": len(payload), "encode_ms": min(enc) * 1000.0, "decode_ms": min(dec) * 1000.0}
    return out


def profile_blocks(
    model: Any,
    *,
    batch: int = 1,
    seq: int = 128,
    runs: int = 10,
    warmup: int = 2,
    codecs: tuple[str, ...] | None = None,
) -> Profile:
    """Time each block of ``model`` (a ModelAdapter) in torch and record the activation after it.

    With ``codecs`` (default: every codec), each cut's real activation is encoded to measure the bytes
    on the wire (compression depends on the data) and the encode/decode time on this host.
    """
    from edgellm.runtime.codecs import ALL_CODECS

    codecs = ALL_CODECS if codecs is None else codecs
    feeds = model.example_inputs(batch=batch, seq=seq, seed=0, padded=False)
    if model.task in ("embedding", "causal-lm", "classification"):  # real text compresses like real text
        feeds = _real_text(model, feeds, batch, seq)
    import torch

    args = [torch.as_tensor(feeds[s.name]) for s in model.inputs]
    mods = {b.name: model.block_modules(b) for b in model.blocks}
    times: dict[str, list[float]] = {b: [] for b in mods}
    starts: dict[str, float] = {}
    shapes: dict[str, list[int]] = {}
    acts: dict[str, np.ndarray] = {}
    handles = []
    for name, ms in mods.items():
        first, last = ms[0], ms[-1]
        handles.append(
            first.register_forward_pre_hook(lambda _m, _a, n=name: starts.__setitem__(n, time.perf_counter()))
        )

        def done(_m, _a, out, n=name):
            t = _first_tensor(out)
            if t is not None:
                shapes[n] = list(t.shape)
                acts[n] = t.detach().float().numpy()
            times[n].append((time.perf_counter() - starts.get(n, time.perf_counter())) * 1000.0)

        handles.append(last.register_forward_hook(done))
    try:
        with torch.inference_mode():
            for i in range(warmup + runs):
                if i == warmup:
                    for v in times.values():
                        v.clear()
                model.module(*args)
    finally:
        for h in handles:
            h.remove()
    stats = []
    for i, b in enumerate(model.blocks):
        weight = sum(p.numel() * p.element_size() for m in mods[b.name] for p in m.parameters())
        shape = shapes.get(b.name, [])
        stats.append(
            BlockStats(
                b.name,
                float(np.median(times[b.name])) if times[b.name] else 0.0,
                int(weight),
                shape,
                int(np.prod(shape)) * 4 if shape else 0,
                codec_stats(acts[b.name], codecs) if b.name in acts and i < len(model.blocks) - 1 else {},
            )
        )
    input_bytes = int(sum(np.asarray(v).nbytes for v in feeds.values()))
    side = int(np.asarray(feeds["attention_mask"]).nbytes) if "attention_mask" in feeds else 0
    return Profile(model.name, batch, seq, runs, input_bytes, stats, side)


def _real_text(model: Any, feeds: dict[str, np.ndarray], batch: int, seq: int) -> dict[str, np.ndarray]:
    """Token ids of real English text (CPython's pydoc topics) at (batch, seq), when a tokenizer exists."""
    if model.tokenizer is None:
        return feeds
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return feeds
    text = " ".join(list(topics.values())[:40])
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < batch * seq:
        return feeds
    out = dict(feeds)
    out["input_ids"] = np.asarray(ids[: batch * seq], dtype=feeds["input_ids"].dtype).reshape(batch, seq)
    return out


def profile_prefixes(
    runners: dict[int, Any], feeds: dict[str, np.ndarray], *, runs: int = 10, warmup: int = 2
) -> list[float]:
    """Per-block latency on any runtime, from the device halves of every cut: ``runners[k]`` runs the first
    ``k`` blocks (k = 1..n). Runs are interleaved over the cuts so drift hits every cut alike; block ``k``
    costs ``median(prefix k) - median(prefix k-1)`` (never below zero).
    """
    cuts = sorted(runners)
    times: dict[int, list[float]] = {k: [] for k in cuts}
    for i in range(warmup + runs):
        for k in cuts:
            r = runners[k]
            f = {s.name: feeds[s.name] for s in r.inputs}
            t0 = time.perf_counter()
            r.run(f)
            if i >= warmup:
                times[k].append((time.perf_counter() - t0) * 1000.0)
    prefix = [0.0] + [float(np.median(times[k])) for k in cuts]
    return [max(0.0, prefix[i + 1] - prefix[i]) for i in range(len(cuts))]
