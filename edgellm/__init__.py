"""edgellm: from raw data to models running on phones and servers.

``import edgellm`` stays lean: torch, onnxruntime, TFLite and TensorRT are imported only by the stage
that uses them. Stages are reached as submodules (``edgellm.models``, ``edgellm.export``...), loaded
on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgellm._version import __version__
from edgellm.utils.quiet import hush_import_noise

hush_import_noise()

_SUBMODULES = (
    "models",
    "export",
    "runtime",
    "bench",
    "targets",
    "data",
    "train",
    "compress",
    "partition",
    "serve",
    "split",
    "cli",
    "errors",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"edgellm.{name}")
    raise AttributeError(f"module 'edgellm' has no attribute {name!r}")
