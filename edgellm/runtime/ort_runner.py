"""ONNX Runtime runner with settable thread counts and session options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError, require
from edgellm.runtime.base import Runner, register_runner
from edgellm.utils.specs import TensorSpec

_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(double)": "float64",
}


@register_runner("onnxruntime")
class OrtRunner(Runner):
    """Run an ONNX model (a file, or an artifact directory) in ONNX Runtime.

    Args:
        model: path to a ``.onnx`` file or an :class:`~edgellm.export.Artifact`.
        intra_op_threads: threads inside an op; None lets ONNX Runtime use one per physical core.
        inter_op_threads: threads across independent ops (parallel execution mode only).
        graph_optimization: ``disable | basic | extended | all`` (ONNX Runtime's levels).
        parallel: use ``ORT_PARALLEL`` execution mode.
        providers: execution providers, default CPU.
        session_options: extra ``SessionOptions`` attributes or config entries
            (keys containing ``.``, e.g. ``session.intra_op.allow_spinning``).
        shrink_arena_above: after a run whose inputs hold more elements than this, the CPU memory arena
            gives back what it grew for that run (a server keeps its memory after one large batch);
            None never shrinks.
        inputs / outputs: specs to use instead of the artifact's or the graph's (checked against it).
        threads: a synonym of ``intra_op_threads`` (the name every runner takes).

    Example:
        >>> r = OrtRunner("model.onnx", intra_op_threads=2)          # doctest: +SKIP
        >>> r.run({"input": x})["output"].shape                       # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        *,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        graph_optimization: str = "all",
        parallel: bool = False,
        providers: list[str] | None = None,
        session_options: dict[str, Any] | None = None,
        shrink_arena_above: int | None = None,
        inputs: list[TensorSpec] | None = None,
        outputs: list[TensorSpec] | None = None,
        threads: int | None = None,
    ) -> None:
        ort = require("onnxruntime", "onnx", "the ONNX Runtime runner")
        path = Path(getattr(model, "model_path", model))
        if not path.is_file():
            raise EdgeLLMError(f"ONNX model file '{path}' does not exist", "export one with: edgellm export")
        if graph_optimization not in _OPT_LEVELS:
            raise EdgeLLMError(
                f"unknown graph_optimization '{graph_optimization}'", f"use one of: {', '.join(_OPT_LEVELS)}"
            )
        intra_op_threads = intra_op_threads or threads
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[graph_optimization])
        if intra_op_threads:
            so.intra_op_num_threads = int(intra_op_threads)
        if inter_op_threads:
            so.inter_op_num_threads = int(inter_op_threads)
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        for key, value in (session_options or {}).items():
            if "." in key:
                so.add_session_config_entry(key, str(value))
            else:
                setattr(so, key, value)
        self.path = path
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=so, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # InvalidProtobuf, InvalidGraph, Fail, NoSuchFile: ORT's pybind errors
            first = (str(exc).splitlines() or [""])[0][:300]
            raise EdgeLLMError(
                f"ONNX Runtime cannot load '{path}' ({type(exc).__name__}: {first})",
                "the file is not a valid ONNX model for this runtime: re-export the artifact",
            ) from None
        manifest = getattr(model, "manifest", None)
        if inputs is not None or manifest:
            self.inputs = (
                list(inputs) if inputs is not None else [TensorSpec(**d) for d in manifest["inputs"]]
            )
            self.outputs = (
                list(outputs) if outputs is not None else [TensorSpec(**d) for d in manifest["outputs"]]
            )
            _check_manifest(path, self.inputs, self.session.get_inputs())
        else:
            self.inputs = [_spec(i) for i in self.session.get_inputs()]
            self.outputs = [_spec(o) for o in self.session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]
        self._shrink_above = shrink_arena_above
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    @property
    def session_options(self) -> Any:
        return self.session.get_session_options()

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        big = self._shrink_above is not None and sum(a.size for a in feeds.values()) > self._shrink_above
        res = self.session.run(self._output_names, feeds, self._shrink if big else None)
        return dict(zip(self._output_names, res))


@register_runner("onnxruntime-mobile")
class OrtMobileRunner(OrtRunner):
    """ONNX Runtime on an ``.ort`` (mobile format) artifact: on a host, the same engine as the server runner."""


def _check_manifest(path: Path, declared: list[TensorSpec], graph: list[Any]) -> None:
    """The manifest's inputs are the graph's, with its dtypes and ranks (a manifest is not hashed: an
    edited one must not feed the graph what it cannot take)."""
    by_name = {a.name: _spec(a) for a in graph}
    known = {a.name for a in graph if a.type in _ORT_DTYPES}
    for spec in declared:
        g = by_name.get(spec.name)
        if g is None:
            raise EdgeLLMError(
                f"the manifest of '{path.parent}' declares input '{spec.name}', which {path.name} does not have "
                f"(it has {', '.join(by_name)})",
                "the manifest was edited or belongs to another model: re-export the artifact",
            )
        if (spec.name in known and g.dtype != spec.dtype) or len(g.shape) != len(spec.shape):
            raise EdgeLLMError(
                f"the manifest of '{path.parent}' declares input '{spec.name}' as {spec.dtype} {spec.shape}, "
                f"but {path.name} takes {g.dtype} {g.shape}",
                "the manifest was edited or belongs to another model: re-export the artifact",
            )


def _spec(arg: Any) -> TensorSpec:
    shape = [d if isinstance(d, int) else str(d) for d in arg.shape]
    return TensorSpec(arg.name, _ORT_DTYPES.get(arg.type, "float32"), shape)
