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
    for k in range(grid):
        alpha = k / grid
        s = base.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        wq = fake_quant_weight(w * s, bits, group_size, symmetric) / s
        err = (x @ wq.T - ref).pow(2).mean().item()
        if err < best_err:
            best_s, best_alpha, best_err = s, alpha, err
    return best_s, best_alpha


def awq_quantize(w: torch.Tensor, s: torch.Tensor, *, bits: int, group_size: int, symmetric: bool):
    """Codes, scales and zero points of ``W * s`` (the runtime multiplies inputs by ``1 / s``)."""
    ws = w.detach().float() * s
    scale, zero = weight_grid(ws, bits, group_size, symmetric)
    return quantize_weight(ws, scale, zero, bits), scale, zero
