"""Runtimes: one :class:`Runner` interface over torch, ONNX Runtime, LiteRT (TFLite) and TensorRT.

Example:
    >>> from edgellm.runtime import make_runner
    >>> r = make_runner(artifact, intra_op_threads=2)   # doctest: +SKIP
    >>> r.run(feeds)                                     # doctest: +SKIP
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any

from edgellm import plugins
from edgellm.errors import EdgeLLMError
from edgellm.runtime.base import RUNNERS, Runner, register_runner


@functools.cache
def discover_runners() -> dict[str, Any]:
    """Import every runner module of this package (``*_runner.py``) once; each registers its runtimes
    with ``@register_runner``, so a new runner is one file. Their SDKs are imported when a runner is made.
    Built-in runners are registered before any plugin is asked, so a plugin never shadows one."""
    for info in pkgutil.iter_modules(__path__):
        if info.name.endswith("_runner"):
            importlib.import_module(f"{__name__}.{info.name}")
    return RUNNERS


def make_runner(model: Any, runtime: str | None = None, **options: Any) -> Runner:
    """A runner for ``model``: a :class:`~edgellm.models.ModelAdapter` (torch) or an artifact/file.

    Args:
        model: model adapter, :class:`~edgellm.export.Artifact`, or path to a model file.
        runtime: runner name; default: ``torch`` for adapters, the artifact's runtime otherwise.
        **options: passed to the runner (thread counts, session options).
    """
    if runtime is None:
        if _is_adapter(model):
            runtime = "torch"
        elif hasattr(model, "manifest"):
            runtime = model.manifest["target"]["runtime"]
        else:
            runtime = "onnxruntime"
    discover_runners()
    if runtime not in RUNNERS:
        plugins.load("edgellm.runners", runtime)  # a plugin package may provide it
    if runtime not in RUNNERS:
        raise EdgeLLMError(f"unknown runtime '{runtime}'", f"available: {', '.join(sorted(RUNNERS))}")
    return RUNNERS[runtime](model, **options)


def _is_adapter(model: Any) -> bool:
    """A :class:`~edgellm.models.ModelAdapter` (checked without importing torch when it is not one: a
    runtime that runs an artifact never needs torch)."""
    import sys

    mod = sys.modules.get("edgellm.models.adapter")
    return mod is not None and isinstance(model, mod.ModelAdapter)


__all__ = ["RUNNERS", "Runner", "discover_runners", "make_runner", "register_runner"]
