"""The server target: ONNX with dynamic batch/sequence axes and ONNX Runtime's transformer fusions.

Steps: export (TorchScript exporter for encoders, whose graphs ONNX Runtime fuses fully into
``Attention``/``EmbedLayerNormalization``; the dynamo exporter for decoders and plain modules; each
falls back to the other), fuse with ``onnxruntime.transformers.optimizer`` where the family has a
fusion recipe, save (external data past ~1.8 GiB), validate in ONNX Runtime against torch. A fused
graph that fails parity is dropped for the unfused one, and the manifest says so.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgellm.errors import ExportError, ParityError, require
from edgellm.export.base import Exporter, register_exporter
from edgellm.export.validate import Tolerance, check_parity, passes, summary
from edgellm.models.families import FAMILIES

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
EXTERNAL_DATA_THRESHOLD = int(1.8 * (1 << 30))  # protobuf's hard limit is 2 GiB for the whole file


@dataclass
class OnnxOptions:
    """Options of the ONNX server exporter.

    Args:
        opset: ONNX opset for the TorchScript exporter (the dynamo exporter picks its own, >= 18).
        exporter: ``auto`` (TorchScript for encoders, dynamo otherwise, each falling back to the
            other), ``torchscript`` or ``dynamo``.
        optimize: apply ONNX Runtime's transformer fusions where the family has a recipe.
        external_data_threshold: weights larger than this many bytes go to ``model.onnx.data``.
    """

    opset: int = 17
    exporter: str = "auto"
    optimize: bool = True
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD

    def __post_init__(self) -> None:
        if self.exporter not in ("auto", "torchscript", "dynamo"):
            raise ExportError(f"unknown exporter '{self.exporter}'", "use auto, torchscript or dynamo")
        if not 13 <= self.opset <= 23:
            raise ExportError(
                f"opset {self.opset} is out of range", "use an opset from 13 to 23 (default 17)"
            )


@register_exporter("onnx")
class OnnxServerExporter(Exporter):
    """Lower a model to fp32 ONNX for ONNX Runtime servers."""

    def __init__(self, **options: Any) -> None:
        self.options = OnnxOptions(**options)

    def lower(self, model: Any, target: Any, workdir: Path, tolerance: Tolerance) -> dict[str, Any]:
        require("onnx", "onnx", "the ONNX exporter")
        require("onnxruntime", "onnx", "validating an ONNX export")
        from edgellm.runtime.ort_runner import OrtRunner

        opts = self.options
        with tempfile.TemporaryDirectory(prefix=".raw-", dir=workdir.parent) as rawdir:
            raw = Path(rawdir) / MODEL_FILE
            used, attempts = _export(model, raw, opts)
            big = sum(f.stat().st_size for f in Path(rawdir).iterdir()) > opts.external_data_threshold
            dst = workdir / MODEL_FILE
            fusion: dict[str, Any] = {"applied": False}
            family = FAMILIES.get(model.family)
            if opts.optimize and family is not None and family.ort_model_type:
                fusion = _fuse(raw, dst, model, family.ort_model_type, big)
            if not fusion["applied"]:
                _save(raw, dst, big)
            runner = OrtRunner(dst)
            runner.inputs = [s for s in model.inputs if s.name in {i.name for i in runner.inputs}]
            runner.outputs = model.outputs
            parity = check_parity(model, runner)
            ok = passes(parity["fixed"], tolerance) and passes(parity["random"], tolerance)
            if not ok and fusion["applied"]:
                fusion = {
                    "applied": False,
                    "rejected": fusion["ops"],
                    "reason": "fused graph failed parity: " + summary(parity["random"]),
                }
                for f in (dst, workdir / DATA_FILE):
                    f.unlink(missing_ok=True)
                _save(raw, dst, big)
                runner = OrtRunner(dst)
                runner.inputs = [s for s in model.inputs if s.name in {i.name for i in runner.inputs}]
                runner.outputs = model.outputs
                parity = check_parity(model, runner)
                ok = passes(parity["fixed"], tolerance) and passes(parity["random"], tolerance)
            if not ok:
                raise ParityError(
                    f"ONNX export of '{model.name}' disagrees with torch beyond tolerance "
                    f"(max_abs {tolerance.max_abs}, cosine {tolerance.min_cosine}): fixed {summary(parity['fixed'])}; "
                    f"random {summary(parity['random'])}",
                    "try --exporter torchscript/dynamo or --no-optimize, or loosen --atol/--min-cosine",
                )
            inputs = runner.inputs
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(workdir / "tokenizer")
        import onnx

        opset = next(
            (
                o.version
                for o in onnx.load(dst, load_external_data=False).opset_import
                if o.domain in ("", "ai.onnx")
            ),
            None,
        )
        return {
            "target": {"name": target.name, "runtime": "onnxruntime", "format": "onnx", "kind": target.kind},
            "precision": "fp32",
            "task": model.task,
            "model_file": MODEL_FILE,
            "model": {
                "name": model.name,
                "family": model.family,
                "num_parameters": model.num_parameters,
                "blocks": [b.name for b in model.blocks],
                "source": model.source,
            },
            "inputs": [s.to_dict() for s in inputs],
            "outputs": [s.to_dict() for s in model.outputs],
            "value_ranges": {k: v for k, v in model.int_high.items() if k in {s.name for s in inputs}},
            "calibration_dataset": None,
            "recipe": {
                "stage": "export",
                "exporter": used,
                "export_attempts": attempts,
                "opset": opset,
                "options": asdict(opts),
                "fusion": fusion,
                "external_data": big,
            },
            "parity": {**parity, "tolerance": tolerance.to_dict(), "passed": True, "reference": "torch fp32"},
        }


def _export(model: Any, raw: Path, opts: OnnxOptions) -> tuple[str, list[dict[str, str]]]:
    family = FAMILIES.get(model.family)
    if opts.exporter != "auto":
        order = [opts.exporter]
    elif family is not None and family.kind == "encoder":
        order = ["torchscript", "dynamo"]
    else:
        order = ["dynamo", "torchscript"]
    attempts: list[dict[str, str]] = []
    for name in order:
        for f in raw.parent.iterdir():
            f.unlink()
        try:
            with _quiet():
                (_torchscript if name == "torchscript" else _dynamo)(model, raw, opts)
            return name, attempts
        except Exception as exc:  # exporters raise many kinds; keep the reason, try the next
            attempts.append(
                {"exporter": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            )
    detail = "; ".join(f"{a['exporter']}: {a['error']}" for a in attempts)
    raise ExportError(
        f"could not export '{model.name}' to ONNX ({detail})",
        "check that the model runs in torch on its example inputs; try --exporter dynamo or torchscript",
    )


@contextlib.contextmanager
def _quiet():
    """Silence exporter chatter (tracer warnings, torchvision notices, progress prints)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _example_args(model: Any) -> tuple[Any, ...]:
    import torch

    feeds = model.example_inputs(batch=2, seq=8, seed=0)
    return tuple(torch.as_tensor(feeds[s.name]) for s in model.inputs)


def _torchscript(model: Any, raw: Path, opts: OnnxOptions) -> None:
    import torch

    axes = {s.name: s.dynamic_axes for s in [*model.inputs, *model.outputs] if s.dynamic_axes}
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            model.module,
            _example_args(model),
            str(raw),
            input_names=[s.name for s in model.inputs],
            output_names=[s.name for s in model.outputs],
            dynamic_axes=axes,
            opset_version=opts.opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _dynamo(model: Any, raw: Path, opts: OnnxOptions) -> None:
    import torch

    limit = 1 << 20
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(cfg, key, None), int):
            limit = getattr(cfg, key)
            break
    dims: dict[str, Any] = {}

    def dim(name: str) -> Any:
        if name not in dims:
            dims[name] = torch.export.Dim(name, min=1, max=limit if name == "sequence" else 1 << 20)
        return dims[name]

    shapes = tuple({i: dim(n) for i, n in s.dynamic_axes.items()} or None for s in model.inputs)
    with torch.no_grad():
        torch.onnx.export(
            model.module,
            _example_args(model),
            str(raw),
            input_names=[s.name for s in model.inputs],
            output_names=[s.name for s in model.outputs],
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=True,
            verbose=False,
        )


def _fuse(raw: Path, dst: Path, model: Any, ort_type: str, big: bool) -> dict[str, Any]:
    """Run ONNX Runtime's transformer optimizer (graph fusions only, opt_level 0: portable)."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    cfg = model.config
    heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "n_head", 0) or 0)
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0) or 0)
    try:
        with _quiet():
            opt = optimizer.optimize_model(
                str(raw),
                model_type=ort_type,
                num_heads=heads,
                hidden_size=hidden,
                opt_level=0,
                optimization_options=FusionOptions(ort_type),
            )
            ops = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
            opt.save_model_to_file(str(dst), use_external_data_format=big, all_tensors_to_one_file=True)
    except Exception as exc:  # a fusion pass that cannot handle a graph is skipped, not fatal
        for f in (dst, dst.with_name(DATA_FILE)):
            f.unlink(missing_ok=True)
        return {"applied": False, "reason": f"optimizer failed: {type(exc).__name__}: {str(exc)[:200]}"}
    if big and (dst.parent / (dst.name + ".data")).exists() and dst.name + ".data" != DATA_FILE:
        os.replace(dst.parent / (dst.name + ".data"), dst.parent / DATA_FILE)
    return {"applied": bool(ops), "ops": ops, "model_type": ort_type}


def _save(raw: Path, dst: Path, big: bool) -> None:
    import onnx

    m = onnx.load(str(raw))
    if big:
        onnx.save_model(
            m,
            str(dst),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=DATA_FILE,
            size_threshold=1024,
        )
    else:
        onnx.save_model(m, str(dst))
