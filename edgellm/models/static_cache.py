"""A decoder with its key/value cache as module buffers, for runtimes that keep state inside the program
(ExecuTorch's LLM export: the cache is a mutable buffer, written in place at ``input_pos``).

:class:`StaticCacheDecoder` wraps a Hugging Face causal LM of the Llama family (Llama, Mistral, Qwen2,
Qwen3) with the model's own modules (embeddings, norms, projections, MLPs, LM head) and one pair of
``[kv_heads, context, head_dim]`` buffers per layer. ``forward(tokens [1, T], input_pos [1])`` embeds
``T`` new tokens at positions ``input_pos .. input_pos + T - 1``, writes their keys/values into the
buffers (``index_put_``), attends over the whole buffer with a mask by position (a key at position ``j``
is seen by a query at ``p`` when ``j <= p``: what is left in the buffer from an earlier sequence beyond
``p`` is never read, so a new sequence needs no clearing) and returns the logits of the last position
``[1, 1, vocab]``. ``T`` is dynamic up to ``max_chunk``: prefill runs in chunks, decode with ``T = 1``.

Grouped-query attention without ``repeat_kv``'s expand: the queries of each key/value head are stacked,
``[kv_heads, T * groups, head_dim]``, so attention is two batched matmuls over ``kv_heads`` (ops every
backend delegates). The rotary tables are computed once by the model's own rotary module for positions
``0 .. context - 1`` (its scaling included) and looked up by position.

Example:
    >>> dec = StaticCacheDecoder(edgellm.models.load("tiny-llama").module.lm, context=256)   # doctest: +SKIP
    >>> dec(torch.tensor([[1, 17, 94]]), torch.tensor([0])).shape                           # doctest: +SKIP
    torch.Size([1, 1, 4096])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgellm.errors import EdgeLLMError
from edgellm.models.decoder_step import StepDims, decoder_parts

STATIC_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
MAX_CHUNK = 64  # positions one call takes at most (prefill runs in chunks of this many)


def _rotate_half_matrix(head_dim: int, dtype: torch.dtype) -> torch.Tensor:
    """``R`` with ``linear(x, R) == cat(-x[..., half:], x[..., :half])`` (Hugging Face's ``rotate_half``):
    a linear with a fixed weight, which XNNPACK delegates at any number of positions (slices of a
    dynamic-shape tensor it does not)."""
    half = head_dim // 2
    r = torch.zeros(head_dim, head_dim, dtype=dtype)
    idx = torch.arange(half)
    r[idx, idx + half] = -1.0
    r[idx + half, idx] = 1.0
    return r


class StaticCacheDecoder(nn.Module):
    """A Llama-family causal LM with a static key/value cache of ``context`` positions (see module doc).

    Args:
        lm: the Hugging Face causal LM (its modules are shared, not copied).
        context: positions the cache holds (at most the model's ``max_position_embeddings``).
        max_chunk: positions one call takes at most.
    """

    def __init__(self, lm: nn.Module, context: int, max_chunk: int = MAX_CHUNK) -> None:
        super().__init__()
        if hasattr(lm, "transformer") or not hasattr(lm, "model"):
            raise EdgeLLMError(
                f"the static-cache decoder takes the {', '.join(STATIC_FAMILIES)} families, not "
                f"'{type(lm).__name__}'",
                "export it through the slot graph (cache layout 'slots')",
            )
        parts = decoder_parts(lm)
        dims = StepDims.of(lm)
        cfg = lm.config
        if not 2 <= context <= dims.context:
            raise EdgeLLMError(f"context {context} is outside 2..{dims.context}", "give a smaller --context")
        for layer in parts.layers:
            attn = layer.self_attn  # Qwen2/3 say per layer; Mistral's config says it for all of them
            window = (
                attn.sliding_window
                if hasattr(attn, "sliding_window")
                else getattr(cfg, "sliding_window", None)
            )
            if window is not None and window < context:
                raise EdgeLLMError(
                    f"layer {attn.layer_idx} attends over a sliding window of {window} positions, "
                    f"shorter than the context {context}",
                    f"give --context {window} or less",
                )
        self.embed, self.norm, self.lm_head = parts.embed, parts.norm, parts.lm_head
        self.layers = nn.ModuleList(parts.layers)
        self.context, self.max_chunk = int(context), int(min(max_chunk, context))
        self.kv_heads, self.head_dim = dims.kv_heads, dims.head_dim
        self.heads = int(cfg.num_attention_heads)
        self.groups = self.heads // self.kv_heads
        self.scale = float(getattr(parts.layers[0].self_attn, "scaling", self.head_dim**-0.5))
        with torch.no_grad():
            probe = torch.zeros(1, 1, dtype=parts.embed.weight.dtype)
            cos, sin = parts.rotary(probe, torch.arange(context)[None])  # [1, context, head_dim]
        self.register_buffer("rope_cos", cos[0].contiguous(), persistent=False)
        self.register_buffer("rope_sin", sin[0].contiguous(), persistent=False)
        # the queries' tables carry the attention scale: one multiply less per layer
        self.register_buffer("rope_cos_q", (cos[0] * self.scale).contiguous(), persistent=False)
        self.register_buffer("rope_sin_q", (sin[0] * self.scale).contiguous(), persistent=False)
        self.register_buffer("rotate", _rotate_half_matrix(self.head_dim, cos.dtype), persistent=False)
        # keys stored transposed, [kv, hd, context]: the score matmul reads them without a transpose copy
        k_shape, v_shape = (
            (self.kv_heads, self.head_dim, self.context),
            (self.kv_heads, self.context, self.head_dim),
        )
        dtype = parts.embed.weight.dtype
        for i in range(len(self.layers)):
            self.register_buffer(f"k_cache_{i}", torch.zeros(k_shape, dtype=dtype), persistent=False)
            self.register_buffer(f"v_cache_{i}", torch.zeros(v_shape, dtype=dtype), persistent=False)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        pos = input_pos + torch.arange(t, dtype=input_pos.dtype)  # [T] absolute positions
        rope = [
            nn.functional.embedding(pos, table).view(-1, 1, self.head_dim)  # [T, 1, hd]
            for table in (self.rope_cos_q, self.rope_sin_q, self.rope_cos, self.rope_sin)
        ]
        # row r of the stacked queries is position pos[r // groups]; it sees keys at positions <= that
        rows = input_pos + torch.div(torch.arange(t * self.groups), self.groups, rounding_mode="floor")
        seen = torch.arange(self.context)[None, :] <= rows[:, None]  # [T * groups, context]
        zero = torch.zeros((), dtype=self.rope_cos.dtype)
        mask = torch.where(seen, zero, torch.full((), torch.finfo(self.rope_cos.dtype).min))
        h = self.embed(tokens)  # [1, T, hidden]
        for i, layer in enumerate(self.layers):
            h = h + self._attention(layer, layer.input_layernorm(h), i, pos, rope, mask)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.lm_head(self.norm(h[:, -1:]))  # [1, 1, vocab]

    def _attention(
        self,
        layer: nn.Module,
        x: torch.Tensor,
        i: int,
        pos: torch.Tensor,
        rope: list[torch.Tensor],
        mask: torch.Tensor,
    ) -> torch.Tensor:
        attn: Any = layer.self_attn
        # shapes with -1 for the dynamic T: XNNPACK delegates a reshape with one inferred, no symbolic dim
        kv, g, hd = self.kv_heads, self.groups, self.head_dim
        q = attn.q_proj(x).view(-1, self.heads, hd)  # [T, H, hd]
        k = attn.k_proj(x).view(-1, kv, hd)
        v = attn.v_proj(x).view(-1, kv, hd)
        if getattr(attn, "q_norm", None) is not None:  # Qwen3: RMSNorm over each head
            q, k = attn.q_norm(q), attn.k_norm(k)
        cos_q, sin_q, cos, sin = rope
        q = q * cos_q + nn.functional.linear(q, self.rotate) * sin_q  # rotary, and the 1/sqrt(hd) scale
        k = k * cos + nn.functional.linear(k, self.rotate) * sin
        k_cache, v_cache = getattr(self, f"k_cache_{i}"), getattr(self, f"v_cache_{i}")
        k_cache[:, :, pos] = k.permute(1, 2, 0)  # index_put_ at the new positions (in place in the program)
        v_cache[:, pos] = v.transpose(0, 1)
        # head h = kv_head * groups + group (repeat_kv's order): stack each kv head's queries by row
        q = q.view(-1, kv, g, hd).permute(1, 0, 2, 3).contiguous().view(kv, -1, hd)  # [kv, T * g, hd]
        scores = torch.bmm(q, k_cache) + mask  # [kv, T * g, context]
        out = torch.bmm(torch.softmax(scores, dim=-1), v_cache)  # [kv, T * g, hd]
        out = out.view(kv, -1, g, hd).permute(1, 0, 2, 3).contiguous().view(1, -1, self.heads * hd)
        return attn.o_proj(out)


def static_decoder(adapter: Any, context: int, max_chunk: int = MAX_CHUNK) -> StaticCacheDecoder:
    """:class:`StaticCacheDecoder` of a loaded causal LM, or an error naming the families it takes."""
    if adapter.task != "causal-lm" or adapter.family not in STATIC_FAMILIES:
        raise EdgeLLMError(
            f"the static key/value-cache program takes {', '.join(STATIC_FAMILIES)}; '{adapter.name}' is "
            f"'{adapter.family}' ({adapter.task})",
            "export it through the slot graph (cache layout 'slots')",
        )
    return StaticCacheDecoder(adapter.module.lm, context, max_chunk).eval()


__all__ = ["MAX_CHUNK", "STATIC_FAMILIES", "StaticCacheDecoder", "static_decoder"]
