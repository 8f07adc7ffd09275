"""A decoder as one ExecuTorch program with its key/value cache inside (cache layout ``static``), as
ExecuTorch's own LLM export builds it: the cache is a set of mutable buffers of the program, written in
place at ``input_pos``; nothing but the new tokens and the position crosses the program's boundary.

:func:`lower_static` takes a :class:`~edgellm.models.static_cache.StaticCacheDecoder` (and a QuantSpec whose
layer names are the decoder's own), swaps the spec's layers for the dynamically quantized linears of
:mod:`edgellm.export.executorch_ops` (8da8w / 8da4w from the spec's codes), rewrites the norms with ops
XNNPACK delegates, then ``torch.export`` with a dynamic number of new positions (1..``max_chunk``) ->
``to_edge_transform_and_lower([XnnpackPartitioner()])`` -> ``to_executorch`` with the re-inplace pass
(the functional ``index_put`` of each cache write becomes an in-place write into the buffer, so no copy of
the cache is made per step) and upper-bound memory planning of the dynamic shapes. The program's method
``forward(tokens int64 [1, T], input_pos int64 [1]) -> logits float32 [1, 1, vocab]``.

The artifact is checked by the caller (:func:`edgellm.pipeline.generate_export.export_generate`: greedy
tokens through :class:`~edgellm.runtime.executorch_generation.StaticCacheEngine` against the reference)
before anything is written; the manifest lists the delegated and the non-delegated operators.

Example:
    >>> art, extra = lower_static(adapter, static_decoder(adapter, 256), spec, tgt, work)   # doctest: +SKIP
    >>> art.manifest["recipe"]["executorch"]["not_delegated"]                             # doctest: +SKIP
    {'aten_embedding_default': 3, 'aten_index_put_default': 12, ...}
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any

from edgellm.errors import ExportError

PTE_FILE = "model.pte"
log = logging.getLogger("edgellm.export")


def lower_static(
    adapter: Any,
    decoder: Any,
    quant: Any,
    target: Any,
    work: Path,
    precision: str = "fp32",
    *,
    xnnpack_norms: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Write the static-cache program of ``decoder`` into ``work``; returns the artifact and the manifest's
    ``generation`` fields of the cache (the caller adds the layout and checks the tokens).

    Args:
        adapter: the loaded model (name, family, tokenizer for the manifest).
        decoder: a :class:`~edgellm.models.static_cache.StaticCacheDecoder` sharing ``adapter``'s modules.
        quant: a QuantSpec named after ``decoder``'s modules (None: float weights).
        precision: ``fp32`` without a spec (the float16 program is the slot graph's).
    """
    from edgellm.runtime.artifact import Artifact, model_fields, write_manifest
    from edgellm.runtime.executorch_runner import require_executorch
    from edgellm.utils.specs import TensorSpec

    require_executorch("ExecuTorch (.pte) export")
    if quant is None and precision != "fp32":
        raise ExportError(
            f"the static-cache program is written in fp32 or from a QuantSpec, not '{precision}'",
            "the slot graph takes fp16 (cache layout 'slots')",
        )
    t0 = time.perf_counter()
    from edgellm.export.executorch_ops import check_spec, not_delegated_line, swap_quantized

    module = copy.deepcopy(decoder).eval()
    if quant is not None:
        check_spec(quant)
        swap_quantized(module, quant)
    rewritten = _linear_mean_norms(module) if xnnpack_norms else []
    program, delegated = _lower(adapter.name, module)
    work.mkdir(parents=True, exist_ok=True)
    (work / PTE_FILE).write_bytes(program)
    line = not_delegated_line(adapter.name, delegated)
    if line:
        log.warning(line)
    if adapter.tokenizer is not None:
        adapter.tokenizer.save_pretrained(work / "tokenizer")
    mode = "8da4w" if quant is not None and quant.bits == 4 else "8da8w" if quant is not None else precision
    vocab = int(adapter.config.vocab_size)
    inputs = [
        TensorSpec("tokens", "int64", [1, "new"]),
        TensorSpec("input_pos", "int64", [1]),
    ]
    outputs = [TensorSpec("logits", "float32", [1, 1, vocab])]
    recipe: dict[str, Any] = {
        "stage": "export" if quant is None else "compress",
        "exporter": "torch.export + executorch.exir (to_edge_transform_and_lower, XnnpackPartitioner, "
        "reinplace of the cache writes)",
        "executorch": {
            "mode": mode,
            "program": "static key/value cache as mutable buffers; forward(tokens [1, new], input_pos [1])",
            "max_new_per_call": module.max_chunk,
            **delegated,
            "not_delegated_summary": line,
            "norms_rewritten": len(rewritten),
            "lower_s": round(time.perf_counter() - t0, 2),
            "validated_with": "executorch.runtime (XNNPACK) on this host: greedy tokens",
        },
    }
    if quant is not None:
        recipe["quantization"] = {
            "recipe": quant.recipe,
            "config": quant.config,
            "kept_fp32": quant.kept,
            "weight_bytes": quant.weight_bytes(),
            "scales": "from the QuantSpec (weight codes and scales); activations int8 per token at run time",
        }
    fields = {
        "model_file": PTE_FILE,
        "task": adapter.task,
        "model": model_fields(adapter),
        "target": {"name": target.name, "runtime": "executorch", "format": "pte", "kind": target.kind},
        "precision": f"int{quant.bits}" if quant is not None else precision,
        "inputs": [s.to_dict() for s in inputs],
        "outputs": [s.to_dict() for s in outputs],
        "calibration_dataset": (quant.calibration or None) if quant is not None else None,
        "recipe": recipe,
    }
    write_manifest(work, fields)
    cache = {
        "buffers": "one [kv_heads, context, head_dim] key and value buffer per layer, inside the program",
        "dtype": "float32",
        "max_new_per_call": module.max_chunk,
    }
    return Artifact.load(work), {"cache": cache}


def _linear_mean_norms(module: Any) -> list[str]:
    """Replace (in place) the Llama-family RMSNorms by :class:`_RMSNormByLinear`, each checked on a random
    input against the original first; returns the paths."""

    from edgellm.export.executorch_ops import _RMS_NORMS, swap_if_equal

    done = []
    for name, sub in list(module.named_modules()):
        if not name or type(sub).__name__ not in _RMS_NORMS or getattr(sub, "weight", None) is None:
            continue
        if swap_if_equal(module, name, sub, _norm_class()(sub)):
            done.append(name)
    return done


def _norm_class() -> type:
    import torch
    from torch import nn

    class _RMSNormByLinear(nn.Module):
        """RMSNorm whose mean over the last axis is a linear with a ``1/d`` weight: XNNPACK delegates it at
        any number of positions (the 4-D mean of :class:`~edgellm.export.executorch_ops.XnnRMSNorm` needs
        reshapes whose dynamic shapes it does not take)."""

        def __init__(self, norm: nn.Module) -> None:
            super().__init__()
            self.weight = norm.weight
            self.eps = float(getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6))
            d = norm.weight.shape[-1]
            self.register_buffer("mean_w", torch.full((1, d), 1.0 / d, dtype=norm.weight.dtype))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ms = nn.functional.linear(x * x, self.mean_w)  # [..., 1]
            return self.weight * (x * torch.rsqrt(ms + self.eps))

    return _RMSNormByLinear


def _lower(name: str, module: Any) -> tuple[bytes, dict[str, Any]]:
    """``torch.export`` with ``T`` dynamic -> XNNPACK-delegated edge program -> ``.pte`` bytes."""
    import torch

    from edgellm.export.executorch_ops import delegation, first_line
    from edgellm.runtime.executorch_runner import quiet_executorch

    args = (torch.zeros(1, min(2, module.max_chunk), dtype=torch.long), torch.zeros(1, dtype=torch.long))
    new = torch.export.Dim("new", min=1, max=module.max_chunk)
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    with quiet_executorch():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
        from executorch.exir.passes import MemoryPlanningPass
        from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

        try:
            with torch.no_grad():
                ep = torch.export.export(module, args, dynamic_shapes=({1: new}, None), strict=False)
        except Exception as exc:  # torch.export names the construct it cannot trace
            raise ExportError(
                f"torch.export could not trace the static-cache decoder of '{name}': {first_line(exc)}",
                "export it through the slot graph (cache layout 'slots')",
            ) from exc
        try:
            edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
            info = delegation(edge.exported_program().graph_module)
            config = ExecutorchBackendConfig(
                extract_delegate_segments=True,
                run_reinplace_pass=True,  # index_put -> index_put_: the cache is written in place
                memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
                sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),  # plan the dynamic shapes' maxima
            )
            program = edge.to_executorch(config).buffer
        except Exception as exc:  # the partitioner/serializer names the node it could not take
            raise ExportError(
                f"ExecuTorch could not lower the static-cache decoder of '{name}': {first_line(exc)}",
                "export it through the slot graph (cache layout 'slots')",
            ) from exc
    return bytes(program), info


__all__ = ["PTE_FILE", "lower_static"]
