"""Facts about this host's CPU, read from /proc/cpuinfo: SIMD flags, model name and fp32 peak."""

from __future__ import annotations

import functools
import os
from pathlib import Path


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``avx2``, ``avx512f``, ``asimd``...); empty where /proc/cpuinfo is absent."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model() -> str:
    """The CPU's model name (``AMD EPYC 9R14...``), else the platform's processor or machine name."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_peak_gflops() -> float:
    """fp32 peak of this host: cores x clock x FLOPs per cycle (2 FMA x SIMD lanes) from /proc/cpuinfo."""
    flags = cpu_flags()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    mhz = 2000.0
    try:
        for line in open("/proc/cpuinfo"):  # noqa: SIM115 - read once, small
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":", 1)[1])
                break
    except OSError:
        pass
    return (os.cpu_count() or 1) * mhz * 1e6 * lanes * 2 * 2 / 1e9  # 2 FMA ports, 2 FLOPs per FMA


@functools.cache
def memory_bandwidth_gbs(mb: int = 256, rounds: int = 3) -> float:
    """This machine's read bandwidth from one thread, GB/s: the best of ``rounds`` numpy sums over an
    ``mb`` MB array (far larger than the caches). Measured once per process (~0.2 s)."""
    import time

    import numpy as np

    a = np.ones(mb * (1 << 20) // 8, dtype=np.float64)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t0)
    return round(a.nbytes / best / 1e9, 2)
