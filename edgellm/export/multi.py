"""Export one model for several targets at a named precision: ``edgellm export --target all``.

A precision name becomes a QuantSpec once per distinct quantization (``int8-static`` calibrates on the
bundled corpus, or on the given text); each target then gets its preferred format. A target that
cannot take the precision is reported with the reason instead of failing the whole run.

Example:
    >>> from edgellm.export.multi import export_many
    >>> rows = export_many("minilm", ["x86-server", "snapdragon-865"], precision="int8")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError, OutputExistsError

PRECISIONS = ("fp32", "fp16", "int8", "int8-static", "int4")


@dataclass
class ExportRow:
    """One target's outcome: the artifact, or why there is none."""

    target: str
    format: str | None
    precision: str
    path: Path | None = None
    size_mb: float | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "format": self.format,
            "precision": self.precision,
            "path": str(self.path) if self.path else None,
            "size_mb": self.size_mb,
            "parity": self.parity,
            "error": self.error,
        }


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise EdgeLLMError(f"unknown precision '{precision}'", f"use one of: {', '.join(PRECISIONS)}")


def quant_config(precision: str, fmt: str, keep: tuple[str, ...] = ()) -> Any:
    """The quantization a precision name stands for on a format (None for float precisions)."""
    from edgellm.compress.quant import Int4WeightOnly, Int8Dynamic, Int8Static

    check_precision(precision)
    if precision == "int8" and fmt != "tensorrt":
        return Int8Dynamic(keep=keep)
    if precision.startswith("int8"):  # TensorRT's explicit quantization: static, symmetric activations
        return Int8Static(keep=keep, symmetric_activations=fmt == "tensorrt")
    if precision == "int4":
        return Int4WeightOnly(group_size=128, keep=keep)
    return None


def target_format(target: Any, fmt: str | None) -> str:
    from edgellm.export.base import EXPORTERS, _load_exporters

    _load_exporters()
    if fmt is not None:
        return fmt
    found = next((f for f in target.formats if f in EXPORTERS), None)
    if found is None:
        raise EdgeLLMError(
            f"target '{target.name}' takes formats {target.formats}, none of which this edgellm exports",
            f"formats available: {', '.join(EXPORTERS)}",
        )
    return found


def export_many(
    model: Any,
    targets: list[str],
    *,
    precision: str = "fp32",
    output_dir: str | Path = "edgellm-out",
    fmt: str | None = None,
    keep: tuple[str, ...] = (),
    calib: str | None = None,
    force: bool = False,
    tolerance: Any = None,
    **options: Any,
) -> list[ExportRow]:
    """Export ``model`` for every target in ``targets`` into ``output_dir/<model>-<target>-<precision>``.

    Errors specific to one target (its precision list, its format's limits, parity) are recorded in
    that target's row; errors in the inputs themselves (unknown target or precision) raise.
    """
    from edgellm.compress.quant import Int8Static, quantize
    from edgellm.compress.quant.quantize import needs_calibration
    from edgellm.export.base import export
    from edgellm.models import ModelAdapter, load
    from edgellm.targets import load_target

    check_precision(precision)
    profiles = [load_target(t) for t in targets]  # unknown names fail here, before any work
    adapter = model if isinstance(model, ModelAdapter) else load(model)
    specs: dict[str, Any] = {}
    calib_feeds = None
    rows: list[ExportRow] = []
    for tgt in profiles:
        row = ExportRow(tgt.name, None, precision)
        rows.append(row)
        try:
            row.format = target_format(tgt, fmt)
            cfg = quant_config(precision, row.format, keep)
            spec = None
            if cfg is not None:
                key = repr(cfg)
                if key not in specs:
                    static = needs_calibration(cfg) or isinstance(cfg, Int8Static)
                    if static and calib_feeds is None:
                        calib_feeds = _calibration(adapter, calib)
                    specs[key] = quantize(adapter, cfg, calib_feeds if static else None)
                spec = specs[key]
            out = Path(output_dir) / f"{adapter.name}-{tgt.name}-{precision}"
            art = export(
                adapter,
                tgt.name,
                out,
                force=force,
                format=row.format,
                quant=spec,
                precision="fp16" if precision == "fp16" else None,
                tolerance=tolerance if spec is None else None,
                **{k: v for k, v in options.items() if k != "seq_len" or row.format == "tflite"},
            )
        except OutputExistsError:
            raise
        except EdgeLLMError as exc:
            row.error = str(exc)
            continue
        row.path, row.size_mb = art.path, round(art.size_bytes / 2**20, 2)
        row.parity = {k: art.manifest["parity"][k] for k in ("fixed", "random")}
    return rows


def _calibration(adapter: Any, calib: str | None) -> list[dict[str, Any]]:
    from edgellm.compress.calibration import corpus_parts, make_batches

    train, _held, source, _ = corpus_parts(calib, None)
    return make_batches(adapter, train, source, max_sequences=32).feeds
