"""The export verb and the exporter registry: one exporter per target format."""

from __future__ import annotations

import contextlib
import contextvars
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgellm import plugins
from edgellm.errors import ExportError, ParityError
from edgellm.export.validate import Tolerance, check_parity, passes, summary
from edgellm.runtime.artifact import Artifact, write_manifest
from edgellm.utils.fs import atomic_dir


class SkipVariant(Exception):
    """Raised by :meth:`Exporter.lower` when a variant cannot be built (e.g. no fusion applied): the
    next variant is tried, and the reason is recorded in the manifest."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Exporter(ABC):
    """Lowers a model to one format; :func:`export` validates what it wrote against the reference.

    The contract: :meth:`lower` writes the model file(s) of one *variant* into ``workdir`` and returns
    the manifest fields; :meth:`runner` opens what was written. :func:`export` then compares that runner
    with :meth:`reference` on fixed and random inputs, once, for every exporter: a variant that fails
    parity is dropped for the next one (:meth:`variants`, in order of preference), and when the last one
    fails nothing is written and :class:`~edgellm.errors.ParityError` names the outputs and the fix.
    """

    format: str = ""
    quant: Any = None  # the QuantSpec lowered, if any
    # (runner, torch reference) the kept variant passed parity with (set by lower_validated)
    validated: tuple[Any, Any] | None = None

    def variants(self, model: Any) -> list[str]:
        """The variants to try, best first (e.g. ONNX: ``["fused", "plain"]``)."""
        return ["default"]

    @abstractmethod
    def lower(self, model: Any, target: Any, workdir: Path, variant: str) -> dict[str, Any]:
        """Write ``variant`` of the model into ``workdir`` (replacing an earlier variant's files) and
        return the manifest fields, without ``parity``."""

    @abstractmethod
    def runner(self, workdir: Path, fields: dict[str, Any], model: Any) -> Any:
        """A runner over the file(s) :meth:`lower` wrote, with the model's input/output specs."""

    def reference(self, model: Any) -> Any:
        """The torch model this exporter validates against: fp32, or fake-quantized by the QuantSpec."""
        if self.quant is None:
            return model
        from edgellm.compress.quant import apply_quant

        return apply_quant(model, self.quant)

    def default_tolerance(self) -> Tolerance | None:
        """The parity tolerance when the caller gives none (None: fp32's, or the quantized one)."""
        return None

    def reference_label(self, model: Any) -> str:
        return "torch fp32" if self.quant is None else f"torch fake-quantized ({self.quant.recipe})"

    def describe(self, model: Any) -> str:
        """How a parity error names the artifact, e.g. ``ONNX export of 'minilm'``."""
        return f"{self.format} export of '{model.name}'"

    def parity_hint(self, model: Any) -> str:
        return "loosen --atol/--min-cosine"

    def variant_info(self, fields: dict[str, Any]) -> dict[str, Any]:
        """What the manifest records about a variant that failed parity (besides the reason)."""
        return {}

    def finish(
        self, model: Any, fields: dict[str, Any], runner: Any, variant: str, rejected: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """After parity passed: complete ``fields`` (e.g. the variants that were rejected) and return more
        parity figures for the manifest (e.g. against fp32 when the reference is quantized)."""
        return {}

    def close(self) -> None:
        """Free what :meth:`lower` kept between variants."""
        return None


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
    quant: Any = None,
    precision: str | None = None,
    format: str | None = None,
    force: bool = False,
    tolerance: Tolerance | None = None,
    manifest_extra: dict[str, Any] | None = None,
    runtimes: str | list[str] | None = None,
    select_runtime: bool = True,
    threads: int | None = None,
    arm64: str | None = None,
    **options: Any,
) -> Artifact:
    """Export ``model`` for ``target`` into an artifact directory, validated against the reference.

    Args:
        model: a :class:`~edgellm.models.ModelAdapter` or anything :func:`edgellm.models.load` takes.
        target: target profile name or YAML path (``targets/*.yaml``).
        output: artifact directory; default ``edgellm-out/<model>-<target>``.
        quant: a :class:`~edgellm.compress.quant.QuantSpec` computed once on ``model``
            (:func:`edgellm.compress.quantize`); each format lowers it to its runtime's native form.
        precision: ``fp32`` (default) or ``fp16`` when ``quant`` is None.
        format: one of the target's formats (default: its first that this edgellm writes).
        force: replace an existing output directory (only once the new artifact is complete).
        tolerance: parity tolerance; default :class:`Tolerance()` (max abs 1e-3, cosine 0.9999), or
            :meth:`Tolerance.quantized` when ``quant`` is given.
        manifest_extra: more manifest sections (e.g. ``split``: how this half links to its peer).
        runtimes: validate the artifact in more runtimes than its format's own: ``"auto"`` (every runtime
            the target lists for the format that is installed, at each inference precision it lists),
            or names (``"openvino"``); the manifest's ``runtimes`` section records each one's parity
            (:mod:`edgellm.export.runtimes`). None: the format's own runtime only.
        select_runtime: time the candidates that pass (each in its own process, interleaved) and
            record the fastest as the artifact's preferred runtime.
        threads: threads for those timings (default: each runtime's own choice).
        arm64: for a target whose ISA is arm64, also validate the artifact on arm64 kernels, emulated
            (:mod:`edgellm.export.arm64`; the manifest's ``parity.arm64``): ``auto`` (when the arm64 root
            is built), ``require`` or ``off``; default ``$EDGELLM_ARM64``, else ``auto``.
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
    fmt = choose_format(tgt, format)
    from edgellm.export.arm64 import preflight, resolve_mode, validate_arm64

    arm64_mode = resolve_mode(arm64)
    preflight(arm64_mode, tgt, fmt)
    spec = quant
    if quant is not None:
        _check_scale_signs(quant, fmt)
        options["quant"] = quant
    float_precision = precision or "fp32"
    if spec is not None and float_precision != "fp32":
        raise ExportError(
            f"precision '{float_precision}' and a QuantSpec were both given", "give one of them"
        )
    precision = float_precision if spec is None else f"int{spec.bits}"
    if precision == "fp16":
        options.update(_fp16_options(fmt))
    elif precision != "fp32" and spec is None:
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
            tolerance = exporter.default_tolerance() or (
                Tolerance() if spec is None else Tolerance.quantized()
            )
        try:

            def on_arm64(fields: dict[str, Any], runner: Any, reference: Any) -> dict[str, Any] | None:
                return validate_arm64(
                    exporter, adapter, tgt, tmp, fields, runner, reference, tolerance, arm64_mode
                )

            fields = lower_validated(exporter, adapter, tgt, tmp, tolerance, also=on_arm64)
            if runtimes is not None:
                from edgellm.export.runtimes import validate_runtimes

                runner, reference = exporter.validated
                section = validate_runtimes(
                    adapter,
                    tgt,
                    tmp,
                    fields,
                    runner,
                    reference,
                    tolerance,
                    runtimes,
                    threads=threads,
                    select=select_runtime,
                )
                if section is not None:
                    fields["runtimes"] = section
        finally:
            exporter.validated = None
            exporter.close()
        extra = dict(manifest_extra or {})
        if _LINEAGE.get() is not None:
            extra.setdefault("lineage", _LINEAGE.get())
        pruning = Path(adapter.source.get("path") or "") / "pruning.json"
        if adapter.source.get("path") and pruning.is_file():  # a pruned model: what was removed
            extra.setdefault("pruning", json.loads(pruning.read_text()))
        write_manifest(tmp, {**fields, **extra})
    return Artifact.load(output)


def lower_validated(
    exporter: Exporter,
    model: Any,
    target: Any,
    workdir: Path,
    tolerance: Tolerance,
    *,
    also: Callable[[dict[str, Any], Any, Any], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """The parity check of every export: each variant is lowered and compared with the reference on
    fixed and random inputs; the first that passes is kept, with its figures in ``fields["parity"]``.

    ``also(fields, runner, reference)``: a second check of a variant that passed (parity on arm64
    kernels): its section goes into ``parity.arm64``; ``passed: False`` refuses the variant like a miss."""
    reference = exporter.reference(model)
    rejected: list[dict[str, Any]] = []
    fields: dict[str, Any] = {}
    runner = parity = second = None
    for variant in exporter.variants(model):
        try:
            fields = exporter.lower(model, target, workdir, variant)
        except SkipVariant as skip:
            rejected.append({"variant": variant, "reason": skip.reason})
            continue
        runner = exporter.runner(workdir, fields, model)
        parity = check_parity(reference, runner)
        second = None
        if passes(parity["fixed"], tolerance) and passes(parity["random"], tolerance):
            second = also(fields, runner, reference) if also is not None else None
            if second is None or second.get("passed", True):
                break
            from edgellm.export.arm64 import miss_summary

            reason = "failed parity " + miss_summary(second)
        else:
            reason = "failed parity: " + summary(parity["random"])
        rejected.append({"variant": variant, **exporter.variant_info(fields), "reason": reason})
    else:
        if parity is None:
            raise ExportError(
                f"no variant of the {exporter.format} export of '{model.name}' could be built: "
                + "; ".join(f"{r['variant']}: {r['reason']}" for r in rejected),
                "export with other options (e.g. --no-optimize)",
            )
        if second is not None:  # the last variant passed on x86 and missed on arm64
            from edgellm.export.arm64 import miss_summary

            raise ParityError(
                f"{exporter.describe(model)} disagrees with {exporter.reference_label(model)} beyond tolerance "
                f"(max_abs {tolerance.max_abs}, cosine {tolerance.min_cosine}) {miss_summary(second)}; on "
                "this host's kernels it passes",
                exporter.parity_hint(model),
            )
        raise ParityError(
            f"{exporter.describe(model)} disagrees with {exporter.reference_label(model)} beyond tolerance "
            f"(max_abs {tolerance.max_abs}, cosine {tolerance.min_cosine}): fixed {summary(parity['fixed'])}; "
            f"random {summary(parity['random'])}",
            exporter.parity_hint(model),
        )
    extra = exporter.finish(model, fields, runner, variant, rejected)
    exporter.validated = (runner, reference)
    fields["parity"] = {
        **parity,
        "tolerance": tolerance.to_dict(),
        "passed": True,
        "reference": exporter.reference_label(model),
        **extra,
    }
    if second is not None:
        fields["parity"]["arm64"] = second
    return fields


# formats whose INT4 kernels take a negative scale (a full-range symmetric grid: Int4WeightOnly.full_range)
SIGNED_SCALES = ("gguf", "onnx", "ort")


def _check_scale_signs(spec: Any, fmt: str) -> None:
    grouped8 = next((n for n, lq in spec.layers.items() if lq.bits == 8 and lq.group_size), None)
    if grouped8 is not None and fmt != "gguf":
        raise ExportError(
            f"layer '{grouped8}' has grouped int8 weights ({spec.recipe}: GGUF's Q8_0), which {fmt} does not take",
            "use --recipe int8-dynamic for this format, or export --generate --format gguf",
        )
    if fmt in SIGNED_SCALES:
        return
    signed = next((n for n, lq in spec.layers.items() if bool((lq.scale < 0).any())), None)
    if signed is not None:
        raise ExportError(
            f"layer '{signed}' has negative scales (a full-range INT4 grid), which the {fmt} format does not take",
            f"quantize without full_range for {fmt}; formats that take it: {', '.join(SIGNED_SCALES)}",
        )


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
    if options.pop("precision", "fp32") == "fp16":
        options.update(_fp16_options(fmt))
    return EXPORTERS[fmt](**options).reference(model)


def _fp16_options(fmt: str) -> dict[str, Any]:
    """How each format's exporter is asked for fp16."""
    if fmt in ("tflite", "pte"):
        return {"precision": "fp16"}
    if fmt == "tensorrt":
        return {"fp16": True}
    raise ExportError(
        f"format '{fmt}' has no fp16 variant in this edgellm", "use --format tflite, pte or tensorrt for fp16"
    )


def _load_exporters() -> None:
    """Import every module of this package once, so each ``@register_exporter`` runs: adding a format is
    one new module. Exporters import their SDK when they lower, so this stays cheap; a module whose
    optional SDK is missing registers nothing (its format is then reported as unavailable)."""
    global _loaded
    if _loaded:
        return
    import importlib
    import pkgutil

    import edgellm.export as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{package.__name__}.{info.name}")
        except ModuleNotFoundError as exc:  # an optional SDK imported at module level; edgellm's own raise
            if (exc.name or "").split(".")[0] == "edgellm":
                raise
    _loaded = True


_loaded = False
