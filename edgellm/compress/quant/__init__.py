"""Quantization: INT8 (static with min-max/percentile/entropy calibration, SmoothQuant, dynamic) and
INT4 weight-only (group-wise RTN, GPTQ, AWQ), computed once in torch as a framework-neutral
:class:`QuantSpec` that each exporter lowers to its runtime's native form.

The configs import no torch; the verbs and the spec load it when first used.

Example:
    >>> from edgellm.compress.quant import Int8Static, quantize, apply_quant
    >>> spec = quantize(model, Int8Static(calibration="entropy"), calib_feeds)   # doctest: +SKIP
    >>> fake = apply_quant(model, spec)      # the torch reference for every lowered artifact  # doctest: +SKIP
"""

from typing import Any

from edgellm.compress.quant.config import (
    RECIPES,
    Int4WeightOnly,
    Int8Dynamic,
    Int8Static,
    QuantConfig,
    SmoothQuant,
    config_for,
)

_LAZY = {
    "METHODS": "methods",
    "register_method": "methods",
    "QuantLinear": "quantize",
    "apply_quant": "quantize",
    "keep_most_sensitive": "quantize",
    "layer_sensitivity": "quantize",
    "quantizable_layers": "quantize",
    "quantize": "quantize",
    "LayerQuant": "spec",
    "QuantSpec": "spec",
}


def __getattr__(name: str) -> Any:  # torch-backed names: imported when first used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"edgellm.compress.quant.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'edgellm.compress.quant' has no attribute {name!r}")


__all__ = [
    "METHODS",
    "RECIPES",
    "Int4WeightOnly",
    "Int8Dynamic",
    "Int8Static",
    "LayerQuant",
    "QuantConfig",
    "QuantLinear",
    "QuantSpec",
    "SmoothQuant",
    "apply_quant",
    "config_for",
    "keep_most_sensitive",
    "layer_sensitivity",
    "quantizable_layers",
    "quantize",
    "register_method",
]
