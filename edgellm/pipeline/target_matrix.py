"""One model on every kind of target: export each (target, format, precision), then compare parity,
file size, latency on this host (all runners interleaved in one run) and the cost-model estimate on
the target itself. Used by ``edgellm demo`` and ``benchmarks/bench_targets_minilm.py``.

Example:
    >>> rows = export_matrix("minilm", "edgellm-out/targets", log=print)   # doctest: +SKIP
    >>> bench_matrix(rows, runs=30)                                          # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError

# (target, format, precision): the server, the phone's two runtimes, and the TensorRT-ready artifact
MATRIX = [
    ("x86-server", "onnx", "fp32"),
    ("x86-server", "onnx", "int8"),
    ("x86-server", "openvino", "fp32"),
    ("x86-server", "openvino", "int8-static"),
    ("snapdragon-865", "tflite", "fp32"),
    ("snapdragon-865", "tflite", "fp16"),
    ("snapdragon-865", "tflite", "int8"),
    ("snapdragon-865", "tflite", "int8-static"),
    ("snapdragon-865", "ort", "fp32"),
    ("snapdragon-865", "ort", "int8"),
    ("nvidia-a100", "tensorrt", "fp32"),
    ("nvidia-a100", "tensorrt", "int8-static"),
]
# ExecuTorch (XNNPACK) on the phone: not in the demo's matrix (lowering MiniLM takes about a minute per
# precision); benchmarks/bench_targets_minilm.py times it beside the rest
PTE_ROWS = [("snapdragon-8-gen-3", "pte", "fp32"), ("snapdragon-8-gen-3", "pte", "int8")]
# static INT8 everywhere: SmoothQuant at alpha 0.8, the best of 0.3..0.9 on MiniLM with the bundled text
# (benchmarks/bench_int8_minilm.py)
SMOOTHQUANT_ALPHA = 0.8


@dataclass
class MatrixRow:
    target: str
    format: str
    precision: str
    artifact: Any = None
    error: str | None = None
    kept: list[str] = field(default_factory=list)
    host_p50_ms: float | None = None
    estimate_ms: float | None = None
    cosine_vs_fp32: float | None = None  # on the fixed sentences, against torch fp32

    def to_dict(self) -> dict[str, Any]:
        m = self.artifact.manifest if self.artifact is not None else {}
        par = m.get("parity", {})
        return {
            "target": self.target,
            "format": self.format,
            "precision": self.precision,
            "runtime": m.get("target", {}).get("runtime"),
            "artifact": str(self.artifact.path) if self.artifact is not None else None,
            "size_mb": round(self.artifact.size_bytes / 2**20, 2) if self.artifact is not None else None,
            "parity_reference": par.get("reference"),
            "parity_cosine_min": _worst(par, "cosine_min", min),
            "parity_max_abs": _worst(par, "max_abs", max),
            "cosine_vs_fp32": self.cosine_vs_fp32,
            **_arm64_cells(par.get("arm64")),
            "kept_fp32": self.kept,
            "host_p50_ms": self.host_p50_ms,
            "estimate_ms": self.estimate_ms,
            "engine": m.get("recipe", {}).get("tensorrt", {}).get("engine"),
            "error": self.error,
        }


def _arm64_cells(sec: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest's ``parity.arm64`` as report cells: the cosine against fp32 on the fixed sentences
    (an fp32 file's reference is fp32 itself), the emulated CPU, or why it was not checked."""
    if not sec:
        return {"cosine_vs_fp32_arm64": None}
    if "skipped" in sec:
        return {"cosine_vs_fp32_arm64": None, "arm64_skipped": sec["skipped"]}
    fixed = sec.get("vs_fp32", {}).get("fixed") or sec["fixed"]
    return {
        "cosine_vs_fp32_arm64": min(v["cosine_min"] for v in fixed.values()),
        "arm64_cpu": sec.get("cpu"),
        "arm64_passed": sec.get("passed"),
    }


def _worst(par: dict[str, Any], key: str, pick: Any) -> float | None:
    vals = [v[key] for suite in ("fixed", "random") for v in par.get(suite, {}).values()]
    return float(pick(vals)) if vals else None


def export_matrix(
    model: Any,
    output: str | Path,
    *,
    cases: list[tuple[str, str, str]] | None = None,
    calib: str | None = None,
    log: Any = None,
    reuse: dict[tuple[str, str, str], Any] | None = None,
) -> list[MatrixRow]:
    """Export ``model`` for each (target, format, precision); failures become rows with the reason.

    A full-integer TFLite export that fails parity is retried once with the layers whose int8 output
    grid is far coarser than the rest (outliers written into the residual stream) kept in fp32.
    """
    from edgellm.compress.quant import Int8Dynamic, Int8Static, quantize
    from edgellm.export import export
    from edgellm.export.tflite import outlier_output_layers
    from edgellm.models import ModelAdapter, load
    from edgellm.pipeline.export_many import calibration_feeds

    say = log or (lambda _m: None)
    adapter = model if isinstance(model, ModelAdapter) else load(model)
    output = Path(output)
    reuse = reuse or {}
    calib_feeds = None
    specs: dict[str, Any] = {}
    rows = []
    for tgt, fmt, prec in cases or MATRIX:
        row = MatrixRow(tgt, fmt, prec)
        rows.append(row)
        if (tgt, fmt, prec) in reuse:
            row.artifact = reuse[(tgt, fmt, prec)]
            continue
        say(f"    {tgt:15s} {fmt:8s} {prec}")
        out = output / f"{adapter.name}-{tgt}-{fmt}-{prec}"
        try:
            spec = None
            if prec == "int8" and fmt == "ort" and adapter.tokenizer is not None:
                # ORT-mobile's DynamicQuantizeMatMul quantizes activations per tensor (TFLite's hybrid
                # kernels: per row): on MiniLM the held-out minimum cosine against fp32 is 0.9885 (x86)
                # / 0.9873 (arm64), 0.9912 with the layer most sensitive on the calibration text kept
                # in float (benchmarks/arm64_parity.py, row ort-int8-keep1)
                if calib_feeds is None:
                    calib_feeds = calibration_feeds(adapter, calib)
                if "dyn-keep1" not in specs:
                    specs["dyn-keep1"] = quantize(adapter, Int8Dynamic(auto_keep=1), calib_feeds)
                spec = specs["dyn-keep1"]
                row.kept = sorted(spec.kept)
            elif prec == "int8":
                spec = specs.setdefault("dyn", quantize(adapter, Int8Dynamic()))
            elif prec == "int8-static":
                if calib_feeds is None:
                    calib_feeds = calibration_feeds(adapter, calib)
                sym = fmt == "tensorrt"
                key = "openvino" if fmt == "openvino" else f"static-{sym}"
                if key not in specs:
                    if fmt == "openvino":  # QDQ as OpenVINO runs it best (pipeline.export_many)
                        from edgellm.pipeline.export_many import quant_config

                        cfg = quant_config("int8", fmt)
                    else:
                        cfg = Int8Static(symmetric_activations=sym, smoothquant_alpha=SMOOTHQUANT_ALPHA)
                    specs[key] = quantize(adapter, cfg, calib_feeds)
                spec = specs[key]
            opts = {"quant": spec, "precision": "fp16" if prec == "fp16" else None, "force": True}
            if fmt == "openvino":  # validate (and time) its inference precisions: bf16 where the CPU has it
                opts["runtimes"] = "auto"
            try:
                row.artifact = export(adapter, tgt, out, format=fmt, **opts)
            except EdgeLLMError as exc:
                if not (fmt == "tflite" and prec == "int8-static" and "disagrees" in str(exc)):
                    raise
                row.kept = outlier_output_layers(spec)
                say(
                    f"        parity failed; keeping the outlier-output layers in fp32: {', '.join(row.kept)}"
                )
                cfg = Int8Static(smoothquant_alpha=SMOOTHQUANT_ALPHA, keep=tuple(row.kept))
                opts["quant"] = quantize(adapter, cfg, calib_feeds)
                row.artifact = export(adapter, tgt, out, format=fmt, **opts)
        except EdgeLLMError as exc:
            row.error = str(exc)
            say(f"        [red]failed:[/] {exc}")
    return rows


def bench_matrix(
    rows: list[MatrixRow],
    *,
    batch: int = 1,
    seq: int = 128,
    runs: int = 30,
    warmup: int = 3,
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Host latency of every artifact that runs here, interleaved in one run, and each target's estimate."""
    from edgellm.bench import benchmark
    from edgellm.bench.estimate import estimate_latency
    from edgellm.models.flops import count_flops
    from edgellm.runtime import make_runner

    runners: dict[str, Any] = {}
    model = None
    for r in rows:
        if r.artifact is None:
            continue
        if model is None:
            from edgellm.bench import reload_source

            model = reload_source(r.artifact)
        if r.artifact.manifest["target"]["runtime"] == "tensorrt":
            continue  # the engine is built on the GPU host; here only the estimate
        name = f"{r.target}/{r.format}/{r.precision}"
        if r.artifact.manifest["target"]["runtime"] == "openvino":
            # in a process of its own: ONNX Runtime sessions slow down in a process holding OpenVINO models
            from edgellm.runtime.isolated import IsolatedRunner

            runners[name] = IsolatedRunner("openvino", str(r.artifact.path), threads=threads).start()
        else:
            runners[name] = make_runner(r.artifact, intra_op_threads=threads)
    if model is None:
        raise EdgeLLMError("no artifact was exported", "see the errors of the export step")
    rep = benchmark(
        runners,
        lambda b, s: model.example_inputs(batch=b, seq=s, padded=False),
        batches=[batch],
        seqs=[seq],
        runs=runs,
        warmup=warmup,
        progress=progress,
    ).to_dict()
    p50 = {res["name"]: res["p50_ms"] for res in rep["results"]}
    flops = count_flops(model, batch, seq)
    from edgellm.export.onnx_server import onnx_runner
    from edgellm.export.validate import compare

    fixed = model.fixed_inputs()
    ref = model.run(fixed)
    for r in rows:
        if r.artifact is None:
            continue
        name = f"{r.target}/{r.format}/{r.precision}"
        # TensorRT: its validated ONNX on ONNX Runtime CPU stands in until the engine is built
        runner = runners.get(name) or onnx_runner(r.artifact.model_path, model)
        got = compare(ref, runner.run({s.name: fixed[s.name] for s in runner.inputs}), model.outputs, fixed)
        r.cosine_vs_fp32 = min(v["cosine_min"] for v in got.values())
        r.host_p50_ms = p50.get(f"{r.target}/{r.format}/{r.precision}")
        r.estimate_ms = estimate_latency(r.artifact, batch=batch, seq=seq, flops=flops)["latency_ms"]
    for runner in runners.values():
        runner.close()
    return rep
