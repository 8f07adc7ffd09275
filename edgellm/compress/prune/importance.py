"""Importance scores: how much every prunable unit matters, one registry for both pruning paths.

- ``l1`` / ``l2``: the magnitude of every weight of the unit (query/key/value rows and output-projection
  columns of a head; gate/up rows and the down-projection column of an FFN channel; a plain module's
  producer rows, consumer columns and norm parameters).
- ``taylor``: first order, ``|sum over the unit's weights of w * dL/dw|`` with the gradient accumulated
  over the calibration batches (Molchanov et al. 2019). L is the next-token loss of a causal LM; for an
  encoder, half the mean squared last hidden state (a sentence embedding is normalised, so its own norm
  has no gradient); for a plain module, half the mean squared output.
- ``wanda``: ``|w| * ||x_j||_2`` (Sun et al. 2023), the input activation's norm per input channel measured
  on the calibration batches, summed over the unit's weights (in a dependency graph: the weights that
  read the channel, where its norm is measured).

A score is a function of one weight tensor, ``(w, grad, input_norm) -> element scores`` of ``w``'s shape,
registered by name with :func:`register_importance`; a unit's score is the sum over its weights, then
the score's ``finish`` (``sqrt`` for l2, ``abs`` for taylor). Two paths sum them:
:func:`unit_scores` (heads or KV groups, FFN channels and blocks of a transformer layout) and
:func:`channel_scores` (the coupled channels of a dependency graph). The activation statistics are
collected once for both: :func:`gradients` and :func:`input_norms`. A block's score is the sum of its
units' scores (data scores), or the score of all its weights (magnitudes).

A plugin's score (an ``edgellm.scores`` entry point, ``f(adapter, layout, units, calib)``) scores
transformer units itself; :func:`lookup` finds it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch
from torch import nn

from edgellm import plugins
from edgellm.compress.prune.layout import Layout, get_module, head_units, hf_model, layers_of
from edgellm.errors import EdgeLLMError

if TYPE_CHECKING:
    from edgellm.compress.prune.dependency import Graph

Stat = Literal["grad", "input_norm"]
WeightScore = Callable[[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]
K = TypeVar("K")


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class Importance:
    """One registered score: how a weight scores, how a unit's sum is finished, what it needs."""

    name: str
    weight: WeightScore | None = None  # (w, grad, input norm broadcast to w) -> element scores, w's shape
    finish: Callable[[torch.Tensor], torch.Tensor] = _same  # a unit's summed score -> its importance
    needs_data: bool = False  # needs calibration batches
    stat: Stat | None = None  # the activation statistic ``weight`` reads (collected before scoring)
    scorer: Callable[..., dict[str, Any]] | None = None  # scores transformer units itself (a plugin's form)


IMPORTANCES: dict[str, Importance] = {}


def register_importance(
    name: str,
    *,
    needs_data: bool = False,
    stat: Stat | None = None,
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
    whole: bool = False,
) -> Callable[[Callable], Callable]:
    """Register the decorated function as importance score ``name``.

    Args:
        name: the score's name (``PruneConfig(score=name)``, ``--prune-score name``).
        needs_data: the score needs calibration batches (implied by ``stat``).
        stat: the statistic the function reads: ``"grad"`` (``grad`` is dL/dw) or ``"input_norm"``
            (``input_norm`` is the L2 norm of each input channel, shaped to broadcast against ``w``).
        finish: applied to each unit's summed score (default: none).
        whole: the function scores transformer units itself, ``f(adapter, layout, units, calib) ->
            {"heads", "ffn", "blocks"}`` (a plugin's form; transformers only).

    Returns:
        The decorator; it returns the function unchanged.

    Example:
        >>> @register_importance("neg-l1")  # doctest: +SKIP
        ... def neg_l1(w, grad, input_norm):
        ...     return -w.abs()  # prunes the largest units first
    """

    def deco(fn: Callable) -> Callable:
        IMPORTANCES[name] = Importance(
            name,
            weight=None if whole else fn,
            finish=finish or _same,
            needs_data=needs_data or stat is not None,
            stat=stat,
            scorer=fn if whole else None,
        )
        return fn

    return deco


@register_importance("l1")
def _l1(w: torch.Tensor, grad: torch.Tensor | None, norm: torch.Tensor | None) -> torch.Tensor:
    return w.abs()


@register_importance("l2", finish=torch.sqrt)
def _l2(w: torch.Tensor, grad: torch.Tensor | None, norm: torch.Tensor | None) -> torch.Tensor:
    return w.pow(2)


@register_importance("taylor", stat="grad", finish=torch.abs)
def _taylor(w: torch.Tensor, grad: torch.Tensor | None, norm: torch.Tensor | None) -> torch.Tensor:
    return w * (grad.float() if grad is not None else torch.zeros_like(w))


@register_importance("wanda", stat="input_norm")
def _wanda(w: torch.Tensor, grad: torch.Tensor | None, norm: torch.Tensor | None) -> torch.Tensor:
    return w.abs() * norm if norm is not None else w.abs()


# -- lookup ---------------------------------------------------------------------------------------------------
@plugins.accepts("edgellm.scores")
def _accept_plugin(name: str, obj: Any) -> None:
    """A plugin's score (``edgellm.scores`` entry point) joins the registry as a whole-unit scorer; a
    plugin never replaces a built-in score of the same name."""
    if not callable(obj):
        raise TypeError(f"{obj!r} is not callable")
    if name not in IMPORTANCES:
        IMPORTANCES[name] = Importance(name, needs_data=bool(getattr(obj, "needs_data", False)), scorer=obj)


def lookup(name: str) -> Importance | None:
    """The score called ``name``: a registered one, else a plugin's; None when there is none."""
    if name not in IMPORTANCES:
        plugins.load("edgellm.scores", name)  # a plugin package may provide it
    return IMPORTANCES.get(name)


def get_importance(name: str) -> Importance:
    """:func:`lookup`, or an error naming the scores there are."""
    imp = lookup(name)
    if imp is None:
        extra = plugins.names("edgellm.scores")
        raise EdgeLLMError(
            f"unknown importance score '{name}'",
            f"use {weight_names()}" + (f", or a plugin's: {', '.join(extra)}" if extra else ""),
        )
    return imp


def weight_importance(name: str) -> Importance:
    """:func:`get_importance` of a score of single weights (what a dependency graph can sum)."""
    imp = get_importance(name)
    if imp.weight is None:
        raise EdgeLLMError(
            f"score '{name}' scores transformer heads and FFN channels; plain modules go through the "
            "dependency graph",
            f"use {weight_names()}",
        )
    return imp


def weight_names() -> str:
    """The registered scores of single weights (both paths take them): ``l1, l2, taylor or wanda``."""
    names = [n for n, imp in IMPORTANCES.items() if imp.weight is not None]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


# -- activation statistics, collected once for both paths -----------------------------------------------------
@contextmanager
def gradients(module: nn.Module, losses: Iterable[torch.Tensor]) -> Iterator[None]:
    """Inside the block every weight's ``.grad`` holds dL/dw summed over ``losses`` (one per calibration
    batch, computed lazily under grad mode); cleared on exit."""
    module.zero_grad(set_to_none=True)
    try:
        with torch.enable_grad():
            for loss in losses:
                loss.backward()
        yield
    finally:
        module.zero_grad(set_to_none=True)


def input_norms(
    module: nn.Module,
    targets: dict[K, nn.Module],
    batches: Iterable[tuple[list[torch.Tensor], torch.Tensor | None]],
) -> dict[K, torch.Tensor]:
    """Per target module: the L2 norm of each input channel over every calibration token.

    ``batches`` yields ``module``'s positional inputs and a mask of the tokens to count (padding left
    out), or None for all. Channels are the last axis, or axis 1 of an NCHW feature map."""
    sums: dict[K, torch.Tensor] = {}
    mask_now: list[torch.Tensor | None] = [None]

    def hook(key: K) -> Callable:
        def fn(_m: nn.Module, args: tuple, _out: Any) -> None:
            x = args[0].detach().float()
            x = x.movedim(1, -1) if x.dim() == 4 else x
            x = x.reshape(-1, x.shape[-1])  # (tokens, channels)
            if mask_now[0] is not None and mask_now[0].numel() == x.shape[0]:
                x = x[mask_now[0]]
            sums[key] = sums.get(key, 0) + x.pow(2).sum(0)

        return fn

    handles = [mod.register_forward_hook(hook(key)) for key, mod in targets.items()]
    try:
        with torch.no_grad():
            for args, mask in batches:
                mask_now[0] = mask
                module(*args)
    finally:
        for h in handles:
            h.remove()
    return {key: v.sqrt() for key, v in sums.items()}


# -- transformer units ----------------------------------------------------------------------------------------
def unit_scores(
    adapter: Any, lay: Layout, units: list[tuple[list[int], list[int]]], score: str, calib: Any
) -> dict[str, Any]:
    """Importance of every transformer unit: ``{"heads": [per layer, a score per head or KV group of
    ``units``], "ffn": [per layer, a score per channel], "blocks": a score per layer}``."""
    imp = get_importance(score)
    if imp.scorer is not None:
        return imp.scorer(adapter, lay, units, calib)
    assert imp.weight is not None
    layers = layers_of(adapter)
    norms: dict[tuple[int, str], torch.Tensor] = {}
    if imp.stat == "input_norm":
        targets = {(i, p): get_module(layer, p) for i, layer in enumerate(layers) for p in lay.linears}
        norms = input_norms(adapter.module, targets, ((_feeds(adapter, f), _token_mask(f)) for f in calib))
    grads = gradients(adapter.module, _model_losses(adapter, calib)) if imp.stat == "grad" else nullcontext()

    def w(i: int, path: str) -> torch.Tensor:  # element scores of a linear's weight, [out, in]
        lin = get_module(layers[i], path)
        norm = norms.get((i, path))
        return imp.weight(
            lay.weight(lin).detach().float(), lay.grad(lin), None if norm is None else norm.unsqueeze(0)
        )

    heads, ffn, blocks = [], [], []
    with grads:
        for i in range(len(layers)):
            own = _layer_units(units, lay, get_module(layers[i], lay.q))
            if lay.fused_qkv:  # one projection: its query, key and value rows
                q_rows, kv_rows = sum(len(u[0]) for u in own), sum(len(u[1]) for u in own)
                q, k, v = w(i, lay.q).split([q_rows, kv_rows, kv_rows], dim=0)
            else:
                q, k, v = (w(i, p) for p in (lay.q, lay.k, lay.v))
            o = w(i, lay.o)
            hs = torch.stack([q[qr].sum() + k[kr].sum() + v[kr].sum() + o[:, qr].sum() for qr, kr in own])
            fin = sum(w(i, p).sum(dim=1) for p in lay.ffn_in)
            if lay.gate_up:  # gate and up rows of one projection: a channel is one row of each
                fin = fin.reshape(2, -1).sum(0)
            fs = fin + w(i, lay.ffn_out).sum(dim=0)
            hs, fs = imp.finish(hs), imp.finish(fs)
            heads.append(hs)
            ffn.append(fs)
            if imp.needs_data:
                blocks.append(hs.sum() + fs.sum())
            else:  # a magnitude: of every weight of the block
                tot = sum(imp.weight(p.detach().float(), None, None).sum() for p in layers[i].parameters())
                blocks.append(imp.finish(tot))
    return {"heads": heads, "ffn": ffn, "blocks": torch.stack(blocks)}


def _layer_units(
    units: list[tuple[list[int], list[int]]], lay: Layout, q: nn.Module
) -> list[tuple[list[int], list[int]]]:
    """``units`` if layer's query projection ``q`` has their rows, else the heads it has: a layer whose
    heads were pruned on their own (``config.pruned_heads``, multi-head attention) has fewer."""
    q_rows, kv_rows = sum(len(u[0]) for u in units), sum(len(u[1]) for u in units)
    rows = int(lay.weight(q).shape[0])
    if rows == (q_rows + 2 * kv_rows if lay.fused_qkv else q_rows):
        return units
    d = len(units[0][1])  # one key/value head's rows
    n = rows // (3 * d if lay.fused_qkv else d)
    return head_units(n, n, d)


def _feeds(adapter: Any, f: dict[str, Any]) -> list[torch.Tensor]:
    return [torch.as_tensor(f[s.name]) for s in adapter.inputs]


def _token_mask(f: dict[str, Any]) -> torch.Tensor | None:
    m = f.get("attention_mask")
    return torch.as_tensor(m).bool().reshape(-1) if m is not None else None


def _model_losses(adapter: Any, calib: Any) -> Iterator[torch.Tensor]:
    """Per calibration batch: the next-token loss of a causal LM (padding left out), else half the mean
    squared last hidden state of the encoder."""
    m = adapter.module
    hidden: list[torch.Tensor] = []
    hook = None
    if adapter.task != "causal-lm":
        hook = hf_model(adapter).base_model.register_forward_hook(
            lambda _m, _a, out: hidden.append(out[0] if isinstance(out, tuple) else out.last_hidden_state)
        )
    try:
        for f in calib:
            args = _feeds(adapter, f)
            out = m(*args)
            mask = torch.as_tensor(f["attention_mask"]).float() if "attention_mask" in f else None
            if adapter.task == "causal-lm":
                ids = args[0]
                ce = nn.functional.cross_entropy(
                    out[:, :-1].float().reshape(-1, out.shape[-1]),
                    ids[:, 1:].reshape(-1),
                    reduction="none",
                )
                if mask is not None:
                    keep = mask[:, 1:].reshape(-1)
                    yield (ce * keep).sum() / keep.sum().clamp(min=1)
                else:
                    yield ce.mean()
            else:
                h = hidden.pop()
                sq = h.float().pow(2).sum(-1)
                yield 0.5 * ((sq * mask).sum() / mask.sum() if mask is not None else sq.mean())
    finally:
        if hook is not None:
            hook.remove()


# -- dependency-graph channels --------------------------------------------------------------------------------
def channel_scores(module: nn.Module, g: Graph, score: str, calib: Any) -> dict[int, float]:
    """Importance of every unit of coupled channels of ``g``: the score summed over every weight that moves
    with it (producer rows, consumer columns, norm parameters)."""
    imp = weight_importance(score)
    norms: dict[str, torch.Tensor] = {}
    if imp.stat == "input_norm":
        targets = {u.path: module.get_submodule(u.path) for u in g.uses if u.role == "in"}
        norms = input_norms(module, targets, ((args, None) for args in _inputs(calib)))
    grads = gradients(module, _output_losses(module, calib)) if imp.stat == "grad" else nullcontext()
    out: dict[int, float] = {}
    with grads:
        for use in g.uses:
            if imp.stat == "input_norm" and use.role != "in":
                continue  # a channel's input norm is measured where it is read: score it by its readers
            mod = module.get_submodule(use.path)
            W = mod.weight.detach().float()
            norm = norms.get(use.path) if use.role == "in" else None
            if norm is not None:  # per input channel (axis 1 of the weight)
                norm = norm.reshape(1, -1, *[1] * (W.dim() - 2))
            per = _per_channel(imp.weight(W, mod.weight.grad, norm), use.role)
            for e, v in zip(use.ids.tolist(), per.tolist()):
                u = g.unit_of[e]
                out[u] = out.get(u, 0.0) + v
    done = imp.finish(torch.tensor(list(out.values()), dtype=torch.float64)).tolist()
    return dict(zip(out, done))


def _per_channel(e: torch.Tensor, role: str) -> torch.Tensor:
    """Element scores of one weight summed per channel it follows: rows (out, dw), columns (in), or each
    parameter of a norm."""
    if role in ("out", "dw"):
        return e.reshape(e.shape[0], -1).sum(1)
    if role == "in":
        return e.transpose(0, 1).reshape(e.shape[1], -1).sum(1)
    return e.reshape(-1)


def _inputs(calib: Any) -> Iterator[list[torch.Tensor]]:
    for f in calib:
        yield [torch.as_tensor(a) for a in f.values()]


def _output_losses(module: nn.Module, calib: Any) -> Iterator[torch.Tensor]:
    """Half the mean squared output per calibration batch (no labels needed)."""
    for args in _inputs(calib):
        out = module(*args)
        out = (
            out
            if isinstance(out, torch.Tensor)
            else next(iter(out.values() if isinstance(out, dict) else out))
        )
        yield 0.5 * out.float().pow(2).mean()
