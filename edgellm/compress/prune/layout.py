"""Where a transformer family keeps what pruning removes: the attention and FFN weights of a block, the
list of blocks, and the head geometry (query heads, KV heads, head_dim, FFN width).

Shared by the importance scores (:mod:`~edgellm.compress.prune.importance`) and the transformer surgery
(:mod:`~edgellm.compress.prune.transformer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from edgellm.errors import EdgeLLMError


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

    @property
    def linears(self) -> tuple[str, ...]:
        """Every linear of a block that pruning scores: attention first, then the FFN."""
        return (self.q, self.k, self.v, self.o, *self.ffn_in, self.ffn_out)


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


def layout_of(adapter: Any) -> Layout:
    """The layout of ``adapter``'s family; an error names the families pruning knows."""
    lay = LAYOUTS.get(adapter.family)
    if lay is None:
        raise EdgeLLMError(
            f"structured pruning does not know the layout of '{adapter.family}' models",
            f"prunable transformer families: {', '.join(sorted(LAYOUTS))}; a plain torch module goes "
            "through the dependency graph (edgellm.compress.prune.dependency)",
        )
    return lay


def hf_model(adapter: Any) -> nn.Module:
    """The Hugging Face model inside the adapter's task head (what is saved)."""
    from edgellm.models.heads import hf_of

    return hf_of(adapter.module)


def get_module(mod: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path`` below ``mod``."""
    for p in path.split("."):
        mod = getattr(mod, p)
    return mod


def set_module(mod: nn.Module, path: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` below ``mod`` with ``new``."""
    *parent, last = path.split(".")
    setattr(get_module(mod, ".".join(parent)) if parent else mod, last, new)


def layers_of(adapter: Any) -> nn.ModuleList:
    """The model's list of transformer blocks."""
    from edgellm.models.families import FAMILIES

    family = FAMILIES[adapter.family]
    hf = hf_model(adapter)  # encoder families' paths are relative to the base model (inside a classifier)
    return get_module(hf.base_model if family.kind == "encoder" else hf, family.layers)


def geometry(adapter: Any) -> tuple[int, int, int, int]:
    """(query heads, key/value heads, head_dim, FFN width) of the model's layers."""
    cfg = adapter.config
    lay = layout_of(adapter)
    h = int(getattr(cfg, lay.heads_attr))
    kv = int(getattr(cfg, lay.kv_attr) or h) if lay.kv_attr else h
    first = layers_of(adapter)[0]
    d = get_module(first, lay.q).out_features // h
    return h, kv, d, get_module(first, lay.ffn_out).in_features


def head_units(h: int, kv: int, d: int) -> list[tuple[list[int], list[int]]]:
    """Per unit: (query-row indices, key/value-row indices). A GQA unit is one KV head and its query heads."""
    if kv == h:
        return [(list(range(i * d, (i + 1) * d)), list(range(i * d, (i + 1) * d))) for i in range(h)]
    g = h // kv
    return [(list(range(j * g * d, (j + 1) * g * d)), list(range(j * d, (j + 1) * d))) for j in range(kv)]
