"""GPTQ (Frantar et al., 2022): quantize a linear layer column by column, spreading each column's
rounding error over the columns not yet quantized, weighted by the inverse Hessian ``(X^T X)^-1``.

The columns are processed in lazy batches of ``block`` columns (the paper's "lazy batch updates"):
inside a batch each column's error is applied to the batch's remaining columns at once, and the
whole batch's errors reach the columns to its right in one matrix product. The weight is held
transposed, ``(in, out)``, so that a column is a contiguous row and the per-column work is a handful of
in-place vector ops.

Example:
    >>> import torch
    >>> w, x = torch.randn(8, 64), torch.randn(256, 64)
    >>> q, scale, zero = gptq_quantize(w, x.T @ x, bits=4, group_size=32, symmetric=True)
    >>> q.shape, scale.shape
    (torch.Size([8, 64]), torch.Size([8, 2]))
"""

from __future__ import annotations

import torch

from edgellm.compress.quant.primitives import weight_grid


def inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The upper Cholesky factor ``U`` of the damped ``H^-1`` (``H^-1 = U^T U``, float32) and the mask
    of dead inputs (zero diagonal: they get a unit diagonal; the caller zeroes their weights).

    With ``J`` the reversal permutation and ``J H J = L L^T``, ``U = J L^-1 J``: one Cholesky and one
    triangular inverse instead of inverting ``H`` and factoring the inverse. In float32 (as AutoGPTQ),
    float64 when float32's Cholesky fails.
    """
    in_f = hessian.shape[0]
    h = hessian.float().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += torch.eye(in_f, dtype=h.dtype) * damp * torch.diag(h).mean()
    lower, info = torch.linalg.cholesky_ex(h.flip(0, 1))
    if int(info):  # not positive definite at float32's precision
        lower = torch.linalg.cholesky(h.double().flip(0, 1))
    return _lower_triangular_inverse(lower).flip(0, 1).float(), dead


def _lower_triangular_inverse(lower: torch.Tensor, leaf: int = 256) -> torch.Tensor:
    """``L^-1`` of a lower-triangular ``L`` by halves (``n^3 / 3`` flops, mostly in matrix products):
    ``[[A, 0], [C, D]]^-1 = [[A^-1, 0], [-D^-1 C A^-1, D^-1]]``."""
    n = lower.shape[0]
    if n <= leaf:
        return torch.linalg.solve_triangular(lower, torch.eye(n, dtype=lower.dtype), upper=False)
    k = n // 2
    a_inv = _lower_triangular_inverse(lower[:k, :k], leaf)
    d_inv = _lower_triangular_inverse(lower[k:, k:], leaf)
    out = torch.zeros_like(lower)
    out[:k, :k] = a_inv
    out[k:, k:] = d_inv
    out[k:, :k] = -(d_inv @ lower[k:, :k]) @ a_inv
    return out


@torch.inference_mode()
def gptq_quantize(
    w: torch.Tensor,
    hessian: torch.Tensor,
    *,
    bits: int,
    group_size: int,
    symmetric: bool,
    damp: float = 0.01,
    block: int = 128,
    inner: int = 32,
    fp16_scales: bool = False,
    act_order: bool = False,
    full_range: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ for one layer.

    Args:
        w: weight (out, in).
        hessian: ``sum x x^T`` over calibration inputs (in, in).
        group_size: inputs per scale; each group's scale is set from the (error-updated) weights
            when the algorithm reaches the group's first column.
        block: columns per lazy batch (rounded to a multiple of ``group_size``).
        inner: columns per sub-batch inside a batch: a column's error is applied at once only to its
            sub-batch (which stays in cache), then the sub-batch's errors to the rest of the batch.
        fp16_scales: each group's scale rounded to float16 before its codes are computed (GGUF blocks).
        act_order: quantize columns in order of decreasing Hessian diagonal (the inputs with the most
            energy first, while the most columns are left to absorb their error), with static groups: each
            group's grid set from the original weights beforehand, so groups stay contiguous runs of
            inputs (any block format still holds them).
        full_range: the symmetric grid over all 16 levels (:func:`~edgellm.compress.quant.primitives.weight_grid`).

    Returns:
        ``(codes, scale, zero_point)`` on the same grid as round-to-nearest: int16 (out, in),
        float32 (out, in / group_size), int16 (out, in / group_size).
    """
    out_f, in_f = w.shape
    perm = group_of = None
    if act_order:
        perm = torch.argsort(torch.diagonal(hessian), descending=True)
        hessian = hessian[perm][:, perm]
        group_of = (perm // group_size).tolist()
    hinv, dead = inverse_hessian_factor(hessian, damp)
    wt = w.detach().float().t().contiguous()  # (in, out): column j of W is row j
    if perm is not None:
        wt = wt[perm].contiguous()
    wt[dead] = 0.0
    lo, hi = (-127.0, 127.0) if bits == 8 else (0.0, float((1 << bits) - 1))  # primitives' conventions
    n_groups = in_f // group_size
    scale_t = torch.zeros(n_groups, out_f)  # (G, out)
    zero_t = torch.zeros(n_groups, out_f)
    if group_of is not None:  # static groups: every grid from the original weights, before any update
        s0, z0 = weight_grid(w.detach().float(), bits, group_size, symmetric, fp16_scales, full_range)
        scale_t.copy_(s0.t())
        zero_t.copy_(z0.t().float())
    codes_t = torch.empty(in_f, out_f)
    block = max(block // group_size, 1) * group_size
    if group_size % inner and inner % group_size:  # a group must start a sub-batch or lie inside one
        inner = group_size
    threads = torch.get_num_threads()
    for i1 in range(0, in_f, block):
        i2 = min(i1 + block, in_f)
        err1 = torch.empty(i2 - i1, out_f)
        # the per-column vector ops are too small to gain from threads (they lose when cores are shared)
        torch.set_num_threads(1)
        try:
            for j1 in range(i1, i2, inner):
                j2 = min(j1 + inner, i2)
                _columns(
                    wt,
                    codes_t,
                    err1,
                    hinv,
                    (scale_t, zero_t),
                    (j1, j2, i1),
                    bits,
                    group_size,
                    (symmetric, fp16_scales, full_range, group_of),
                    (lo, hi),
                )
                if j2 < i2:  # this sub-batch's errors reach the rest of the batch
                    wt[j2:i2].addmm_(hinv[j1:j2, j2:i2].t(), err1[j1 - i1 : j2 - i1], alpha=-1.0)
        finally:
            torch.set_num_threads(threads)
        if i2 < in_f:  # the batch's errors reach every column to its right
            wt[i2:].addmm_(hinv[i1:i2, i2:].t(), err1, alpha=-1.0)
    if perm is not None:  # back to the inputs' own order
        codes = torch.empty_like(codes_t)
        codes[perm] = codes_t
        codes_t = codes
    return (
        codes_t.t().to(torch.int16).contiguous(),
        scale_t.t().contiguous(),
        zero_t.t().to(torch.int16).contiguous(),
    )


def _columns(
    wt: torch.Tensor,
    codes_t: torch.Tensor,
    err1: torch.Tensor,
    hinv: torch.Tensor,
    grid: tuple[torch.Tensor, torch.Tensor],
    span: tuple[int, int, int],
    bits: int,
    group_size: int,
    grid_kind: tuple[bool, bool, bool, list[int] | None],
    clamp: tuple[float, float],
) -> None:
    """Quantize columns ``j1:j2`` (``span = (j1, j2, batch start)``) of ``wt`` (in, out) one by one, each
    column's error spread over the sub-batch's later columns; codes land in ``codes_t``, the group grids
    in ``grid`` (G, out), the errors in ``err1`` (rows relative to the batch start)."""
    (scale_t, zero_t), (j1, j2, i1), (lo, hi) = grid, span, clamp
    symmetric, fp16, full, group_of = grid_kind
    out_f = wt.shape[1]
    w1 = wt[j1:j2]  # a view: updates land in wt
    h1 = hinv[j1:j2, j1:j2]
    diag = torch.diagonal(h1)
    e = torch.empty(out_f)  # scratch vectors, reused for every column
    deq = torch.empty(out_f)
    for i in range(j2 - j1):
        col = j1 + i
        g = col // group_size if group_of is None else group_of[col]
        if group_of is None and col % group_size == 0:  # the group's grid, from the weights updated so far
            s, z = weight_grid(wt[col : col + group_size].t(), bits, None, symmetric, fp16, full)
            scale_t[g], zero_t[g] = s[:, 0], z[:, 0].float()
        s_g, z_g = scale_t[g], zero_t[g]
        row = w1[i]
        q = codes_t[col]
        torch.div(row, s_g, out=q).round_().add_(z_g).clamp_(lo, hi)
        torch.sub(q, z_g, out=deq).mul_(s_g)
        torch.sub(row, deq, out=e).div_(diag[i])
        err1[col - i1] = e
        if i + 1 < j2 - j1:
            w1[i + 1 :].addr_(h1[i, i + 1 :], e, alpha=-1.0)
