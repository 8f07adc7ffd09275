"""GPTQ (Frantar et al., 2022): quantize a linear layer column by column, spreading each column's
rounding error over the columns not yet quantized, weighted by the inverse Hessian ``(X^T X)^-1``."""

from __future__ import annotations

import torch

from edgellm.compress.quant.primitives import quantize_weight, weight_grid


def gptq_quantize(
    w: torch.Tensor,
    hessian: torch.Tensor,
    *,
    bits: int,
    group_size: int,
    symmetric: bool,
    damp: float = 0.01,
    block: int = 128,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ for one layer.

    Args:
        w: weight (out, in).
        hessian: ``sum x x^T`` over calibration inputs (in, in).
        group_size: inputs per scale; each group's scale is set from the (error-updated) weights
            when the algorithm reaches the group's first column.

    Returns:
        ``(codes, scale, zero_point)`` on the same grid as round-to-nearest.
    """
    w = w.detach().float().clone()
    out_f, in_f = w.shape
    h = hessian.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += torch.eye(in_f, dtype=h.dtype) * damp * torch.diag(h).mean()
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()

    n_groups = in_f // group_size
    scale = torch.zeros(out_f, n_groups)
    zero = torch.zeros(out_f, n_groups, dtype=torch.int16)
    codes = torch.zeros(out_f, in_f, dtype=torch.int16)
    block = max(block // group_size, 1) * group_size
    for i1 in range(0, in_f, block):
        i2 = min(i1 + block, in_f)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % group_size == 0:
                g = col // group_size
                s, z = weight_grid(w1[:, i : i + group_size], bits, None, symmetric)
                scale[:, g], zero[:, g] = s[:, 0], z[:, 0]
            g = col // group_size
            q = quantize_weight(w1[:, i : i + 1], scale[:, g : g + 1], zero[:, g : g + 1], bits)
            codes[:, col] = q[:, 0]
            deq = (q[:, 0].float() - zero[:, g].float()) * scale[:, g]  # int8 zero points are 0
            e = (w1[:, i] - deq) / hinv1[i, i]
            w1[:, i:] -= e[:, None] @ hinv1[i : i + 1, i:]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return codes, scale, zero
