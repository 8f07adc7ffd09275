"""Forward hooks that record what each linear layer sees during calibration.

One pass records, per layer: the running min/max of the input, per-input-channel abs-max, mean
abs and min/max (SmoothQuant, AWQ, the per-layer SmoothQuant alpha search), a sample of input rows (percentile/entropy ranges, AWQ's search), and
optionally ``X^T X`` (GPTQ's Hessian).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class Stats:
    lo: float = float("inf")
    hi: float = float("-inf")
    absmax: torch.Tensor | None = None  # (in,)
    abssum: torch.Tensor | None = None  # (in,)
    chmin: torch.Tensor | None = None  # (in,) per-channel minimum (the range after per-channel smoothing)
    chmax: torch.Tensor | None = None  # (in,)
    rows: int = 0
    sample: list[torch.Tensor] = field(default_factory=list)
    sampled: int = 0
    hessian: torch.Tensor | None = None  # (in, in), sum of x x^T
    out_lo: float = float("inf")  # range of the layer's output (static INT8 targets that quantize outputs)
    out_hi: float = float("-inf")

    def sample_rows(self) -> torch.Tensor:
        return torch.cat(self.sample) if self.sample else torch.zeros(0)


class Observer:
    """Attach to ``layers`` (name -> Linear); use as a context manager around calibration forwards."""

    def __init__(
        self,
        layers: dict[str, nn.Linear],
        *,
        hessian: bool = False,
        max_rows: int = 1024,
        seed: int = 0,
        ranges: bool = True,
    ) -> None:
        self.layers = layers
        self.hessian = hessian
        self.ranges = ranges  # input/output ranges and per-channel abs statistics (GPTQ needs none)
        self.max_rows = max_rows
        self.stats = {n: Stats() for n in layers}
        self._handles: list = []
        self._gen = torch.Generator().manual_seed(seed)
        self.mask: torch.Tensor | None = None  # (B, T) bool: tokens that count (padding excluded)
        self.transform: dict[str, torch.Tensor] = {}  # name -> per-channel factor applied before recording
        self._first: dict[str, torch.Tensor] = {}  # name -> the input tensor of batch 0 (shared-input groups)
        self._batch = 0
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None  # (input, x, x^T x)

    def __enter__(self) -> Observer:
        for name, mod in self.layers.items():
            self._handles.append(mod.register_forward_pre_hook(self._hook(name)))
            if self.ranges:
                self._handles.append(mod.register_forward_hook(self._out_hook(name)))
        return self

    def groups(self) -> list[list[str]]:
        """Layers that read the very same input tensor (e.g. q/k/v projections), in layer order."""
        groups: list[tuple[torch.Tensor | None, list[str]]] = []
        for name in self.layers:
            x = self._first.get(name)
            for rep, members in groups:
                if x is not None and rep is x:
                    members.append(name)
                    break
            else:
                groups.append((x, [name]))
        return [members for _, members in groups]

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._last = None

    def _hook(self, name: str):
        def hook(_mod: nn.Module, args: tuple) -> None:
            if self._batch == 0 and name not in self._first:
                self._first[name] = args[0]  # held (not its id: ids are reused once a tensor is freed)
            shared = name not in self.transform and self._last is not None and self._last[0] is args[0]
            if shared:  # q/k/v (or gate/up) read the same tensor: reuse its rows and its x^T x
                x, h = self._last[1], self._last[2]
            else:
                x = args[0].detach()
                if self.mask is not None and x.dim() == 3 and x.shape[:2] == self.mask.shape:
                    x = x[self.mask]
                x = x.reshape(-1, x.shape[-1]).float()
                if name in self.transform:
                    x = x * self.transform[name]
                h = x.T @ x if self.hessian else None
                if name not in self.transform:
                    self._last = (args[0], x, h)
            s = self.stats[name]
            if self.ranges:
                s.lo, s.hi = min(s.lo, x.min().item()), max(s.hi, x.max().item())
                amax, asum = x.abs().amax(0), x.abs().sum(0)
                s.absmax = amax if s.absmax is None else torch.maximum(s.absmax, amax)
                s.abssum = asum if s.abssum is None else s.abssum + asum
                cmin, cmax = x.amin(0), x.amax(0)
                s.chmin = cmin if s.chmin is None else torch.minimum(s.chmin, cmin)
                s.chmax = cmax if s.chmax is None else torch.maximum(s.chmax, cmax)
            s.rows += x.shape[0]
            take = min(x.shape[0], max(0, self.max_rows - s.sampled))
            if take:
                idx = torch.randperm(x.shape[0], generator=self._gen)[:take]
                s.sample.append(x[idx].clone())
                s.sampled += take
            if h is not None:
                s.hessian = h if s.hessian is None else s.hessian + h

        return hook

    def _out_hook(self, name: str):
        def hook(_mod: nn.Module, _args: tuple, out: torch.Tensor) -> None:
            y = out.detach()
            if self.mask is not None and y.dim() == 3 and y.shape[:2] == self.mask.shape:
                y = y[self.mask]
            s = self.stats[name]
            s.out_lo, s.out_hi = min(s.out_lo, y.min().item()), max(s.out_hi, y.max().item())

        return hook


@torch.inference_mode()
def run_calibration(model, feeds: list[dict[str, np.ndarray]], observer: Observer) -> None:
    """Run the model on every batch with the observer attached."""
    names = [s.name for s in model.inputs]
    with observer:
        for f in feeds:
            m = f.get("attention_mask")
            observer.mask = torch.as_tensor(m).bool() if m is not None else None
            model.module(*[torch.as_tensor(f[n]) for n in names])
            observer._batch += 1
    observer.mask = None


def activation_range(stats: Stats, method: str, percentile: float) -> tuple[float, float]:
    """The (lo, hi) range to quantize an activation to, by ``minmax``, ``percentile`` or ``entropy``."""
    if method == "minmax":
        return stats.lo, stats.hi
    x = stats.sample_rows().flatten().numpy().astype(np.float64)
    if method == "percentile":
        return float(np.percentile(x, 100.0 - percentile)), float(np.percentile(x, percentile))
    t = entropy_threshold(np.abs(x))
    return max(stats.lo, -t), min(stats.hi, t)


def entropy_threshold(a: np.ndarray, bins: int = 2048, levels: int = 128) -> float:
    """KL-divergence calibration (TensorRT's entropy calibrator) on |x|: the clip threshold whose
    ``levels``-bin quantized distribution diverges least from the original."""
    amax = float(a.max()) if a.size else 0.0
    if amax <= 0:
        return 1e-8
    hist, edges = np.histogram(a, bins=bins, range=(0.0, amax))
    hist = hist.astype(np.float64)
    best, best_kl = bins, np.inf
    for i in range(levels, bins + 1, 16):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        nz = p > 0
        # quantize the first i bins into `levels` bins, then expand back over the non-zero bins
        chunks = np.array_split(np.arange(i), levels)
        q = np.zeros(i)
        for c in chunks:
            mass = hist[c].sum()
            cnt = np.count_nonzero(hist[c])
            if cnt:
                q[c] = np.where(hist[c] > 0, mass / cnt, 0.0)
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            continue
        pn, qn = p / ps, q / qs
        ok = nz & (qn > 0)
        kl = float(np.sum(pn[ok] * np.log(pn[ok] / qn[ok]))) + float(pn[nz & ~(qn > 0)].sum()) * 10.0
        if kl < best_kl:
            best_kl, best = kl, i
    return float(edges[best])
