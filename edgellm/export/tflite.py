"""TFLite / LiteRT artifacts for Android and embedded arm64: fp32, fp16, dynamic-range INT8 and
full-integer INT8, builtin ops only.

The torch model is converted with ``litert-torch`` at static shapes (batch 1, sequence ``seq_len``; a
phone runs one request at a time and XNNPACK plans static shapes best). The runner pads shorter inputs
with masked positions and loops over the batch, so the artifact takes any batch and any sequence up to
``seq_len``. Precisions:

* ``fp32``: as converted.
* ``fp16``: weights stored as float16, dequantized once at load (``ai-edge-quantizer`` float casting).
* ``int8`` from a dynamic QuantSpec (``int8-dynamic``): int8 per-channel weights, activations quantized
  per row at run time by the hybrid kernels. The linear weights are the spec's dequantized codes, so
  re-quantizing them per channel reproduces the spec's codes and scales exactly.
* ``int8`` from a static QuantSpec (``int8-static``): full-integer linear layers: the input, the
  weights and the output of every quantized linear carry Q/DQ pairs with the spec's scales, which the
  converter folds into int8 ``FULLY_CONNECTED`` kernels (int8 in, int8 out, int32 bias). Layers the
  spec kept in fp32 stay float; ops between the linears (LayerNorm, softmax, GELU) run in float.

Every artifact is loaded in the LiteRT interpreter with XNNPACK on this host and compared with its
torch reference; the manifest lists every op, every op XNNPACK leaves to the reference kernels, and
refuses Flex/custom ops (the plain Android interpreter has none).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from edgellm.errors import ExportError
from edgellm.export.base import Exporter, register_exporter
from edgellm.export.validate import check_parity, max_positions
from edgellm.runtime.artifact import model_fields
from edgellm.runtime.litert import quiet_litert, require_litert

TFLITE_FILE = "model.tflite"
PRECISIONS = ("fp32", "fp16")
# options the ONNX exporters take that mean nothing here (the CLI and compress() pass them to every format)
_IGNORED = {"exporter", "opset", "optimize", "raw_cache", "accuracy_level", "skip_layer_norm_fusion"}
_QUANT_CLASS = "TFLiteQuantLinear"  # its name appears in the converted tensor names (ai-edge-quantizer regex)


@register_exporter("tflite")
class TFLiteExporter(Exporter):
    """Lower to ``model.tflite`` for LiteRT.

    Args:
        quant: a QuantSpec with 8-bit layers (dynamic or static activations), or None.
        precision: ``fp32`` or ``fp16`` when ``quant`` is None.
        seq_len: the static sequence length of the file (inputs up to it are padded).
        num_threads: interpreter threads for validation.
        asymmetric_inputs: dynamic-range INT8: every hybrid FULLY_CONNECTED quantizes its input per row
            asymmetrically on every kernel (op version 9), as XNNPACK does; False keeps op version 3 for
            interpreters older than TensorFlow 2.3, whose builtin kernels then quantize symmetrically
            (measured on MiniLM: cosine against fp32 0.9943 instead of 0.9973 on those kernels).
    """

    def __init__(
        self,
        quant: Any = None,
        precision: str = "fp32",
        seq_len: int = 128,
        num_threads: int | None = None,
        asymmetric_inputs: bool = True,
        **options: Any,
    ) -> None:
        unknown = set(options) - _IGNORED
        if unknown:
            raise ExportError(
                f"the TFLite exporter does not take option(s) {sorted(unknown)}",
                "its options are quant, precision, seq_len, num_threads, asymmetric_inputs",
            )
        if quant is not None:
            bad = [n for n, lq in quant.layers.items() if lq.bits != 8]
            if bad:
                raise ExportError(
                    f"TFLite artifacts take 8-bit QuantSpecs; layer '{bad[0]}' of recipe '{quant.recipe}' has "
                    f"{quant.layers[bad[0]].bits} bits",
                    "quantize with int8-dynamic or int8-static for the phone",
                )
            static = [lq.act_scale is not None for lq in quant.layers.values()]
            if any(static) and not all(static):
                raise ExportError(
                    "the QuantSpec mixes static and dynamic activations", "quantize with one int8 recipe"
                )
            missing = [
                n for n, lq in quant.layers.items() if lq.act_scale is not None and lq.out_scale is None
            ]
            if missing:
                raise ExportError(
                    f"static layer '{missing[0]}' has no output scale, which full-integer TFLite needs",
                    "re-run the quantization with this edgellm (it records output ranges)",
                )
            precision = "int8"
        elif precision not in PRECISIONS:
            raise ExportError(
                f"the TFLite exporter does not write '{precision}'", "use fp32, fp16 or a QuantSpec"
            )
        if seq_len < 1:
            raise ExportError(f"seq_len {seq_len} must be positive", "use e.g. 128")
        self.quant, self.precision, self.seq_len = quant, precision, seq_len
        self.num_threads = num_threads or min(4, os.cpu_count() or 1)
        self.asymmetric_inputs = asymmetric_inputs
        self._runner: Any = None
        self._built: tuple[Any, tuple[Any, Any, str]] | None = None

    @property
    def mode(self) -> str:
        if self.quant is None:
            return self.precision
        return "int8-full" if next(iter(self.quant.layers.values())).act_scale is not None else "int8-dynamic"

    def lower(self, model: Any, target: Any, workdir: Path, variant: str) -> dict[str, Any]:
        require_litert("TFLite/LiteRT export")
        from edgellm.runtime.tflite_runner import TFLiteRunner, inspect_ops, read_ops

        module, _, _ = self._modules(model)
        seq_len = min(self.seq_len, max_positions(model))
        data = _convert_cached(model, module, seq_len, full_int=self.mode == "int8-full")
        if self.mode == "fp16":
            data = _quantize_bytes(data, "fp16")
        elif self.mode == "int8-dynamic":
            data, self._asymmetric = _quantize_bytes(data, "int8-dynamic"), 0
            if self.asymmetric_inputs:
                data, self._asymmetric = asymmetric_inputs(data)
        dst = workdir / TFLITE_FILE
        dst.write_bytes(data)
        ops = read_ops(dst)  # before any interpreter: one would fail on a Flex op without saying which
        foreign = ops["flex"] + ops["custom"]
        if foreign:
            op = foreign[0]
            raise ExportError(
                f"op '{op['op']}' (layer '{op['layer']}') is not a TFLite builtin op; the plain Android "
                "interpreter cannot run it",
                "replace that layer with builtin-friendly torch ops, or keep the model on a server target",
            )
        runner = TFLiteRunner(dst, inputs=model.inputs, outputs=model.outputs, num_threads=self.num_threads)
        self._runner = runner
        ops = inspect_ops(dst, runner.it)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(workdir / "tokenizer")
        spec = self.quant
        recipe: dict[str, Any] = {
            "stage": "export" if spec is None else "compress",
            "exporter": "litert-torch",
            "tflite": {
                "mode": self.mode,
                "file_inputs": {
                    n: {"shape": runner.static[n], "dtype": runner.file_dtypes[n].name} for n in runner.static
                },
                "pads_inputs_to": seq_len if _seq_inputs(model) else None,
                "ops": ops["counts"],
                "builtin_only": True,
                "xnnpack_fallback": ops["fallback"],
                "xnnpack_fallback_ops": sorted({f["op"] for f in ops["fallback"]}),
                "int8_ops": ops["int8_ops"],
                # hybrid FCs quantize their float input per row, asymmetric, on every kernel (XNNPACK's and
                # TFLite's own): the scheme the parity reference models
                "asymmetric_inputs": getattr(self, "_asymmetric", 0) if self.mode == "int8-dynamic" else None,
                "int8_inputs": {
                    n: {"scale": sc, "zero_point": zp} for n, (sc, zp) in runner.in_quant.items()
                },
                "int8_outputs": {
                    spec_name: {"scale": runner.out_quant[n][0], "zero_point": runner.out_quant[n][1]}
                    for spec_name, n in zip([o.name for o in runner.outputs], runner._out_names)
                    if n in runner.out_quant
                },
                "validated_with": "ai-edge-litert interpreter + XNNPACK on this host",
            },
        }
        if spec is not None:
            recipe["quantization"] = {
                "recipe": spec.recipe,
                "config": spec.config,
                "kept_fp32": spec.kept,
                "weight_bytes": spec.weight_bytes(),
                "scales": "from the QuantSpec"
                + (
                    " (input, weight and output of every quantized linear)"
                    if self.mode == "int8-full"
                    else " (weights; activations per row at run time)"
                ),
            }
        return {
            "target": {"name": target.name, "runtime": "litert", "format": "tflite", "kind": target.kind},
            "precision": "int8" if spec is not None else self.precision,
            "task": model.task,
            "model_file": TFLITE_FILE,
            "model": model_fields(model),
            "inputs": [s.to_dict() for s in model.inputs],
            "outputs": [s.to_dict() for s in model.outputs],
            "value_ranges": dict(model.int_high),
            "calibration_dataset": (spec.calibration or None) if spec is not None else None,
            "recipe": recipe,
        }

    def runner(self, workdir: Path, fields: dict[str, Any], model: Any) -> Any:
        return self._runner  # opened by lower(), which read the file's ops and quantization through it

    def reference_label(self, model: Any) -> str:
        return self._modules(model)[2]

    def describe(self, model: Any) -> str:
        return f"TFLite model of '{model.name}' ({self.mode})"

    def parity_hint(self, model: Any) -> str:
        if self.mode == "int8-full" and (outliers := outlier_output_layers(self.quant)):
            return "keep the layers whose outputs carry outliers in fp32: " + " ".join(
                f"--keep '{n}'" for n in outliers
            )
        return (
            "keep the most sensitive layers in fp32 (edgellm compress --max-accuracy-drop), or loosen "
            "--atol/--min-cosine"
        )

    def finish(
        self, model: Any, fields: dict[str, Any], runner: Any, variant: str, rejected: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if self.quant is None and self.mode != "fp16":
            return {}
        vs = check_parity(model, runner)  # what the phone gets against the fp32 model
        return {"vs_fp32": {k: vs[k] for k in ("fixed", "random")}}

    def reference(self, model: Any) -> Any:
        """The torch model this exporter's artifacts are validated against."""
        return self._modules(model)[1]

    # -- building the torch module that is converted ----------------------------------------------
    def _modules(self, model: Any) -> tuple[Any, Any, str]:
        """(module to convert, reference adapter, reference label), built once per model."""
        if self._built is None or self._built[0] is not model:
            self._built = (model, self._build_modules(model))
        return self._built[1]

    def _build_modules(self, model: Any) -> tuple[Any, Any, str]:
        import dataclasses

        import torch

        if self.mode == "fp32":
            return model.module.eval(), model, "torch fp32"
        if self.mode == "fp16":
            module = copy.deepcopy(model.module).eval()
            with torch.no_grad():
                for p in module.parameters():
                    if p.dtype == torch.float32:
                        p.copy_(p.half().float())
            ref = dataclasses.replace(model, module=module)
            return model.module.eval(), ref, "torch with fp16-rounded weights"
        full = self.mode == "int8-full"

        def build(reference: bool) -> Any:
            module = copy.deepcopy(model.module).eval()
            for name, lq in self.quant.layers.items():
                parent_name, _, child = name.rpartition(".")
                parent = module.get_submodule(parent_name) if parent_name else module
                setattr(
                    parent, child, _quant_linear_class()(lq, getattr(parent, child).bias, full, reference)
                )
            return module

        module = build(reference=False)
        if full:  # the Q/DQ graph itself runs in torch: exactly the arithmetic the int8 kernels implement
            ref = dataclasses.replace(model, module=module, name=f"{model.name}-{self.quant.recipe}")
            return module, ref, f"torch Q/DQ graph ({self.quant.recipe}, int8 inputs/weights/outputs)"
        ref = dataclasses.replace(
            model, module=build(reference=True), name=f"{model.name}-{self.quant.recipe}"
        )
        return module, ref, f"torch fake-quantized ({self.quant.recipe}, per-row int8 activations as TFLite)"


def _seq_inputs(model: Any) -> bool:
    return any("sequence" in s.shape for s in model.inputs)


def outlier_output_layers(spec: Any, factor: float = 4.0) -> list[str]:
    """Layers whose int8 output step is over ``factor`` x the median step of the spec's layers.

    Their outputs carry outliers (typically what a block writes back into the residual stream), so one
    int8 step there is too coarse for a full-integer graph, which must emit int8 from every int8 layer.
    """
    import statistics

    steps = {n: lq.out_scale for n, lq in spec.layers.items() if lq.out_scale}
    if not steps:
        return []
    med = statistics.median(steps.values())
    return [n for n, s in steps.items() if s > factor * med]


_QL: Any = None


def _quant_linear_class() -> Any:
    """The torch module a quantized linear becomes before conversion (defined lazily: imports torch)."""
    global _QL
    if _QL is not None:
        return _QL
    import torch
    import torch.ao.quantization.fx._decomposed  # registers torch.ops.quantized_decomposed
    from torch import nn

    qd = torch.ops.quantized_decomposed

    def qdq(x: torch.Tensor, scale: float, zp: int) -> torch.Tensor:
        q = qd.quantize_per_tensor(x, scale, zp, -128, 127, torch.int8)
        return qd.dequantize_per_tensor(q, scale, zp, -128, 127, torch.int8)

    def int8_grid(scale: float, zp: int, signed: bool) -> tuple[float, int]:
        return float(scale), int(zp) if signed else int(zp) - 128  # uint8 grid -> the same grid in int8

    def per_row_dynamic(x: torch.Tensor) -> torch.Tensor:
        """What TFLite's hybrid (dynamic-range) kernels do to activations: asymmetric int8 per row."""
        lo = torch.clamp(x.amin(dim=-1, keepdim=True), max=0.0)
        hi = torch.clamp(x.amax(dim=-1, keepdim=True), min=0.0)
        scale = torch.clamp((hi - lo) / 255.0, min=1e-12)
        zp = torch.round(-128.0 - lo / scale)
        q = torch.clamp(torch.round(x / scale) + zp, -128, 127)
        return (q - zp) * scale

    class TFLiteQuantLinear(nn.Module):
        """``y = Q/DQ(x) @ Q/DQ(W)^T + b`` then Q/DQ(y) (``full``); for dynamic range the dequantized
        weight only (what is converted) or with per-row activation fake quantization (``reference``)."""

        def __init__(self, lq: Any, bias: torch.Tensor | None, full: bool, reference: bool = False) -> None:
            super().__init__()
            scale = lq.scale.reshape(-1).float()
            self.register_buffer("weight", lq.qweight.float() * scale[:, None])  # exactly codes x scale
            self.register_buffer("w_scale", scale)
            self.register_buffer("w_zp", torch.zeros_like(scale, dtype=torch.int64))
            self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
            self.register_buffer("input_scale", None if lq.input_scale is None else lq.input_scale.float())
            self.full, self.reference = full, reference
            if full:
                self.act = int8_grid(lq.act_scale, lq.act_zero_point, lq.act_signed)
                self.out = int8_grid(lq.out_scale, lq.out_zero_point, lq.act_signed)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.input_scale is not None:
                x = x * self.input_scale
            if not self.full:
                x = per_row_dynamic(x) if self.reference else x
                return nn.functional.linear(x, self.weight, self.bias)
            x = qdq(x, *self.act)
            wq = qd.quantize_per_channel(self.weight, self.w_scale, self.w_zp, 0, -127, 127, torch.int8)
            w = qd.dequantize_per_channel(wq, self.w_scale, self.w_zp, 0, -127, 127, torch.int8)
            return qdq(nn.functional.linear(x, w, self.bias), *self.out)

    assert TFLiteQuantLinear.__name__ == _QUANT_CLASS
    _QL = TFLiteQuantLinear
    return _QL


# -- conversion ----------------------------------------------------------------------------------
def _convert_cached(model: Any, module: Any, seq_len: int, *, full_int: bool) -> bytes:
    """:func:`_convert`, kept in ``$EDGELLM_EXPORT_CACHE`` (when set) where the module converted is the
    model's own: its fp32 and fp16 files convert the same graph (quantized modules are converted fresh)."""
    from edgellm.export.onnx_server import EXPORT_CACHE_ENV, model_key

    root = os.environ.get(EXPORT_CACHE_ENV)
    if not root or full_int or module is not model.module:
        return _convert(model, module, seq_len, full_int=full_int)
    from importlib.metadata import version

    key = model_key(model, "tflite", version("litert-torch"), str(seq_len))
    path = Path(root) / f"tflite-{key}.tflite"
    if path.is_file():
        return path.read_bytes()
    data = _convert(model, module, seq_len, full_int=full_int)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # whole or not at all, also for another process of the same run
    return data


def _convert(model: Any, module: Any, seq_len: int, *, full_int: bool) -> bytes:
    import torch

    feeds = model.example_inputs(batch=1, seq=seq_len, seed=0)
    kwargs = {s.name: torch.as_tensor(feeds[s.name]) for s in model.inputs}
    module = _by_name(module, [s.name for s in model.inputs])
    with quiet_litert():
        import litert_torch

        quant_config = None
        if full_int:  # tells the converter to fold the Q/DQ pairs into int8 kernels
            from litert_torch.quantize import pt2e_quantizer as pq
            from litert_torch.quantize import quant_config as qcfg

            q = pq.PT2EQuantizer().set_global(
                pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
            )
            quant_config = qcfg.QuantConfig(pt2e_quantizer=q)
        try:
            with torch.no_grad():
                edge = litert_torch.convert(module, sample_kwargs=kwargs, quant_config=quant_config)
            return bytes(edge.model_content())
        except Exception as exc:  # the converter names the torch op / MLIR op it could not lower
            msg = str(exc).strip().splitlines()
            detail = next(
                (ln for ln in msg if "error" in ln.lower() or "not" in ln.lower()), msg[0] if msg else ""
            )
            op = re.search(r"aten\.[A-Za-z0-9_]+", detail)
            layer = _locate(module, kwargs, op.group(0)) if op else None
            where = f" in layer '{layer}'" if layer else ""
            raise ExportError(
                f"litert-torch could not convert '{model.name}' to TFLite{where}: {type(exc).__name__}: "
                f"{detail[:400]}",
                "the op named above has no TFLite builtin lowering; rewrite that layer with supported ops "
                "or export for a server target",
            ) from exc


def _locate(module: Any, kwargs: dict[str, Any], op: str) -> str | None:
    """The torch module path that calls ``op`` (``aten.bucketize``), from torch.export's module stack."""
    import torch

    try:
        graph = torch.export.export(module, (), kwargs).run_decompositions().graph
    except Exception:  # the layer is a nicety on top of the op's name: never fail the error path
        return None
    for node in graph.nodes:
        if node.op == "call_function" and str(node.target).startswith(op + "."):
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            path = stack[-1][0] if stack else ""
            path = "" if path == "module" else path.removeprefix("module.")  # the _by_name wrapper
            return path or "(top level)"
    return None


def _by_name(module: Any, names: list[str]) -> Any:
    """``module`` called positionally with keyword inputs named as the model's input specs (the names the
    TFLite signature then carries, whatever ``forward`` calls its arguments)."""
    from torch import nn

    class ByName(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module

        def forward(self, **inputs: Any) -> Any:
            return self.module(*[inputs[n] for n in names])

    return ByName()


def asymmetric_inputs(data: bytes) -> tuple[bytes, int]:
    """Every hybrid ``FULLY_CONNECTED`` (float input, int8 weights) of a dynamic-range file told to quantize
    its input per row **asymmetrically** (``asymmetric_quantize_inputs``, op version 9), as XNNPACK's
    dynamically quantized kernels do and as the reference models. Without it, TFLite's own hybrid kernels,
    which run wherever XNNPACK does not take the op (an interpreter without the delegate, a CPU it does not
    recognize), quantize symmetric rows and lose about one bit after a GELU: cosine 0.9943 instead of 0.9973
    against fp32 for the demo's MiniLM on emulated arm64. Returns the file and the number of ops set."""
    import numpy as np
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(data))
    for buf in model.buffers:  # as arrays, which pack in one copy (a bytearray packs byte by byte: ~45 s)
        if buf.data is not None and not isinstance(buf.data, np.ndarray):
            buf.data = np.frombuffer(bytes(buf.data), dtype=np.uint8)
    int8 = 9  # TensorType.INT8
    fc = [i for i, oc in enumerate(model.operatorCodes) if fbu.opcode_to_name(model, i) == "FULLY_CONNECTED"]
    n = 0
    for g in model.subgraphs:
        for op in g.operators:
            if op.opcodeIndex in fc and len(op.inputs) > 1 and op.inputs[1] >= 0:
                hybrid = g.tensors[op.inputs[1]].type == int8 and g.tensors[op.inputs[0]].type != int8
                if hybrid and op.builtinOptions is not None:
                    op.builtinOptions.asymmetricQuantizeInputs = True
                    n += 1
    if not n:
        return data, 0
    for i in fc:  # the op version that carries the asymmetric scheme (TFLite's op_version.cc)
        model.operatorCodes[i].version = max(model.operatorCodes[i].version, 9)
    return bytes(fbu.convert_object_to_bytearray(model)), n


def _quantize_bytes(data: bytes, mode: str) -> bytes:
    """fp16 weights (float casting) or int8 dynamic-range weights with ai-edge-quantizer."""
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

    with quiet_litert():
        qz = quantizer.Quantizer(bytearray(data))
        if mode == "fp16":
            qz.add_weight_only_config(
                regex=".*",
                operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                num_bits=16,
                algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
            )
        else:  # only the layers the QuantSpec quantized (kept layers have no TFLiteQuantLinear in their name)
            qz.add_dynamic_config(
                regex=f".*{_QUANT_CLASS}_.*",
                operation_name=qtyping.TFLOperationName.FULLY_CONNECTED,
                num_bits=8,
            )
        res = qz.quantize(enable_progress_report=False)
    return bytes(res.quantized_model)


__all__ = ["TFLITE_FILE", "TFLiteExporter", "outlier_output_layers"]
