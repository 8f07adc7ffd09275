"""Cached step graphs of decoder LMs: a range of a model's decoder layers as one graph with explicit
key/value caches, for generation that runs the model in pieces (split generation: the phone the first
layers, the server the rest, each holding the cache of its own layers).

A *step* graph serves prefill and decode alike. Its inputs are the new positions (token ids on the
device half, hidden states on the server half), the attention mask over past + new positions, the new
positions' ids, and the past keys and values of the half's layers (``[batch, kv_heads, past, head_dim]``
each); its outputs are the new positions' hidden states (device) or logits (server) and the present keys
and values (past + new). Prefill is a step with a past of length 0, a decode step has one new token.

The same graph over all layers (:func:`whole_step`: token ids in, logits out) is a generation artifact of
the unsplit model. The steps reuse the model's own decoder layers (Llama family: Llama, Mistral, Qwen2,
Qwen3; and GPT-2, whose positions are learned embeddings added to the token embeddings): the layers
see an explicit cache object whose ``update`` concatenates past and new keys/values, so the arithmetic is
Hugging Face's and the graph exports with the cache as plain tensors. :func:`step_adapter` makes either
half an adapter for the exporters with dynamic ``batch`` / ``new`` / ``past`` / ``total`` axes: ONNX
Runtime on the server and ORT-mobile on the phone run prefill and decode from the same file. A TFLite
file has static shapes, so the phone's TFLite half is a *slot* graph (:class:`DecoderSlotStep`): one new
token per call, a cache of ``slots`` positions written at a one-hot slot, a mask of the filled slots; the
phone runs the prompt through it token by token and sends the prompt's hidden states to the server at
once, as the ORT-mobile half does (:class:`edgellm.split.stepper.DeviceStepper` hides the difference).

Example:
    >>> halves = cache_halves(edgellm.models.load("tiny-llama"), 2)           # doctest: +SKIP
    >>> dev, srv = torch_runner(halves.device, "device"), torch_runner(halves.server, "server")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgellm.errors import EdgeLLMError

CACHE_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gpt2")
HIDDEN = "hidden"


class _StepCache:
    """The cache a layer sees inside a step graph: past keys/values in, past + new out."""

    def __init__(self, past: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.past = past
        self.present: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, cache_kwargs: Any = None):
        pk, pv = self.past[layer_idx]
        k, v = torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2)
        self.present[layer_idx] = (k, v)
        return k, v


def step_mask(attention_mask: torch.Tensor, new: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask ``[batch, 1, new, past + new]``: query ``i`` (absolute position ``past + i``) sees
    key ``j`` when ``j <= past + i`` and key ``j`` is not padding."""
    total = attention_mask.shape[1]
    q = torch.arange(new, device=attention_mask.device) + (total - new)
    k = torch.arange(total, device=attention_mask.device)
    allowed = (k[None, :] <= q[:, None])[None, None] & attention_mask[:, None, None, :].bool()
    zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
    return torch.where(allowed, zero, torch.full((), torch.finfo(dtype).min, dtype=dtype))


@dataclass
class DecoderParts:
    """Where a causal LM keeps what a step graph needs (the family's layout)."""

    embed: nn.Module
    pos_embed: nn.Module | None  # GPT-2's learned positions; None for rotary families
    layers: list[nn.Module]
    rotary: nn.Module | None
    norm: nn.Module
    lm_head: nn.Module


def decoder_parts(lm: nn.Module) -> DecoderParts:
    """The step-graph parts of a Hugging Face causal LM of a :data:`CACHE_FAMILIES` family."""
    if hasattr(lm, "transformer") and hasattr(lm.transformer, "wpe"):  # GPT-2
        t = lm.transformer
        return DecoderParts(t.wte, t.wpe, list(t.h), None, t.ln_f, lm.lm_head)
    base = lm.model
    return DecoderParts(base.embed_tokens, None, list(base.layers), base.rotary_emb, base.norm, lm.lm_head)


def _layer_idx(layer: nn.Module) -> int:
    attn = getattr(layer, "self_attn", None) or layer.attn
    return int(attn.layer_idx)


class DecoderStep(nn.Module):
    """Layers ``[start, end)`` of a causal LM as one cached step; with ``embed`` it embeds token ids
    (and their learned positions), with ``head`` it ends with the final norm and the LM head."""

    def __init__(self, lm: nn.Module, start: int, end: int, *, embed: bool, head: bool) -> None:
        super().__init__()
        parts = decoder_parts(lm)
        self.embed = parts.embed if embed else None
        self.pos_embed = parts.pos_embed if embed else None
        self.layers = nn.ModuleList(parts.layers[start:end])
        self.rotary = parts.rotary
        self.norm = parts.norm if head else None
        self.lm_head = parts.lm_head if head else None
        self.ids = [_layer_idx(layer) for layer in self.layers]

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor
    ):
        h = self.embed_ids(x, position_ids) if self.embed is not None else x
        cache = _StepCache({i: (past[2 * n], past[2 * n + 1]) for n, i in enumerate(self.ids)})
        h = self.run_layers(h, step_mask(attention_mask, h.shape[1], h.dtype), position_ids, cache)
        return (self.head(h), *[t for i in self.ids for t in cache.present[i]])

    def embed_ids(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        return h if self.pos_embed is None else h + self.pos_embed(position_ids)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.lm_head is None else self.lm_head(self.norm(h))

    def run_layers(
        self, h: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """The step's decoder layers over ``h`` with an additive ``mask`` and a cache object."""
        if self.rotary is None:  # GPT-2: positions were added to the embeddings
            for layer in self.layers:
                out = layer(h, past_key_values=cache, attention_mask=mask)
                h = out[0] if isinstance(out, tuple) else out
            return h
        rope = self.rotary(h, position_ids)
        for layer in self.layers:
            out = layer(
                h,
                attention_mask=mask,
                position_ids=position_ids,
                past_key_values=cache,
                position_embeddings=rope,
            )
            h = out[0] if isinstance(out, tuple) else out
        return h


class _SlotCache:
    """A fixed-size cache: the new key/value is written at the one-hot slot ``write`` (static shapes)."""

    def __init__(self, past: dict[int, tuple[torch.Tensor, torch.Tensor]], write: torch.Tensor) -> None:
        self.past, self.w = past, write[:, None, :, None]  # [1, 1, slots, 1]
        self.present: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, cache_kwargs: Any = None):
        pk, pv = self.past[layer_idx]
        k = pk * (1.0 - self.w) + key * self.w
        v = pv * (1.0 - self.w) + value * self.w
        self.present[layer_idx] = (k, v)
        return k, v


class DecoderSlotStep(nn.Module):
    """The device half with a fixed-size cache, for static-shape runtimes (TFLite): one token per call.

    Inputs: ``input_ids`` [1, 1], ``position_ids`` [1, 1], ``cache_mask`` [1, slots] (1 for every filled
    slot, the one written now included), ``write`` [1, slots] (float one-hot of the slot written now) and
    the past keys/values [1, kv_heads, slots, head_dim]; outputs the hidden state and the updated caches."""

    def __init__(self, step: DecoderStep) -> None:
        super().__init__()
        self.step = step

    def forward(self, x, position_ids, cache_mask, write, *past):
        st = self.step
        h = st.embed_ids(x, position_ids)
        cache = _SlotCache({i: (past[2 * n], past[2 * n + 1]) for n, i in enumerate(st.ids)}, write)
        zero = torch.zeros((), dtype=h.dtype)
        mask = torch.where(
            cache_mask[:, None, None, :].bool(), zero, torch.full((), torch.finfo(h.dtype).min, dtype=h.dtype)
        )
        h = st.run_layers(h, mask, position_ids, cache)
        return (st.head(h), *[t for i in st.ids for t in cache.present[i]])


@dataclass
class StepDims:
    """The sizes a step graph's inputs and caches have."""

    kv_heads: int
    head_dim: int
    hidden_size: int
    vocab: int
    context: int  # positions the model was trained for (max_position_embeddings)

    @classmethod
    def of(cls, lm: nn.Module) -> StepDims:
        cfg = lm.config
        heads = int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)
        hidden = int(cfg.hidden_size)
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
        pruned = getattr(cfg, "pruned_heads", None) or {}
        if pruned:  # heads pruned per layer (GPT-2): the config keeps the unpruned count
            left = {heads - len(pruned.get(i, ())) for i in range(int(cfg.num_hidden_layers))}
            if len(left) > 1:
                raise EdgeLLMError(
                    f"the layers keep different numbers of heads ({sorted(left)}, config.pruned_heads), "
                    "so their key/value caches cannot share one shape",
                    "prune heads with scope layer (the same number in every layer) for generation",
                )
            kv_heads = left.pop()
        return cls(
            kv_heads,
            head_dim,
            hidden,
            int(cfg.vocab_size),
            int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 2048)),
        )


@dataclass
class CacheHalves:
    """Both halves of a decoder cut after ``layers`` blocks, as cached step graphs."""

    layers: int  # decoder layers on the device
    device: DecoderStep
    server: DecoderStep
    kv_heads: int
    head_dim: int
    hidden_size: int
    vocab: int

    @property
    def dims(self) -> StepDims:
        return StepDims(self.kv_heads, self.head_dim, self.hidden_size, self.vocab, 0)

    def empty_past(self, half: str, batch: int = 1) -> list[np.ndarray]:
        n = len((self.device if half == "device" else self.server).ids)
        z = np.zeros((batch, self.kv_heads, 0, self.head_dim), np.float32)
        return [z] * (2 * n)


def check_cache_family(adapter: Any, what: str = "generation") -> None:
    """A causal LM of a family with a cache graph, or an error naming the supported families."""
    if adapter.task != "causal-lm" or adapter.family not in CACHE_FAMILIES:
        raise EdgeLLMError(
            f"{what} needs a causal LM with a key/value-cache graph; '{adapter.name}' is "
            f"'{adapter.family}' ({adapter.task})",
            f"supported families: {', '.join(CACHE_FAMILIES)}",
        )


def whole_step(adapter: Any) -> tuple[DecoderStep, StepDims]:
    """All layers of a causal LM as one cached step graph (token ids in, logits out), and its sizes."""
    check_cache_family(adapter)
    lm = adapter.module.lm
    n = len(decoder_parts(lm).layers)
    return DecoderStep(lm, 0, n, embed=True, head=True).eval(), StepDims.of(lm)


def cache_halves(adapter: Any, layers: int) -> CacheHalves:
    """Cut a causal LM after ``layers`` decoder layers (0..L: 0 sends the embeddings, L leaves only the
    final norm and the LM head on the server)."""
    check_cache_family(adapter, "split generation")
    lm = adapter.module.lm
    n = len(decoder_parts(lm).layers)
    if not 0 <= layers <= n:
        raise EdgeLLMError(f"cut after {layers} layers is outside 0..{n}", f"'{adapter.name}' has {n} layers")
    d = StepDims.of(lm)
    return CacheHalves(
        layers,
        DecoderStep(lm, 0, layers, embed=True, head=False).eval(),
        DecoderStep(lm, layers, n, embed=False, head=True).eval(),
        d.kv_heads,
        d.head_dim,
        d.hidden_size,
        d.vocab,
    )


def step_names(half: DecoderStep, role: str) -> tuple[list[str], list[str]]:
    """Input and output names of a step graph; ``role`` is ``device`` (ids in, hidden states out),
    ``server`` (hidden states in, logits out) or ``decoder`` (the whole model: ids in, logits out)."""
    first = "input_ids" if role in ("device", "decoder") else HIDDEN
    past = [f"past_{kind}_{i}" for i in half.ids for kind in ("key", "value")]
    present = [f"present_{kind}_{i}" for i in half.ids for kind in ("key", "value")]
    out = HIDDEN if role == "device" else "logits"
    return [first, "attention_mask", "position_ids", *past], [out, *present]


def _half(halves: CacheHalves, role: str) -> DecoderStep:
    return halves.device if role == "device" else halves.server


def slot_adapter(halves: Any, name: str, slots: int, *, role: str = "device") -> Any:
    """A step (the device half of ``halves``, or a whole-model ``(step, dims)`` with ``role="decoder"``)
    as a slot graph (:class:`DecoderSlotStep`) for static-shape exporters (TFLite): every shape fixed,
    batch 1, a cache of ``slots`` positions."""
    from edgellm.models import load
    from edgellm.utils.specs import TensorSpec

    step, dims = (_half(halves, role), halves.dims) if isinstance(halves, CacheHalves) else halves
    ins, outs = step_names(step, role)
    rng = np.random.default_rng(0)
    filled = max(1, min(slots - 1, 5))
    write = np.zeros((1, slots), np.float32)
    write[0, filled] = 1.0
    mask = np.zeros((1, slots), np.int64)
    mask[0, : filled + 1] = 1
    example = {
        "input_ids": rng.integers(0, dims.vocab, size=(1, 1)).astype(np.int64),
        "position_ids": np.asarray([[filled]], np.int64),
        "cache_mask": mask,
        "write": write,
        **{
            n: rng.standard_normal((1, dims.kv_heads, slots, dims.head_dim)).astype(np.float32)
            for n in ins[3:]
        },
    }
    axes = {n: {} for n in example}  # every shape static
    adapter = load(
        DecoderSlotStep(step).eval(),
        example_inputs=example,
        output_names=outs,
        dynamic_axes=axes,
        name=name,
    )
    last = dims.hidden_size if role == "device" else dims.vocab
    adapter.outputs = [TensorSpec(outs[0], "float32", [1, 1, last])] + [
        TensorSpec(n, "float32", [1, dims.kv_heads, slots, dims.head_dim]) for n in outs[1:]
    ]
    adapter.int_high = {"input_ids": dims.vocab, "position_ids": filled + 1, "cache_mask": 2}
    return adapter


def step_adapter(halves: Any, role: str, name: str, *, past: int = 3, new: int = 4) -> Any:
    """A step (a half of ``halves``, or a whole-model ``(step, dims)`` with ``role="decoder"``) as a
    :class:`~edgellm.models.ModelAdapter` for the exporters: example inputs with a past of ``past``
    positions and ``new`` new ones; axes ``batch``, ``new``, ``past``, ``total`` are dynamic."""
    from edgellm.models import load
    from edgellm.utils.specs import TensorSpec

    half, dims = (_half(halves, role), halves.dims) if isinstance(halves, CacheHalves) else halves
    ins, outs = step_names(half, role)
    rng = np.random.default_rng(0)
    b = 2
    first = (
        rng.integers(0, dims.vocab, size=(b, new)).astype(np.int64)
        if role != "server"
        else rng.standard_normal((b, new, dims.hidden_size)).astype(np.float32)
    )
    mask = np.ones((b, past + new), np.int64)
    pos = np.tile(np.arange(past, past + new, dtype=np.int64), (b, 1))
    cache = {
        n: rng.standard_normal((b, dims.kv_heads, past, dims.head_dim)).astype(np.float32) for n in ins[3:]
    }
    example = {ins[0]: first, "attention_mask": mask, "position_ids": pos, **cache}
    axes = {
        ins[0]: {0: "batch", 1: "new"},
        "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "new"},
    }
    axes.update({n: {0: "batch", 2: "past"} for n in ins[3:]})
    adapter = load(half, example_inputs=example, output_names=outs, dynamic_axes=axes, name=name)
    last = dims.hidden_size if role == "device" else dims.vocab
    adapter.outputs = [TensorSpec(outs[0], "float32", ["batch", "new", last])] + [
        TensorSpec(n, "float32", ["batch", dims.kv_heads, "total", dims.head_dim]) for n in outs[1:]
    ]
    adapter.int_high = {"input_ids": dims.vocab, "position_ids": past + new}
    return adapter


def reference_greedy(adapter: Any, prompt: list[int], n: int) -> list[int]:
    """``n`` greedy tokens of the unsplit model after ``prompt`` (Hugging Face ``generate``, no early stop):
    what split generation must reproduce."""
    with torch.inference_mode():
        out = adapter.module.lm.generate(
            torch.tensor([list(prompt)]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()


def torch_runner(half: DecoderStep, role: str):
    """Run a half in torch on named numpy feeds."""
    ins, outs = step_names(half, role)

    @torch.inference_mode()
    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = half(*[torch.as_tensor(feeds[n]) for n in ins])
        return {n: t.numpy() for n, t in zip(outs, res)}

    return run
