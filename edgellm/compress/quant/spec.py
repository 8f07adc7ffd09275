"""``QuantSpec``: the framework-neutral result of quantization, computed once in torch.

Per quantized ``nn.Linear`` it holds the integer weight codes, per-group scales and zero points, an
optional per-input-channel scale applied to the activation first (SmoothQuant, AWQ), and for static
W8A8 the activation's scale and zero point. Every exporter lowers the same spec to its runtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgellm.compress.quant.primitives import (
    dequantize_weight,
    fake_quant_activation,
    fake_quant_dynamic,
    pack_int4,
)

SPEC_FILE = "quant_spec.json"
TENSORS_FILE = "quant_tensors.safetensors"


@dataclass
class LayerQuant:
    """One quantized linear layer ``y = (x * input_scale) @ W^T + bias + bias_correction``.

    Shapes: ``qweight`` (out, in) int16 codes; ``scale``/``zero_point`` (out, n_groups);
    ``input_scale`` (in,) or None; ``act_scale``/``act_zero_point`` set only for static activations;
    ``bias_correction`` (out,) or None: added to the layer's fp32 bias (bias correction).
    """

    name: str
    bits: int
    group_size: int | None  # None: one group spanning all inputs (per output channel)
    symmetric: bool
    qweight: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    input_scale: torch.Tensor | None = None
    act_scale: float | None = None
    act_zero_point: int | None = None
    dynamic_activation: bool = False
    act_signed: bool = False  # int8 activations in [-128, 127] with zero point 0 (TensorRT); else uint8
    out_scale: float | None = None  # static INT8: the output's uint8 grid (min/max over calibration)
    out_zero_point: int | None = None
    bias_correction: torch.Tensor | None = None  # (out,) added to the bias: the mean output shift removed

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.qweight.shape)  # type: ignore[return-value]

    def dequantize(self) -> torch.Tensor:
        """Float32 weight (out, in) as the runtime sees it (before the input scale)."""
        return dequantize_weight(self.qweight, self.scale, self.zero_point)

    def packed(self) -> torch.Tensor:
        """Codes packed for storage: int8 as is, int4 two per byte (low nibble first)."""
        return self.qweight.to(torch.int8) if self.bits == 8 else pack_int4(self.qweight)

    def meta(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "group_size": self.group_size,
            "symmetric": self.symmetric,
            "shape": list(self.shape),
            "act_scale": self.act_scale,
            "act_zero_point": self.act_zero_point,
            "act_signed": self.act_signed,
            "out_scale": self.out_scale,
            "out_zero_point": self.out_zero_point,
            "dynamic_activation": self.dynamic_activation,
            "input_scale": self.input_scale is not None,
            "bias_correction": self.bias_correction is not None,
        }


class QuantLinear(nn.Module):
    """Fake-quantized linear: the torch model a lowered artifact must reproduce."""

    def __init__(self, lq: LayerQuant, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", lq.dequantize())
        b = None if bias is None else bias.detach().float().clone()
        if lq.bias_correction is not None:
            b = lq.bias_correction.float().clone() if b is None else b + lq.bias_correction.float()
        self.register_buffer("bias", b)
        self.register_buffer("input_scale", None if lq.input_scale is None else lq.input_scale.float())
        self.act = (lq.act_scale, lq.act_zero_point, lq.act_signed) if lq.act_scale is not None else None
        self.dynamic = lq.dynamic_activation
        self.in_features, self.out_features = lq.shape[1], lq.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x * self.input_scale
        if self.act is not None:
            x = fake_quant_activation(x, *self.act)
        elif self.dynamic:
            x = fake_quant_dynamic(x)
        return nn.functional.linear(x, self.weight, self.bias)


@dataclass
class QuantSpec:
    """All quantized layers of a model, plus what was left in higher precision and why."""

    recipe: str
    config: dict[str, Any]
    layers: dict[str, LayerQuant]
    kept: dict[str, str] = field(default_factory=dict)  # layer -> reason it stayed fp32
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def bits(self) -> int:
        return min((lq.bits for lq in self.layers.values()), default=32)

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of the quantized linear weights (codes + scales + zero points) and their fp32 size."""
        q = fp = 0
        for lq in self.layers.values():
            out_f, in_f = lq.shape
            fp += out_f * in_f * 4
            codes = out_f * in_f * lq.bits // 8
            zps = 0 if (lq.bits == 8 or lq.symmetric) else (lq.zero_point.numel() + 1) // 2
            q += codes + lq.scale.numel() * 4 + zps
        return {"quantized": q, "fp32": fp}

    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for n, lq in self.layers.items():
            tensors[f"{n}::packed"] = lq.packed().contiguous()
            tensors[f"{n}::scale"] = lq.scale.float().contiguous()
            tensors[f"{n}::zero_point"] = lq.zero_point.to(torch.int16).contiguous()
            if lq.input_scale is not None:
                tensors[f"{n}::input_scale"] = lq.input_scale.float().clone()  # q/k/v share one factor
            if lq.bias_correction is not None:
                tensors[f"{n}::bias_correction"] = lq.bias_correction.float().contiguous()
        save_file(tensors, str(d / TENSORS_FILE))
        meta = {
            "recipe": self.recipe,
            "config": self.config,
            "kept": self.kept,
            "calibration": self.calibration,
            "layers": {n: lq.meta() for n, lq in self.layers.items()},
        }
        (d / SPEC_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> QuantSpec:
        from safetensors.torch import load_file

        from edgellm.compress.quant.primitives import unpack_int4

        d = Path(directory)
        meta = json.loads((d / SPEC_FILE).read_text())
        t = load_file(str(d / TENSORS_FILE))
        layers = {}
        for n, m in meta["layers"].items():
            packed = t[f"{n}::packed"]
            q = (
                packed.to(torch.int16)
                if m["bits"] == 8
                else unpack_int4(packed, m["shape"][1]).to(torch.int16)
            )
            layers[n] = LayerQuant(
                n,
                m["bits"],
                m["group_size"],
                m["symmetric"],
                q,
                t[f"{n}::scale"],
                t[f"{n}::zero_point"],
                t.get(f"{n}::input_scale"),
                m["act_scale"],
                m["act_zero_point"],
                m["dynamic_activation"],
                m.get("act_signed", False),
                m.get("out_scale"),
                m.get("out_zero_point"),
                t.get(f"{n}::bias_correction"),
            )
        return cls(meta["recipe"], meta["config"], layers, meta["kept"], meta["calibration"])
