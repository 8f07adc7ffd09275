"""Parity of an exported model against the torch reference: max abs error and cosine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgellm.utils.specs import TensorSpec


@dataclass(frozen=True)
class Tolerance:
    """Pass when every output has ``max_abs <= max_abs`` (unless None) and ``cosine_min >= min_cosine``.

    Defaults suit fp32 graphs: fused kernels reorder sums, so errors of 1e-6..1e-4 are normal.
    Quantized graphs use :meth:`quantized`: integer rounding amplifies those tiny differences (a
    value near a rounding boundary lands on the other side), so only the direction is compared.
    """

    max_abs: float | None = 1e-3
    min_cosine: float = 0.9999

    @classmethod
    def quantized(cls) -> Tolerance:
        return cls(max_abs=None, min_cosine=0.99)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def compare(
    ref: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    specs: list[TensorSpec],
    feeds: Mapping[str, np.ndarray],
) -> dict[str, dict[str, float]]:
    """Per output: ``max_abs`` error and the minimum row-wise cosine, ignoring masked positions.

    A row is one sample (embeddings) or one token (sequence outputs); positions where the output's
    ``valid_mask`` input is 0 (padding) are left out.
    """
    metrics: dict[str, dict[str, float]] = {}
    for spec in specs:
        a = np.asarray(ref[spec.name], dtype=np.float64)
        b = np.asarray(got[spec.name], dtype=np.float64)
        if a.shape != b.shape:
            metrics[spec.name] = {"max_abs": float("inf"), "cosine_min": -1.0, "shape_mismatch": 1.0}
            continue
        if spec.valid_mask and spec.valid_mask in feeds and a.ndim >= 2:
            keep = np.asarray(feeds[spec.valid_mask]).astype(bool)
            a, b = a[keep], b[keep]
        a2 = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)
        b2 = b.reshape(a2.shape)
        num = (a2 * b2).sum(axis=1)
        den = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
        cos = np.where(
            den > 0, num / np.maximum(den, 1e-300), np.where(np.abs(a2 - b2).max(axis=1) == 0, 1.0, 0.0)
        )
        finite = bool(np.isfinite(b2).all())
        metrics[spec.name] = {
            "max_abs": float(np.abs(a2 - b2).max())
            if finite and a2.size
            else (0.0 if finite else float("inf")),
            "cosine_min": float(cos.min()) if finite and cos.size else (1.0 if finite else -1.0),
        }
    return metrics


def merge(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Worst case over several comparisons."""
    out: dict[str, dict[str, float]] = {}
    for run in runs:
        for name, m in run.items():
            cur = out.setdefault(name, {"max_abs": 0.0, "cosine_min": 1.0})
            cur["max_abs"] = max(cur["max_abs"], m["max_abs"])
            cur["cosine_min"] = min(cur["cosine_min"], m["cosine_min"])
    return out


def passes(metrics: dict[str, dict[str, float]], tol: Tolerance) -> bool:
    return all(
        (tol.max_abs is None or m["max_abs"] <= tol.max_abs) and m["cosine_min"] >= tol.min_cosine
        for m in metrics.values()
    )


def summary(metrics: dict[str, Any]) -> str:
    """``name: max_abs=…, cosine_min=…`` for error messages."""
    return "; ".join(
        f"{n}: max_abs={m['max_abs']:.3g}, cosine_min={m['cosine_min']:.6f}" for n, m in metrics.items()
    )


def check_parity(
    model: Any, runner: Any, *, seed: int = 0, shapes: list[tuple[int, int]] | None = None
) -> dict[str, Any]:
    """Compare ``runner`` with the torch reference on fixed inputs and on random shapes.

    Fixed: real sentences through the tokenizer (or the user's example). Random: batch 1, 3 and 2
    with sequence lengths 7, 33 and up to 128 (within the model's limit), later rows padded; or the
    ``(batch, sequence)`` pairs in ``shapes`` (e.g. fewer, shorter ones where a run is slow).

    Returns:
        ``{"fixed": {output: metrics}, "random": {output: metrics}, "shapes": [...]}``.
    """
    full = model.fixed_inputs()
    fixed = compare(model.run(full), runner.run(_subset(full, runner)), runner.outputs, full)
    has_seq = any("sequence" in s.shape for s in runner.inputs)
    batch_dyn = all(s.shape and isinstance(s.shape[0], str) for s in runner.inputs)
    limit = min(max_positions(model), getattr(runner, "max_seq", None) or 1 << 30)  # static-shape files
    if shapes is None:
        shapes = [(1, 7), (3, 33), (2, min(128, limit))]
    if not has_seq:
        shapes = [(b, 0) for b, _ in shapes]
    if not batch_dyn:
        shapes = [(int(runner.inputs[0].shape[0]), s) for _, s in shapes]
    runs, used = [], []
    for i, (b, s) in enumerate(shapes):
        s = min(s, limit)
        full = model.example_inputs(batch=b, seq=s, seed=seed + i)
        runs.append(compare(model.run(full), runner.run(_subset(full, runner)), runner.outputs, full))
        used.append([b, s] if has_seq else [b])
    return {"fixed": fixed, "random": merge(runs), "random_shapes": used}


def max_positions(model: Any, default: int = 1 << 30) -> int:
    """The positions the model's config takes (``max_position_embeddings`` / ``n_positions``), or ``default``."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return default


def _subset(feeds: Mapping[str, np.ndarray], runner: Any) -> dict[str, np.ndarray]:
    """The feeds the runner takes (an exporter may drop an input the graph never reads)."""
    return {spec.name: feeds[spec.name] for spec in runner.inputs}
