"""Where a transformer family keeps what pruning removes: the attention and FFN weights of a block, the
list of blocks, and the head geometry (query heads, KV heads, head_dim, FFN width).

Shared by the importance scores (:mod:`~edgellm.compress.prune.importance`) and the transformer surgery
(:mod:`~edgellm.compress.prune.transformer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgellm.errors import EdgeLLMError


@dataclass(frozen=True)
class Layout:
    """Where one family keeps its attention and FFN weights, relative to a transformer block.

    ``q``, ``k`` and ``v`` may name the same module (GPT-2's ``c_attn``, Phi-3's ``qkv_proj``): its
    output rows are the query heads, then the key heads, then the value heads. With ``gate_up`` the one
    FFN input module's rows are the gate half, then the up half (Phi-3's ``gate_up_proj``). With
    ``conv1d`` the weights are Hugging Face ``Conv1D``s, stored ``[in, out]`` (transposed against
    ``nn.Linear``). With ``hf_heads`` heads are removed by Hugging Face's own ``prune_heads``: the config
    records them per layer (``pruned_heads``) and the model is rebuilt with them on load, for families
    whose config derives the head size from the hidden size.
    """

    q: str
    k: str
    v: str
    o: str
    ffn_in: tuple[str, ...]
    ffn_out: str
    heads_attr: str  # config attribute with the query-head count
    kv_attr: str | None  # config attribute with the key/value-head count (GQA), None for MHA
    ffn_attr: str = "intermediate_size"  # config attribute with the FFN width
    hf_heads: bool = False
    conv1d: bool = False
    gate_up: bool = False

    @property
    def fused_qkv(self) -> bool:
        """Query, key and value are one module's output rows, in that order."""
        return self.q == self.k == self.v

    @property
    def linears(self) -> tuple[str, ...]:
        """Every linear of a block that pruning scores (each once): attention first, then the FFN."""
        return tuple(dict.fromkeys((self.q, self.k, self.v, self.o, *self.ffn_in, self.ffn_out)))

    def weight(self, mod: nn.Module) -> torch.Tensor:
        """``mod``'s weight as ``[out, in]`` (a ``Conv1D``'s transposed)."""
        return mod.weight.T if self.conv1d else mod.weight

    def grad(self, mod: nn.Module) -> torch.Tensor | None:
        """dL/dw of ``mod``'s weight as ``[out, in]``, or None."""
        g = mod.weight.grad
        return g.T if self.conv1d and g is not None else g


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
    hf_heads=True,
)
PHI3 = Layout(
    "self_attn.qkv_proj",  # rows: query heads, key heads, value heads
    "self_attn.qkv_proj",
    "self_attn.qkv_proj",
    "self_attn.o_proj",
    ("mlp.gate_up_proj",),  # rows: gate, then up
    "mlp.down_proj",
    "num_attention_heads",
    "num_key_value_heads",
    gate_up=True,
)
DISTILBERT = Layout(
    "attention.q_lin",
    "attention.k_lin",
    "attention.v_lin",
    "attention.out_lin",
    ("ffn.lin1",),
    "ffn.lin2",
    "n_heads",
    None,
    ffn_attr="hidden_dim",
    hf_heads=True,
)
GPT2 = Layout(
    "attn.c_attn",  # one Conv1D [hidden, 3 x hidden]: query, key, value
    "attn.c_attn",
    "attn.c_attn",
    "attn.c_proj",
    ("mlp.c_fc",),
    "mlp.c_proj",
    "n_head",
    None,
    ffn_attr="n_inner",  # None in a config means 4 x hidden; written explicitly once pruned
    hf_heads=True,
    conv1d=True,
)
LAYOUTS = {
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
    "qwen3": LLAMA,
    "gemma": LLAMA,
    "gemma2": LLAMA,
    "gemma3_text": LLAMA,
    "phi3": PHI3,
    "bert": BERT,
    "roberta": BERT,
    "xlm-roberta": BERT,
    "camembert": BERT,
    "electra": BERT,
    "distilbert": DISTILBERT,
    "gpt2": GPT2,
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
    """(query heads, key/value heads, head_dim, FFN width) of the model's (first) layer."""
    cfg = adapter.config
    lay = layout_of(adapter)
    h = int(getattr(cfg, lay.heads_attr))
    if lay.hf_heads and getattr(cfg, "pruned_heads", None):  # the config keeps the unpruned count
        h -= len({int(k): v for k, v in cfg.pruned_heads.items()}.get(0, ()))
    kv = int(getattr(cfg, lay.kv_attr) or h) if lay.kv_attr else h
    first = layers_of(adapter)[0]
    rows = int(lay.weight(get_module(first, lay.q)).shape[0])  # fused: (h + 2 kv) heads of head_dim
    d = rows // (h + 2 * kv) if lay.fused_qkv else rows // h
    return h, kv, d, int(lay.weight(get_module(first, lay.ffn_out)).shape[1])


def head_units(h: int, kv: int, d: int) -> list[tuple[list[int], list[int]]]:
    """Per unit: (query-row indices, key/value-row indices). A GQA unit is one KV head and its query heads."""
    if kv == h:
        return [(list(range(i * d, (i + 1) * d)), list(range(i * d, (i + 1) * d))) for i in range(h)]
    g = h // kv
    return [(list(range(j * g * d, (j + 1) * g * d)), list(range(j * d, (j + 1) * d))) for j in range(kv)]
