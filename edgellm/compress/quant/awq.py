"""AWQ (Lin et al., 2023): scale salient input channels up before rounding, by ``s = mean|x|^alpha``,
with alpha searched to minimise the layer's output error on calibration inputs. The inverse scale
is applied to the activation (``input_scale``), so ``(x / s) @ (W * s)^T == x @ W^T`` before rounding."""

from __future__ import annotations

import torch

from edgellm.compress.quant.primitives import fake_quant_weight, quantize_weight, weight_grid


def awq_search(
    w: torch.Tensor,
    x_mean_abs: torch.Tensor,
    x_sample: torch.Tensor,
    *,
    bits: int,
    group_size: int,
    symmetric: bool,
    grid: int = 20,
) -> tuple[torch.Tensor, float]:
    """Best per-input-channel scale ``s`` (in,) and its alpha; alpha 0 (s = 1) is plain RTN."""
    w = w.detach().float()
    x = x_sample.float()
    ref = x @ w.T
    best_s, best_alpha, best_err = torch.ones(w.shape[1]), 0.0, float("inf")
    base = x_mean_abs.float().clamp(min=1e-8)
    # AutoAWQ's "duo" scaling also divides by the mean normalised weight magnitude per input channel
    wn = w.abs().reshape(w.shape[0], -1, group_size)
    wn = (wn / wn.amax(-1, keepdim=True).clamp(min=1e-8)).reshape(w.shape).mean(0).clamp(min=1e-8)
    for duo in (False, True):
        for k in range(grid):
            alpha = k / grid
            s = base.pow(alpha) / (wn.pow(1 - alpha) if duo else 1.0)
            s = s / (s.max() * s.min()).sqrt()
            wq = fake_quant_weight(w * s, bits, group_size, symmetric) / s
            err = (x @ wq.T - ref).pow(2).mean().item()
            if err < best_err:
                best_s, best_alpha, best_err = s, alpha, err
    return best_s, best_alpha


def awq_quantize(
    w: torch.Tensor,
    s: torch.Tensor,
    *,
    bits: int,
    group_size: int,
    symmetric: bool,
    fp16_scales: bool = False,
    full_range: bool = False,
):
    """Codes, scales and zero points of ``W * s`` (the runtime multiplies inputs by ``1 / s``)."""
    ws = w.detach().float() * s
    scale, zero = weight_grid(ws, bits, group_size, symmetric, fp16_scales, full_range)
    return quantize_weight(ws, scale, zero, bits), scale, zero


def awq_clip(
    w: torch.Tensor,
    x_sample: torch.Tensor,
    *,
    bits: int,
    group_size: int,
    symmetric: bool,
    steps: int = 20,
    min_ratio: float = 0.5,
    max_rows: int = 256,
) -> torch.Tensor:
    """AWQ's clipping search: per output channel and group, the clip ratio of the weight range that
    minimises the group's output error on calibration inputs. Returns the clipped weight."""
    w = w.detach().float()
    out_f, in_f = w.shape
    n_groups = in_f // group_size
    x = x_sample.float()[:max_rows].reshape(-1, n_groups, group_size)  # (n, G, g)
    wg = w.reshape(out_f, n_groups, group_size)  # (O, G, g)
    ref = torch.einsum("ngk,ogk->ogn", x, wg)  # per-group partial outputs
    absmax = wg.abs().amax(-1, keepdim=True)
    lo0, hi0 = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
    best_err = torch.full((out_f, n_groups), float("inf"))
    best = wg.clone()
    for i in range(steps):
        r = 1.0 - (1.0 - min_ratio) * i / steps
        if symmetric:
            clipped = wg.clamp(-absmax * r, absmax * r)
        else:
            clipped = torch.maximum(torch.minimum(wg, hi0 * r), lo0 * r)
        q = fake_quant_weight(clipped.reshape(out_f, in_f), bits, group_size, symmetric).reshape(
            out_f, n_groups, -1
        )
        err = (torch.einsum("ngk,ogk->ogn", x, q) - ref).pow(2).mean(-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better[..., None], clipped, best)
    return best.reshape(out_f, in_f)
