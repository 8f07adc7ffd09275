"""Profiling for the planner: per block, the latency on this host (torch, forward hooks), the weights it
holds, and the shape and size of the activation at every possible cut.

Example:
    >>> prof = profile_blocks(load("tiny-llama"), seq=128)       # doctest: +SKIP
    >>> [(b.name, b.latency_ms, b.out_bytes) for b in prof.blocks]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class BlockStats:
    name: str
    latency_ms: float  # median over runs, this host, torch
    weight_bytes: int
    out_shape: list[int]  # the activation this block hands to the next one
    out_bytes: int  # at fp32


@dataclass
class Profile:
    model: str
    batch: int
    seq: int
    runs: int
    input_bytes: int
    blocks: list[BlockStats]

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


def profile_blocks(model: Any, *, batch: int = 1, seq: int = 128, runs: int = 10, warmup: int = 2) -> Profile:
    """Time each block of ``model`` (a ModelAdapter) in torch and record the activation after it."""
    import torch

    feeds = model.example_inputs(batch=batch, seq=seq, seed=0, padded=False)
    args = [torch.as_tensor(feeds[s.name]) for s in model.inputs]
    mods = {b.name: model.block_modules(b) for b in model.blocks}
    times: dict[str, list[float]] = {b: [] for b in mods}
    starts: dict[str, float] = {}
    shapes: dict[str, list[int]] = {}
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
    for b in model.blocks:
        weight = sum(p.numel() * p.element_size() for m in mods[b.name] for p in m.parameters())
        shape = shapes.get(b.name, [])
        stats.append(
            BlockStats(
                b.name,
                float(np.median(times[b.name])) if times[b.name] else 0.0,
                int(weight),
                shape,
                int(np.prod(shape)) * 4 if shape else 0,
            )
        )
    input_bytes = int(sum(np.asarray(v).nbytes for v in feeds.values()))
    return Profile(model.name, batch, seq, runs, input_bytes, stats)
