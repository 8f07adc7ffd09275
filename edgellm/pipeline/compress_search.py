"""``compress``: quantize once, lower for a target, measure accuracy and speed, enforce the guard.

Every try (the requested config, then the fallbacks: per-channel weights, SmoothQuant, more layers
left in fp32 by sensitivity) is exported, validated and evaluated on held-out data; the first that
meets the accuracy guard is kept. A model that misses the guard is never written as a success: the
report is kept and :class:`GuardError` is raised.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgellm.compress.guard import Guard, parse_guard
from edgellm.compress.quant.config import Int8Dynamic, Int8Static, QuantConfig, SmoothQuant, config_for
from edgellm.errors import EdgeLLMError, OutputExistsError
from edgellm.utils.fs import atomic_write_text

AUTO_CANDIDATES = {
    "embedding": ["int8-dynamic", "int8-static", "int8-smoothquant"],
    "causal-lm": ["int8-dynamic", "w4a16-awq", "w4a16-gptq"],
    "classification": ["int8-dynamic", "int8-static", "int8-smoothquant"],
}


class GuardError(EdgeLLMError):
    """No try met the accuracy guard; the report says what each try reached."""

    exit_code = 3


@dataclass
class CompressResult:
    artifact: Any  # Artifact or None
    report: dict[str, Any]
    report_path: Path | None = None


@dataclass
class _Try:
    label: str
    config: QuantConfig
    path: Path | None = None
    accuracy: dict[str, Any] = field(default_factory=dict)
    ok: bool = False
    verdict: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def row(self) -> dict[str, Any]:
        q = self.manifest.get("recipe", {}).get("quantization", {})
        wb = q.get("weight_bytes", {})
        return {
            "try": self.label,
            "recipe": self.config.recipe,
            "config": self.config.to_dict(),
            "ok": self.ok,
            "verdict": self.verdict,
            "accuracy": self.accuracy,
            "error": self.error,
            "kept_fp32": q.get("kept_fp32", {}),
            "lowered_ops": q.get("ops", {}),
            "weight_bytes_ratio": (wb["quantized"] / wb["fp32"]) if wb.get("fp32") else None,
            "size_mb": _size_mb(self.manifest),
        }


def _size_mb(manifest: dict[str, Any]) -> float | None:
    files = manifest.get("files")
    if not files:
        return None
    return round(sum(m["bytes"] for r, m in files.items() if not r.startswith("tokenizer/")) / 2**20, 3)


def fallbacks(config: QuantConfig, max_keep: int = 8) -> list[tuple[str, QuantConfig]]:
    """The tries after ``config``, in order: per-channel, SmoothQuant, then 1, 2, 4... layers kept fp32."""
    out: list[tuple[str, QuantConfig]] = []
    cur = config
    if isinstance(cur, Int8Dynamic | Int8Static) and not cur.per_channel:
        cur = dataclasses.replace(cur, per_channel=True)
        out.append(("per-channel weights", cur))
    if isinstance(cur, Int8Static) and cur.smoothquant_alpha is None:
        fields = {
            f.name: getattr(cur, f.name) for f in dataclasses.fields(cur) if f.name != "smoothquant_alpha"
        }
        cur = SmoothQuant(**fields)
        out.append(("SmoothQuant alpha 0.5", cur))
    k = max(1, cur.auto_keep * 2) if cur.auto_keep else 1
    while k <= max_keep:
        out.append((f"{k} most sensitive layer(s) kept fp32", dataclasses.replace(cur, auto_keep=k)))
        k *= 2
    return out


def compress(
    model: Any,
    config: QuantConfig | str,
    *,
    target: str = "x86-server",
    output: str | Path,
    calib: str | None = None,
    eval_data: str | None = None,
    max_accuracy_drop: str | None = None,
    force: bool = False,
    runs: int = 20,
    calib_sequences: int = 64,
    eval_sequences: int = 256,
    accuracy_level: int = 0,
    max_keep: int = 8,
    progress: bool = True,
    log: Any = None,
) -> CompressResult:
    """Quantize ``model`` with ``config`` (or ``"auto"``), export it for ``target``, report and guard.

    Args:
        model: bundled name, model directory or :class:`~edgellm.models.ModelAdapter`.
        config: a :class:`QuantConfig`, a recipe name (``int8-static``...), or ``"auto"``: build the
            candidates for the model's task and keep the fastest that meets the guard.
        output: artifact directory; the report goes to ``<output>.report.json`` either way.
        calib / eval_data: text, JSONL or directory; default: disjoint parts of the bundled corpus.
        max_accuracy_drop: guard, e.g. ``cosine>=0.99`` or ``ppl+3%`` (see :mod:`edgellm.compress.guard`).
        runs: timed rounds for the latency comparison against fp32 (same runtime, same process).
        max_keep: the last fallback leaves up to this many layers in fp32 (1, 2, 4... up to it).

    Returns:
        :class:`CompressResult` with the verified artifact and the report.

    Example:
        >>> from edgellm.pipeline import compress
        >>> res = compress("minilm", "int8-dynamic", output="out/minilm-int8", max_accuracy_drop="cosine>=0.99")  # doctest: +SKIP
    """
    from edgellm.bench import p50_side_by_side
    from edgellm.compress.calibration import corpus_parts, make_batches
    from edgellm.compress.evaluate import CachedRunner, evaluate
    from edgellm.compress.quant.quantize import quantize_cached
    from edgellm.export import Artifact, export
    from edgellm.models import ModelAdapter, load
    from edgellm.runtime import make_runner

    say = log or (lambda _msg: None)
    output = Path(output)
    report_path = output.with_name(output.name + ".report.json")
    if output.exists() and not force:
        raise OutputExistsError(output)
    adapter = model if isinstance(model, ModelAdapter) else load(model)
    guard = parse_guard(max_accuracy_drop, adapter.task)
    if isinstance(config, str) and config != "auto":
        config = config_for(config)
    t0 = time.perf_counter()
    train_docs, eval_docs, calib_src, eval_src = corpus_parts(calib, eval_data)
    eval_b = make_batches(adapter, eval_docs, eval_src, max_sequences=eval_sequences)
    candidates: list[QuantConfig] = (
        [config_for(r) for r in AUTO_CANDIDATES.get(adapter.task, AUTO_CANDIDATES["embedding"])]
        if config == "auto"
        else [config]  # type: ignore[index]
    )
    calib_b = None
    if any(c.needs_calibration for c in candidates) or guard is not None:
        calib_b = make_batches(adapter, train_docs, calib_src, max_sequences=calib_sequences)
    info = {"calibration": calib_b.describe() if calib_b else None, "evaluation": eval_b.describe()}
    reference = CachedRunner(make_runner(adapter, "torch"))  # fp32 outputs computed once for all tries
    spec_cache: dict = {}
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.compress-", dir=output.parent))
    try:
        say(f"exporting the fp32 baseline for {target}")
        raw_cache = work / "raw"  # one fp32 ONNX export of the model serves every try
        fp32 = export(adapter, target, work / "fp32", raw_cache=raw_cache)
        tries: list[_Try] = []
        chosen: list[_Try] = []
        for cand in candidates:
            plan = [("requested" if config != "auto" else f"auto: {cand.recipe}", cand)]
            if guard is not None:
                plan += fallbacks(cand, max_keep)
            for label, cfg in plan:
                t = _Try(label, cfg, work / f"try{len(tries)}")
                tries.append(t)
                say(f"try {len(tries)}: {cfg.recipe} ({label})")
                try:
                    spec = quantize_cached(
                        adapter,
                        cfg,
                        calib_b.feeds if calib_b else None,
                        spec_cache,
                        calib_info={**info, "source": calib_src},
                    )
                    art = export(
                        adapter,
                        target,
                        t.path,
                        quant=spec,
                        accuracy_level=accuracy_level,
                        raw_cache=raw_cache,
                    )
                except EdgeLLMError as exc:
                    if "group size" in str(exc):
                        raise
                    t.error, t.verdict = str(exc), "failed to build"
                    continue
                t.manifest = art.manifest
                t.accuracy = evaluate(reference, make_runner(art), adapter, eval_b.feeds)
                t.ok, t.verdict = guard.check(t.accuracy) if guard else (True, "no guard")
                say(f"    {t.verdict}")
                if t.ok:
                    chosen.append(t)
                    break
        # latency of every passing candidate against fp32, same runtime, same process, interleaved
        runners = {"fp32": make_runner(fp32)}
        for t in chosen:
            runners[t.config.recipe] = make_runner(Artifact.load(t.path))
        say(f"timing {', '.join(runners)} side by side")
        p50, bench, _, _ = p50_side_by_side(adapter, runners, "fp32", runs=runs, progress=progress)
        speed = {
            name: {
                "p50_ms": p50[name],
                "ratio_vs_fp32": p50[name] / p50["fp32"],
                "slower_than_fp32": p50[name] > p50["fp32"],
            }
            for name in runners
            if name != "fp32"
        }
        winner = min(chosen, key=lambda t: p50[t.config.recipe]) if chosen else None
        warnings = [
            f"{n} is slower than fp32 on onnxruntime here ({v['ratio_vs_fp32']:.2f}x)"
            for n, v in speed.items()
            if v["slower_than_fp32"]
        ]
        report = {
            "model": adapter.name,
            "task": adapter.task,
            "target": target,
            "requested": (config if isinstance(config, str) else config.recipe),
            "guard": guard.text if guard else None,
            "data": info,
            "fp32": {"p50_ms": p50["fp32"], "size_mb": round(fp32.size_bytes / 2**20, 3)},
            "tries": [t.row() for t in tries],
            "speed": speed,
            "bench": bench,
            "warnings": warnings,
            "chosen": winner.config.recipe if winner else None,
            "passed": winner is not None,
            "artifact": str(output) if winner else None,
            "elapsed_s": round(time.perf_counter() - t0, 1),
        }
        atomic_write_text(report_path, json.dumps(report, indent=2, default=str) + "\n")
        if winner is None:
            best = max(tries, key=lambda t: _score(t, guard))
            raise GuardError(
                f"no try met the accuracy guard '{guard.text if guard else ''}' ({len(tries)} tries; best: "
                f"{best.config.recipe} ({best.label}): {best.verdict})",
                f"the report is at {report_path}; loosen --max-accuracy-drop or try another --recipe",
            )
        _finalise(
            winner.path,
            {
                "accuracy": winner.accuracy,
                "speed": speed[winner.config.recipe],
                "guard": guard.text if guard else None,
                "report": report_path.name,
            },
        )
        if output.exists():
            shutil.rmtree(output)
        winner.path.rename(output)
        return CompressResult(Artifact.load(output), report, report_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _score(t: _Try, guard: Guard | None) -> float:
    if not t.accuracy or guard is None:
        return float("-inf")
    v = float(t.accuracy.get(guard.metric, 0.0))
    return v if guard.op == ">=" else -v


def _finalise(path: Path, extra: dict[str, Any]) -> None:
    """Add accuracy and speed to the chosen artifact's manifest (hashes of the model files unchanged)."""
    mpath = path / "manifest.json"
    m = json.loads(mpath.read_text())
    m["evaluation"] = extra
    atomic_write_text(mpath, json.dumps(m, indent=2, default=str) + "\n")


__all__ = ["CompressResult", "GuardError", "compress", "fallbacks"]
