"""The quantization methods, one handler per config type: ``@register_method(Int8Static)`` makes
:func:`~edgellm.compress.quant.quantize.quantize` call the handler for that config (and its subclasses,
unless they register their own). A handler takes ``(model, layers, config, calib)`` — the linear layers to
quantize by name, calibration feeds (``[]`` when the config needs none) — and returns a
:class:`~edgellm.compress.quant.spec.LayerQuant` per layer. A new method is a config dataclass and one
handler here, or in a plugin's own module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from edgellm.compress.quant.awq import awq_clip, awq_quantize, awq_search
from edgellm.compress.quant.bias_correction import correct_biases
from edgellm.compress.quant.config import Int4WeightOnly, Int8Dynamic, Int8Static, Int8WeightOnly, QuantConfig
from edgellm.compress.quant.gptq import gptq_quantize
from edgellm.compress.quant.observers import Observer, Stats, activation_range, run_calibration
from edgellm.compress.quant.primitives import (
    activation_qparams,
    quantize_weight,
    symmetric_activation_scale,
    weight_grid,
)
from edgellm.compress.quant.sequential import calibrate_blockwise
from edgellm.compress.quant.smoothing import smoothing, smoothing_factors  # noqa: F401 (smoothing: re-exported)
from edgellm.compress.quant.spec import LayerQuant
from edgellm.errors import EdgeLLMError

Feeds = list[dict[str, np.ndarray]]
Handler = Callable[[Any, dict[str, nn.Linear], Any, Feeds], dict[str, LayerQuant]]

METHODS: dict[type[QuantConfig], Handler] = {}


def register_method(config_type: type[QuantConfig]) -> Callable[[Handler], Handler]:
    """Function decorator: the handler that quantizes layers for configs of ``config_type``."""

    def deco(fn: Handler) -> Handler:
        METHODS[config_type] = fn
        return fn

    return deco


def method_for(config: QuantConfig) -> Handler:
    """The handler registered for ``type(config)`` or its nearest base class."""
    for cls in type(config).__mro__:
        if cls in METHODS:
            return METHODS[cls]
    raise EdgeLLMError(
        f"no quantization method is registered for {type(config).__name__}",
        "register one with @edgellm.compress.quant.register_method(" + type(config).__name__ + ")",
    )


@register_method(Int8Dynamic)
def _dynamic_int8(
    model: Any, targets: dict[str, nn.Linear], cfg: Int8Dynamic, calib: Feeds
) -> dict[str, LayerQuant]:
    inv: dict[str, torch.Tensor] = {}
    if cfg.smoothquant_alpha is not None:
        inv = smoothing_factors(
            model,
            targets,
            cfg.smoothquant_alpha,
            calib,
            grid=cfg.smoothquant_grid,
            dynamic=True,
            per_channel=cfg.per_channel,
            centered=cfg.bias_correction,
        )[0]
    out = {
        n: _int8_weight(n, m, cfg.per_channel, dynamic=True, input_scale=inv.get(n))
        for n, m in targets.items()
    }
    return correct_biases(model, targets, out, calib) if cfg.bias_correction else out


@register_method(Int8WeightOnly)
def _weight_only_int8(
    model: Any, targets: dict[str, nn.Linear], cfg: Int8WeightOnly, calib: Feeds
) -> dict[str, LayerQuant]:
    out = {}
    for n, m in targets.items():
        w = m.weight.detach().float()
        scale, zero = weight_grid(w, 8, cfg.group_size, True, cfg.scale_dtype == "float16")
        out[n] = LayerQuant(n, 8, cfg.group_size, True, quantize_weight(w, scale, zero, 8), scale, zero)
    return out


def _int8_weight(
    name: str,
    m: nn.Linear,
    per_channel: bool,
    *,
    dynamic: bool = False,
    input_scale: torch.Tensor | None = None,
) -> LayerQuant:
    w = m.weight.detach().float()
    if input_scale is not None:
        w = w / input_scale  # x * input_scale @ (W / input_scale)^T == x @ W^T
    scale, zero = weight_grid(w, 8, None, True)
    if not per_channel:
        scale = torch.full_like(scale, float(scale.max()))
    return LayerQuant(
        name,
        8,
        None,
        True,
        quantize_weight(w, scale, zero, 8),
        scale,
        zero,
        input_scale=input_scale,
        dynamic_activation=dynamic,
    )


@register_method(Int8Static)
def _static_int8(
    model: Any, targets: dict[str, nn.Linear], cfg: Int8Static, calib: Feeds
) -> dict[str, LayerQuant]:
    inv: dict[str, torch.Tensor] = {}
    if cfg.smoothquant_alpha is not None:
        inv = smoothing_factors(
            model,
            targets,
            cfg.smoothquant_alpha,
            calib,
            grid=cfg.smoothquant_grid,
            calibration=cfg.calibration,
            percentile=cfg.percentile,
            per_channel=cfg.per_channel,
            centered=cfg.bias_correction,
        )[0]
    obs = Observer(targets, max_rows=512 if cfg.calibration != "minmax" else 0)
    obs.transform = inv
    run_calibration(model, calib, obs)
    out = {}
    for n, m in targets.items():
        lq = _int8_weight(n, m, cfg.per_channel, input_scale=inv.get(n))
        lo, hi = activation_range(obs.stats[n], cfg.calibration, cfg.percentile)
        if cfg.symmetric_activations:
            lq.act_scale, lq.act_zero_point, lq.act_signed = symmetric_activation_scale(lo, hi), 0, True
        else:
            lq.act_scale, lq.act_zero_point = activation_qparams(lo, hi)
        # the output's min/max grid: runtimes whose int8 kernels emit int8 (TFLite) requantize to it
        lq.out_scale, lq.out_zero_point = activation_qparams(obs.stats[n].out_lo, obs.stats[n].out_hi)
        out[n] = lq
    return correct_biases(model, targets, out, calib) if cfg.bias_correction else out


@register_method(Int4WeightOnly)
def _int4(
    model: Any, targets: dict[str, nn.Linear], cfg: Int4WeightOnly, calib: Feeds
) -> dict[str, LayerQuant]:
    for n, m in targets.items():
        if m.in_features % cfg.group_size:
            raise EdgeLLMError(
                f"group size {cfg.group_size} does not divide layer '{n}' ({m.in_features} inputs)",
                f"use a group size that divides {m.in_features}, or keep the layer with --keep '{n}'",
            )

    def quantize_layers(layers: dict[str, nn.Linear], stats: dict[str, Stats]) -> dict[str, LayerQuant]:
        return {n: _int4_layer(n, m, cfg, stats.get(n)) for n, m in layers.items()}

    if cfg.method not in ("gptq", "awq"):
        return quantize_layers(targets, {})
    # block by block: one block's Hessians (or AWQ's input samples) at a time
    return calibrate_blockwise(
        model,
        targets,
        calib,
        quantize_layers,
        hessian=cfg.method == "gptq",
        max_rows=1024 if cfg.method == "awq" else 0,
    )


def _int4_layer(n: str, m: nn.Linear, cfg: Int4WeightOnly, st: Stats | None) -> LayerQuant:
    """One layer's INT4 codes by ``cfg.method`` (``st``: its calibration statistics, for GPTQ and AWQ)."""
    g, sym, fp16, full = cfg.group_size, cfg.symmetric, cfg.scale_dtype == "float16", cfg.full_range
    w = m.weight.detach().float()
    input_scale = None
    if cfg.method == "gptq":
        q, scale, zero = gptq_quantize(
            w,
            st.hessian,
            bits=4,
            group_size=g,
            symmetric=sym,
            damp=cfg.damp,
            fp16_scales=fp16,
            act_order=cfg.act_order,
            full_range=full,
        )
    elif cfg.method == "awq":
        rows = st.sample_rows()
        s, _alpha = awq_search(
            w, st.abssum / max(st.rows, 1), rows, bits=4, group_size=g, symmetric=sym, grid=cfg.awq_grid
        )
        # then AWQ's clipping search on the scaled weights, against the scaled inputs
        clipped = awq_clip(w * s, rows / s, bits=4, group_size=g, symmetric=sym)
        q, scale, zero = awq_quantize(
            clipped,
            torch.ones_like(s),
            bits=4,
            group_size=g,
            symmetric=sym,
            fp16_scales=fp16,
            full_range=full,
        )
        input_scale = None if bool(torch.all(s == 1)) else 1.0 / s
    else:
        scale, zero = weight_grid(w, 4, g, sym, fp16, full)
        q = quantize_weight(w, scale, zero, 4)
    return LayerQuant(n, 4, g, sym, q, scale, zero, input_scale=input_scale)
