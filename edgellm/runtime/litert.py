"""LiteRT's Python packages: the check that they import, and the silence they need around them.

The runner (``ai-edge-litert``'s interpreter) and the TFLite exporter (``litert-torch`` to convert,
``ai-edge-quantizer`` to quantize) share both; they come together with ``pip install 'edgellm[tflite]'``.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

from edgellm.errors import MissingDependencyError


def quiet_litert() -> AbstractContextManager[None]:
    """Silence the converter's progress bars, absl logging and deprecation warnings."""
    from edgellm.utils.quiet import quiet

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return quiet("", "absl", "litert_torch", "torch", "ai_edge_quantizer", stderr=True)


def require_litert(purpose: str, *, interpreter_only: bool = False) -> None:
    """Raise :class:`MissingDependencyError` unless the LiteRT converter, quantizer and interpreter import
    (the interpreter alone with ``interpreter_only``: running a file needs neither torch nor the converter)."""
    wanted = [("ai_edge_litert", "ai-edge-litert")]
    if not interpreter_only:
        wanted += [("litert_torch", "litert-torch"), ("ai_edge_quantizer", "ai-edge-quantizer")]
    for mod, pkg in wanted:
        try:
            with quiet_litert():
                __import__(mod)
        except ImportError as exc:
            raise MissingDependencyError(pkg, "tflite", purpose) from exc
