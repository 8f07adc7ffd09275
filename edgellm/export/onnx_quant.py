"""Lower a :class:`~edgellm.compress.quant.QuantSpec` into an fp32 ONNX graph, ONNX Runtime's way.

The spec's layers are found in the graph by their original fp32 weights (exporters name initializers
differently, but keep the values bit for bit, transposed or not), then each consumer is rewritten:

- static INT8   -> QDQ: ``QuantizeLinear``/``DequantizeLinear`` on the activation (per tensor, uint8)
                   and on the weight (per output channel, int8); ONNX Runtime fuses them at load time.
- dynamic INT8  -> ``com.microsoft.DynamicQuantizeMatMul``; a fused ``Attention`` becomes
                   ``DynamicQuantizeLinear`` + ``QAttention`` with the three projections' codes.
- INT4 (W4A16)  -> ``com.microsoft.MatMulNBits`` with edgellm's own codes, scales and zero points; or,
                   for runtimes that take standard ops only (TensorRT), a blocked ``DequantizeLinear``
                   of signed int4 codes (opset 21, symmetric) feeding a ``MatMul``.

A per-channel ``input_scale`` (SmoothQuant, AWQ) becomes a ``Mul`` in front of the quantized op.
A ``bias_correction`` (fast bias correction) is folded into the bias the graph already adds after the
layer (``Gemm``'s C, or the ``Add``/``Sum``/``BiasGelu``... input holding the layer's fp32 bias); only a
layer without one gets an extra ``Add``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgellm.errors import ExportError

MS = "com.microsoft"


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.g = model.graph
        self.inits = {t.name: t for t in self.g.initializer}
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.biases: dict[str, np.ndarray] = {}  # layer -> its fp32 bias (layers with a bias correction)
        self._n = 0
        self._scaled: dict[tuple[str, str], str] = {}
        self._fake_quant: dict[tuple[str, bytes, bytes, bool], str] = {}

    def fake_quant_input(self, x: str, lq: Any, nodes: list) -> str:
        """``DequantizeLinear(QuantizeLinear(x))`` at the layer's activation scale: one pair per distinct
        input and quantization parameters, shared by the layers that read it (q, k and v of one
        attention), so a runtime sees one quantized tensor feeding several MatMuls (OpenVINO fuses them)."""
        scale = np.asarray(lq.act_scale, np.float32)
        zp = np.asarray(lq.act_zero_point, np.int8 if lq.act_signed else np.uint8)
        key = (x, scale.tobytes(), zp.tobytes(), bool(lq.act_signed))
        if key not in self._fake_quant:
            a_s, a_zp = self.add_init("a_scale", scale), self.add_init("a_zp", zp)
            xq, xdq = self.name("x_q"), self.name("x_dq")
            nodes += [
                helper.make_node("QuantizeLinear", [x, a_s, a_zp], [xq], name=self.name("QuantizeLinear")),
                helper.make_node(
                    "DequantizeLinear", [xq, a_s, a_zp], [xdq], name=self.name("DequantizeLinear")
                ),
            ]
            self._fake_quant[key] = xdq
        return self._fake_quant[key]

    def scaled_input(self, x: str, scale: np.ndarray, nodes: list) -> str:
        """``x * scale`` (one Mul per distinct input and scale, shared by the layers that read it)."""
        key = (x, _digest(scale))
        if key not in self._scaled:
            s = self.add_init("input_scale", scale.astype(np.float32))
            out = self.name("scaled")
            nodes.append(helper.make_node("Mul", [x, s], [out], name=self.name("Mul")))
            self._scaled[key] = out
        return self._scaled[key]

    def name(self, base: str) -> str:
        self._n += 1
        return f"edgellm_q/{base}/{self._n}"

    def add_init(self, base: str, arr: np.ndarray) -> str:
        name = self.name(base)
        self.g.initializer.append(numpy_helper.from_array(arr, name))
        return name


def lower_quant(
    model: onnx.ModelProto,
    spec: Any,
    fp32_model: Any,
    *,
    accuracy_level: int = 0,
    standard_int4: bool = False,
) -> dict[str, Any]:
    """Rewrite ``model`` in place; returns what was lowered (op counts, unmatched layers)."""
    g = _Graph(model)
    want: dict[str, tuple[str, str]] = {}
    shapes = set()
    for name in spec.layers:
        mod = fp32_model.submodule(name)
        w = mod.weight.detach().float().numpy()
        if getattr(spec.layers[name], "bias_correction", None) is not None and mod.bias is not None:
            g.biases[name] = mod.bias.detach().float().numpy()
        want[_digest(w.T)] = (name, "T")
        want[_digest(w)] = (name, "N")
        shapes |= {w.shape, w.T.shape}
    found: dict[str, tuple[str, str]] = {}
    for t in g.g.initializer:
        if t.data_type == TensorProto.FLOAT and tuple(t.dims) in shapes:
            d = _digest(numpy_helper.to_array(t))
            if d in want:
                found[t.name] = want[d]
    qkv_parts: dict[str, list[str]] = {}
    for t in g.g.initializer:  # fused Attention: [hidden, 3 * hidden] = concat of three W^T
        if (
            t.data_type == TensorProto.FLOAT
            and len(t.dims) == 2
            and t.dims[1] % 3 == 0
            and t.name not in found
        ):
            a = numpy_helper.to_array(t)
            parts = np.split(a, 3, axis=1)
            hits = [want.get(_digest(p)) for p in parts]
            if all(h is not None and h[1] == "T" for h in hits):
                qkv_parts[t.name] = [h[0] for h in hits]

    ops: dict[str, int] = {}
    done: set[str] = set()
    new_nodes: list[onnx.NodeProto] = []
    for node in list(g.g.node):
        layer = _match(node, g, found)
        if layer is not None and layer in spec.layers:
            new_nodes += _rewrite_linear(node, spec.layers[layer], g, ops, accuracy_level, standard_int4)
            done.add(layer)
            continue
        if node.op_type == "Attention" and node.domain == MS and node.input[1] in qkv_parts:
            names = qkv_parts[node.input[1]]
            if all(n in spec.layers and spec.layers[n].dynamic_activation for n in names):
                new_nodes += _rewrite_attention(node, [spec.layers[n] for n in names], g, ops)
                done |= set(names)
                continue
        new_nodes.append(node)
    del g.g.node[:]
    g.g.node.extend(new_nodes)
    _drop_unused_initializers(g.g)
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    unmatched = sorted(set(spec.layers) - done)
    if not done:
        raise ExportError(
            f"none of the {len(spec.layers)} quantized layers were found in the ONNX graph",
            "the exported graph changed the weights (report this with the model's class name)",
        )
    return {"ops": ops, "lowered_layers": len(done), "unmatched_layers": unmatched}


def _match(node: onnx.NodeProto, g: _Graph, found: dict[str, tuple[str, str]]) -> str | None:
    if node.op_type == "MatMul" and node.domain in ("", "ai.onnx"):
        b = node.input[1]
        if b in found and found[b][1] == "T":
            return found[b][0]
        p = g.producer.get(b)
        if p is not None and p.op_type == "Transpose" and p.input[0] in found and found[p.input[0]][1] == "N":
            perm = next((list(a.ints) for a in p.attribute if a.name == "perm"), [1, 0])
            if perm == [1, 0]:
                return found[p.input[0]][0]
    if node.op_type == "Gemm" and node.input[1] in found:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
            return None
        want = "N" if attrs.get("transB", 0) else "T"
        layer, orient = found[node.input[1]]
        return layer if orient == want else None
    return None


def _int8_weight_t(lq: Any) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes as (in, out) and per-output scales (out,)."""
    q = lq.qweight.numpy().astype(np.int8).T.copy()
    return q, lq.scale[:, 0].numpy().astype(np.float32)


def _rewrite_linear(
    node: onnx.NodeProto, lq: Any, g: _Graph, ops: dict[str, int], accuracy_level: int, standard_int4: bool
):
    x, out = node.input[0], node.output[0]
    bias = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else None
    nodes: list[onnx.NodeProto] = []
    if lq.input_scale is not None:
        x = g.scaled_input(x, lq.input_scale.numpy(), nodes)
    mm_out = g.name("mm") if bias else out
    if lq.bits == 4 and standard_int4:
        nodes += _dq_int4_matmul(x, mm_out, lq, g)
        ops["DequantizeLinear(int4) MatMul"] = ops.get("DequantizeLinear(int4) MatMul", 0) + 1
    elif lq.bits == 4:
        nodes.append(_matmul_nbits(x, mm_out, lq, g, accuracy_level))
        ops["MatMulNBits"] = ops.get("MatMulNBits", 0) + 1
    elif lq.dynamic_activation:
        q, scale = _int8_weight_t(lq)
        ins = [
            x,
            g.add_init("w_int8", q),
            g.add_init("w_scale", scale),
            g.add_init("w_zp", np.zeros(scale.shape, np.int8)),
        ]
        if bias:
            ins.append(bias)
            mm_out = out
        nodes.append(
            helper.make_node("DynamicQuantizeMatMul", ins, [mm_out], name=g.name("DQMatMul"), domain=MS)
        )
        ops["DynamicQuantizeMatMul"] = ops.get("DynamicQuantizeMatMul", 0) + 1
    else:
        q, scale = _int8_weight_t(lq)
        xdq, wdq = g.fake_quant_input(x, lq, nodes), g.name("w_dq")
        nodes += [
            helper.make_node(
                "DequantizeLinear",
                [
                    g.add_init("w_int8", q),
                    g.add_init("w_scale", scale),
                    g.add_init("w_zp", np.zeros(scale.shape, np.int8)),
                ],
                [wdq],
                name=g.name("DequantizeLinear"),
                axis=1,
            ),
            helper.make_node("MatMul", [xdq, wdq], [mm_out], name=g.name("MatMul")),
        ]
        ops["QDQ MatMul"] = ops.get("QDQ MatMul", 0) + 1
    if bias and mm_out != out:
        nodes.append(helper.make_node("Add", [mm_out, bias], [out], name=g.name("Add")))
    if getattr(lq, "bias_correction", None) is not None:
        _fold_bias_correction(node, out, lq, g, nodes, ops)
    return nodes


def _fold_bias_correction(
    node: onnx.NodeProto, out: str, lq: Any, g: _Graph, nodes: list, ops: dict[str, int]
) -> None:
    """Add ``lq.bias_correction`` to the bias initializer that follows the layer (a new initializer,
    the consumer rewired to it); an ``Add`` of the correction only where no such bias is found."""
    corr = lq.bias_correction.float().numpy()
    fp_bias = g.biases.get(lq.name)
    cands: list[tuple[onnx.NodeProto, int]] = []
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] in g.inits:
        # the rewritten graph adds Gemm's C after the quantized op (an Add, or DynamicQuantizeMatMul's bias)
        cands = [(n, j) for n in nodes for j, i in enumerate(n.input) if i == node.input[2]]
    elif fp_bias is not None:
        want = _digest(fp_bias)
        for c in g.consumers.get(out, []):
            for j, i in enumerate(c.input):
                t = g.inits.get(i)
                if (
                    t is not None
                    and tuple(t.dims) == fp_bias.shape
                    and _digest(numpy_helper.to_array(t)) == want
                ):
                    cands.append((c, j))
    if len(cands) == 1:
        c, j = cands[0]
        orig = numpy_helper.to_array(g.inits[c.input[j]]).astype(np.float32)
        c.input[j] = g.add_init("bias_corrected", orig + corr)
        ops["bias correction folded"] = ops.get("bias correction folded", 0) + 1
        return
    mid = g.name("uncorrected")
    last = next(n for n in reversed(nodes) if out in n.output)
    last.output[list(last.output).index(out)] = mid
    nodes.append(
        helper.make_node("Add", [mid, g.add_init("bias_correction", corr)], [out], name=g.name("Add"))
    )
    ops["bias correction Add"] = ops.get("bias correction Add", 0) + 1


def _dq_int4_matmul(x: str, out: str, lq: Any, g: _Graph) -> list[onnx.NodeProto]:
    """Signed int4 codes (K, N) packed two per byte (low nibble first), scales (K / block, N), no zero
    point: TensorRT's weight-only INT4. Needs a symmetric spec (codes 0..15 around zero point 8)."""
    if not lq.symmetric:
        raise ExportError(
            f"layer '{lq.name}' has asymmetric INT4 weights; TensorRT's INT4 is symmetric",
            "quantize with Int4WeightOnly(symmetric=True) (the default)",
        )
    n_out, k = lq.shape
    codes = lq.qweight.numpy().astype(np.int16) - lq.zero_point.numpy().astype(np.int16).repeat(
        lq.group_size, 1
    )
    signed = codes.T.astype(np.int8)  # (K, N), in [-8, 7]
    flat = signed.reshape(-1).astype(np.uint8) & 0x0F
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
    wname = g.name("w_int4")
    g.g.initializer.append(
        helper.make_tensor(wname, TensorProto.INT4, [k, n_out], packed.tobytes(), raw=True)
    )
    scale = g.add_init("w_scale", lq.scale.numpy().astype(np.float32).T.copy())  # (K / block, N)
    wdq = g.name("w_dq")
    return [
        helper.make_node(
            "DequantizeLinear",
            [wname, scale],
            [wdq],
            name=g.name("DequantizeLinear"),
            axis=0,
            block_size=lq.group_size,
        ),
        helper.make_node("MatMul", [x, wdq], [out], name=g.name("MatMul")),
    ]


def _matmul_nbits(x: str, out: str, lq: Any, g: _Graph, accuracy_level: int) -> onnx.NodeProto:
    """ONNX Runtime's MatMulNBits layout: B (N, blocks, block/2) uint8, scales (N*blocks,), packed zero points."""
    from edgellm.compress.quant.primitives import pack_int4

    n_out, k = lq.shape
    bs = lq.group_size
    blocks = k // bs
    q = lq.qweight.reshape(n_out, blocks, bs)
    packed = pack_int4(q).numpy().astype(np.uint8)  # (N, blocks, bs/2)
    ins = [
        x,
        g.add_init("w_nbits", packed),
        g.add_init("w_scales", lq.scale.numpy().astype(np.float32).reshape(-1)),
    ]
    if not lq.symmetric:
        zp = pack_int4(lq.zero_point).numpy().astype(np.uint8).reshape(-1)  # (N * ceil(blocks / 2),)
        ins.append(g.add_init("w_zp4", zp))
    return helper.make_node(
        "MatMulNBits",
        ins,
        [out],
        name=g.name("MatMulNBits"),
        domain=MS,
        K=k,
        N=n_out,
        bits=4,
        block_size=bs,
        accuracy_level=accuracy_level,
    )


def _rewrite_attention(node: onnx.NodeProto, lqs: list[Any], g: _Graph, ops: dict[str, int]):
    x = node.input[0]
    nodes: list[onnx.NodeProto] = []
    scales = [lq.input_scale for lq in lqs]
    if scales[0] is not None:
        x = g.scaled_input(x, scales[0].numpy(), nodes)
    parts = [_int8_weight_t(lq) for lq in lqs]
    w = np.concatenate([p[0] for p in parts], axis=1)
    ws = np.concatenate([p[1] for p in parts])
    xq, xs_, xzp = g.name("x_q"), g.name("x_scale"), g.name("x_zp")
    nodes.append(
        helper.make_node("DynamicQuantizeLinear", [x], [xq, xs_, xzp], name=g.name("DynamicQuantizeLinear"))
    )
    mask = node.input[3] if len(node.input) > 3 else ""
    qkv_bias = node.input[2]
    if any(getattr(lq, "bias_correction", None) is not None for lq in lqs) and qkv_bias in g.inits:
        n_out = [lq.shape[0] for lq in lqs]
        corr = np.concatenate(
            [
                np.zeros(k, np.float32) if lq.bias_correction is None else lq.bias_correction.float().numpy()
                for lq, k in zip(lqs, n_out)
            ]
        )
        qkv_bias = g.add_init("qkv_bias_corrected", numpy_helper.to_array(g.inits[qkv_bias]) + corr)
    ins = [
        xq,
        g.add_init("qkv_int8", w),
        qkv_bias,
        xs_,
        g.add_init("qkv_scale", ws),
        mask,
        xzp,
        g.add_init("qkv_zp", np.zeros(ws.shape, np.int8)),
    ]
    attrs = {
        a.name: helper.get_attribute_value(a)
        for a in node.attribute
        if a.name in ("num_heads", "unidirectional")
    }
    nodes.append(
        helper.make_node("QAttention", ins, list(node.output), name=g.name("QAttention"), domain=MS, **attrs)
    )
    ops["QAttention"] = ops.get("QAttention", 0) + 1
    return nodes


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
