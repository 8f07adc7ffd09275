"""TensorRT artifacts: explicit-quantization Q/DQ ONNX (INT8, or INT4 weight-only as blocked
``DequantizeLinear``) or fp32/fp16 ONNX that TensorRT builds into an engine, with optimization profiles
for the dynamic axes.

TensorRT cannot be installed on machines without NVIDIA's package index, so the artifact always holds
the validated ONNX (standard ONNX ops only, checked in ONNX Runtime on CPU), a ``build_engine.sh`` with
the exact ``trtexec`` command, and the manifest says whether the engine was built. Where the
``tensorrt`` Python package and a GPU exist, :func:`build_engine` builds ``model.plan`` in place.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgellm.errors import ExportError, MissingDependencyError
from edgellm.export.base import register_exporter
from edgellm.export.onnx_server import OnnxBased, OnnxServerExporter
from edgellm.export.validate import max_positions
from edgellm.runtime.tensorrt_runner import PLAN_FILE

SCRIPT = "build_engine.sh"


def profiles(model: Any, max_batch: int = 32) -> dict[str, dict[str, list[int]]]:
    """min/opt/max shapes per input: batch 1/8/max_batch, sequence 1/128/model limit."""
    limit = max_positions(model, default=512)
    out: dict[str, dict[str, list[int]]] = {}
    for spec in model.inputs:
        shp = {"min": [], "opt": [], "max": []}
        for i, d in enumerate(spec.shape):
            if isinstance(d, int):
                for k in shp:
                    shp[k].append(d)
            elif i == 0:
                shp["min"].append(1)
                shp["opt"].append(min(8, max_batch))
                shp["max"].append(max_batch)
            else:
                shp["min"].append(1)
                shp["opt"].append(min(128, limit))
                shp["max"].append(limit)
        out[spec.name] = shp
    return out


def _trt_layer_ok(lq: Any) -> bool:
    if lq.bits == 8:
        return not lq.dynamic_activation and lq.act_scale is not None and lq.act_signed
    return lq.bits == 4 and lq.symmetric and lq.act_scale is None and not lq.dynamic_activation


def trtexec_command(
    inputs: dict[str, dict[str, list[int]]], int8: bool, fp16: bool, strongly_typed: bool = False
) -> str:
    def shapes(kind: str) -> str:
        return ",".join(f"{n}:{'x'.join(map(str, s[kind]))}" for n, s in inputs.items())

    cmd = [
        "trtexec",
        "--onnx=model.onnx",
        f"--saveEngine={PLAN_FILE}",
        f"--minShapes={shapes('min')}",
        f"--optShapes={shapes('opt')}",
        f"--maxShapes={shapes('max')}",
    ]
    if strongly_typed:  # INT4 weight-only: the graph's types decide, as TensorRT asks for Q/DQ networks
        cmd.append("--stronglyTyped")
    else:
        if int8:
            cmd.append("--int8")  # explicit quantization: the Q/DQ nodes in the graph set every scale
        if fp16:
            cmd.append("--fp16")
    return " ".join(shlex.quote(c) for c in cmd)


@register_exporter("tensorrt")
class TensorRTExporter(OnnxBased):
    """QDQ ONNX for TensorRT (INT8 needs ``int8-static`` with ``symmetric_activations``), plus a build script.

    Args:
        quant: a QuantSpec with static, symmetric int8 activations; None for fp32.
        fp16: let TensorRT use fp16 kernels where it is faster (``--fp16``).
        max_batch: the largest batch of the optimization profile.
    """

    def __init__(self, quant: Any = None, fp16: bool = False, max_batch: int = 32, **options: Any) -> None:
        if quant is not None:
            bad = [n for n, lq in quant.layers.items() if not _trt_layer_ok(lq)]
            if bad:
                raise ExportError(
                    f"TensorRT takes explicit INT8 Q/DQ with static, symmetric activations, or symmetric INT4 "
                    f"weight-only; layer '{bad[0]}' of recipe '{quant.recipe}' is neither",
                    "quantize with Int8Static(symmetric_activations=True) (edgellm compress --recipe int8-static) "
                    "or Int4WeightOnly(symmetric=True)",
                )
        options["optimize"] = False  # no ONNX Runtime contrib ops: TensorRT does its own fusions
        self.quant, self.fp16, self.max_batch = quant, fp16, max_batch
        self.onnx = OnnxServerExporter(quant=quant, **options)
        self.onnx.standard_int4 = True

    def lower(self, model: Any, target: Any, workdir: Path, variant: str) -> dict[str, Any]:
        import onnx

        with tempfile.TemporaryDirectory(prefix=".onnx-", dir=workdir.parent) as tmp:
            fields = self.onnx.lower(model, target, Path(tmp), variant)
            for f in Path(tmp).iterdir():
                if (workdir / f.name).is_dir():
                    shutil.rmtree(workdir / f.name)
                shutil.move(str(f), workdir / f.name)
        graph = onnx.load(str(workdir / fields["model_file"]), load_external_data=False).graph
        foreign = [(n.op_type, n.domain, n.name) for n in graph.node if n.domain not in ("", "ai.onnx")]
        if foreign:
            op, domain, name = foreign[0]
            raise ExportError(
                f"op '{domain}.{op}' (node '{name}') is not a standard ONNX op, which TensorRT needs",
                "export without ONNX Runtime-specific recipes (int8-dynamic, w4a16 are ORT-only)",
            )
        shapes = profiles(model, self.max_batch)
        bits = {lq.bits for lq in self.quant.layers.values()} if self.quant is not None else set()
        int8, int4 = 8 in bits, 4 in bits
        cmd = trtexec_command(shapes, int8=int8, fp16=self.fp16, strongly_typed=int4)
        (workdir / SCRIPT).write_text(
            "#!/usr/bin/env bash\n# Build the TensorRT engine of this artifact (needs TensorRT and an NVIDIA GPU).\n"
            f'set -euo pipefail\ncd "$(dirname "$0")"\n{cmd}\n'
        )
        (workdir / SCRIPT).chmod(0o755)
        fields["target"] = {**fields["target"], "runtime": "tensorrt", "format": "tensorrt"}
        fields["recipe"]["tensorrt"] = {
            "engine": "pending",
            "engine_file": PLAN_FILE,
            "build_command": cmd,
            "build_script": SCRIPT,
            "profiles": shapes,
            "int8": int8,
            "int4_weight_only": int4,
            "fp16": self.fp16,
            "validated_on": "onnxruntime CPU (the QDQ ONNX); the engine is validated where it is built",
        }
        return fields

    def runner(self, workdir: Path, fields: dict[str, Any], model: Any) -> Any:
        return self.onnx.runner(workdir, fields, model)  # the Q/DQ ONNX, in ONNX Runtime on this host

    def describe(self, model: Any) -> str:
        return f"TensorRT Q/DQ ONNX of '{model.name}'"

    def parity_hint(self, model: Any) -> str:
        return self.onnx.parity_hint(model)


def build_engine(artifact_dir: str | Path, *, workspace_gb: float = 4.0) -> Path:
    """Build ``model.plan`` from a TensorRT artifact with the ``tensorrt`` Python API (GPU needed).

    The plan file sits beside the manifest and is not part of the hashed artifact: it is specific to
    the GPU and TensorRT version it was built with.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError("tensorrt", "tensorrt", "building a TensorRT engine") from exc
    from edgellm.runtime.artifact import Artifact

    art = Artifact.load(artifact_dir)
    trt_rec = art.manifest["recipe"]["tensorrt"]
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = trt_rec.get("int4_weight_only", False)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(art.model_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(
            f"TensorRT could not parse {art.model_path}: {errors}", "check the TensorRT version"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if trt_rec["int8"] and not strongly_typed:
        config.set_flag(trt.BuilderFlag.INT8)
    if trt_rec["fp16"] and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, s in trt_rec["profiles"].items():
        profile.set_shape(name, s["min"], s["opt"], s["max"])
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError("TensorRT failed to build the engine", "see TensorRT's log above")
    out = art.path / PLAN_FILE
    out.write_bytes(bytes(plan))
    return out
