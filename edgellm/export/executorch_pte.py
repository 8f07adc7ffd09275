"""ExecuTorch ``.pte`` programs with the XNNPACK delegate (Android/iOS CPUs): fp32, fp16, INT8 weights with
dynamic int8 activations, and INT4 weights with dynamic int8 activations (8da4w), from edgellm's QuantSpec.

``torch.export`` (static shapes: batch 1, sequence ``seq_len``; the runner pads shorter requests and runs
a batch row by row) -> ``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` ->
``.to_executorch()`` -> ``model.pte``. Before export, LayerNorm and Llama-family RMSNorm are rewritten with
ops XNNPACK delegates (:func:`~edgellm.export.executorch_ops.xnnpack_norms`). Precisions:

* ``fp32``: as exported.
* ``fp16``: the module in float16 (inputs cast in, outputs cast back to float32 inside the program);
  validated against the torch model with fp16-rounded weights at the fp16 tolerance.
* a QuantSpec: each quantized linear carries the spec's own codes and scales (int8 per channel, or int4
  symmetric in groups of a multiple of 32) and quantizes its input per token at run time, which XNNPACK
  runs as one dynamically quantized GEMM (:func:`~edgellm.export.executorch_ops.quantized_linear`). The
  reference is the torch fake-quantized model: for a dynamic spec (int8-dynamic) with its activations
  quantized per token as XNNPACK does; for a weight-only spec (w4a16) with float activations, so that
  XNNPACK's int8 activations are part of the error; parity uses the quantized tolerance.

The manifest's ``recipe.executorch`` lists the delegated and the non-delegated operators with counts; when
some ops run outside XNNPACK the export logs one line naming them. Generation decoders are written by
:mod:`edgellm.pipeline.generate_export`: the static-cache program of :mod:`edgellm.export.executorch_static`
(cache layout ``static``), else this exporter's slot step graph (``slots``).

Example:
    >>> art = export("minilm", "snapdragon-8-gen-3", "out/minilm-pte", format="pte")   # doctest: +SKIP
    >>> art.manifest["recipe"]["executorch"]["not_delegated"]                          # doctest: +SKIP
    {'aten_embedding_default': 3, ...}
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

from edgellm.errors import ExportError
from edgellm.export.base import Exporter, register_exporter
from edgellm.export.validate import Tolerance, check_parity, max_positions
from edgellm.runtime.artifact import model_fields

PTE_FILE = "model.pte"
PRECISIONS = ("fp32", "fp16")
# options the ONNX exporters take that mean nothing here (the CLI and compress() pass them to every format)
_IGNORED = {"exporter", "opset", "optimize", "raw_cache", "accuracy_level", "skip_layer_norm_fusion"}
log = logging.getLogger("edgellm.export")


@register_exporter("pte")
class ExecuTorchExporter(Exporter):
    """Lower to ``model.pte`` for ExecuTorch with the XNNPACK delegate.

    Args:
        quant: a QuantSpec (int8 per-channel or symmetric int4 weights; activations become dynamic int8).
        precision: ``fp32`` or ``fp16`` when ``quant`` is None.
        seq_len: the program's static sequence length (shorter inputs are padded by the runner).
        num_threads: ExecuTorch thread-pool size for validation (None: its default).
        xnnpack_norms: rewrite LayerNorm/RMSNorm with XNNPACK-delegated ops (fewer partitions).
    """

    def __init__(
        self,
        quant: Any = None,
        precision: str = "fp32",
        seq_len: int = 128,
        num_threads: int | None = None,
        xnnpack_norms: bool = True,
        **options: Any,
    ) -> None:
        unknown = set(options) - _IGNORED
        if unknown:
            raise ExportError(
                f"the ExecuTorch exporter does not take option(s) {sorted(unknown)}",
                "its options are quant, precision, seq_len, num_threads, xnnpack_norms",
            )
        if quant is not None:
            from edgellm.export.executorch_ops import check_spec

            check_spec(quant)
            precision = f"int{quant.bits}"
        elif precision not in PRECISIONS:
            raise ExportError(
                f"the ExecuTorch exporter does not write '{precision}'", "use fp32, fp16 or a QuantSpec"
            )
        if seq_len < 1:
            raise ExportError(f"seq_len {seq_len} must be positive", "use e.g. 128")
        self.quant, self.precision, self.seq_len = quant, precision, seq_len
        self.num_threads = num_threads
        self.rewrite_norms = xnnpack_norms
        self._runner: Any = None
        self._ref: tuple[Any, Any] | None = None

    @property
    def mode(self) -> str:
        if self.quant is None:
            return self.precision
        bits = {lq.bits for lq in self.quant.layers.values()}
        return "8da4w" if 4 in bits else "8da8w"

    # -- the contract ------------------------------------------------------------------------------
    def lower(self, model: Any, target: Any, workdir: Path, variant: str) -> dict[str, Any]:
        from edgellm.runtime.executorch_runner import ExecuTorchRunner, require_executorch

        require_executorch("ExecuTorch (.pte) export")
        t0 = time.perf_counter()
        seq_len = min(self.seq_len, max_positions(model))
        module, rewritten = self._module(model)
        program, delegated = _lower(model, module, seq_len)
        dst = workdir / PTE_FILE
        dst.write_bytes(program)
        lower_s = time.perf_counter() - t0
        from edgellm.export.executorch_ops import not_delegated_line

        line = not_delegated_line(model.name, delegated)
        if line:
            log.warning(line)
        runner = ExecuTorchRunner(
            dst, inputs=model.inputs, outputs=model.outputs, num_threads=self.num_threads
        )
        self._runner = runner
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(workdir / "tokenizer")
        spec = self.quant
        recipe: dict[str, Any] = {
            "stage": "export" if spec is None else "compress",
            "exporter": "torch.export + executorch.exir (to_edge_transform_and_lower, XnnpackPartitioner)",
            "executorch": {
                "mode": self.mode,
                "file_inputs": {
                    s.name: {"shape": runner.static[s.name], "dtype": s.dtype} for s in model.inputs
                },
                "pads_inputs_to": seq_len if any("sequence" in s.shape for s in model.inputs) else None,
                **delegated,
                "not_delegated_summary": line,
                "norms_rewritten": len(rewritten),
                "threads": runner.num_threads,
                "lower_s": round(lower_s, 2),
                "validated_with": "executorch.runtime (XNNPACK) on this host",
            },
        }
        if spec is not None:
            recipe["quantization"] = {
                "recipe": spec.recipe,
                "config": spec.config,
                "kept_fp32": spec.kept,
                "weight_bytes": spec.weight_bytes(),
                "scales": "from the QuantSpec (weight codes and scales); activations int8 per token at run time",
                "weights": "int4 symmetric (codes - 8), groups of "
                + ", ".join(sorted({str(lq.group_size or lq.shape[1]) for lq in spec.layers.values()}))
                if self.mode == "8da4w"
                else "int8 per output channel",
            }
        return {
            "target": {"name": target.name, "runtime": "executorch", "format": "pte", "kind": target.kind},
            "precision": self.precision,
            "task": model.task,
            "model_file": PTE_FILE,
            "model": model_fields(model),
            "inputs": [s.to_dict() for s in model.inputs],
            "outputs": [s.to_dict() for s in model.outputs],
            "value_ranges": dict(model.int_high),
            "calibration_dataset": (spec.calibration or None) if spec is not None else None,
            "recipe": recipe,
        }

    def runner(self, workdir: Path, fields: dict[str, Any], model: Any) -> Any:
        return self._runner  # opened by lower(), which read the program's shapes through it

    @property
    def dynamic_spec(self) -> bool:
        """A spec whose activations are dynamic int8 already (int8-dynamic): its reference quantizes them
        per token as XNNPACK does; a weight-only spec (w4a16) is checked against float activations."""
        return self.quant is not None and any(lq.dynamic_activation for lq in self.quant.layers.values())

    def reference(self, model: Any) -> Any:
        if self.quant is not None and not self.dynamic_spec:
            return super().reference(model)  # torch fake-quantized weights, float activations
        if self.quant is None and self.precision != "fp16":
            return model
        if self._ref is None or self._ref[0] is not model:
            import torch

            from edgellm.export.executorch_ops import swap_reference

            module = copy.deepcopy(model.module).eval()
            if self.quant is not None:
                swap_reference(module, self.quant)
                name = f"{model.name}-{self.quant.recipe}"
            else:
                with torch.no_grad():
                    for p in module.parameters():
                        if p.dtype == torch.float32:
                            p.copy_(p.half().float())
                name = model.name
            self._ref = (model, dataclasses.replace(model, module=module, name=name))
        return self._ref[1]

    def reference_label(self, model: Any) -> str:
        if self.precision == "fp16":
            return "torch with fp16-rounded weights"
        if self.dynamic_spec:
            return f"torch fake-quantized ({self.quant.recipe}, per-token int8 activations as XNNPACK)"
        return super().reference_label(model)

    def default_tolerance(self) -> Tolerance | None:
        if self.precision == "fp16":  # float16 activations: ~3 decimal digits
            return Tolerance(max_abs=None, min_cosine=0.999)
        return None  # fp32's, or the quantized one (dynamic int8 activations vs the float reference)

    def describe(self, model: Any) -> str:
        return f"ExecuTorch program of '{model.name}' ({self.mode})"

    def parity_hint(self, model: Any) -> str:
        return (
            "keep the most sensitive layers in fp32 (edgellm compress --keep/--max-accuracy-drop), or loosen "
            "--atol/--min-cosine"
        )

    def finish(
        self, model: Any, fields: dict[str, Any], runner: Any, variant: str, rejected: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if self.quant is None and self.precision == "fp32":
            return {}
        vs = check_parity(model, runner)  # what the phone gets against the fp32 model
        return {"vs_fp32": {k: vs[k] for k in ("fixed", "random")}}

    def close(self) -> None:
        self._runner = None
        self._ref = None

    # -- building the module that is exported -------------------------------------------------------
    def _module(self, model: Any) -> tuple[Any, list[str]]:
        from edgellm.export.executorch_ops import swap_quantized, xnnpack_norms

        module = copy.deepcopy(model.module).eval()
        if self.quant is not None:
            swap_quantized(module, self.quant)
        rewritten = xnnpack_norms(module) if self.rewrite_norms else []
        if self.precision == "fp16":
            module = _fp16(module.half(), [s.dtype for s in model.inputs])
        return _by_position(module), rewritten


def _module_classes() -> tuple[type, type]:
    import torch
    from torch import nn

    class ByPosition(nn.Module):
        """The model called positionally (its input specs' order), returning a tuple of tensors."""

        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.module(*args)
            if isinstance(out, torch.Tensor):
                return (out,)
            if isinstance(out, dict):
                return tuple(out.values())
            if hasattr(out, "to_tuple"):
                return tuple(out.to_tuple())
            return tuple(out)

    class Fp16(nn.Module):
        """A float16 module between float32 inputs/outputs (casts inside the program)."""

        def __init__(self, module: nn.Module, dtypes: list[str]) -> None:
            super().__init__()
            self.module, self.floats = module, [d.startswith("float") for d in dtypes]

        def forward(self, *args: torch.Tensor) -> Any:
            args = tuple(a.half() if f else a for a, f in zip(args, self.floats))
            out = ByPosition(self.module)(*args)
            return tuple(o.float() if o.is_floating_point() else o for o in out)

    return ByPosition, Fp16


def _by_position(module: Any) -> Any:
    return _module_classes()[0](module)


def _fp16(module: Any, dtypes: list[str]) -> Any:
    return _module_classes()[1](module, dtypes)


# -- lowering -------------------------------------------------------------------------------------
def _lower(model: Any, module: Any, seq_len: int) -> tuple[bytes, dict[str, Any]]:
    """``torch.export`` at batch 1 / ``seq_len`` -> XNNPACK-delegated edge program -> ``.pte`` bytes."""
    import torch

    from edgellm.export.executorch_ops import delegation, first_line
    from edgellm.runtime.executorch_runner import quiet_executorch

    feeds = model.example_inputs(batch=1, seq=seq_len, seed=0, padded=False)
    args = tuple(torch.as_tensor(feeds[s.name]) for s in model.inputs)
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    with quiet_executorch():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        try:
            with torch.no_grad():
                ep = torch.export.export(module, args, strict=False)
        except Exception as exc:  # torch.export names the construct it cannot trace
            raise ExportError(
                f"torch.export could not trace '{model.name}': {first_line(exc)}",
                "the model must be traceable by torch.export (no data-dependent control flow); "
                "or export it for another format",
            ) from exc
        try:
            edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
            info = delegation(edge.exported_program().graph_module)
            program = edge.to_executorch().buffer
        except Exception as exc:  # the partitioner/serializer names the node it could not take
            raise ExportError(
                f"ExecuTorch could not lower '{model.name}' to XNNPACK: {first_line(exc)}",
                "export in fp32, or report the model (the op named above has no XNNPACK/portable kernel)",
            ) from exc
    return bytes(program), info


__all__ = ["PTE_FILE", "ExecuTorchExporter"]
