"""Step a ``concat`` generation graph in OpenVINO with the key/value cache held as OpenVINO state.

A ``concat`` step graph (``edgellm export --generate --format openvino``, or an ONNX step graph) takes
``past_*`` caches and returns ``present_*`` = past + new. At load the graph is made *stateful*
(OpenVINO's MakeStateful transformation, as OpenVINO's own LLM pipelines do): each past/present pair
becomes one internal variable, so a decode step feeds only the new token ids, the mask and the
positions, and no cache crosses into Python. Batch is fixed to 1 (the generation API's shape) before
the transformation, which sizes the variables' initial (empty) value.

Example:
    >>> eng = StatefulEngine(art, art.manifest["generation"], threads=2, precision="bf16")  # doctest: +SKIP
    >>> logits = eng.step(prompt_ids); eng.length                                           # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.runtime.base import context_full
from edgellm.runtime.openvino_runner import (
    compile_options,
    core,
    read_model,
    resolve_precision,
    validated_precision,
)


class StatefulEngine:
    """Batch-1 prefill/decode of a ``concat`` step graph in OpenVINO (the engine protocol of
    :mod:`edgellm.runtime.engines`: ``context``, ``length``, ``reset()``, ``step(ids)``).

    Args:
        artifact: the generation artifact (its ``model_file`` is an ONNX step graph or an IR).
        gen: its manifest's ``generation`` section.
        threads: inference threads. precision: ``auto`` (the one the artifact was validated at), f32,
            bf16 or f16.
    """

    def __init__(
        self, artifact: Any, gen: dict[str, Any], *, threads: int | None = None, precision: str = "auto"
    ) -> None:
        from openvino._offline_transformations import apply_make_stateful_transformation

        cache = gen["cache"]
        if cache.get("layout") != "concat":
            raise EdgeLLMError(
                f"OpenVINO runs generation graphs with a 'concat' cache, not '{cache.get('layout')}'",
                "export one for it: edgellm export MODEL --generate --format openvino",
            )
        if precision == "auto":
            precision = validated_precision({**artifact.manifest, "generation": gen})
        self.precision, note = resolve_precision(precision)
        if note:
            warnings.warn(f"OpenVINO: {note}", RuntimeWarning, stacklevel=2)
        model = read_model(artifact.model_path)
        shapes = {}
        for port in model.inputs:
            ps = port.get_partial_shape()
            ps[0] = 1
            shapes[port.get_any_name()] = ps
        model.reshape(shapes)
        apply_make_stateful_transformation(model, dict(zip(cache["past_inputs"], cache["present_outputs"])))
        self.compiled = core().compile_model(
            model,
            "CPU",
            compile_options(
                threads=threads, streams=1, precision=self.precision, hint="LATENCY", cache_dir=None
            ),
        )
        self.request = self.compiled.create_infer_request()
        self._names = {p.get_any_name() for p in self.compiled.inputs}
        self._logits = next(p for p in self.compiled.outputs if "logits" in p.get_names())
        self.context = int(gen["context"])
        self.gen = gen
        self.length = 0

    def reset(self) -> None:
        """Forget the cache (the variables go back to their empty initial value)."""
        self.request.reset_state()
        self.length = 0

    def step(self, ids: list[int]) -> np.ndarray:
        """Feed ``ids`` (prefill: many, decode: one); float32 logits [vocab] of the last one."""
        n = len(ids)
        if n == 0:
            raise EdgeLLMError("step() got no token ids", "pass at least one id")
        total = self.length + n
        if total > self.context:
            raise context_full(self.context, self.length, n)
        feeds = {
            "input_ids": np.asarray([ids], np.int64),
            "attention_mask": np.ones((1, total), np.int64),
        }
        if "position_ids" in self._names:
            feeds["position_ids"] = np.arange(self.length, total, dtype=np.int64)[None]
        res = self.request.infer(feeds)
        self.length = total
        return np.asarray(res[self._logits][0, -1], np.float32)
