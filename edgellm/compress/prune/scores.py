"""Importance of every prunable unit: heads (or KV groups), FFN channels and whole blocks.

- ``l1`` / ``l2``: the magnitude of every weight of the unit (query/key/value rows and output-projection
  columns of a head; gate/up rows and the down-projection column of an FFN channel).
- ``taylor``: first order, ``|sum over the unit's weights of w * dL/dw|`` with the gradient accumulated
  over the calibration batches (Molchanov et al. 2019). L is the next-token loss of a causal LM; for an
  encoder, half the mean squared last hidden state (a sentence embedding is normalised, so its own norm
  has no gradient).
- ``wanda``: ``|w| * ||x_j||_2`` (Sun et al. 2023), the input activation's norm per input channel measured
  on the calibration batches, summed over the unit's weights.

A block's score is the sum of its units' scores (data scores), or the magnitude of all its weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgellm.compress.prune.transformer import Layout, _get, _layers, hf_model


def unit_scores(
    adapter: Any, lay: Layout, units: list[tuple[list[int], list[int]]], score: str, calib: Any
) -> dict[str, Any]:
    from edgellm import plugins

    if score in plugins.SCORES:  # a plugin's importance (edgellm.scores entry point)
        return plugins.SCORES[score](adapter, lay, units, calib)
    layers = _layers(adapter)
    norms: dict[int, dict[str, torch.Tensor]] = {}
    if score == "taylor":
        _accumulate_grads(adapter, calib)
    elif score == "wanda":
        norms = _input_norms(adapter, layers, lay, calib)

    def w(i: int, path: str) -> torch.Tensor:
        lin = _get(layers[i], path)
        W = lin.weight.detach().float()
        if score == "l1":
            return W.abs()
        if score == "l2":
            return W.pow(2)
        if score == "taylor":
            g = lin.weight.grad
            return W * (g.float() if g is not None else torch.zeros_like(W))
        return W.abs() * norms[i][path].unsqueeze(0)  # wanda

    heads, ffn, blocks = [], [], []
    for i in range(len(layers)):
        q, k, v, o = (w(i, p) for p in (lay.q, lay.k, lay.v, lay.o))
        hs = torch.stack([q[qr].sum() + k[kr].sum() + v[kr].sum() + o[:, qr].sum() for qr, kr in units])
        fin = sum(w(i, p).sum(dim=1) for p in lay.ffn_in)
        fs = fin + w(i, lay.ffn_out).sum(dim=0)
        if score == "taylor":
            hs, fs = hs.abs(), fs.abs()
        elif score == "l2":
            hs, fs = hs.sqrt(), fs.sqrt()
        heads.append(hs)
        ffn.append(fs)
        if score in ("l1", "l2"):
            tot = sum(
                p.detach().float().abs().sum() if score == "l1" else p.detach().float().pow(2).sum()
                for p in layers[i].parameters()
            )
            blocks.append(tot if score == "l1" else tot.sqrt())
        else:
            blocks.append(hs.sum() + fs.sum())
    if score == "taylor":
        adapter.module.zero_grad(set_to_none=True)
    return {"heads": heads, "ffn": ffn, "blocks": torch.stack(blocks)}


def _feeds(adapter: Any, f: dict[str, Any]) -> list[torch.Tensor]:
    return [torch.as_tensor(f[s.name]) for s in adapter.inputs]


def _accumulate_grads(adapter: Any, calib: Any) -> None:
    m = adapter.module
    m.zero_grad(set_to_none=True)
    hidden: list[torch.Tensor] = []
    hook = None
    if adapter.task != "causal-lm":
        hook = hf_model(adapter).base_model.register_forward_hook(
            lambda _m, _a, out: hidden.append(out[0] if isinstance(out, tuple) else out.last_hidden_state)
        )
    try:
        with torch.enable_grad():
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
                        loss = (ce * keep).sum() / keep.sum().clamp(min=1)
                    else:
                        loss = ce.mean()
                else:
                    h = hidden.pop()
                    sq = h.float().pow(2).sum(-1)
                    loss = 0.5 * ((sq * mask).sum() / mask.sum() if mask is not None else sq.mean())
                loss.backward()
    finally:
        if hook is not None:
            hook.remove()


def _input_norms(
    adapter: Any, layers: nn.ModuleList, lay: Layout, calib: Any
) -> dict[int, dict[str, torch.Tensor]]:
    """Per layer and linear: the L2 norm of each input channel over every calibration token."""
    sums: dict[int, dict[str, torch.Tensor]] = {i: {} for i in range(len(layers))}
    handles = []
    mask_now: list[torch.Tensor | None] = [None]

    def hook(i: int, path: str):
        def fn(_m: nn.Module, args: tuple, _out: Any) -> None:
            x = args[0].detach().float()
            x = x.reshape(-1, x.shape[-1])
            if mask_now[0] is not None and mask_now[0].numel() == x.shape[0]:
                x = x[mask_now[0]]
            sq = x.pow(2).sum(0)
            sums[i][path] = sums[i].get(path, 0) + sq

        return fn

    for i, layer in enumerate(layers):
        for path in (lay.q, lay.k, lay.v, lay.o, *lay.ffn_in, lay.ffn_out):
            handles.append(_get(layer, path).register_forward_hook(hook(i, path)))
    try:
        with torch.no_grad():
            for f in calib:
                m = f.get("attention_mask")
                mask_now[0] = torch.as_tensor(m).bool().reshape(-1) if m is not None else None
                adapter.module(*_feeds(adapter, f))
    finally:
        for h in handles:
            h.remove()
    return {i: {p: v.sqrt() for p, v in d.items()} for i, d in sums.items()}
