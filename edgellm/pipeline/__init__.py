"""Workflows that cross stages; no stage imports this package.

- :func:`~edgellm.pipeline.compress_search.compress`: the guarded compression search (quantize, export,
  evaluate against fp32, time, fall back until the accuracy guard holds) behind ``edgellm compress``.
- :mod:`~edgellm.pipeline.export_many`: one model for several targets at a named precision
  (``edgellm export --target all``); :mod:`~edgellm.pipeline.target_matrix`: every
  (target, format, precision) exported and benchmarked.
- :class:`~edgellm.pipeline.recipe.Recipe` and :func:`~edgellm.pipeline.run.run_recipe`: one YAML from raw
  text to a checked split deployment (content-hashed stages, skipped when unchanged, lineage in every
  manifest); :mod:`~edgellm.pipeline.report`: ``report.md`` with tables and plots.

Example:
    >>> from edgellm.pipeline import compress
    >>> res = compress("minilm", "int8-static", output="out/minilm-int8", max_accuracy_drop="cosine>=0.99")  # doctest: +SKIP
"""

from typing import Any

# name -> module: imported when first used (the workflows load torch; ``import edgellm.pipeline`` does not)
_NAMES = {
    "CompressResult": "compress_search",
    "GuardError": "compress_search",
    "compress": "compress_search",
    "Recipe": "recipe",
    "Pipeline": "run",
    "run_recipe": "run",
}


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        import importlib

        value = getattr(importlib.import_module(f"edgellm.pipeline.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgellm.pipeline' has no attribute {name!r}")


__all__ = ["CompressResult", "GuardError", "Pipeline", "Recipe", "compress", "run_recipe"]
