"""GPTQ's vectorised column loop against the plain per-column algorithm, and block-by-block
calibration (sequential GPTQ) on real decoders."""

import numpy as np
import pytest
import torch
from torch import nn

from edgellm import models
from edgellm.compress.quant import Int4WeightOnly, apply_quant, quantizable_layers, quantize
from edgellm.compress.quant.gptq import gptq_quantize
from edgellm.compress.quant.primitives import dequantize_weight, quantize_weight, weight_grid
from edgellm.compress.quant.sequential import _chain
from edgellm.models.synthetic import synthesize


def reference_gptq(w, hessian, *, bits, group_size, symmetric, damp=0.01, block=128):
    """The per-column GPTQ this package shipped before the vectorised loop (kept verbatim as the oracle)."""
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
            deq = (q[:, 0].float() - zero[:, g].float()) * scale[:, g]
            e = (w1[:, i] - deq) / hinv1[i, i]
            w1[:, i:] -= e[:, None] @ hinv1[i : i + 1, i:]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return codes, scale, zero


@pytest.mark.parametrize("group,symmetric", [(32, True), (64, False), (128, True), (16, False)])
def test_vectorised_gptq_matches_the_per_column_algorithm(group, symmetric):
    gen = torch.Generator().manual_seed(group)
    w = torch.randn(64, 256, generator=gen)
    mix = torch.eye(256) + 0.3 * torch.randn(256, 256, generator=gen) / 16
    x = torch.randn(1024, 256, generator=gen) @ mix  # correlated inputs: GPTQ's updates matter
    x[:, 7] = 0.0  # a dead input
    h = x.T @ x
    ref = reference_gptq(w, h, bits=4, group_size=group, symmetric=symmetric)
    got = gptq_quantize(w, h, bits=4, group_size=group, symmetric=symmetric)
    same = (ref[0] == got[0]).float().mean().item()
    assert same >= 0.999, same
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-7)
    assert torch.equal(got[2], ref[2])

    def err(q):
        return (x @ (w - dequantize_weight(*q)).T).norm().item()

    assert err(got) <= err(ref) * (1 + 1e-4)
    assert err(got) < (x @ (w - dequantize_weight(*_rtn(w, group, symmetric))).T).norm().item()


def _rtn(w, group, symmetric):
    s, z = weight_grid(w, 4, group, symmetric)
    return quantize_weight(w, s, z, 4), s, z


def _cosine(model, qmodel, feeds):
    out = []
    for f in feeds:
        a, b = model.run(f)["logits"], qmodel.run(f)["logits"]
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        out.append(float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean()))
    return min(out)


def test_blockwise_gptq_on_a_llama_is_close_to_fp32_and_leaves_the_model(small_llm, pydoc_batches):
    """The sequential path on a Llama of small_lm's shape (tiny-llama's own GPTQ accuracy is guarded in
    tests/pipeline/test_compress_search.py::test_compress_tiny_llama_int4_meets_guard)."""
    tiny_llama = small_llm
    calib, _ = pydoc_batches(tiny_llama, n_calib=16, n_eval=8)
    assert _chain(tiny_llama, quantizable_layers(tiny_llama), calib.feeds) is not None  # the sequential path
    before = {k: (v.data_ptr(), v.clone()) for k, v in tiny_llama.module.state_dict().items()}
    spec = quantize(tiny_llama, Int4WeightOnly(method="gptq", group_size=32), calib.feeds)
    after = tiny_llama.module.state_dict()
    assert all(after[k].data_ptr() == p and torch.equal(after[k], v) for k, (p, v) in before.items())
    assert set(spec.layers) == set(quantizable_layers(tiny_llama))  # every block linear and the head
    assert _cosine(tiny_llama, apply_quant(tiny_llama, spec), calib.feeds[:2]) > 0.99


def test_blockwise_gptq_on_gpt2_quantizes_what_quantizable_layers_lists(tmp_path, pydoc_batches):
    """GPT-2's block projections are transformers' Conv1D, not nn.Linear: only its head is a target, and
    the sequential path runs the blocks (and the final norm) to reach it."""
    m = models.load(synthesize("gpt2", tmp_path / "g", layers=1))
    calib, _ = pydoc_batches(m, n_calib=8, n_eval=8)
    targets = quantizable_layers(m)
    assert set(targets) == {"lm.lm_head"}
    assert _chain(m, targets, calib.feeds) is not None
    spec = quantize(m, Int4WeightOnly(method="gptq", group_size=128), calib.feeds)
    assert set(spec.layers) == {"lm.lm_head"}
    assert _cosine(m, apply_quant(m, spec), calib.feeds[:1]) > 0.99


class _Parallel(nn.Module):
    """Two linears on the same input, summed: its children are no chain."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(64, 32), nn.Linear(64, 32)

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_a_model_that_is_no_chain_gets_one_calibration_pass():
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    m = models.load(_Parallel().eval(), example_inputs={"x": x})
    feeds = [{"x": x}, {"x": x[::-1].copy()}]
    assert _chain(m, quantizable_layers(m), feeds) is None
    spec = quantize(m, Int4WeightOnly(method="gptq", group_size=32), feeds)
    assert set(spec.layers) == {"a", "b"}
    w = m.module.a.weight.detach()
    xt = torch.as_tensor(x)
    err = (xt @ (w - spec.layers["a"].dequantize()).T).norm()
    assert err < (xt @ (w - dequantize_weight(*_rtn(w, 32, True))).T).norm()
