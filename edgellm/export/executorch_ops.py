"""The torch modules an ExecuTorch export is built from, and what XNNPACK took of the lowered graph.

- :func:`quantized_linear`: a QuantSpec layer as the linear XNNPACK's dynamic-quantization kernels take,
  built from the spec's own codes (torchao's ``IntxUnpackedToInt8Tensor`` weight: the graph carries
  ``dequantize_affine`` of those codes and a per-token ``choose_qparams/quantize/dequantize_affine`` of
  the activation, which the partitioner fuses into one ``qd8-f32-qc8w`` / ``qd8-f32-qb4w`` GEMM).
  edgellm's int4 codes are unsigned 0..15 with zero point 8; XNNPACK's are signed -8..7 with zero point
  0: the same integers minus 8, so ``(q - 8) * scale`` is exactly the spec's weight.
- :func:`xnnpack_norms`: LayerNorm / Llama-family RMSNorm rewritten with the ops XNNPACK delegates (its
  ``mean`` takes 4-D tensors over the two inner axes): otherwise each norm falls out of the delegate and
  cuts the graph into one XNNPACK partition per block.
- :func:`delegation`: delegated / non-delegated operators with counts (ExecuTorch's
  ``get_delegation_info``).

Example:
    >>> ql = quantized_linear(spec.layers["lm.lm_head"], bias=None)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgellm.compress.quant.spec import QuantLinear
from edgellm.errors import ExportError

# graph bookkeeping that delegation info counts but that is not an operator a kernel runs
_BOOKKEEPING = {"getitem", "sym_size", "Total", "mul", "add", "sub", "floordiv"}
_RMS_NORMS = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"}


def check_spec(spec: Any) -> None:
    """Refuse, in one line, a QuantSpec layer XNNPACK has no exact kernel for."""
    for name, lq in spec.layers.items():
        if lq.act_scale is not None:
            raise ExportError(
                f"layer '{name}' of recipe '{spec.recipe}' has static int8 activations; the ExecuTorch "
                "exporter lowers weights with dynamic int8 activations only",
                "quantize with int8-dynamic or a w4a16 recipe for --format pte",
            )
        if lq.bits == 8 and lq.group_size is not None:
            raise ExportError(
                f"layer '{name}' has int8 weights in groups of {lq.group_size}; XNNPACK's int8 GEMM takes "
                "one scale per output channel",
                "quantize int8 per channel (int8-dynamic), or use int4 groups for --format pte",
            )
        if lq.bits == 4:
            if not lq.symmetric or bool((lq.zero_point != 8).any()):
                raise ExportError(
                    f"layer '{name}' has asymmetric int4 weights (zero points other than 8); XNNPACK's "
                    "4-bit kernels are symmetric and would ignore them",
                    "quantize with symmetric=True (the w4a16 default) for --format pte",
                )
            in_f = lq.shape[1]
            g = lq.group_size or in_f
            if lq.group_size is not None and g % 32:
                raise ExportError(
                    f"layer '{name}' has int4 groups of {g}; XNNPACK takes groups that are multiples of 32",
                    "quantize with --group-size 32, 64 or 128 for --format pte",
                )
        elif lq.bits != 8:
            raise ExportError(
                f"layer '{name}' has {lq.bits}-bit weights; ExecuTorch/XNNPACK takes 8 or 4 bits",
                "quantize with int8-dynamic or a w4a16 recipe",
            )


class _ScaledInput(nn.Module):
    """``linear(x * input_scale)``: a smoothing/AWQ factor folded in front of the quantized linear."""

    def __init__(self, scale: torch.Tensor, linear: nn.Linear) -> None:
        super().__init__()
        self.register_buffer("input_scale", scale.float().clone())
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.input_scale)


def quantized_linear(lq: Any, bias: torch.Tensor | None) -> nn.Module:
    """``lq``'s codes and scales as a linear with dynamic per-token int8 activations (see module doc)."""
    from torchao.quantization import IntxUnpackedToInt8Tensor

    out_f, in_f = lq.shape
    g = lq.group_size or in_f
    if lq.bits == 4:
        codes, zp, dtype = (
            lq.qweight.to(torch.int16) - 8,
            torch.zeros_like(lq.scale, dtype=torch.int8),
            torch.int4,
        )
    else:
        codes, zp, dtype = lq.qweight.to(torch.int16), lq.zero_point.to(torch.int8), torch.int8
    weight = IntxUnpackedToInt8Tensor(
        codes.to(torch.int8).contiguous(),
        lq.scale.float().reshape(out_f, in_f // g).contiguous(),
        zp.reshape(out_f, in_f // g).contiguous(),
        dtype,
        (1, g),
        torch.float32,
        "int8_asym_per_token",
    )
    b = None if bias is None else bias.detach().float().clone()
    if lq.bias_correction is not None:
        b = lq.bias_correction.float().clone() if b is None else b + lq.bias_correction.float()
    lin = nn.Linear(in_f, out_f, bias=b is not None)
    lin.weight = nn.Parameter(weight, requires_grad=False)
    if b is not None:
        lin.bias = nn.Parameter(b, requires_grad=False)
    return lin if lq.input_scale is None else _ScaledInput(lq.input_scale, lin)


def _swap_layers(module: nn.Module, spec: Any, make: Any) -> nn.Module:
    for name, lq in spec.layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, make(lq, getattr(parent, child).bias))
    return module


def swap_quantized(module: nn.Module, spec: Any) -> nn.Module:
    """``module`` (changed in place) with every layer of ``spec`` replaced by :func:`quantized_linear`."""
    return _swap_layers(module, spec, quantized_linear)


def first_line(exc: Exception) -> str:
    """``Type: first line of the message`` (at most 400 characters), for one-line export errors."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:400]}"


def per_token_int8(x: torch.Tensor) -> torch.Tensor:
    """What XNNPACK's dynamic quantization does to a linear's input: asymmetric int8 per token (row)."""
    lo = torch.clamp(x.amin(dim=-1, keepdim=True), max=0.0)
    hi = torch.clamp(x.amax(dim=-1, keepdim=True), min=0.0)
    scale = torch.clamp((hi - lo) / 255.0, min=1e-12)
    zp = torch.clamp(torch.round(-128.0 - lo / scale), -128, 127)
    return (torch.clamp(torch.round(x / scale) + zp, -128, 127) - zp) * scale


class PerTokenQuantLinear(QuantLinear):
    """The torch reference of :func:`quantized_linear`: the spec's dequantized weight after a per-token
    int8 fake quantization of the input (exactly the integers XNNPACK multiplies)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x * self.input_scale
        return nn.functional.linear(per_token_int8(x), self.weight, self.bias)


def swap_reference(module: nn.Module, spec: Any) -> nn.Module:
    """``module`` (changed in place) with every layer of ``spec`` replaced by :class:`PerTokenQuantLinear`."""
    return _swap_layers(module, spec, PerTokenQuantLinear)


def _mean_last(x: torch.Tensor) -> torch.Tensor:
    """``x.mean(-1, keepdim=True)`` as XNNPACK's 4-D mean over the inner two axes."""
    return x.reshape(-1, 1, x.shape[-1], 1).mean(dim=(2, 3), keepdim=True).reshape(*x.shape[:-1], 1)


class XnnLayerNorm(nn.Module):
    """LayerNorm over the last axis with ops XNNPACK delegates (mean via 4-D mean, rsqrt, mul, add)."""

    def __init__(self, ln: nn.LayerNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = ln.weight, ln.bias, float(ln.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - _mean_last(x)
        y = d * torch.rsqrt(_mean_last(d * d) + self.eps)
        y = y if self.weight is None else y * self.weight
        return y if self.bias is None else y + self.bias


class XnnRMSNorm(nn.Module):
    """Llama-family RMSNorm (``weight * x / rms(x)``) with ops XNNPACK delegates."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.weight = norm.weight
        self.eps = float(getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(_mean_last(x * x) + self.eps))


def xnnpack_norms(module: nn.Module) -> list[str]:
    """Replace (in place) LayerNorms over one axis and Llama-family RMSNorms by :class:`XnnLayerNorm` /
    :class:`XnnRMSNorm`, each checked on a random input against the original first; returns the paths."""
    done = []
    for name, sub in list(module.named_modules()):
        if not name:
            continue
        if isinstance(sub, nn.LayerNorm) and len(sub.normalized_shape) == 1:
            new: nn.Module = XnnLayerNorm(sub)
        elif type(sub).__name__ in _RMS_NORMS and getattr(sub, "weight", None) is not None:
            new = XnnRMSNorm(sub)
        else:
            continue
        if swap_if_equal(module, name, sub, new):
            done.append(name)
    return done


def swap_if_equal(module: nn.Module, name: str, old: nn.Module, new: nn.Module) -> bool:
    """Put ``new`` in place of the norm ``old`` (submodule ``name`` of ``module``) if they agree on a
    random input; a norm whose rewrite would change its output is left as it is."""
    x = torch.randn(2, 3, old.weight.shape[-1])
    with torch.no_grad():
        if not torch.allclose(new(x), old(x), atol=1e-5, rtol=1e-4):
            return False
    parent_name, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent_name) if parent_name else module, child, new)
    return True


def delegation(graph_module: Any) -> dict[str, Any]:
    """Delegated and non-delegated operators of a lowered program, with counts."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    df = info.get_operator_delegation_dataframe()
    delegated, other = {}, {}
    for row in df.itertuples(index=False):
        op = str(row.op_type)
        if op in _BOOKKEEPING:
            continue
        if row.occurrences_in_delegated_graphs:
            delegated[op] = int(row.occurrences_in_delegated_graphs)
        if row.occurrences_in_non_delegated_graphs:
            other[op] = int(row.occurrences_in_non_delegated_graphs)
    return {
        "backend": "XnnpackBackend",
        "partitions": int(info.num_delegated_subgraphs),
        "delegated": dict(sorted(delegated.items())),
        "not_delegated": dict(sorted(other.items())),
    }


def not_delegated_line(model_name: str, info: dict[str, Any]) -> str | None:
    """One line naming the operators that run outside XNNPACK (None when every op is delegated)."""
    ops = info["not_delegated"]
    if not ops:
        return None
    listed = ", ".join(f"{op} x{n}" for op, n in sorted(ops.items(), key=lambda kv: -kv[1]))
    return (
        f"ExecuTorch export of '{model_name}': {sum(ops.values())} ops run outside XNNPACK "
        f"(portable kernels, slower): {listed}"
    )


__all__ = [
    "PerTokenQuantLinear",
    "XnnLayerNorm",
    "XnnRMSNorm",
    "check_spec",
    "delegation",
    "not_delegated_line",
    "per_token_int8",
    "quantized_linear",
    "swap_quantized",
    "swap_reference",
    "xnnpack_norms",
]
