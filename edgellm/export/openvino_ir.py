"""OpenVINO IR artifacts (``--format openvino``): ``model.xml`` + ``model.bin`` for x86 servers.

The model is lowered exactly as for the ONNX server target (fp32 fused graph, or a QuantSpec as QDQ
INT8 / ``MatMulNBits`` INT4), then read by OpenVINO's ONNX front end and written with
``openvino.save_model``: fp32 weights are stored as fp16 (``compress_to_fp16``; OpenVINO decompresses
them at load), quantized weights stay int8/int4. :func:`~edgellm.export.export` validates the IR in
OpenVINO at f32 inference; the target's other precisions (bf16) are validated and timed by
:mod:`edgellm.export.runtimes`. Compiled blobs are cached at run time (``CACHE_DIR``), so a second load
of the same IR skips compilation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError, require
from edgellm.export.base import SkipVariant, register_exporter
from edgellm.export.onnx_server import OnnxBased, OnnxServerExporter

IR_FILE = "model.xml"
BIN_FILE = "model.bin"


@register_exporter("openvino")
class OpenVinoExporter(OnnxBased):
    """Lower to an OpenVINO IR; options are those of the server ONNX exporter.

    Args:
        quant: a QuantSpec computed on the model (INT8 as QDQ, INT4 as ``MatMulNBits``).
        compress_weights: store fp32 weights as fp16 in ``model.bin`` (half the size; OpenVINO's default).
        **options: :class:`~edgellm.export.onnx_server.OnnxOptions` fields.
    """

    def __init__(self, quant: Any = None, compress_weights: bool = True, **options: Any) -> None:
        self.quant = quant
        self.compress_weights = compress_weights
        self.onnx = OnnxServerExporter(quant=quant, **options)

    def lower(self, model: Any, target: Any, workdir: Path, variant: str) -> dict[str, Any]:
        ov = require("openvino", "openvino", "the OpenVINO exporter")
        from edgellm.runtime.openvino_runner import read_model

        for f in (workdir / IR_FILE, workdir / BIN_FILE):
            f.unlink(missing_ok=True)
        with self.lowered_onnx(model, target, workdir, variant) as (tmpdir, fields):
            try:
                ovm = read_model(tmpdir / fields["model_file"])
            except EdgeLLMError as exc:  # e.g. a fused op OpenVINO's ONNX front end has no rule for
                raise SkipVariant(exc.message) from None
            ov.save_model(ovm, workdir / IR_FILE, compress_to_fp16=self.compress_weights)
        fields["target"] = {**fields["target"], "runtime": "openvino", "format": "openvino"}
        fields["model_file"] = IR_FILE
        fields["recipe"]["openvino"] = {
            "version": ov.__version__.split("-")[0],
            "weights": "fp16" if self.compress_weights and self.quant is None else "as lowered",
            "validated_at": "f32",
            "cache": "compiled blobs under $EDGELLM_OPENVINO_CACHE or ~/.cache/edgellm/openvino",
        }
        return fields

    def runner(self, workdir: Path, fields: dict[str, Any], model: Any) -> Any:
        from edgellm.runtime.openvino_runner import OpenVinoRunner, read_model

        ovm = read_model(workdir / IR_FILE)
        present = {p.get_any_name() for p in ovm.inputs}  # the graph may drop an input it never reads
        inputs = [s for s in model.inputs if s.name in present]
        return OpenVinoRunner(ovm, precision="f32", inputs=inputs, outputs=list(model.outputs))

    def default_tolerance(self) -> Any:
        """fp16-stored weights round each weight by up to 2^-11 relative: large activations (keys) then
        differ by more than fp32's 1e-3 absolute, so only the direction (cosine 0.9999) is held."""
        from edgellm.export.validate import Tolerance

        return Tolerance(max_abs=None) if self.compress_weights and self.quant is None else None

    def describe(self, model: Any) -> str:
        return f"OpenVINO IR of '{model.name}'"

    def parity_hint(self, model: Any) -> str:
        return "export with --no-optimize or without weight compression, or loosen --atol/--min-cosine"
