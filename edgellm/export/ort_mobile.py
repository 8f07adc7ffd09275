"""ONNX Runtime mobile artifacts: the ``.ort`` format plus the operator configuration for a reduced
build (``required_operators.config``), for Android/iOS/embedded arm64.

The model is first lowered and validated exactly as for the server (fp32, or a QuantSpec: INT8 as
``DynamicQuantizeMatMul``/QDQ with uint8 activations and int8 weights, the combination ONNX Runtime's
arm64 kernels run with dot-product instructions), then converted with ONNX Runtime's own converter
for ``target_platform="arm"`` and validated again from the ``.ort`` file on this host.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgellm.errors import ExportError, ParityError, require
from edgellm.export.base import Exporter, register_exporter
from edgellm.export.validate import Tolerance, check_parity, passes, summary

ORT_FILE = "model.ort"
OPS_FILE = "required_operators.config"


@register_exporter("ort")
class OrtMobileExporter(Exporter):
    """Lower to ``.ort`` for ONNX Runtime mobile; options are those of the server ONNX exporter."""

    def __init__(self, quant: Any = None, **options: Any) -> None:
        from edgellm.export.onnx_server import OnnxServerExporter

        self.quant = quant
        self.onnx = OnnxServerExporter(quant=quant, **options)

    def lower(self, model: Any, target: Any, workdir: Path, tolerance: Tolerance) -> dict[str, Any]:
        require("onnxruntime", "onnx", "the ONNX Runtime mobile exporter")
        from onnxruntime.tools import convert_onnx_models_to_ort as conv

        with tempfile.TemporaryDirectory(prefix=".onnx-", dir=workdir.parent) as tmp:
            tmpdir = Path(tmp)
            fields = self.onnx.lower(model, target, tmpdir, tolerance)
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
            if (tmpdir / "tokenizer").is_dir():
                shutil.copytree(tmpdir / "tokenizer", workdir / "tokenizer")
        from edgellm.compress.quant import apply_quant
        from edgellm.export.onnx_server import _runner

        reference = apply_quant(model, self.quant) if self.quant is not None else model
        runner = _runner(workdir / ORT_FILE, model)
        parity = check_parity(reference, runner)
        if not (passes(parity["fixed"], tolerance) and passes(parity["random"], tolerance)):
            raise ParityError(
                f".ort model of '{model.name}' disagrees with the reference: random {summary(parity['random'])}",
                "export with --no-optimize, or loosen --atol/--min-cosine",
            )
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
        fields["parity"] = {
            **parity,
            "tolerance": tolerance.to_dict(),
            "passed": True,
            "reference": fields["parity"]["reference"],
            "onnx_parity": {k: fields["parity"][k] for k in ("fixed", "random")},
        }
        return fields
