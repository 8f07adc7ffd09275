"""Latency, throughput and memory of runners, measured side by side and interleaved.

Machines drift 20-30 % between runs, so variants are compared inside one process: every timed round
runs each runner once, in an order that rotates from round to round.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.targets.host import cpu_flags, cpu_model


@dataclass
class BenchResult:
    """One runner at one (batch, seq) shape. Latencies in milliseconds."""

    name: str
    runtime: str
    batch: int
    seq: int
    runs: int
    p50_ms: float
    p90_ms: float | None  # None where a device's own tool does not report it
    p99_ms: float | None
    mean_ms: float
    std_ms: float | None
    min_ms: float | None
    throughput_per_s: float | None  # samples (sequences) per second at p50
    peak_rss_mb: float | None  # process resident set size, max sampled while this shape ran
    model_size_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class BenchReport:
    """All results of one benchmark run, with ratios against a baseline runner."""

    results: list[BenchResult]
    config: dict[str, Any]
    host: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None

    def ratios(self) -> dict[str, dict[str, float]]:
        """``{"<name>/<baseline>": {"b8_s128": p50 ratio}}``: below 1.0 means faster than the baseline."""
        if not self.baseline:
            return {}
        base = {(r.batch, r.seq): r.p50_ms for r in self.results if r.name == self.baseline}
        out: dict[str, dict[str, float]] = {}
        for r in self.results:
            if r.name != self.baseline and (r.batch, r.seq) in base:
                out.setdefault(f"{r.name}/{self.baseline}", {})[f"b{r.batch}_s{r.seq}"] = round(
                    r.p50_ms / base[(r.batch, r.seq)], 4
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "config": self.config,
            "host": self.host,
            "baseline": self.baseline,
            "results": [r.to_dict() for r in self.results],
            "ratios_p50": self.ratios(),
        }


class _RssSampler:
    """Sample this process's RSS every few milliseconds in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def parse_int_list(text: str, what: str) -> list[int]:
    """``"1,8"`` -> ``[1, 8]``; a clear error for anything else."""
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise EdgeLLMError(
            f"{what} '{text}' is not a comma-separated list of integers", f"write e.g. {what} 1,8"
        ) from None
    if not values or any(v < 1 for v in values):
        raise EdgeLLMError(f"{what} '{text}' must list integers >= 1", f"write e.g. {what} 1,8")
    return values


def benchmark(
    runners: Mapping[str, Any],
    make_feeds: Callable[[int, int], Mapping[str, np.ndarray]],
    *,
    batches: list[int],
    seqs: list[int],
    runs: int = 50,
    warmup: int = 5,
    sizes_mb: Mapping[str, float] | None = None,
    baseline: str | None = None,
    progress: bool = True,
    pause_s: float = 0.05,
) -> BenchReport:
    """Time every runner on every (batch, seq), interleaved, and summarise.

    Args:
        runners: name -> :class:`~edgellm.runtime.Runner` (anything with ``run(feeds)``); one with
            ``time(feeds, n)`` (:class:`~edgellm.runtime.isolated.IsolatedRunner`) is timed in its
            own process, and its peak memory is that process's.
        make_feeds: ``(batch, seq) -> feeds`` shared by all runners (each takes the inputs it declares).
        batches, seqs: shapes to measure.
        runs, warmup: timed and untimed runs per runner per shape.
        sizes_mb: model size per runner, copied into the results.
        baseline: runner name the ratios are computed against.
        progress: show a progress bar (rich) on stderr.
        pause_s: idle time before each timed call. Runtimes keep their worker threads spinning for a
            while after a call; without a pause those threads steal the cores from the next runner
            (measured here: ~60 % slower ONNX Runtime latencies at 0 ms, within ~10 % of a lone
            session at 50 ms).

    Example:
        >>> rep = benchmark({"ort": r}, lambda b, s: feeds(b, s), batches=[1, 8], seqs=[128])  # doctest: +SKIP
        >>> rep.results[0].p50_ms                                                           # doctest: +SKIP
    """
    if runs < 1 or warmup < 0:
        raise EdgeLLMError(f"runs={runs}, warmup={warmup} are invalid", "use --runs >= 1 and --warmup >= 0")
    names = list(runners)
    if baseline is not None and baseline not in runners:
        raise EdgeLLMError(
            f"baseline '{baseline}' is not one of the runners", f"use one of: {', '.join(names)}"
        )
    shapes = [(b, s) for b in batches for s in seqs]
    total = len(shapes) * len(names) * (runs + warmup)
    results: list[BenchResult] = []
    bar = _progress(progress)
    with bar:
        task = bar.add_task("benchmark", total=total)
        for b, s in shapes:
            feeds = dict(make_feeds(b, s))
            per = {n: {spec.name: feeds[spec.name] for spec in runners[n].inputs} for n in names}
            times: dict[str, list[float]] = {n: [] for n in names}
            with _RssSampler() as rss:
                for n in names:
                    bar.update(task, description=f"warm-up b={b} s={s} {n}")
                    for _ in range(warmup):
                        runners[n].run(per[n])
                        bar.advance(task)
                bar.update(task, description=f"timing b={b} s={s}")
                for i in range(runs):
                    for k in range(len(names)):
                        n = names[(i + k) % len(names)]
                        if pause_s:
                            time.sleep(pause_s)
                        if hasattr(runners[n], "time"):  # a runner in its own process: timed there
                            times[n] += runners[n].time(per[n], 1)
                        else:
                            t0 = time.perf_counter()
                            runners[n].run(per[n])
                            times[n].append((time.perf_counter() - t0) * 1e3)
                        bar.advance(task)
            for n in names:
                t = np.asarray(times[n])
                p50 = float(np.percentile(t, 50))
                own = runners[n].peak_rss_mb() if hasattr(runners[n], "peak_rss_mb") else None
                results.append(
                    BenchResult(
                        name=n,
                        runtime=getattr(runners[n], "runtime", n),
                        batch=b,
                        seq=s,
                        runs=runs,
                        p50_ms=p50,
                        p90_ms=float(np.percentile(t, 90)),
                        p99_ms=float(np.percentile(t, 99)),
                        mean_ms=float(t.mean()),
                        std_ms=float(t.std()),
                        min_ms=float(t.min()),
                        throughput_per_s=b * 1e3 / p50,
                        peak_rss_mb=own if own is not None else rss.peak / 2**20,
                        model_size_mb=(sizes_mb or {}).get(n),
                    )
                )
    config = {
        "batches": batches,
        "seqs": seqs,
        "runs": runs,
        "warmup": warmup,
        "runners": names,
        "interleaved": True,
    }
    return BenchReport(results, config, host_info(), baseline)


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )


def host_info() -> dict[str, Any]:
    """CPU model, core counts and SIMD features of this machine."""
    import os
    import platform

    import psutil

    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "features": [
            f
            for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "neon", "asimd", "sve")
            if f in flags
        ],
    }
