"""Quantize/dequantize primitives: integer grids, scales, zero points, int4 packing.

Conventions (shared by every lowering):
- int8 weights: symmetric, ``q`` in [-127, 127], zero point 0, ``w ~= q * scale``.
- int4 weights: unsigned ``q`` in [0, 15] with a zero point in [0, 15] (8 when symmetric),
  ``w ~= (q - zero_point) * scale``, one (scale, zero point) per group of ``group_size`` inputs.
- activations (static int8): per tensor, uint8 ``q`` in [0, 255], ``x ~= (q - zero_point) * scale``.
"""

from __future__ import annotations

import torch


def weight_grid(
    w: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    fp16: bool = False,
    full_range: bool = False,
):
    """Scales and zero points for ``w`` (out, in) per output channel and group; ``fp16``: scales rounded
    to float16 before the codes are computed (block formats that store float16 scales, GGUF's, then hold
    the codes exactly); ``full_range`` (symmetric 4-bit): all 16 levels, ``scale = -(signed max) / 8`` so
    that the group's largest weight lands exactly on code 0 (llama.cpp's Q4_0 rule; the scale's sign then
    varies by group), instead of ``absmax / 7`` over 15 levels.

    Returns:
        ``(scale, zero_point)`` of shape (out, n_groups), float32 and int16 (values fit the bit width).
    """
    if full_range and symmetric and bits == 4:
        out_f, in_f = w.shape
        wg = w.float().reshape(out_f, in_f // (group_size or in_f), -1)
        peak = torch.gather(wg, -1, wg.abs().argmax(dim=-1, keepdim=True)).squeeze(-1)
        scale = torch.where(peak == 0, torch.full_like(peak, 1e-12), peak / -8.0)
        zp = torch.full_like(scale, 8, dtype=torch.int16)
    else:
        scale, zp = _grid(w, bits, group_size, symmetric)
    if fp16:
        scale = torch.where(scale < 0, scale.clamp(max=-(2.0**-24)), scale.clamp(min=2.0**-24)).half().float()
        if not symmetric and bits != 8:  # the zero point on the rounded scale's grid
            lo = w.float().reshape(w.shape[0], scale.shape[1], -1).amin(dim=-1).clamp(max=0)
            zp = torch.round(-lo / scale).clamp(0, (1 << bits) - 1).to(torch.int16)
    return scale, zp


def _grid(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool):
    out_f, in_f = w.shape
    g = in_f if group_size is None else group_size
    wg = w.float().reshape(out_f, in_f // g, g)
    if bits == 8:
        absmax = wg.abs().amax(dim=-1).clamp(min=1e-12)
        return absmax / 127.0, torch.zeros_like(absmax, dtype=torch.int16)
    qmax = (1 << bits) - 1
    if symmetric:
        absmax = wg.abs().amax(dim=-1).clamp(min=1e-12)
        mid = 1 << (bits - 1)
        return absmax / (mid - 1), torch.full_like(absmax, mid, dtype=torch.int16)
    lo = wg.amin(dim=-1).clamp(max=0)
    hi = wg.amax(dim=-1).clamp(min=0)
    scale = ((hi - lo) / qmax).clamp(min=1e-12)
    zp = torch.round(-lo / scale).clamp(0, qmax).to(torch.int16)
    return scale, zp


def quantize_weight(
    w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int
) -> torch.Tensor:
    """Integer codes of ``w`` on the grid (int16 tensor, same shape as ``w``)."""
    out_f, in_f = w.shape
    n_groups = scale.shape[1]
    g = in_f // n_groups
    wg = w.float().reshape(out_f, n_groups, g)
    if bits == 8:
        q = torch.round(wg / scale[..., None]).clamp(-127, 127)
    else:
        q = (torch.round(wg / scale[..., None]) + zero_point[..., None]).clamp(0, (1 << bits) - 1)
    return q.reshape(out_f, in_f).to(torch.int16)


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """Float32 weights from codes, scales and zero points."""
    out_f, in_f = q.shape
    n_groups = scale.shape[1]
    qg = q.reshape(out_f, n_groups, in_f // n_groups).float()
    return ((qg - zero_point[..., None].float()) * scale[..., None]).reshape(out_f, in_f)


def fake_quant_weight(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> torch.Tensor:
    """Round-to-nearest quantize then dequantize (the RTN reference)."""
    scale, zp = weight_grid(w, bits, group_size, symmetric)
    return dequantize_weight(quantize_weight(w, scale, zp, bits), scale, zp)


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """uint8 scale and zero point for the range [lo, hi] (always containing 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, 1e-12)
    zp = round(-lo / scale)
    return float(scale), max(0, min(255, zp))


def fake_quant_activation(
    x: torch.Tensor, scale: float, zero_point: int, signed: bool = False
) -> torch.Tensor:
    """Quantize/dequantize activations with fixed (static) parameters: uint8, or int8 when ``signed``."""
    lo, hi = (-128, 127) if signed else (0, 255)
    q = torch.clamp(torch.round(x / scale) + zero_point, lo, hi)
    return (q - zero_point) * scale


def symmetric_activation_scale(lo: float, hi: float) -> float:
    """int8 scale (zero point 0) covering [lo, hi]."""
    return max(max(abs(lo), abs(hi)) / 127.0, 1e-12)


def fake_quant_dynamic(x: torch.Tensor) -> torch.Tensor:
    """Per-tensor uint8 quantize/dequantize with the range of ``x`` itself, as ONNX Runtime's
    ``DynamicQuantizeLinear`` does at run time (range always includes 0)."""
    lo = torch.clamp(x.min(), max=0.0)
    hi = torch.clamp(x.max(), min=0.0)
    scale = torch.clamp((hi - lo) / 255.0, min=1e-12)
    zp = torch.clamp(torch.round(-lo / scale), 0, 255)
    q = torch.clamp(torch.round(x / scale) + zp, 0, 255)
    return (q - zp) * scale


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack unsigned 4-bit codes (…, 2k) into uint8 (…, k): element 2i in the low nibble, 2i+1 in the high."""
    q = q.to(torch.uint8)
    if q.shape[-1] % 2:
        q = torch.nn.functional.pad(q, (0, 1))
    return (q[..., 0::2] & 0x0F) | ((q[..., 1::2] & 0x0F) << 4)


def unpack_int4(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`, trimmed to ``n`` codes along the last axis."""
    lo = packed & 0x0F
    hi = (packed >> 4) & 0x0F
    return torch.stack([lo, hi], dim=-1).reshape(*packed.shape[:-1], -1)[..., :n]
