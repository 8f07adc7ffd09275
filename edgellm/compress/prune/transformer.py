"""Structured pruning of Hugging Face transformers: attention heads, FFN channels and whole blocks.

The result is an ordinary, smaller model of the same architecture (fewer heads, a narrower FFN, fewer
layers, written into its ``config.json``), so every exporter, the partitioner and the trainer take it as is.

- **Heads.** Under grouped-query attention the unit is a KV group: one key/value head and the query
  heads that read it are removed together, so ``num_attention_heads / num_key_value_heads`` stays whole.
  With plain multi-head attention the unit is one head. ``head_dim`` is written explicitly (it no longer
  equals ``hidden_size / num_attention_heads``); Phi-3's fused ``qkv_proj`` loses the removed heads'
  query, key and value rows together. BERT, DistilBERT and GPT-2 configs derive the head size from the
  hidden size, so their heads go through Hugging Face's own ``prune_heads`` (recorded per layer in
  ``config.pruned_heads``, rebuilt on load); for GPT-2 that cuts the same heads out of the query, key
  and value thirds of the fused ``c_attn`` and the matching input rows of ``c_proj``, and updates the
  attention's ``num_heads`` and ``split_size``.
- **FFN channels.** Gate/up rows and the matching down-projection columns (Llama family; both halves of
  Phi-3's fused ``gate_up_proj``); intermediate rows and output columns (BERT family; DistilBERT's
  ``lin1``/``lin2``; GPT-2's ``c_fc``/``c_proj``, Conv1Ds whose weights are stored transposed).
- **Blocks.** The least important whole layers (by the same score summed over the block).

The same number of units is removed in every layer (a Hugging Face config holds one head count and one
FFN width for all layers); *which* units go is decided per layer by the score. ``scope="global"`` ranks
heads across layers instead (each layer keeps at least one): configs that record per-layer heads
(``pruned_heads``: BERT, DistilBERT, GPT-2) allow it for heads; a Llama-family config cannot hold
per-layer widths.
``multiple_of`` rounds what is kept (heads x head_dim, FFN width) to a multiple of 8/16 for fast kernels.

Where each family keeps these weights: :mod:`~edgellm.compress.prune.layout`; their scores:
:mod:`~edgellm.compress.prune.importance`. Plain torch modules (CNNs, MLPs) go through the dependency
graph instead (:mod:`~edgellm.compress.prune.surgery`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from edgellm.compress.prune.config import PruneConfig, PruneRecord, flops
from edgellm.compress.prune.importance import get_importance, unit_scores
from edgellm.compress.prune.layout import (
    geometry,
    get_module,
    head_units,
    hf_model,
    layers_of,
    layout_of,
    set_module,
)
from edgellm.errors import EdgeLLMError


def _keep_count(n: int, ratio: float, unit: int, multiple_of: int) -> int:
    """Units to keep out of ``n`` when removing ``ratio``; the kept width (units x unit) is rounded up to
    a multiple of ``multiple_of`` where that is possible."""
    keep = max(1, n - math.floor(n * ratio + 1e-9))
    if multiple_of > 1:
        step = multiple_of // math.gcd(multiple_of, unit)
        keep = min(n, math.ceil(keep / step) * step)
    return keep


# -- physical removal ---------------------------------------------------------------------------------------
def _rows(lin: nn.Module, idx: torch.Tensor) -> nn.Module:
    """``lin`` keeping the output features ``idx`` (an ``nn.Linear`` or a Hugging Face ``Conv1D``)."""
    if not isinstance(lin, nn.Linear):
        from transformers.pytorch_utils import prune_conv1d_layer

        return prune_conv1d_layer(lin, idx, dim=1)  # Conv1D: weight [in, out]
    new = nn.Linear(lin.in_features, len(idx), bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(lin.weight[idx])
        if lin.bias is not None:
            new.bias.copy_(lin.bias[idx])
    return new


def _cols(lin: nn.Module, idx: torch.Tensor) -> nn.Module:
    """``lin`` keeping the input features ``idx`` (an ``nn.Linear`` or a Hugging Face ``Conv1D``)."""
    if not isinstance(lin, nn.Linear):
        from transformers.pytorch_utils import prune_conv1d_layer

        return prune_conv1d_layer(lin, idx, dim=0)
    new = nn.Linear(len(idx), lin.out_features, bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(lin.weight[:, idx])
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    return new


def prune_transformer(
    adapter: Any,
    config: PruneConfig,
    calib: list[dict[str, Any]] | None = None,
    *,
    scores: dict[str, Any] | None = None,
) -> PruneRecord:
    """Prune ``adapter``'s Hugging Face model in place (heads, FFN channels, blocks) by ``config.score``.

    ``scores`` replaces the computed importance (``{"heads": [per layer: a score per unit], "ffn": [per
    layer: a score per channel], "blocks": a score per layer}``): another tool's selection, removed the
    same way.

    Raises:
        EdgeLLMError: an unknown layout, a score that needs calibration data without it, or a ratio
            that would remove every head of a layer.
    """
    if config.channels:
        raise EdgeLLMError(
            "channels is the ratio for plain torch modules", "prune a transformer by heads, ffn or blocks"
        )
    lay = layout_of(adapter)
    if config.scope == "global" and (not lay.hf_heads or config.ffn):
        raise EdgeLLMError(
            f"global ratios give layers different widths, which a '{adapter.family}' config cannot hold for "
            f"{'FFN channels' if config.ffn else 'heads'} (one count for all layers)",
            "use scope: layer"
            + (f" (global works for the heads of '{adapter.family}' models)" if lay.hf_heads else ""),
        )
    if config.heads and lay.hf_heads and getattr(adapter.config, "pruned_heads", None):
        raise EdgeLLMError(
            f"'{adapter.name}' already has pruned heads (config.pruned_heads: "
            f"{dict(adapter.config.pruned_heads)}); its layers no longer have the config's head count",
            "prune heads once, from the unpruned model (heads: 0 still prunes FFN channels and blocks)",
        )
    if get_importance(config.score).needs_data and not calib and scores is None:
        raise EdgeLLMError(
            f"the '{config.score}' score needs calibration data",
            "pass calibration text (--calib DATA; default: the bundled corpus) or use --score l2",
        )
    hf = hf_model(adapter)
    layers = layers_of(adapter)
    h, kv, d, width = geometry(adapter)
    units = head_units(h, kv, d)
    before = adapter.num_parameters
    flops_before = flops(adapter)
    record = PruneRecord(config=vars(config).copy())
    if config.heads > 0 and len(units) == 1:
        raise EdgeLLMError(
            f"{adapter.name} has one {'KV group' if kv < h else 'head'} per layer: removing a fraction of it "
            "would remove every head",
            "prune FFN channels or blocks instead (heads: 0)",
        )
    keep_units = (
        _keep_count(len(units), config.heads, len(units[0][0]), config.multiple_of)
        if config.heads
        else len(units)
    )
    if config.heads and keep_units == len(units):
        raise EdgeLLMError(
            f"heads={config.heads} removes no {'KV group' if kv < h else 'head'} of {len(units)} per layer",
            f"use a ratio of at least {1 / len(units):.3f}",
        )
    keep_ffn = _keep_count(width, config.ffn, 1, config.multiple_of) if config.ffn else width
    if scores is None:
        scores = unit_scores(adapter, lay, units, config.score, calib)
    global_drop = (
        _global_heads(scores["heads"], len(units) - keep_units)
        if config.heads and config.scope == "global"
        else None
    )
    for i, layer in enumerate(layers):
        if config.heads:
            s = scores["heads"][i]
            drop = (
                global_drop[i]
                if global_drop is not None
                else sorted(torch.argsort(s)[: len(units) - keep_units].tolist())
            )
            if not drop:
                continue
            record.heads[i] = drop
            if lay.hf_heads:  # Hugging Face's own head pruning: config.pruned_heads rebuilds it on load
                hf.prune_heads({i: drop})
                continue
            keep = [u for u in range(len(units)) if u not in drop]
            q_idx = torch.tensor([r for u in keep for r in units[u][0]])
            kv_idx = torch.tensor([r for u in keep for r in units[u][1]])
            if lay.fused_qkv:  # one projection: the kept query, key and value rows
                q_n, kv_n = h * d, kv * d
                rows = torch.cat([q_idx, q_n + kv_idx, q_n + kv_n + kv_idx])
                set_module(layer, lay.q, _rows(get_module(layer, lay.q), rows))
            else:
                set_module(layer, lay.q, _rows(get_module(layer, lay.q), q_idx))
                set_module(layer, lay.k, _rows(get_module(layer, lay.k), kv_idx))
                set_module(layer, lay.v, _rows(get_module(layer, lay.v), kv_idx))
            set_module(layer, lay.o, _cols(get_module(layer, lay.o), q_idx))
    for i, layer in enumerate(layers):
        if config.ffn:
            s = scores["ffn"][i]
            idx = torch.sort(torch.argsort(s, descending=True)[:keep_ffn]).values
            rows = torch.cat([idx, width + idx]) if lay.gate_up else idx  # gate and up halves alike
            for p in lay.ffn_in:
                set_module(layer, p, _rows(get_module(layer, p), rows))
            set_module(layer, lay.ffn_out, _cols(get_module(layer, lay.ffn_out), idx))
            record.ffn[i] = width - keep_ffn
    cfg = hf.config
    if config.heads and not lay.hf_heads:
        _fix_attention_modules(layers, keep_units, units, h, kv, d)
        per = len(units[0][0]) // d
        setattr(cfg, lay.heads_attr, keep_units * per)
        if lay.kv_attr:
            setattr(cfg, lay.kv_attr, keep_units if kv < h else keep_units * per)
        cfg.head_dim = d
    if config.ffn:
        setattr(cfg, lay.ffn_attr, keep_ffn)
    if config.blocks:
        record.removed_blocks = _drop_blocks(adapter, layers, scores["blocks"], config.blocks)
    record.params_before = before
    record.params_after = adapter.num_parameters
    record.flops_before = flops_before
    record.flops_after = flops(adapter)
    return record


def _drop_blocks(adapter: Any, layers: nn.ModuleList, score: torch.Tensor, ratio: float) -> list[int]:
    """Remove the lowest-scoring ``ratio`` of whole layers; renumber the kept ones (their cache index, the
    config's per-layer lists) as a model built with that many layers has them. Returns the removed ids."""
    from edgellm.models.families import FAMILIES

    n = len(layers)
    k = n - _keep_count(n, ratio, 1, 1)
    drop = sorted(torch.argsort(score)[:k].tolist())
    kept_ids = [i for i in range(n) if i not in drop]
    kept = nn.ModuleList([layers[i] for i in kept_ids])
    family = FAMILIES[adapter.family]
    hf = hf_model(adapter)
    set_module(hf.base_model if family.kind == "encoder" else hf, family.layers, kept)
    for j, layer in enumerate(kept):
        attn = getattr(layer, "self_attn", None) or getattr(layer, "attn", None)  # Llama / GPT-2
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = j
    cfg = hf.config
    cfg.num_hidden_layers = len(kept)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [t for i, t in enumerate(cfg.layer_types) if i not in drop]
    if getattr(cfg, "pruned_heads", None):  # keyed by layer: the kept layers' new numbers
        old = {int(i): v for i, v in cfg.pruned_heads.items()}
        cfg.pruned_heads = {j: old[i] for j, i in enumerate(kept_ids) if i in old}
    return drop


def _global_heads(scores: list[torch.Tensor], per_layer: int) -> list[list[int]]:
    """Heads to remove when ranking across layers: as many in all as ``per_layer`` in every layer, the
    lowest by score relative to their layer's mean; every layer keeps at least one head."""
    total = per_layer * len(scores)
    ranked = sorted(
        (float(s[j] / (s.mean() if float(s.mean()) else 1.0)), i, j)
        for i, s in enumerate(scores)
        for j in range(len(s))
    )
    drop: list[list[int]] = [[] for _ in scores]
    for _, i, j in ranked:
        if sum(map(len, drop)) >= total:
            break
        if len(scores[i]) - len(drop[i]) > 1:
            drop[i].append(j)
    return [sorted(d) for d in drop]


def _fix_attention_modules(
    layers: nn.ModuleList, keep_units: int, units: list, h: int, kv: int, d: int
) -> None:
    """Llama-family attention caches its head counts at construction: set them to the pruned ones."""
    heads = keep_units * (len(units[0][0]) // d)
    kv_heads = keep_units if kv < h else heads
    for layer in layers:
        attn = layer.self_attn
        for name, val in (("num_heads", heads), ("num_key_value_heads", kv_heads)):
            if hasattr(attn, name):
                setattr(attn, name, val)
        attn.num_key_value_groups = heads // kv_heads
