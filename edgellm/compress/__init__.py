"""Compression core (stage 3): pure verbs with typed configs, computed once in torch.

- :func:`quantize` ``(model, config, calib) -> QuantSpec`` (``quant/``: INT8 dynamic/static/SmoothQuant,
  INT4 weight-only RTN/GPTQ/AWQ; methods registered by config type with
  :func:`~edgellm.compress.quant.register_method`);
- :func:`prune` ``(model, config) -> (model, PruneRecord)`` (``prune/``: heads, FFN channels, blocks of
  transformers, coupled channels of plain modules; importance scores in one registry).

Each exporter lowers the framework-neutral result to its runtime. The guarded search that quantizes,
exports, evaluates and falls back (``edgellm compress``) is a workflow across stages:
:func:`edgellm.pipeline.compress`.

Example:
    >>> from edgellm.compress import Int8Static, quantize
    >>> spec = quantize(model, Int8Static(calibration="entropy"), calib_feeds)   # doctest: +SKIP
"""

from typing import Any

# The verb ``prune`` is bound over the subpackage of the same name (its modules stay importable as
# ``from edgellm.compress.prune.<module> import ...``).
from edgellm.compress.prune import PruneConfig, PruneRecord, PruningRecord, prune

_QUANT = (
    "Int4WeightOnly",
    "Int8Dynamic",
    "Int8Static",
    "QuantConfig",
    "QuantSpec",
    "SmoothQuant",
    "quantize",
    "register_method",
)


def __getattr__(name: str) -> Any:  # the quantization names load torch: only when first used
    if name in _QUANT:
        from edgellm.compress import quant

        return getattr(quant, name)
    raise AttributeError(f"module 'edgellm.compress' has no attribute {name!r}")


__all__ = [
    "Int4WeightOnly",
    "Int8Dynamic",
    "Int8Static",
    "PruneConfig",
    "PruneRecord",
    "PruningRecord",
    "QuantConfig",
    "QuantSpec",
    "SmoothQuant",
    "prune",
    "quantize",
    "register_method",
]
