"""A decoder LM as one ONNX Runtime generation graph, written op by op with ``onnx.helper``.

The graph is laid out the way ONNX Runtime's CPU kernels run fastest (the layout onnxruntime-genai's
model builder writes): ``Gather`` embedding, ``SimplifiedLayerNormalization`` and
``SkipSimplifiedLayerNormalization`` (RMS norm fused with the residual add), one packed Q|K|V projection
per layer, ``com.microsoft.GroupQueryAttention`` with the rotary embedding inside (``do_rotary=1``, cos/sin
caches of ``context`` positions) on a key/value cache that is shared between past and present, one
packed gate|up projection with SiLU, the down projection, the final norm and the LM head. Linear layers
of a :class:`~edgellm.compress.quant.QuantSpec` are lowered to ``MatMulNBits`` (INT4, and INT8 weight-only)
or ``DynamicQuantizeMatMul`` (INT8 with dynamic activations); every other layer stays fp32 ``MatMul``.

IO contract (batch ``b``, ``new`` positions fed now, ``past`` positions already in the cache)::

    input_ids        int64   [b, new]
    attention_mask   int64   [b, past + new]   seqlens_k = sum(mask) - 1, total = mask.shape[1] (inside)
    past_key_{i}     float32 [b, kv_heads, context, head_dim]   for layer i (also past_value_{i})
    -> logits        float32 [b, new, vocab]   ([b, 1, vocab] with ``logits="last"``: last position only)
    -> present_key_{i}, present_value_{i}      same shape; bind them to the SAME buffers as the past

There is no ``position_ids`` input: GroupQueryAttention derives each new position from ``seqlens_k``
(``past + j`` for the ``j``-th new token), so the mask must be all ones over the filled positions
(left padding is not supported). ``context`` is fixed in the graph (cache and rotary tables) and stored
in the model's metadata (``edgellm.context``).

Building holds the model once more in memory, unless ``weights_file`` streams the initializers to disk
as they are made (then the graph proto is a few hundred kB and any size passes protobuf's 2 GB limit).

Example:
    >>> adapter = edgellm.models.load("tiny-llama")                                 # doctest: +SKIP
    >>> model = build_decoder_graph(adapter, spec, context=512, weights_file="out/decoder.weights")  # doctest: +SKIP
    >>> save_decoder_graph(model, "out/decoder.onnx")   # beside its weights       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from edgellm.compress.quant.quantize import matches
from edgellm.errors import EdgeLLMError
from edgellm.export.onnx_quant import MS, _int8_weight_t, _matmul_nbits

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
OPSET = 17
TWO_GB = 2**31


class _Builder:
    """Nodes and initializers of the graph being written; ``add_init``/``name`` as ``onnx_quant`` expects."""

    def __init__(self, weights_file: str | Path | None = None) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self.ops: dict[str, int] = {}
        self.weights: BinaryIO | None = None  # large initializers stream into this file
        self.location = ""
        if weights_file is not None:
            path = Path(weights_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.weights, self.location = open(path, "wb"), path.name  # noqa: SIM115 (closed by finish)

    def finish(self) -> None:
        if self.weights is not None:
            self.weights.close()

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}/{self._n}"

    def add_init(self, base: str, arr: np.ndarray) -> str:
        name = self.name(base)
        arr = np.ascontiguousarray(arr)
        if self.weights is None or arr.nbytes < 1024:
            self.inits.append(numpy_helper.from_array(arr, name))
            return name
        f = self.weights
        offset = -(-f.tell() // 4096) * 4096  # page-aligned, so ONNX Runtime can map it
        f.seek(offset)
        f.write(memoryview(arr).cast("B"))
        t = onnx.TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(arr.dtype))
        t.dims.extend(arr.shape)
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", self.location), ("offset", str(offset)), ("length", str(arr.nbytes))):
            t.external_data.add(key=k, value=v)
        self.inits.append(t)
        return name

    def const(self, base: str, values: Any, dtype: Any = np.int64) -> str:
        return self.add_init(base, np.asarray(values, dtype=dtype))

    def op(
        self, op_type: str, ins: list[str], n_out: int = 1, *, domain: str = "", **attrs: Any
    ) -> list[str]:
        outs = [self.name(f"{op_type}_out") for _ in range(n_out)]
        self.node(op_type, ins, outs, domain=domain, **attrs)
        return outs

    def node(self, op_type: str, ins: list[str], outs: list[str], *, domain: str = "", **attrs: Any) -> None:
        self.nodes.append(
            helper.make_node(op_type, ins, outs, name=self.name(op_type), domain=domain, **attrs)
        )
        key = op_type if domain != MS else f"{MS}.{op_type}"
        self.ops[key] = self.ops.get(key, 0) + 1


@dataclasses.dataclass
class _Options:
    accuracy_level: int
    keep: tuple[str, ...]
    int8: str  # "nbits" (MatMulNBits bits=8) or "dynamic" (DynamicQuantizeMatMul)


def _cat_quant(lqs: list[Any]) -> Any:
    """One LayerQuant for several layers stacked along the outputs (same bits, groups, input)."""
    if len(lqs) == 1:
        return lqs[0]
    first = lqs[0]
    return dataclasses.replace(
        first,
        name="+".join(lq.name for lq in lqs),
        qweight=torch.cat([lq.qweight for lq in lqs]),
        scale=torch.cat([lq.scale for lq in lqs]),
        zero_point=torch.cat([lq.zero_point for lq in lqs]),
    )


def _packable(lqs: list[Any]) -> bool:
    a = lqs[0]
    for b in lqs[1:]:
        if (b.bits, b.group_size, b.symmetric, b.dynamic_activation) != (
            a.bits,
            a.group_size,
            a.symmetric,
            a.dynamic_activation,
        ):
            return False
        if (a.input_scale is None) != (b.input_scale is None):
            return False
        if a.input_scale is not None and not torch.equal(a.input_scale, b.input_scale):
            return False
        if a.bits == 8 and a.group_size is not None:
            return False
    return a.bits in (4, 8) and a.act_scale is None


def _nbits8(x: str, out: str, lq: Any, b: _Builder, accuracy_level: int) -> str:
    """Per-channel symmetric int8 codes as MatMulNBits bits=8: codes + 128 (default zero point 128),
    the channel's scale repeated over blocks of 128 inputs (the last block zero-padded)."""
    n_out, k = lq.shape
    bs = 128
    blocks = -(-k // bs)
    codes = np.zeros((n_out, blocks * bs), np.uint8)
    codes[:, :k] = (lq.qweight.numpy().astype(np.int16) + 128).astype(np.uint8)
    codes[:, k:] = 128
    scale = np.repeat(lq.scale[:, :1].numpy().astype(np.float32), blocks, axis=1).reshape(-1)
    ins = [x, b.add_init("w_nbits8", codes.reshape(n_out, blocks, bs)), b.add_init("w_scales", scale)]
    b.node(
        "MatMulNBits",
        ins,
        [out],
        domain=MS,
        K=k,
        N=n_out,
        bits=8,
        block_size=bs,
        accuracy_level=accuracy_level,
    )
    return out


class _Lowering:
    """Writes the linear layers: quantized per the spec, fp32 otherwise, packed where they share an input."""

    def __init__(self, adapter: Any, spec: Any, b: _Builder, opt: _Options) -> None:
        self.adapter, self.spec, self.b, self.opt = adapter, spec, b, opt
        self.lowered: dict[str, str] = {}

    def quant(self, name: str) -> Any:
        if self.spec is None or matches(name, self.opt.keep):
            return None
        return self.spec.layers.get(name)

    def linear(self, x: str, names: list[str], tag: str) -> str:
        """``x @ W^T + bias`` for the layers ``names`` stacked along their outputs (one op)."""
        mods = [self.adapter.submodule(n) for n in names]
        lqs = [self.quant(n) for n in names]
        if len(names) > 1 and not (
            all(q is None for q in lqs) or (all(q is not None for q in lqs) and _packable(lqs))
        ):
            parts = [self.linear(x, [n], f"{tag}.{i}") for i, n in enumerate(names)]
            return self.b.op("Concat", parts, axis=-1)[0]
        b = self.b
        out = b.name(f"{tag}.out")
        biases = [m.bias for m in mods]
        bias = None
        if any(t is not None for t in biases):
            bias = np.concatenate(
                [
                    (t.detach().float().numpy() if t is not None else np.zeros(m.out_features, np.float32))
                    for t, m in zip(biases, mods)
                ]
            )
        if lqs[0] is None:
            w = np.concatenate([m.weight.detach().float().numpy() for m in mods], axis=0).T
            mm = out if bias is None else b.name(f"{tag}.mm")
            b.node("MatMul", [x, b.add_init(f"{tag}.weight", w)], [mm])
            kind = "fp32"
        else:
            lq = _cat_quant(lqs)
            if lq.input_scale is not None:
                x = b.op("Mul", [x, b.add_init(f"{tag}.input_scale", lq.input_scale.float().numpy())])[0]
            mm = out if bias is None else b.name(f"{tag}.mm")
            if lq.bits == 4:
                node = _matmul_nbits(x, mm, lq, b, self.opt.accuracy_level)
                b.nodes.append(node)
                b.ops[f"{MS}.MatMulNBits"] = b.ops.get(f"{MS}.MatMulNBits", 0) + 1
                kind = f"int4 g{lq.group_size}"
            elif lq.bits == 8 and lq.group_size is None and lq.act_scale is None:
                if self.opt.int8 == "dynamic":
                    q, s = _int8_weight_t(lq)
                    ins = [
                        x,
                        b.add_init(f"{tag}.w_int8", q),
                        b.add_init(f"{tag}.w_scale", s),
                        b.add_init(f"{tag}.w_zp", np.zeros(s.shape, np.int8)),
                    ]
                    b.node("DynamicQuantizeMatMul", ins, [mm], domain=MS)
                    kind = "int8 dynamic"
                else:
                    _nbits8(x, mm, lq, b, self.opt.accuracy_level)
                    kind = "int8 nbits"
            else:
                raise EdgeLLMError(
                    f"layer '{lq.name}' ({lq.bits}-bit, static activations={lq.act_scale is not None}) has no "
                    "lowering in the generation graph",
                    "use an INT4 weight-only or an INT8 dynamic recipe (w4a16-*, int8-dynamic)",
                )
        if bias is not None:
            b.node("Add", [mm, b.add_init(f"{tag}.bias", bias)], [out])
        for n in names:
            self.lowered[n] = kind
        return out


def _rope_tables(lm: Any, context: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [context, head_dim / 2] from the model's own rotary module (its scaling included)."""
    pos = torch.arange(context)[None]
    with torch.no_grad():
        cos, sin = lm.model.rotary_emb(torch.zeros(1, dtype=torch.float32), pos)
    half = head_dim // 2
    return cos[0, :, :half].float().numpy(), sin[0, :, :half].float().numpy()


def build_decoder_graph(
    adapter: Any,
    spec: Any = None,
    *,
    context: int,
    accuracy_level: int = 4,
    keep: tuple[str, ...] | list[str] = (),
    pack_qkv: bool = True,
    pack_gate_up: bool = True,
    logits: str = "all",
    int8: str = "nbits",
    weights_file: str | Path | None = None,
) -> onnx.ModelProto:
    """The generation graph of a Llama-family causal LM (see the module docstring for its IO).

    Args:
        adapter: a causal-LM :class:`~edgellm.models.ModelAdapter` (``adapter.module.lm`` is the HF model).
        spec: a :class:`~edgellm.compress.quant.QuantSpec` over ``adapter.module`` names, or None (fp32).
        context: positions the key/value cache (and the rotary tables) hold.
        accuracy_level: ``MatMulNBits``' compute type: 0 dequantizes to fp32 (bit-faithful to the spec),
            4 quantizes the activations to int8 per block (ONNX Runtime's fastest CPU path).
        keep: layer-name patterns left fp32 although the spec quantizes them (``"lm_head"``).
        pack_qkv / pack_gate_up: one projection for Q|K|V and for gate|up (fewer, larger kernels).
        logits: ``"all"`` positions or only the ``"last"`` one (prefill skips the LM head elsewhere).
        int8: INT8 weight-only-dynamic layers as ``"nbits"`` (MatMulNBits bits=8) or ``"dynamic"``
            (DynamicQuantizeMatMul, which reproduces the spec's per-tensor dynamic activations exactly).
        weights_file: stream every large initializer into this file while building (the model then
            holds only references to it: build memory stays near the model's own size, and any size
            passes protobuf's 2 GB limit); save the graph beside it with :func:`save_decoder_graph`.

    Returns:
        The model; ``model.metadata_props`` records the context, heads and what each layer became.
    """
    if adapter.task != "causal-lm" or adapter.family not in FAMILIES:
        raise EdgeLLMError(
            f"no generation graph for '{adapter.family}' ({adapter.task})",
            f"supported families: {', '.join(FAMILIES)}",
        )
    if logits not in ("all", "last") or int8 not in ("nbits", "dynamic"):
        raise EdgeLLMError(f"logits='{logits}', int8='{int8}'", "use logits all|last and int8 nbits|dynamic")
    lm = adapter.module.lm
    cfg = lm.config
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise EdgeLLMError(f"activation '{cfg.hidden_act}' is not SiLU", "only SiLU-gated MLPs are supported")
    window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
    if window is not None and context > window:
        raise EdgeLLMError(
            f"context {context} exceeds the model's sliding window {window}", f"use a context <= {window}"
        )
    heads = int(cfg.num_attention_heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    eps = float(cfg.rms_norm_eps)
    n_layers = int(cfg.num_hidden_layers)
    vocab = int(cfg.vocab_size)
    b = _Builder(weights_file)
    low = _Lowering(adapter, spec, b, _Options(accuracy_level, tuple(keep), int8))

    # attention mask -> GroupQueryAttention's seqlens_k (last filled index) and total length
    s = b.op("ReduceSum", ["attention_mask", b.const("axis1", [1])], keepdims=0)[0]
    s = b.op("Sub", [s, b.const("one", 1)])[0]
    seqlens = b.op("Cast", [s], to=TensorProto.INT32)[0]
    shape = b.op("Shape", ["attention_mask"])[0]
    total = b.op("Gather", [shape, b.const("idx1", 1)], axis=0)[0]
    total = b.op("Cast", [total], to=TensorProto.INT32)[0]
    cos, sin = _rope_tables(lm, context, head_dim)
    cos_n, sin_n = b.add_init("cos_cache", cos), b.add_init("sin_cache", sin)

    base = lm.model
    emb = base.embed_tokens.weight.detach().float().numpy()
    h = b.op("Gather", [b.add_init("embed_tokens", emb), "input_ids"], axis=0)[0]
    residual = None
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "new"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
    ]
    outputs: list[onnx.ValueInfoProto] = []
    cache_shape = ["batch", kv_heads, context, head_dim]

    def norm(x: str, res: str | None, weight: torch.Tensor, tag: str) -> tuple[str, str]:
        w = b.add_init(f"{tag}.weight", weight.detach().float().numpy())
        if res is None:
            return b.op("SimplifiedLayerNormalization", [x, w], axis=-1, epsilon=eps, stash_type=1)[0], x
        outs = b.op("SkipSimplifiedLayerNormalization", [x, res, w], 4, domain=MS, epsilon=eps)
        return outs[0], outs[3]

    for i, layer in enumerate(base.layers):
        p = f"lm.model.layers.{i}"
        x, residual = norm(h, residual, layer.input_layernorm.weight, f"layers.{i}.input_norm")
        attn = layer.self_attn
        names = [f"{p}.self_attn.{n}_proj" for n in "qkv"]
        if pack_qkv:
            qkv = low.linear(x, names, f"layers.{i}.qkv")
            q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
            if getattr(attn, "q_norm", None) is not None:
                q, k, v = b.op("Split", [qkv, b.const("split", [q_dim, kv_dim, kv_dim])], 3, axis=-1)
            else:
                q, k, v = qkv, "", ""
        else:
            q, k, v = (low.linear(x, [n], f"layers.{i}.{n[-6]}") for n in names)
        if getattr(attn, "q_norm", None) is not None:  # Qwen3: RMS norm per head before the rotary
            q = _head_norm(b, q, attn.q_norm.weight, heads, head_dim, eps, f"layers.{i}.q_norm")
            k = _head_norm(b, k, attn.k_norm.weight, kv_heads, head_dim, eps, f"layers.{i}.k_norm")
        pk, pv, ck, cv = f"past_key_{i}", f"past_value_{i}", f"present_key_{i}", f"present_value_{i}"
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, cache_shape) for n in (pk, pv)]
        outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, cache_shape) for n in (ck, cv)]
        a = b.name(f"layers.{i}.attn")
        b.node(
            "GroupQueryAttention",
            [q, k, v, pk, pv, seqlens, total, cos_n, sin_n],
            [a, ck, cv],
            domain=MS,
            num_heads=heads,
            kv_num_heads=kv_heads,
            do_rotary=1,
            rotary_interleaved=0,
            scale=1.0 / math.sqrt(head_dim),
        )
        o = low.linear(a, [f"{p}.self_attn.o_proj"], f"layers.{i}.o_proj")
        x, residual = norm(o, residual, layer.post_attention_layernorm.weight, f"layers.{i}.post_norm")
        gate, up = f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj"
        if pack_gate_up:
            gu = low.linear(x, [gate, up], f"layers.{i}.gate_up")
            g, u = b.op("Split", [gu, b.const("split", [layer.mlp.intermediate_size] * 2)], 2, axis=-1)
        else:
            g, u = low.linear(x, [gate], f"layers.{i}.gate"), low.linear(x, [up], f"layers.{i}.up")
        act = b.op("Mul", [g, b.op("Sigmoid", [g])[0]])[0]
        h = low.linear(b.op("Mul", [act, u])[0], [f"{p}.mlp.down_proj"], f"layers.{i}.down_proj")

    x, _ = norm(h, residual, base.norm.weight, "final_norm")
    if logits == "last":  # [b, new, H] -> [b, 1, H]: the LM head runs on the last position only
        x = b.op("Slice", [x, b.const("m1", [-1]), b.const("big", [2**62]), b.const("axis1", [1])])[0]
    head = low.linear(x, ["lm.lm_head"], "lm_head")
    b.node("Identity", [head], ["logits"])
    new_dim = 1 if logits == "last" else "new"
    outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", new_dim, vocab]))

    b.finish()
    graph = helper.make_graph(b.nodes, "edgellm_decoder", inputs, outputs, b.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
        producer_name="edgellm.export.decoder_graph",
    )
    model.ir_version = 8
    kinds: dict[str, int] = {}
    for k in low.lowered.values():
        kinds[k] = kinds.get(k, 0) + 1
    meta = {
        "edgellm.context": str(context),
        "edgellm.layers": str(n_layers),
        "edgellm.kv_heads": str(kv_heads),
        "edgellm.head_dim": str(head_dim),
        "edgellm.vocab": str(vocab),
        "edgellm.logits": logits,
        "edgellm.accuracy_level": str(accuracy_level),
        "edgellm.linear_kinds": repr(kinds),
    }
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    return model


def _head_norm(b: _Builder, x: str, weight: torch.Tensor, n: int, d: int, eps: float, tag: str) -> str:
    """RMS norm over each head of ``x`` [b, s, n * d]."""
    x4 = b.op("Reshape", [x, b.const("shape", [0, 0, n, d])])[0]
    w = b.add_init(f"{tag}.weight", weight.detach().float().numpy())
    y = b.op("SimplifiedLayerNormalization", [x4, w], axis=-1, epsilon=eps, stash_type=1)[0]
    return b.op("Reshape", [y, b.const("shape", [0, 0, n * d])])[0]


def save_decoder_graph(model: onnx.ModelProto, path: str | Path) -> list[Path]:
    """Write ``model`` to ``path``. Weights already streamed to a file (``weights_file``) must lie in
    ``path``'s folder; in-memory weights go to ``<name>.data`` beside it when the file would pass
    protobuf's 2 GB limit. Returns the files the model consists of."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    streamed = {
        e.value
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        for e in t.external_data
        if e.key == "location"
    }
    missing = [n for n in streamed if not (path.parent / n).is_file()]
    if missing:
        raise EdgeLLMError(
            f"the graph's weights file {missing[0]} is not in {path.parent}",
            "save the graph in the folder of its weights_file",
        )
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    if size < TWO_GB - 2**26:
        onnx.save_model(model, str(path))
        return [path, *(path.parent / n for n in sorted(streamed))]
    data = path.with_suffix(path.suffix + ".data")
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )
    return [path, data, *(path.parent / n for n in sorted(streamed))]
