"""Torch-Pruning (DepGraph, ``torch-pruning`` package) as the baseline for edgellm's structured pruning:
which heads and FFN channels would Torch-Pruning remove at the same ratios?

Torch-Pruning's ``MetaPruner`` runs on a copy of the model with its magnitude importance, whole-head
pruning (``prune_num_heads``, heads grouped by ``num_heads``) and a uniform per-layer ratio; every module
that writes the hidden size (embeddings, attention/FFN output projections, LayerNorms) is ignored, so it
prunes heads and FFN channels only, as edgellm does. Its choice comes back as unit scores (0 for what it
removed) that edgellm's :func:`~edgellm.compress.prune.prune_model` removes the same physical way, so the
two pruned models have exactly the same parameter count and differ only in *which* structures went.
``check`` is the largest difference between Torch-Pruning's own pruned model and that re-applied one.

Llama-family decoders (:func:`tp_scores_llama`): Torch-Pruning chooses the FFN channels; it cannot group
grouped-query attention heads (the query and key/value projections have different widths, which its
dependency graph does not couple), so where heads are pruned too, the heads come from edgellm's ``l2``
(the criterion Torch-Pruning's magnitude matches on BERT) and the row says so.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


def _meta_pruner(model: Any, example: dict[str, Any], ffn: float, ignored: list[Any], **heads: Any) -> Any:
    """Torch-Pruning's MetaPruner as both baselines use it: magnitude (L2, mean over the group), one
    ratio per layer (no global ranking), ``ignored`` modules untouched."""
    import torch_pruning as tp

    return tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=2, group_reduction="mean"),
        global_pruning=False,
        pruning_ratio=ffn,
        ignored_layers=ignored,
        output_transform=lambda out: out.sum(),
        **heads,
    )


def tp_scores(adapter: Any, heads: float, ffn: float, feeds: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Unit scores encoding Torch-Pruning's selection, and the output check against its own pruned model."""
    from transformers.models.bert.modeling_bert import BertSelfAttention

    model = copy.deepcopy(adapter.module).eval()
    bert = model.encoder
    layers = bert.encoder.layer
    n_heads = {}
    where: dict[Any, tuple[int, str]] = {}
    for i, layer in enumerate(layers):
        a = layer.attention.self
        for lin in (a.query, a.key, a.value):
            n_heads[lin] = a.num_attention_heads
            where[lin] = (i, "heads")
        where[layer.intermediate.dense] = (i, "ffn")
    ignored: list[Any] = [bert.embeddings]
    if getattr(bert, "pooler", None) is not None:
        ignored.append(bert.pooler)
    for layer in layers:
        ignored += [layer.attention.output.dense, layer.attention.output.LayerNorm]
        ignored += [layer.output.dense, layer.output.LayerNorm]
    example = {k: torch.as_tensor(v) for k, v in feeds.items()}
    pruner = _meta_pruner(
        model,
        example,
        ffn,
        ignored,
        num_heads=n_heads,
        prune_num_heads=heads > 0,
        prune_head_dims=False,
        head_pruning_ratio=heads,
    )
    d = layers[0].attention.self.attention_head_size
    n_layers = len(layers)
    h = layers[0].attention.self.num_attention_heads
    width = layers[0].intermediate.dense.out_features
    scores = {
        "heads": [torch.ones(h) for _ in range(n_layers)],
        "ffn": [torch.ones(width) for _ in range(n_layers)],
        "blocks": torch.ones(n_layers),
    }
    for group in pruner.step(interactive=True):
        for dep, idxs in group:  # the query (or FFN input) rows it removes, whatever node is the root
            mod = dep.target.module
            if mod in where and pruner.DG.is_out_channel_pruning_fn(dep.handler):
                i, kind = where[mod]
                if kind == "heads":
                    scores["heads"][i][sorted({int(j) // d for j in idxs})] = 0.0
                else:
                    scores["ffn"][i][[int(j) for j in idxs]] = 0.0
        group.prune()
    for m in model.modules():  # Torch-Pruning changes the weights; the attention's own counts follow
        if isinstance(m, BertSelfAttention):
            m.num_attention_heads = pruner.num_heads[m.query]
            m.attention_head_size = m.query.out_features // m.num_attention_heads
            m.all_head_size = m.query.out_features
    with torch.no_grad():
        tp_out = model(**example)
    return scores, tp_out


def removed_counts(scores: dict[str, Any]) -> dict[str, list[int]]:
    return {k: [int((s == 0).sum()) for s in scores[k]] for k in ("heads", "ffn")}


def tp_scores_llama(
    adapter: Any, heads: float, ffn: float, feeds: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    """Torch-Pruning's FFN choice for a Llama-family model (heads: edgellm's l2, see the module docstring);
    its own pruned model's logits when it pruned everything (no heads), else None."""

    from edgellm.compress.prune.importance import unit_scores
    from edgellm.compress.prune.layout import geometry, head_units, layout_of

    model = copy.deepcopy(adapter.module).eval()
    lm = model.lm
    layers = lm.model.layers
    where = {layer.mlp.gate_proj: i for i, layer in enumerate(layers)}
    ignored: list[Any] = [lm.model.embed_tokens, lm.lm_head, lm.model.norm]
    for layer in layers:  # everything that writes the hidden size, and attention (heads are not its to pick)
        a = layer.self_attn
        ignored += [a.q_proj, a.k_proj, a.v_proj, a.o_proj, layer.mlp.down_proj]
        ignored += [layer.input_layernorm, layer.post_attention_layernorm]
    example = {k: torch.as_tensor(v) for k, v in feeds.items()}
    pruner = _meta_pruner(model, example, ffn, ignored)
    h, kv, d, width = geometry(adapter)
    units = head_units(h, kv, d)
    base = unit_scores(adapter, layout_of(adapter), units, "l2", None)
    scores = {"heads": base["heads"], "ffn": [torch.ones(width) for _ in layers], "blocks": base["blocks"]}
    for group in pruner.step(interactive=True):
        for dep, idxs in group:
            mod = dep.target.module
            if mod in where and pruner.DG.is_out_channel_pruning_fn(dep.handler):
                scores["ffn"][where[mod]][[int(j) for j in idxs]] = 0.0
        group.prune()
    out = None
    if not heads:
        with torch.no_grad():
            out = model(**example)
    return scores, out
