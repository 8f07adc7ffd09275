"""ONNX Runtime mobile artifacts: the ``.ort`` format plus the operator configuration for a reduced
build (``required_operators.config``), for Android/iOS/embedded arm64.

The model is first lowered exactly as for the server (fp32, or a QuantSpec: INT8 as
``DynamicQuantizeMatMul``/QDQ with uint8 activations and int8 weights, the combination ONNX Runtime's
arm64 kernels run with dot-product instructions), then converted with ONNX Runtime's own converter
for ``target_platform="arm"``; :func:`~edgellm.export.export` validates the ``.ort`` file on this host.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from pathlib import Path
from typing import Any

from edgellm.errors import ExportError, require
from edgellm.export.base import register_exporter
from edgellm.export.onnx_server import OnnxBased, OnnxServerExporter, onnx_runner

ORT_FILE = "model.ort"
OPS_FILE = "required_operators.config"


@register_exporter("ort")
class OrtMobileExporter(OnnxBased):
    """Lower to ``.ort`` for ONNX Runtime mobile; options are those of the server ONNX exporter."""

    def __init__(self, quant: Any = None, **options: Any) -> None:
        self.quant = quant
        self.onnx = OnnxServerExporter(quant=quant, **options)

    def lower(self, model: Any, target: Any, workdir: Path, variant: str) -> dict[str, Any]:
        require("onnxruntime", "onnx", "the ONNX Runtime mobile exporter")
        from onnxruntime.tools import convert_onnx_models_to_ort as conv

        for f in (workdir / ORT_FILE, workdir / OPS_FILE):
            f.unlink(missing_ok=True)
        with self.lowered_onnx(model, target, workdir, variant) as (tmpdir, fields):
            out = tmpdir / "ort"
            logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    conv.convert_onnx_models_to_ort(
                        tmpdir / fields["model_file"],
                        out,
                        [conv.OptimizationStyle.Fixed],
                        target_platform="arm",
                    )
            except Exception as exc:  # the converter raises plain exceptions naming the op
                raise ExportError(
                    f"ONNX Runtime could not convert '{model.name}' to .ort: {exc}",
                    "export with --no-optimize, or report the op named above",
                ) from exc
            ort_files = list(out.glob("*.ort"))
            configs = list(out.glob("*.config"))
            if not ort_files:
                raise ExportError(
                    f"ONNX Runtime wrote no .ort file for '{model.name}'", "see the converter's log"
                )
            shutil.move(str(ort_files[0]), workdir / ORT_FILE)
            shutil.move(str(configs[0]), workdir / OPS_FILE)
        ops = [
            line.strip()
            for line in (workdir / OPS_FILE).read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        fields["target"] = {**fields["target"], "runtime": "onnxruntime-mobile", "format": "ort"}
        fields["model_file"] = ORT_FILE
        fields["recipe"]["ort_format"] = {
            "optimization_style": "Fixed",
            "target_platform": "arm",
            "required_operators": ops,
            "config_file": OPS_FILE,
        }
        return fields

    def runner(self, workdir: Path, fields: dict[str, Any], model: Any) -> Any:

        return onnx_runner(workdir / ORT_FILE, model)

    def describe(self, model: Any) -> str:
        return f".ort model of '{model.name}'"

    def parity_hint(self, model: Any) -> str:
        return "export with --no-optimize, or loosen --atol/--min-cosine"
