"""Benchmarks: latency percentiles, throughput, peak memory and model size, runners interleaved.

Example:
    >>> from edgellm.bench import bench_artifact
    >>> rep = bench_artifact("edgellm-out/minilm-x86-server", batches=[1, 8], seqs=[128], runs=20)  # doctest: +SKIP
    >>> rep.to_dict()["results"][0]["p50_ms"]                                                   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgellm.bench.harness import BenchReport, BenchResult, benchmark, host_info, parse_int_list
from edgellm.errors import EdgeLLMError


def p50_side_by_side(
    adapter: Any, runners: dict[str, Any], baseline: str, *, runs: int, progress: bool = False
) -> tuple[dict[str, float], dict[str, Any], int, int]:
    """Median latency of ``runners`` (same model, e.g. fp32 vs int8, unpruned vs pruned), timed
    interleaved in this process on the adapter's inputs at the task's shape (batch 1 x 128 for causal
    LMs, 8 x 128 otherwise); returns (name -> p50 ms, the benchmark report, batch, sequence)."""
    b, s = (1, 128) if adapter.task == "causal-lm" else (8, 128)
    rep = benchmark(
        runners,
        lambda bb, ss: adapter.example_inputs(batch=bb, seq=ss, padded=False),
        batches=[b],
        seqs=[s],
        runs=runs,
        warmup=3,
        baseline=baseline,
        progress=progress,
    ).to_dict()
    return {r["name"]: r["p50_ms"] for r in rep["results"]}, rep, b, s


def bench_artifact(
    artifact: Any,
    *,
    batches: list[int],
    seqs: list[int],
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    reference: bool = False,
    progress: bool = True,
    runtime: str | None = None,
) -> BenchReport:
    """Benchmark an artifact in its runtime(s), optionally beside the torch model it came from.

    Args:
        artifact: an :class:`~edgellm.export.Artifact` or its directory (hashes are verified).
        batches, seqs: shapes; sequence lengths apply to inputs with a ``sequence`` axis.
        runs, warmup: timed and warm-up runs per runner and shape.
        threads: intra-op threads for every runner (None: the runtime's default).
        reference: also time the torch fp32 source model (SDPA attention); ratios are against it.
        progress: show a progress bar.
        runtime: ``None``/``"all"``: every runtime the artifact passed parity in (manifest ``runtimes``;
            each in a process of its own when there are several), else one runtime by name.
    """
    from edgellm.export import Artifact
    from edgellm.models.adapter import make_inputs
    from edgellm.runtime import make_runner

    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    runners: dict[str, Any] = {}
    sizes: dict[str, float] = {}
    specs = art.inputs
    value_ranges = dict(art.manifest.get("value_ranges", {}))
    example = None
    if reference:
        model = reload_source(art)
        runners["torch"] = make_runner(model, "torch", threads=threads)
        sizes["torch"] = sum(p.numel() * p.element_size() for p in model.module.parameters()) / 2**20
        specs, value_ranges, example = model.inputs, {**model.int_high, **value_ranges}, model.example
    cands = bench_candidates(art, runtime)
    for name, rt, opts in cands:
        if len(cands) > 1:
            from edgellm.runtime.isolated import IsolatedRunner

            runners[name] = IsolatedRunner(rt, str(art.path), intra_op_threads=threads, **opts).start()
        else:  # every artifact runner takes intra_op_threads
            runners[name] = make_runner(art, rt, intra_op_threads=threads, **opts)
        sizes[name] = art.size_bytes / 2**20
    if not any("sequence" in s.shape for s in specs):
        seqs = [0]

    def feeds(b: int, s: int):
        return make_inputs(specs, b, s, seed=0, int_high=value_ranges, example=example, padded=False)

    try:
        rep = benchmark(
            runners,
            feeds,
            batches=batches,
            seqs=seqs,
            runs=runs,
            warmup=warmup,
            sizes_mb=sizes,
            baseline="torch" if reference else None,
            progress=progress,
        )
    finally:
        for r in runners.values():
            r.close()
    rep.config.update(
        {
            "artifact": str(art.path),
            "threads": threads,
            "model": art.manifest["model"]["name"],
            "preferred_runtime": (art.manifest.get("runtimes") or {}).get("preferred"),
        }
    )
    return rep


def bench_candidates(art: Any, runtime: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """``(row name, runtime, options)`` to time: every runtime and precision the artifact passed parity
    in (its manifest's ``runtimes``; the format's own runtime when it has none), or only ``runtime``."""
    from edgellm.runtime import check_validated, discover_runners

    every = runtime in (None, "all")
    if not every:
        if runtime not in discover_runners():
            raise EdgeLLMError(
                f"unknown runtime '{runtime}'", f"available: {', '.join(sorted(discover_runners()))}"
            )
        check_validated(art.manifest, runtime, {})
    recorded = (art.manifest.get("runtimes") or {}).get("candidates", [])
    rows = [
        (c["name"], c["runtime"], dict(c.get("options") or {}))
        for c in recorded
        if c.get("passed") and (every or c["runtime"] == runtime)
    ]
    name = art.manifest["target"]["runtime"] if every else runtime
    return rows or [(name, name, {})]


def reload_source(art: Any) -> Any:
    """Load the torch model an artifact was exported from (by path, or by bundled name)."""
    from edgellm.models import bundled_names, load

    src = art.manifest["model"]["source"]
    if src.get("path") and Path(src["path"]).is_dir():
        return load(src["path"], attn_implementation="sdpa", name=src.get("name"))
    if src.get("name") in bundled_names():
        return load(src["name"], attn_implementation="sdpa")
    raise EdgeLLMError(
        f"the source model of '{art.path}' cannot be reloaded (path {src.get('path')!r} is gone or it was a plain module)",
        "run without --reference",
    )


__all__ = [
    "BenchReport",
    "BenchResult",
    "bench_artifact",
    "benchmark",
    "host_info",
    "parse_int_list",
    "reload_source",
]
