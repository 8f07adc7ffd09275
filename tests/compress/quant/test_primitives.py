"""Quantize/dequantize round trips with known error bounds."""

import numpy as np
import pytest
import torch

from edgellm.compress.quant.observers import entropy_threshold
from edgellm.compress.quant.primitives import (
    activation_qparams,
    dequantize_weight,
    fake_quant_activation,
    fake_quant_dynamic,
    pack_int4,
    quantize_weight,
    unpack_int4,
    weight_grid,
)


@pytest.fixture()
def w():
    torch.manual_seed(0)
    return torch.randn(48, 256) * torch.linspace(0.01, 2.0, 256)  # uneven column ranges


def test_int8_per_channel_round_trip(w):
    scale, zp = weight_grid(w, 8, None, True)
    q = quantize_weight(w, scale, zp, 8)
    assert scale.shape == (48, 1) and int(q.abs().max()) <= 127 and int(zp.abs().max()) == 0
    err = (dequantize_weight(q, scale, zp) - w).abs()
    assert torch.all(err <= scale / 2 + 1e-6)  # half a step, per output channel
    assert torch.allclose(scale[:, 0], w.abs().amax(1) / 127)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_group_round_trip(w, symmetric, group):
    scale, zp = weight_grid(w, 4, group, symmetric)
    q = quantize_weight(w, scale, zp, 4)
    assert scale.shape == (48, 256 // group)
    assert int(q.min()) >= 0 and int(q.max()) <= 15
    if symmetric:
        assert torch.all(zp == 8)
    deq = dequantize_weight(q, scale, zp)
    step = scale.repeat_interleave(group, dim=1)
    assert torch.all((deq - w).abs() <= step / 2 + 1e-5)
    # an int4 grid is coarser than int8's: the error is larger but bounded by the step
    assert (deq - w).abs().mean() > (dequantize_weight(*_q8(w)) - w).abs().mean()


def _q8(w):
    s, z = weight_grid(w, 8, None, True)
    return quantize_weight(w, s, z, 8), s, z


def test_pack_int4_layout_and_inverse():
    q = torch.tensor([[1, 2, 15, 0, 7]], dtype=torch.int16)
    p = pack_int4(q)
    assert p.dtype == torch.uint8 and p.tolist() == [[0x21, 0x0F, 0x07]]  # element 2i in the low nibble
    assert unpack_int4(p, 5).tolist() == q.tolist()
    r = torch.randint(0, 16, (7, 64), dtype=torch.int16)
    assert torch.equal(unpack_int4(pack_int4(r), 64).to(torch.int16), r)


def test_activation_qparams_and_fake_quant():
    scale, zp = activation_qparams(-1.0, 3.0)
    assert scale == pytest.approx(4.0 / 255) and 0 <= zp <= 255
    x = torch.linspace(-1.0, 3.0, 1001)
    assert torch.all((fake_quant_activation(x, scale, zp) - x).abs() <= scale / 2 + 1e-6)
    assert fake_quant_activation(torch.tensor([0.0]), scale, zp).item() == 0.0  # zero is exact
    clipped = fake_quant_activation(torch.tensor([10.0]), scale, zp).item()
    assert clipped == pytest.approx((255 - zp) * scale)  # saturates at the range
    assert activation_qparams(0.5, 2.0)[1] == 0  # range always includes 0


def test_dynamic_fake_quant_matches_its_own_range():
    x = torch.randn(4, 10, 32) * 3
    y = fake_quant_dynamic(x)
    step = (x.max() - torch.clamp(x.min(), max=0)) / 255
    assert torch.all((y - x).abs() <= step / 2 + 1e-5)


def test_entropy_threshold_clips_outliers():
    rng = np.random.default_rng(0)
    a = np.abs(np.concatenate([rng.standard_normal(200_000), [60.0, 80.0]]))
    t = entropy_threshold(a)
    assert np.percentile(a, 99) < t < 60.0
