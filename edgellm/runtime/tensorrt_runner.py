"""TensorRT runner: a built engine (``model.plan`` beside the artifact's manifest) on an NVIDIA GPU.

Buffers are torch CUDA tensors; each call sets the input shapes (inside the optimization profile the
artifact records), binds the addresses and enqueues on one CUDA stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError, MissingDependencyError
from edgellm.runtime.base import Runner, register_runner

PLAN_FILE = "model.plan"  # the engine, beside the artifact's manifest (built by edgellm.export.tensorrt)


@register_runner("tensorrt")
class TensorRTRunner(Runner):
    """Run the engine of a TensorRT artifact (build it first: ``build_engine.sh`` or ``build_engine()``)."""

    def __init__(self, model: Any, **_: Any) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise MissingDependencyError("tensorrt", "tensorrt", "running TensorRT engines") from exc
        import torch

        if not torch.cuda.is_available():
            raise EdgeLLMError(
                "TensorRT engines run on an NVIDIA GPU and none is visible", "run on a GPU host"
            )
        if not hasattr(model, "manifest"):
            raise EdgeLLMError("the TensorRT runner takes a TensorRT artifact", "pass the artifact directory")
        plan = Path(model.path) / PLAN_FILE
        if not plan.is_file():
            raise EdgeLLMError(
                f"the engine of '{model.path}' is pending (no {PLAN_FILE})",
                f"build it on the GPU host: bash {model.path}/build_engine.sh, or "
                "edgellm.export.tensorrt.build_engine(path)",
            )
        self.trt, self.torch = trt, torch
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise EdgeLLMError(
                f"TensorRT could not load {plan}", "rebuild it with this TensorRT version and GPU"
            )
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        present = set(names)
        self.inputs = [s for s in model.inputs if s.name in present]
        self.outputs = model.outputs

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, trt = self.torch, self.trt
        keep = []
        for spec in self.inputs:
            t = torch.as_tensor(feeds[spec.name]).cuda().contiguous()
            keep.append(t)
            self.context.set_input_shape(spec.name, tuple(t.shape))
            self.context.set_tensor_address(spec.name, t.data_ptr())
        outs = {}
        for spec in self.outputs:
            shape = tuple(self.context.get_tensor_shape(spec.name))
            dtype = torch.from_numpy(
                np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(spec.name)))
            ).dtype
            outs[spec.name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(spec.name, outs[spec.name].data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise EdgeLLMError("TensorRT failed to run the engine", "see TensorRT's log above")
        self.stream.synchronize()
        return {n: t.float().cpu().numpy() for n, t in outs.items()}
