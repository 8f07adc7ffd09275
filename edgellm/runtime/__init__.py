"""Runtimes: one :class:`Runner` interface over torch, ONNX Runtime, LiteRT (TFLite) and TensorRT.

Example:
    >>> from edgellm.runtime import make_runner
    >>> r = make_runner(artifact, intra_op_threads=2)   # doctest: +SKIP
    >>> r.run(feeds)                                     # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from edgellm import plugins
from edgellm.errors import EdgeLLMError
from edgellm.runtime.base import RUNNERS, Runner, register_runner

_MODULES = {
    "torch": "edgellm.runtime.torch_runner",
    "onnxruntime": "edgellm.runtime.ort_runner",
    "onnxruntime-mobile": "edgellm.runtime.ort_runner",  # .ort files run in the same ONNX Runtime on a host
    "litert": "edgellm.runtime.tflite_runner",
    "tensorrt": "edgellm.runtime.tensorrt_runner",
}


def make_runner(model: Any, runtime: str | None = None, **options: Any) -> Runner:
    """A runner for ``model``: a :class:`~edgellm.models.ModelAdapter` (torch) or an artifact/file.

    Args:
        model: model adapter, :class:`~edgellm.export.Artifact`, or path to a model file.
        runtime: runner name; default: ``torch`` for adapters, the artifact's runtime otherwise.
        **options: passed to the runner (thread counts, session options).
    """
    from edgellm.models.adapter import ModelAdapter

    if runtime is None:
        if isinstance(model, ModelAdapter):
            runtime = "torch"
        elif hasattr(model, "manifest"):
            runtime = model.manifest["target"]["runtime"]
        else:
            runtime = "onnxruntime"
    if runtime in _MODULES:
        importlib.import_module(_MODULES[runtime])
    if runtime not in RUNNERS:
        plugins.load("edgellm.runners", runtime)  # a plugin package may provide it
    if runtime not in RUNNERS:
        raise EdgeLLMError(f"unknown runtime '{runtime}'", f"available: {', '.join(sorted(_MODULES))}")
    return RUNNERS[runtime](model, **options)


__all__ = ["RUNNERS", "Runner", "make_runner", "register_runner"]
