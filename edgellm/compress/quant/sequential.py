"""Block-by-block calibration (sequential GPTQ, as in the paper and AutoGPTQ).

Instead of one forward over the whole model with every layer's statistics held at once, the inputs
of the first transformer block are captured once (a pre-hook records its arguments and stops the
forward), then for each block in turn: its linears are observed while the block runs on those
inputs, they are quantized, the block runs again with the dequantized weights swapped in, and its
outputs become the next block's inputs. Memory holds one block's statistics (GPTQ's Hessians) and
one set of activations; later blocks see what the quantized earlier blocks produce. The head's
modules run last, in their listed order, on the last block's output.

That needs the model to be a chain: its blocks run once each, in order, each on the previous
block's output with the same other arguments, and its head's modules one after another. A probe
forward on one sequence checks this; a model that is not a chain (or whose quantized layers lie
outside its blocks) gets one calibration pass over the whole model instead.

Example:
    >>> stats_fn = lambda layers, stats: {n: rtn(m) for n, m in layers.items()}    # doctest: +SKIP
    >>> out = calibrate_blockwise(model, targets, feeds, stats_fn, hessian=True)    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgellm.compress.quant.observers import Observer, Stats, run_calibration
from edgellm.compress.quant.spec import LayerQuant

Feeds = list[dict[str, np.ndarray]]
QuantizeFn = Callable[[dict[str, nn.Linear], dict[str, Stats]], dict[str, LayerQuant]]


class _Stop(Exception):
    """Raised by the capture hook to end a forward once the first block's inputs are recorded."""


@dataclass
class _Batch:
    """One calibration batch as a block sees it: the hidden state and the other arguments."""

    hidden: torch.Tensor
    args: tuple  # positional arguments after the hidden state
    kwargs: dict[str, Any]
    mask: torch.Tensor | None  # (B, T) bool, tokens that count


def calibrate_blockwise(
    model: Any,
    targets: dict[str, nn.Linear],
    feeds: Feeds,
    quantize: QuantizeFn,
    *,
    hessian: bool = False,
    max_rows: int = 0,
) -> dict[str, LayerQuant]:
    """Observe and quantize ``targets`` block by block; ``quantize(layers, stats)`` does one block's layers.

    ``model`` is left as it was (weights swapped in for a block are put back before the next block).
    """
    chain = _chain(model, targets, feeds)
    if chain is None:  # not a chain: statistics of every layer in one pass
        obs = Observer(targets, hessian=hessian, max_rows=max_rows, ranges=not hessian)
        run_calibration(model, feeds, obs)
        return quantize(targets, obs.stats)
    blocks, head = chain
    out: dict[str, LayerQuant] = {}
    with torch.no_grad():
        batches = [_capture(model, blocks[0], f) for f in feeds]
        last = max(
            (i for i, (p, _) in enumerate(blocks) if _inside(p, targets)), default=-1
        )  # blocks after it matter only if the head has targets
        todo = blocks if head else blocks[: last + 1]
        for i, (path, mod) in enumerate(todo):
            layers = {n: m for n, m in targets.items() if _under(n, path)}
            if layers:
                q = _observe_and_quantize(mod, layers, batches, quantize, hessian, max_rows)
                out.update(q)
                if i + 1 < len(todo) or head:
                    with _swapped(layers, q):
                        batches = [_run_block(mod, b) for b in batches]
            else:
                batches = [_run_block(mod, b) for b in batches]
            _release_memory()
        if head:
            paths, mods = head
            layers = {n: m for n, m in targets.items() if any(_under(n, p) for p in paths)}
            obs = Observer(layers, hessian=hessian, max_rows=max_rows, ranges=not hessian)
            with obs:
                for b in batches:
                    obs.mask = b.mask
                    _run_head(mods, b.hidden)
                    obs._batch += 1
            out.update(quantize(layers, obs.stats))
    return {n: out[n] for n in targets}


def _observe_and_quantize(
    mod: nn.Module,
    layers: dict[str, nn.Linear],
    batches: list[_Batch],
    quantize: QuantizeFn,
    hessian: bool,
    max_rows: int,
) -> dict[str, LayerQuant]:
    obs = Observer(layers, hessian=hessian, max_rows=max_rows, ranges=not hessian)
    with obs:
        for b in batches:
            obs.mask = b.mask
            mod(b.hidden, *b.args, **b.kwargs)
            obs._batch += 1
    return quantize(layers, obs.stats)


class _swapped:
    """Context manager: the layers compute with their quantized weights (dequantized, times the input
    scale), and get their own weights back on exit."""

    def __init__(self, layers: dict[str, nn.Linear], q: dict[str, LayerQuant]) -> None:
        self.layers, self.q = layers, q
        self.saved: dict[str, torch.Tensor] = {}

    def __enter__(self) -> None:
        for n, m in self.layers.items():
            lq = self.q[n]
            w = lq.dequantize()
            if lq.input_scale is not None:  # x * s @ W^T == x @ (W * s)^T
                w = w * lq.input_scale.float()[None, :]
            self.saved[n] = m.weight.data
            m.weight.data = w.to(m.weight.dtype)

    def __exit__(self, *exc: object) -> None:
        for n, w in self.saved.items():
            self.layers[n].weight.data = w
        self.saved.clear()


def _release_memory() -> None:
    """Hand the allocator's free heap memory back to the OS (glibc keeps freed tensors of a few MB in
    its arenas; over 24 blocks of temporaries that adds up to gigabytes of resident memory)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _under(name: str, path: str) -> bool:
    return name == path or name.startswith(path + ".") or not path


def _inside(path: str, targets: dict[str, nn.Linear]) -> bool:
    return any(_under(n, path) for n in targets)


def _hidden_of(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


def _run_block(mod: nn.Module, b: _Batch) -> _Batch:
    return _Batch(_hidden_of(mod(b.hidden, *b.args, **b.kwargs)), b.args, b.kwargs, b.mask)


def _run_head(mods: list[nn.Module], h: torch.Tensor) -> torch.Tensor:
    for m in mods:
        h = _hidden_of(m(h))
    return h


def _feed_args(model: Any, feed: dict[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.as_tensor(feed[s.name]) for s in model.inputs]


def _capture(model: Any, first: tuple[str, nn.Module], feed: dict[str, np.ndarray]) -> _Batch:
    """The first block's inputs for one feed: the forward stops when it reaches the block."""
    got: dict[str, Any] = {}

    def hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        if args:
            got["hidden"], got["args"], got["kwargs"] = args[0], args[1:], dict(kwargs)
        else:
            kw = dict(kwargs)
            got["hidden"], got["args"], got["kwargs"] = kw.pop("hidden_states"), (), kw
        raise _Stop

    handle = first[1].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model.module(*_feed_args(model, feed))
    except _Stop:
        pass
    finally:
        handle.remove()
    m = feed.get("attention_mask")
    mask = torch.as_tensor(m).bool() if m is not None else None
    return _Batch(got["hidden"].detach(), got["args"], got["kwargs"], mask)


def _chain(
    model: Any, targets: dict[str, nn.Linear], feeds: Feeds
) -> tuple[list[tuple[str, nn.Module]], tuple[list[str], list[nn.Module]] | None] | None:
    """``(blocks, head)`` as (path, module) lists when the model runs as a chain (checked on one
    sequence), else None. ``head`` is None when none of its layers is a target."""
    blocks = [b for b in getattr(model, "blocks", []) if b.kind == "block"]
    if not feeds or not blocks or any(len(b.paths) != 1 or not b.paths[0] for b in blocks):
        return None
    chain = [(b.paths[0], model.submodule(b.paths[0])) for b in blocks]
    heads = [b for b in model.blocks if b.kind == "head"]
    head_paths = [p for b in heads for p in b.paths]
    in_blocks = {n for n in targets if any(_under(n, p) for p, _ in chain)}
    in_head = {n for n in targets if n not in in_blocks and any(_under(n, p) for p in head_paths)}
    if in_blocks | in_head != set(targets):
        return None
    head = (head_paths, [model.submodule(p) for p in head_paths]) if in_head else None
    try:
        ok = _probe(model, chain, head, {n: targets[n] for n in sorted(in_head)}, feeds[0])
    except Exception:  # a module that cannot be called on its own is no chain
        ok = False
    return (chain, head) if ok else None


def _probe(
    model: Any,
    chain: list[tuple[str, nn.Module]],
    head: tuple[list[str], list[nn.Module]] | None,
    head_layers: dict[str, nn.Linear],
    feed: dict[str, np.ndarray],
) -> bool:
    """Whether running the blocks (and head modules) one after another on one sequence reproduces
    what the whole model's forward feeds the last block's successor (and the head's layers)."""
    one = {k: v[:1] for k, v in feed.items()}
    calls: list[int] = []
    seen: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda _m, _a, _o, i=i: calls.append(i)) for i, (_, m) in enumerate(chain)
    ]
    final: list[torch.Tensor] = []
    handles.append(chain[-1][1].register_forward_hook(lambda _m, _a, o: final.append(_hidden_of(o))))
    for n, m in head_layers.items():
        handles.append(m.register_forward_pre_hook(lambda _m, a, n=n: seen.setdefault(n, a[0])))
    with torch.no_grad():
        try:
            model.module(*_feed_args(model, one))
        finally:
            for h in handles:
                h.remove()
        if calls != list(range(len(chain))) or len(final) != 1:
            return False
        b = _capture(model, chain[0], one)
        for _, m in chain:
            b = _run_block(m, b)
        if not torch.allclose(b.hidden, final[0], rtol=1e-4, atol=1e-5):
            return False
        if head is None:
            return True
        replay: dict[str, torch.Tensor] = {}
        handles = [
            m.register_forward_pre_hook(lambda _m, a, n=n: replay.setdefault(n, a[0]))
            for n, m in head_layers.items()
        ]
        try:
            _run_head(head[1], b.hidden)
        finally:
            for h in handles:
                h.remove()
    return all(
        n in replay and n in seen and torch.allclose(replay[n], seen[n], rtol=1e-4, atol=1e-5)
        for n in head_layers
    )
