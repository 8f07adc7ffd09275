"""Quantization: INT8 (static with min-max/percentile/entropy calibration, SmoothQuant at one alpha or
searched per layer, fast bias correction, dynamic) and
INT4 weight-only (group-wise RTN, GPTQ, AWQ), computed once in torch as a framework-neutral
:class:`QuantSpec` that each exporter lowers to its runtime's native form.

Example:
    >>> from edgellm.compress.quant import Int8Static, quantize, apply_quant
    >>> spec = quantize(model, Int8Static(calibration="entropy"), calib_feeds)   # doctest: +SKIP
    >>> fake = apply_quant(model, spec)      # the torch reference for every lowered artifact  # doctest: +SKIP
"""

from edgellm.compress.quant.config import (
    RECIPES,
    Int4WeightOnly,
    Int8Dynamic,
    Int8Static,
    Int8StaticOV,
    Int8WeightOnly,
    QuantConfig,
    SmoothQuant,
    config_for,
)
from edgellm.compress.quant.methods import METHODS, register_method
from edgellm.compress.quant.quantize import (
    QuantLinear,
    apply_quant,
    keep_most_sensitive,
    layer_sensitivity,
    quantizable_layers,
    quantize,
)
from edgellm.compress.quant.spec import LayerQuant, QuantSpec

__all__ = [
    "METHODS",
    "RECIPES",
    "Int4WeightOnly",
    "Int8Dynamic",
    "Int8Static",
    "Int8StaticOV",
    "Int8WeightOnly",
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
