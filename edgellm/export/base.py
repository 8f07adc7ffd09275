"""The export verb and the exporter registry: one exporter per target format."""

from __future__ import annotations

import contextlib
import contextvars
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgellm import plugins
from edgellm.errors import ExportError
from edgellm.export.artifact import Artifact, write_manifest
from edgellm.export.validate import Tolerance
from edgellm.utils.fs import atomic_dir


class Exporter(ABC):
    """Lowers a model to one format, validates it against the reference, and returns manifest fields.

    Subclasses write the model file(s) into ``workdir`` and raise :class:`~edgellm.errors.ParityError`
    when the lowered model disagrees with the reference beyond the tolerance.
    """

    format: str = ""

    @abstractmethod
    def lower(self, model: Any, target: Any, workdir: Path, tolerance: Tolerance) -> dict[str, Any]: ...

    def reference(self, model: Any) -> Any:
        """The torch model this exporter validates against: fp32, or fake-quantized by the QuantSpec."""
        spec = getattr(self, "quant", None)
        if spec is None:
            return model
        from edgellm.compress.quant import apply_quant

        return apply_quant(model, spec)


EXPORTERS: dict[str, type[Exporter]] = {}


@plugins.accepts("edgellm.exporters")
def _accept_plugin(name: str, obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Exporter)):
        raise TypeError(f"{obj!r} is not an edgellm.export.Exporter subclass")
    obj.format = getattr(obj, "format", None) or name
    EXPORTERS.setdefault(name, obj)


# What every artifact exported inside ``with lineage(...)`` records in its manifest: the dataset version,
# the recipe and the source model a pipeline run derived it from (``edgellm run``).
_LINEAGE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("lineage", default=None)


@contextlib.contextmanager
def lineage(info: dict[str, Any]) -> Iterator[None]:
    """Within this block, every :func:`export` writes ``info`` (merged over any outer block's) as the
    manifest's ``lineage`` section; the content hashes of the model files are unchanged by it."""
    token = _LINEAGE.set({**(_LINEAGE.get() or {}), **info})
    try:
        yield
    finally:
        _LINEAGE.reset(token)


def register_exporter(fmt: str):
    """Class decorator: the exporter for target format ``fmt``."""

    def deco(cls: type[Exporter]) -> type[Exporter]:
        cls.format = fmt
        EXPORTERS[fmt] = cls
        return cls

    return deco


def export(
    model: Any,
    target: str = "x86-server",
    output: str | Path | None = None,
    *,
    force: bool = False,
    tolerance: Tolerance | None = None,
    manifest_extra: dict[str, Any] | None = None,
    **options: Any,
) -> Artifact:
    """Export ``model`` for ``target`` into an artifact directory, validated against the reference.

    Args:
        model: a :class:`~edgellm.models.ModelAdapter` or anything :func:`edgellm.models.load` takes.
        target: target profile name or YAML path (``targets/*.yaml``).
        output: artifact directory; default ``edgellm-out/<model>-<target>``.
        force: replace an existing output directory (only once the new artifact is complete).
        tolerance: parity tolerance; default :class:`Tolerance()` (max abs 1e-3, cosine 0.9999), or
            :meth:`Tolerance.quantized` when ``quant`` is given.
        manifest_extra: more manifest sections (e.g. ``split``: how this half links to its peer).
        **options: exporter options, e.g. ``opset=17``, ``optimize=False``, ``exporter="dynamo"``.

    Returns:
        The verified :class:`Artifact`.

    Example:
        >>> from edgellm.export import export
        >>> art = export("minilm", target="x86-server", output="out/minilm", force=True)  # doctest: +SKIP
        >>> art.manifest["parity"]["fixed"]["sentence_embedding"]["cosine_min"] > 0.9999     # doctest: +SKIP
        True
    """
    from edgellm.errors import OutputExistsError
    from edgellm.models import ModelAdapter, load
    from edgellm.targets import load_target

    if output is not None and Path(output).exists() and not force:
        raise OutputExistsError(output)

    tgt = load_target(target)
    fmt = choose_format(tgt, options.pop("format", None))
    spec = options.get("quant")
    float_precision = options.pop("precision", None) or "fp32"
    if spec is not None and float_precision != "fp32":
        raise ExportError(
            f"precision '{float_precision}' and a QuantSpec were both given", "give one of them"
        )
    precision = float_precision if spec is None else f"int{spec.bits}"
    if precision == "fp16":  # each format spells fp16 its own way
        if fmt == "tflite":
            options["precision"] = "fp16"
        elif fmt == "tensorrt":
            options["fp16"] = True
        else:
            raise ExportError(
                f"format '{fmt}' has no fp16 variant in this edgellm",
                "use --format tflite or tensorrt for fp16",
            )
    elif precision not in ("fp32",) and spec is None:
        raise ExportError(
            f"unknown precision '{precision}'", "use fp32 or fp16, or pass a QuantSpec (quant=)"
        )
    if precision not in tgt.precisions:
        raise ExportError(
            f"target '{tgt.name}' does not run {precision} (its fast precisions: {', '.join(tgt.precisions)})",
            "pick a precision the target lists, or another target",
        )
    exporter = EXPORTERS[fmt](**options)
    adapter = model if isinstance(model, ModelAdapter) else load(model)
    output = Path(output) if output is not None else Path("edgellm-out") / f"{adapter.name}-{tgt.name}"
    with atomic_dir(output, force=force) as tmp:
        if tolerance is None:  # integer rounding amplifies float differences: compare direction only
            tolerance = Tolerance() if spec is None else Tolerance.quantized()
        fields = exporter.lower(adapter, tgt, tmp, tolerance)
        extra = dict(manifest_extra or {})
        if _LINEAGE.get() is not None:
            extra.setdefault("lineage", _LINEAGE.get())
        pruning = Path(adapter.source.get("path") or "") / "pruning.json"
        if adapter.source.get("path") and pruning.is_file():  # a pruned model: what was removed
            extra.setdefault("pruning", json.loads(pruning.read_text()))
        write_manifest(tmp, {**fields, **extra})
    return Artifact.load(output)


def choose_format(target: Any, fmt: str | None = None) -> str:
    """``fmt`` checked against the target profile, or the target's first format this edgellm writes."""
    _load_exporters()
    if fmt is None:
        fmt = next((f for f in target.formats if f in EXPORTERS), None)
        if fmt is None:
            raise ExportError(
                f"target '{target.name}' takes formats {target.formats}, none of which this edgellm exports yet",
                f"formats available: {', '.join(EXPORTERS)}",
            )
    elif fmt not in target.formats:
        raise ExportError(
            f"target '{target.name}' does not take format '{fmt}'", f"use one of: {', '.join(target.formats)}"
        )
    if fmt not in EXPORTERS:
        plugins.load("edgellm.exporters", fmt)  # a plugin package may provide it
    if fmt not in EXPORTERS:
        raise ExportError(
            f"no exporter for format '{fmt}' (target '{target.name}')",
            f"available formats: {', '.join(EXPORTERS)}",
        )
    return fmt


def parity_reference(model: Any, fmt: str, **options: Any) -> Any:
    """The torch model an artifact of ``fmt`` exported with ``options`` (``quant=``, ``precision=``) is
    validated against, e.g. to re-check an artifact's parity through :mod:`edgellm.runtime`."""
    _load_exporters()
    if fmt not in EXPORTERS:
        raise ExportError(f"no exporter for format '{fmt}'", f"available formats: {', '.join(EXPORTERS)}")
    options = {k: v for k, v in options.items() if v is not None}
    if fmt != "tflite" and options.pop("precision", "fp32") == "fp16" and fmt == "tensorrt":
        options["fp16"] = True
    return EXPORTERS[fmt](**options).reference(model)


def _load_exporters() -> None:
    import edgellm.export.onnx_server
    import edgellm.export.ort_mobile
    import edgellm.export.tensorrt
    import edgellm.export.tflite  # noqa: F401  (registers "tflite")
