"""Structured pruning of Hugging Face transformers: attention heads, FFN channels and whole blocks.

The result is an ordinary, smaller model of the same architecture (fewer heads, a narrower FFN, fewer
layers, written into its ``config.json``), so every exporter, the partitioner and the trainer take it as is.

- **Heads.** Under grouped-query attention the unit is a KV group: one key/value head and the query
  heads that read it are removed together, so ``num_attention_heads / num_key_value_heads`` stays whole.
  With plain multi-head attention the unit is one head. ``head_dim`` is written explicitly (it no longer
  equals ``hidden_size / num_attention_heads``).
- **FFN channels.** Gate/up rows and the matching down-projection columns (Llama family); intermediate
  rows and output columns (BERT family).
- **Blocks.** The least important whole layers (by the same score summed over the block).

The same number of units is removed in every layer (a Hugging Face config holds one head count and one
FFN width for all layers); *which* units go is decided per layer by the score. ``scope="global"`` ranks
heads across layers instead (each layer keeps at least one): BERT-family configs record per-layer heads
(``pruned_heads``), so there it is allowed for heads; a Llama-family config cannot hold per-layer widths.

Plain torch modules (CNNs, MLPs) go through the dependency graph of
:mod:`edgellm.compress.prune.graph` instead (``channels``: the fraction of coupled channels to remove). ``multiple_of`` rounds
what is kept (heads x head_dim, FFN width) to a multiple of 8/16 for fast kernels.

Scores (``edgellm.compress.prune.scores``): ``l1`` / ``l2`` weight magnitude, ``taylor`` (first order,
|w * dL/dw| on calibration data) and ``wanda`` (|w| times the input activation norm, Sun et al. 2023),
each aggregated over every weight of the unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from edgellm.errors import EdgeLLMError

Score = Literal["l1", "l2", "taylor", "wanda"]
NEEDS_DATA = ("taylor", "wanda")


@dataclass
class PruneConfig:
    """What to remove: fractions of heads (KV groups) and FFN channels per layer and of whole blocks
    (transformers), or of coupled channels (``channels``, plain torch modules)."""

    heads: float = 0.0
    ffn: float = 0.0
    blocks: float = 0.0
    channels: float = 0.0
    score: Score = "l2"
    multiple_of: int = 1
    scope: Literal["layer", "global"] = "layer"

    def __post_init__(self) -> None:
        for name in ("heads", "ffn", "blocks", "channels"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise EdgeLLMError(
                    f"prune ratio {name}={v} is outside (0, 1)",
                    "give the fraction of units to remove, e.g. 0.25 (0 keeps them all)",
                )
        if self.heads == self.ffn == self.blocks == self.channels == 0.0:
            raise EdgeLLMError(
                "nothing to prune: every ratio is 0",
                "set heads, ffn or blocks (transformers) or channels, e.g. 0.25",
            )
        if self.scope not in ("layer", "global"):
            raise EdgeLLMError(
                f"unknown scope '{self.scope}'", "use layer (same fraction per layer) or global"
            )
        if self.score not in ("l1", "l2", "taylor", "wanda"):
            from edgellm import plugins

            if plugins.load("edgellm.scores", self.score) is None:
                extra = plugins.names("edgellm.scores")
                raise EdgeLLMError(
                    f"unknown importance score '{self.score}'",
                    "use l1, l2, taylor or wanda" + (f", or a plugin's: {', '.join(extra)}" if extra else ""),
                )
        if self.multiple_of < 1:
            raise EdgeLLMError(f"multiple_of {self.multiple_of} < 1", "use 1, 8 or 16")


@dataclass
class Layout:
    """Where one family keeps its attention and FFN weights, relative to a transformer block."""

    q: str
    k: str
    v: str
    o: str
    ffn_in: tuple[str, ...]
    ffn_out: str
    heads_attr: str  # config attribute with the query-head count
    kv_attr: str | None  # config attribute with the key/value-head count (GQA), None for MHA


LLAMA = Layout(
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.down_proj",
    "num_attention_heads",
    "num_key_value_heads",
)
BERT = Layout(
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    ("intermediate.dense",),
    "output.dense",
    "num_attention_heads",
    None,
)
LAYOUTS = {
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
    "qwen3": LLAMA,
    "bert": BERT,
    "roberta": BERT,
    "xlm-roberta": BERT,
    "camembert": BERT,
    "electra": BERT,
}


@dataclass
class PruneRecord:
    """What was removed, for the manifest: per layer the kept/removed unit indices, and the totals."""

    config: dict[str, Any]
    removed_blocks: list[int] = field(default_factory=list)
    heads: dict[int, list[int]] = field(default_factory=dict)  # layer -> removed head (or KV group) ids
    ffn: dict[int, int] = field(default_factory=dict)  # layer -> channels removed
    widths: dict[str, list[int]] = field(default_factory=dict)  # plain modules: module -> [before, after]
    params_before: int = 0
    params_after: int = 0
    flops_before: int = 0
    flops_after: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "removed_blocks": self.removed_blocks,
            "removed_heads": {str(k): v for k, v in self.heads.items()},
            "removed_ffn_channels": {str(k): v for k, v in self.ffn.items()},
            **({"channel_widths": self.widths} if self.widths else {}),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "params_ratio": round(self.params_after / max(1, self.params_before), 4),
            **(
                {
                    "flops_before": self.flops_before,
                    "flops_after": self.flops_after,
                    "flops_ratio": round(self.flops_after / max(1, self.flops_before), 4),
                }
                if self.flops_before
                else {}
            ),
        }


def hf_model(adapter: Any) -> nn.Module:
    """The Hugging Face model inside the adapter's task head (what is saved)."""
    from edgellm.models.heads import hf_of

    return hf_of(adapter.module)


def _get(mod: nn.Module, path: str) -> nn.Module:
    for p in path.split("."):
        mod = getattr(mod, p)
    return mod


def _set(mod: nn.Module, path: str, new: nn.Module) -> None:
    *parent, last = path.split(".")
    setattr(_get(mod, ".".join(parent)) if parent else mod, last, new)


def layout_of(adapter: Any) -> Layout:
    lay = LAYOUTS.get(adapter.family)
    if lay is None:
        raise EdgeLLMError(
            f"structured pruning does not know the layout of '{adapter.family}' models",
            f"prunable transformer families: {', '.join(sorted(LAYOUTS))}; a plain torch module goes "
            "through the dependency graph (edgellm.compress.prune.graph)",
        )
    return lay


def _layers(adapter: Any) -> nn.ModuleList:
    from edgellm.models.families import FAMILIES

    family = FAMILIES[adapter.family]
    hf = hf_model(adapter)  # encoder families' paths are relative to the base model (inside a classifier)
    return _get(hf.base_model if family.kind == "encoder" else hf, family.layers)


def geometry(adapter: Any) -> tuple[int, int, int, int]:
    """(query heads, key/value heads, head_dim, FFN width) of the model's layers."""
    cfg = adapter.config
    lay = layout_of(adapter)
    h = int(getattr(cfg, lay.heads_attr))
    kv = int(getattr(cfg, lay.kv_attr) or h) if lay.kv_attr else h
    first = _layers(adapter)[0]
    d = _get(first, lay.q).out_features // h
    return h, kv, d, _get(first, lay.ffn_out).in_features


def _keep_count(n: int, ratio: float, unit: int, multiple_of: int) -> int:
    """Units to keep out of ``n`` when removing ``ratio``; the kept width (units x unit) is rounded up to
    a multiple of ``multiple_of`` where that is possible."""
    keep = max(1, n - math.floor(n * ratio + 1e-9))
    if multiple_of > 1:
        step = multiple_of // math.gcd(multiple_of, unit)
        keep = min(n, math.ceil(keep / step) * step)
    return keep


# -- physical removal ---------------------------------------------------------------------------------------
def _rows(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    new = nn.Linear(lin.in_features, len(idx), bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(lin.weight[idx])
        if lin.bias is not None:
            new.bias.copy_(lin.bias[idx])
    return new


def _cols(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    new = nn.Linear(len(idx), lin.out_features, bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(lin.weight[:, idx])
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    return new


def head_units(h: int, kv: int, d: int) -> list[tuple[list[int], list[int]]]:
    """Per unit: (query-row indices, key/value-row indices). A GQA unit is one KV head and its query heads."""
    if kv == h:
        return [(list(range(i * d, (i + 1) * d)), list(range(i * d, (i + 1) * d))) for i in range(h)]
    g = h // kv
    return [(list(range(j * g * d, (j + 1) * g * d)), list(range(j * d, (j + 1) * d))) for j in range(kv)]


def prune(
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

    The adapter's own bookkeeping (blocks, parameter count) is stale afterwards: save the model with
    :func:`save_pruned` and load that directory (what :func:`prune_model` does).

    Raises:
        EdgeLLMError: an unknown layout, a score that needs calibration data without it, or a ratio
            that would remove every head of a layer.
    """
    from edgellm.compress.prune.scores import unit_scores

    if adapter.family == "torch":
        return _prune_module(adapter, config, calib)
    if config.channels:
        raise EdgeLLMError(
            "channels is the ratio for plain torch modules", "prune a transformer by heads, ffn or blocks"
        )
    lay = layout_of(adapter)
    if config.scope == "global" and (lay is not BERT or config.ffn):
        raise EdgeLLMError(
            f"global ratios give layers different widths, which a '{adapter.family}' config cannot hold for "
            f"{'FFN channels' if config.ffn else 'heads'} (one count for all layers)",
            "use scope: layer"
            + (" (global works for the heads of BERT-family encoders)" if lay is BERT else ""),
        )
    if _needs_data(config.score) and not calib and scores is None:
        raise EdgeLLMError(
            f"the '{config.score}' score needs calibration data",
            "pass calibration text (--calib DATA; default: the bundled corpus) or use --score l2",
        )
    hf = hf_model(adapter)
    layers = _layers(adapter)
    h, kv, d, width = geometry(adapter)
    units = head_units(h, kv, d)
    before = sum(p.numel() for p in adapter.module.parameters())
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
            if lay is BERT:  # Hugging Face's own head pruning: config.pruned_heads rebuilds it on load
                hf.prune_heads({i: drop})
                continue
            keep = [u for u in range(len(units)) if u not in drop]
            q_idx = torch.tensor([r for u in keep for r in units[u][0]])
            kv_idx = torch.tensor([r for u in keep for r in units[u][1]])
            _set(layer, lay.q, _rows(_get(layer, lay.q), q_idx))
            _set(layer, lay.k, _rows(_get(layer, lay.k), kv_idx))
            _set(layer, lay.v, _rows(_get(layer, lay.v), kv_idx))
            _set(layer, lay.o, _cols(_get(layer, lay.o), q_idx))
    for i, layer in enumerate(layers):
        if config.ffn:
            s = scores["ffn"][i]
            idx = torch.sort(torch.argsort(s, descending=True)[:keep_ffn]).values
            for p in lay.ffn_in:
                _set(layer, p, _rows(_get(layer, p), idx))
            _set(layer, lay.ffn_out, _cols(_get(layer, lay.ffn_out), idx))
            record.ffn[i] = width - keep_ffn
    cfg = hf.config
    if config.heads and lay is not BERT:
        _fix_attention_modules(layers, keep_units, units, h, kv, d)
        per = len(units[0][0]) // d
        setattr(cfg, lay.heads_attr, keep_units * per)
        if lay.kv_attr:
            setattr(cfg, lay.kv_attr, keep_units if kv < h else keep_units * per)
        cfg.head_dim = d
    if config.ffn:
        cfg.intermediate_size = keep_ffn
    if config.blocks:
        n = len(layers)
        k = n - _keep_count(n, config.blocks, 1, 1)
        block_score = scores["blocks"]
        drop_blocks = sorted(torch.argsort(block_score)[:k].tolist())
        kept = nn.ModuleList([layers[i] for i in range(n) if i not in drop_blocks])
        from edgellm.models.families import FAMILIES

        _set(hf, FAMILIES[adapter.family].layers, kept)
        for j, layer in enumerate(kept):
            attn = getattr(layer, "self_attn", None)
            if attn is not None and hasattr(attn, "layer_idx"):
                attn.layer_idx = j
        cfg.num_hidden_layers = len(kept)
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = [t for i, t in enumerate(cfg.layer_types) if i not in drop_blocks]
        record.removed_blocks = drop_blocks
    record.params_before = before
    record.params_after = sum(p.numel() for p in adapter.module.parameters())
    record.flops_before = flops_before
    record.flops_after = flops(adapter)
    return record


def _needs_data(score: str) -> bool:
    from edgellm import plugins

    return score in NEEDS_DATA or bool(getattr(plugins.SCORES.get(score), "needs_data", False))


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


def _prune_module(adapter: Any, config: PruneConfig, calib: list[dict[str, Any]] | None) -> PruneRecord:
    """A plain torch module through the dependency graph (:mod:`edgellm.compress.prune.graph`)."""
    from edgellm.compress.prune import graph

    if config.heads or config.ffn or config.blocks:
        raise EdgeLLMError(
            f"'{adapter.name}' is a plain torch module: it has no heads, FFN or blocks to prune by family",
            "give channels: the fraction of coupled channels to remove, e.g. 0.25",
        )
    if config.score not in ("l1", "l2", "taylor", "wanda"):
        raise EdgeLLMError(
            f"score '{config.score}' scores transformer heads and FFN channels; plain modules go through the "
            "dependency graph",
            "use l1, l2, taylor or wanda",
        )
    if config.score in NEEDS_DATA and not calib:
        raise EdgeLLMError(
            f"the '{config.score}' score needs calibration data",
            "pass calibration inputs, or use the l1 / l2 score",
        )
    assert adapter.example is not None
    g = graph.trace(adapter.module, adapter.example)
    scores = graph.unit_scores(adapter.module, g, config.score, calib)
    drop = graph.choose(g, scores, config.channels, config.scope, config.multiple_of)
    before = sum(p.numel() for p in adapter.module.parameters())
    record = PruneRecord(config=vars(config).copy(), params_before=before)
    record.flops_before = flops(adapter)
    record.widths = graph.remove(adapter.module, g, drop)
    record.params_after = sum(p.numel() for p in adapter.module.parameters())
    record.flops_after = flops(adapter)
    return record


def flops(adapter: Any, feeds: dict[str, Any] | None = None) -> int:
    """Floating-point operations of one forward pass on ``feeds`` (default: the model's fixed inputs),
    counted by torch's FLOP counter (a multiply-add is 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    f = feeds if feeds is not None else adapter.fixed_inputs()
    args = [torch.as_tensor(f[s.name]) for s in adapter.inputs]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        adapter.module(*args)
    return int(counter.get_total_flops())


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


def save_pruned(adapter: Any, record: PruneRecord, dest: Any) -> Any:
    """The pruned model as an ordinary model directory (config, safetensors, tokenizer, ``pruning.json``)."""
    import json
    from pathlib import Path

    from edgellm.models.loader import copy_sentence_transformers_files
    from edgellm.utils.fs import atomic_dir

    if adapter.family == "torch":  # a plain module: its own directory format (edgellm.models.loader)
        from edgellm.models.loader import save_module

        with atomic_dir(dest, force=True) as tmp:
            save_module(adapter, tmp)
            (tmp / "pruning.json").write_text(json.dumps(record.to_dict(), indent=2) + "\n")
        return Path(dest)
    hf = hf_model(adapter)
    with atomic_dir(dest, force=True) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        if adapter.tokenizer is not None:
            adapter.tokenizer.save_pretrained(tmp)
        if adapter.source.get("path") and adapter.task == "embedding":
            copy_sentence_transformers_files(adapter.source["path"], tmp)
        (tmp / "pruning.json").write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    return Path(dest)


def prune_model(
    model: Any,
    config: PruneConfig,
    dest: Any,
    calib: list[dict[str, Any]] | None = None,
    *,
    scores: dict[str, Any] | None = None,
) -> tuple[Any, PruneRecord]:
    """Load ``model`` (name, directory or adapter), prune it, save it to ``dest``; returns the reloaded
    pruned adapter and the record (``scores``: see :func:`prune`)."""
    import copy

    from edgellm.models import ModelAdapter, load

    adapter = copy.deepcopy(model) if isinstance(model, ModelAdapter) else load(model)
    record = prune(adapter, config, calib, scores=scores)
    save_pruned(adapter, record, dest)
    return load(dest, task=adapter.task), record
