"""The roofline: the least time a target needs for ``flops`` of compute that read ``nbytes`` of memory.

    time = max(flops / (peak x compute efficiency), bytes / (bandwidth x memory efficiency))

``peak`` is the target's published peak at the precision it runs (TOPS), ``bandwidth`` its memory
bandwidth (GB/s). The efficiencies say how much of a published peak a runtime reaches on batch-1
transformer inference; the defaults are fixed, documented assumptions (``bench --estimate``), and the
partition cost model passes the compute efficiency it calibrated on this host instead. Every figure is a
prediction, never a measurement.

Example:
    >>> from edgellm.targets import load_target, roofline
    >>> r = roofline(load_target("raspberry-pi-5"), "fp32", flops=2.9e9, nbytes=91e6)  # doctest: +SKIP
    >>> r.ms, r.bound                                                                     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgellm.targets.profiles import Target

# fractions of the published peaks that CPU/GPU runtimes reach on batch-1 transformer inference
COMPUTE_EFFICIENCY = 0.30
MEMORY_EFFICIENCY = 0.60


@dataclass(frozen=True)
class Roofline:
    """The two bounds of one pass (seconds); the larger one is its latency."""

    compute_s: float
    memory_s: float

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.memory_s)

    @property
    def ms(self) -> float:
        return self.seconds * 1000.0

    @property
    def bound(self) -> str:
        """``compute`` or ``memory``: which side of the roof the pass sits on."""
        return "compute" if self.compute_s >= self.memory_s else "memory"


def peak_tops(target: Target, precision: str) -> tuple[str, float]:
    """``(precision, TOPS)`` the target computes ``precision`` at.

    A precision the target lists no peak for (an int8 model on a GPU profile without int8 figures) runs at
    its fp32 speed, or at its first listed precision when it lists no fp32 either.
    """
    peaks = target.peak_compute_tops
    if precision in peaks:
        return precision, peaks[precision]
    basis = "fp32" if "fp32" in peaks else next(iter(peaks))
    return basis, peaks[basis]


def roofline(
    target: Target,
    precision: str,
    flops: float,
    nbytes: float,
    *,
    compute_efficiency: float = COMPUTE_EFFICIENCY,
    memory_efficiency: float = MEMORY_EFFICIENCY,
) -> Roofline:
    """The roofline of ``flops`` reading ``nbytes`` on ``target`` at ``precision``.

    Args:
        target: the device or server profile (peaks per precision, memory bandwidth).
        precision: what the model runs at (see :func:`peak_tops` for one the target lists no peak for).
        flops: floating-point (or integer) operations of the pass.
        nbytes: bytes it moves through memory (weights, plus activations written and read back).
        compute_efficiency / memory_efficiency: the fractions of the peaks reached.
    """
    _, peak = peak_tops(target, precision)
    compute_s = flops / (peak * 1e12 * compute_efficiency)
    memory_s = nbytes / (target.memory_bandwidth_gbs * 1e9 * memory_efficiency)
    return Roofline(compute_s, memory_s)
