"""Export one model for several targets at a named precision: ``edgellm export --target all``.

A precision name becomes a QuantSpec once per distinct quantization (``int8-static`` calibrates on the
bundled corpus, or on the given text); each target then gets its preferred format. A target that
cannot take the precision is reported with the reason instead of failing the whole run.

Example:
    >>> from edgellm.pipeline.export_many import export_many
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


def quant_config(precision: str, fmt: str, keep: tuple[str, ...] = (), *, openvino: bool = False) -> Any:
    """The quantization a precision name stands for on a format (None for float precisions).

    ``openvino``: the artifact will run (or be validated) in OpenVINO, which converts QDQ to its int8
    kernels but not ONNX Runtime's fused ``QAttention`` and runs ``DynamicQuantizeMatMul`` outside
    parity: INT8 is then static QDQ with SmoothQuant and fast bias correction (``int8-static-ov``).
    """
    from edgellm.compress.quant import Int4WeightOnly, Int8Dynamic, Int8Static, Int8StaticOV

    check_precision(precision)
    if precision == "int8" and (fmt == "openvino" or openvino):
        return Int8StaticOV(keep=keep)
    if precision == "int8" and fmt != "tensorrt":
        return Int8Dynamic(keep=keep)
    if precision.startswith("int8"):  # TensorRT's explicit quantization: static, symmetric activations
        return Int8Static(keep=keep, symmetric_activations=fmt == "tensorrt")
    if precision == "int4":
        return Int4WeightOnly(group_size=128, keep=keep)
    return None


def runs_in_openvino(target: Any, fmt: str, runtimes: Any) -> bool:
    """Whether an artifact of ``fmt`` for ``target`` is written for (or validated in) OpenVINO."""
    from edgellm.export.runtimes import wanted_runtimes

    own = target.runtimes_for(fmt)[0]
    return own == "openvino" or "openvino" in wanted_runtimes(target, fmt, own, runtimes)


def export_at(
    adapter: Any,
    target: str,
    output: str | Path | None,
    *,
    precision: str = "fp32",
    fmt: str | None = None,
    keep: tuple[str, ...] = (),
    calib: str | None = None,
    force: bool = False,
    tolerance: Any = None,
    cache: dict[str, Any] | None = None,
    **options: Any,
) -> Any:
    """Export ``adapter`` for one target at a named precision; returns the :class:`Artifact`.

    ``cache`` (a dict the caller keeps) shares calibration batches and QuantSpecs between targets.
    ``seq_len`` in ``options`` reaches only formats with static shapes (TFLite).
    """
    from edgellm.compress.quant import quantize
    from edgellm.export.base import choose_format, export
    from edgellm.targets import load_target

    cache = {} if cache is None else cache
    profile = load_target(target)
    chosen = choose_format(profile, fmt)
    cfg = quant_config(
        precision, chosen, keep, openvino=runs_in_openvino(profile, chosen, options.get("runtimes"))
    )
    spec = None
    if cfg is not None:
        key = repr(cfg)
        if key not in cache:
            feeds, info = None, None
            if cfg.needs_calibration:
                if "calibration" not in cache:
                    cache["calibration"] = calibration_batches(adapter, calib)
                feeds, info = cache["calibration"].feeds, cache["calibration"].describe()
            cache[key] = quantize(adapter, cfg, feeds, calib_info=info)
        spec = cache[key]
    if chosen != "tflite":
        options.pop("seq_len", None)
    return export(
        adapter,
        target,
        output,
        force=force,
        format=chosen,
        quant=spec,
        precision="fp16" if precision == "fp16" else None,
        tolerance=tolerance if spec is None else None,
        **options,
    )


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
    from edgellm.export.base import choose_format
    from edgellm.models import ModelAdapter, load
    from edgellm.targets import load_target

    check_precision(precision)
    profiles = [load_target(t) for t in targets]  # unknown names fail here, before any work
    adapter = model if isinstance(model, ModelAdapter) else load(model)
    cache: dict[str, Any] = {}
    rows: list[ExportRow] = []
    for tgt in profiles:
        row = ExportRow(tgt.name, None, precision)
        rows.append(row)
        try:
            row.format = choose_format(tgt, fmt)
            art = export_at(
                adapter,
                tgt.name,
                Path(output_dir) / f"{adapter.name}-{tgt.name}-{precision}",
                precision=precision,
                fmt=row.format,
                keep=keep,
                calib=calib,
                force=force,
                tolerance=tolerance,
                cache=cache,
                **options,
            )
        except OutputExistsError:
            raise
        except EdgeLLMError as exc:
            row.error = str(exc)
            continue
        row.path, row.size_mb = art.path, round(art.size_bytes / 2**20, 2)
        row.parity = {k: art.manifest["parity"][k] for k in ("fixed", "random")}
    return rows


def calibration_batches(adapter: Any, calib: str | None) -> Any:
    """32 sequences of calibration text (the bundled corpus unless ``calib`` names data, e.g. a versioned
    dataset ``STORE@TAG``), with where they came from (recorded in the artifact's manifest)."""
    from edgellm.compress.calibration import corpus_parts, make_batches

    train, _held, source, _ = corpus_parts(calib, None)
    return make_batches(adapter, train, source, max_sequences=32)


def calibration_feeds(adapter: Any, calib: str | None) -> list[dict[str, Any]]:
    """The feeds of :func:`calibration_batches`."""
    return calibration_batches(adapter, calib).feeds
