"""The QuantSpec lowered to ONNX Runtime's native forms: real artifacts, real sessions, parity with the
torch fake-quantized model, and the spec's own save/load round trip."""

import dataclasses

import numpy as np
import onnx
import pytest
import torch

from edgellm.compress.quant import (
    Int4WeightOnly,
    Int8Dynamic,
    Int8Static,
    QuantSpec,
    SmoothQuant,
    apply_quant,
    quantize,
)
from edgellm.errors import EdgeLLMError
from edgellm.export import Tolerance, export
from edgellm.runtime import make_runner


def ops_of(art):
    return {n.op_type for n in onnx.load(art.model_path).graph.node}


def agree(art, fake, feeds):
    got = make_runner(art).run({s.name: feeds[s.name] for s in art.inputs})
    ref = fake.run(feeds)
    name = fake.outputs[0].name
    a, b = ref[name].reshape(-1, ref[name].shape[-1]), got[name].reshape(-1, ref[name].shape[-1])
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min()), float(
        np.abs(a - b).max()
    )


# The plain fp32 ONNX export of MiniLM and small-lm is made once for the whole run (conftest sets
# EDGELLM_EXPORT_CACHE); each quantization below is lowered onto it, as `edgellm compress` does.


@pytest.mark.parametrize(
    "cfg,expect",
    [
        (Int8Dynamic(), {"QAttention", "DynamicQuantizeMatMul"}),
        (SmoothQuant(smoothquant_alpha=0.8), {"QuantizeLinear", "DequantizeLinear", "Mul"}),
    ],
)
def test_minilm_int8_artifacts(minilm, pydoc_batches, cfg, expect, tmp_path):
    calib, evalb = pydoc_batches(minilm, n_calib=16, n_eval=8)
    spec = quantize(minilm, cfg, calib.feeds)
    art = export(
        minilm,
        "x86-server",
        tmp_path / "a",
        quant=spec,
        tolerance=Tolerance.quantized(),
    )
    assert art.manifest["precision"] == "int8" and expect <= ops_of(art)
    q = art.manifest["recipe"]["quantization"]
    assert q["lowered_layers"] == 36 and q["unmatched_layers"] == []
    assert art.manifest["calibration_dataset"] is not None or isinstance(cfg, Int8Dynamic)
    cos, _ = agree(art, apply_quant(minilm, spec), evalb.feeds[0])
    assert cos >= 0.99
    assert art.size_bytes < 0.7 * 86e6  # int8 linears (the embedding table stays fp32)


@pytest.mark.parametrize(
    "method,symmetric,group",
    [
        ("rtn", True, 32),
        # GPTQ and AWQ lower through the same MatMulNBits path; benchmarks/bench_int4_tiny_llama.py exports
        # both (each export checks parity) at groups 32 and 128
        pytest.param("gptq", False, 128, marks=pytest.mark.slow),
        pytest.param("awq", True, 64, marks=pytest.mark.slow),
    ],
)
def test_llama_int4_matmulnbits_is_exact(small_llm, pydoc_batches, method, symmetric, group, tmp_path):
    """MatMulNBits with edgellm's codes reproduces the fake-quantized torch model to float precision (on
    small_lm: the format's mechanics; benchmarks/bench_int4_tiny_llama.py exports tiny-llama itself with
    each method at groups 32 and 128, each export checking parity)."""
    calib, evalb = pydoc_batches(small_llm, n_calib=16, n_eval=8)
    spec = quantize(
        small_llm, Int4WeightOnly(method=method, group_size=group, symmetric=symmetric), calib.feeds
    )
    art = export(
        small_llm,
        "x86-server",
        tmp_path / "a",
        quant=spec,
        tolerance=Tolerance.quantized(),
    )
    assert "MatMulNBits" in ops_of(art) and art.manifest["precision"] == "int4"
    assert art.manifest["recipe"]["quantization"]["unmatched_layers"] == []
    cos, max_abs = agree(art, apply_quant(small_llm, spec), evalb.feeds[0])
    assert cos > 0.99999 and max_abs < 1e-3
    wb = spec.weight_bytes()
    assert wb["quantized"] <= 0.2 * wb["fp32"]


def test_keep_patterns_leave_layers_fp32(small_llm, tmp_path):
    spec = quantize(small_llm, Int4WeightOnly(group_size=128, keep=("lm_head", "*.layers.0.*")))
    assert "lm.lm_head" in spec.kept and not any(".layers.0." in n for n in spec.layers)
    assert len(spec.kept) == 8  # lm_head + 7 linears of block 0
    art = export(
        small_llm,
        "x86-server",
        tmp_path / "a",
        quant=spec,
        tolerance=Tolerance.quantized(),
    )
    n_nbits = sum(n.op_type == "MatMulNBits" for n in onnx.load(art.model_path).graph.node)
    assert n_nbits == len(spec.layers) == 7  # the 7 linears of block 1


def test_auto_keep_uses_sensitivity(small_llm, pydoc_batches):
    calib, _ = pydoc_batches(small_llm, n_calib=16)
    spec = quantize(small_llm, Int4WeightOnly(method="rtn", group_size=32, auto_keep=3), calib.feeds)
    sens = spec.calibration["sensitivity"]
    top3 = sorted(sens, key=sens.get, reverse=True)[:3]
    assert set(top3) == set(spec.kept) and not set(top3) & set(spec.layers)


def test_spec_save_load_round_trip(small_llm, pydoc_batches, tmp_path):
    calib, _ = pydoc_batches(small_llm, n_calib=16)
    spec = quantize(small_llm, Int4WeightOnly(method="awq", group_size=64, symmetric=False), calib.feeds)
    spec.save(tmp_path / "spec")
    back = QuantSpec.load(tmp_path / "spec")
    assert back.recipe == spec.recipe and set(back.layers) == set(spec.layers)
    for n, lq in spec.layers.items():
        b = back.layers[n]
        assert torch.equal(b.qweight, lq.qweight) and torch.equal(b.scale, lq.scale)
        assert torch.equal(b.zero_point, lq.zero_point)
        assert (b.input_scale is None) == (lq.input_scale is None)
    packed_bytes = (tmp_path / "spec" / "quant_tensors.safetensors").stat().st_size
    assert packed_bytes < 0.25 * spec.weight_bytes()["fp32"]


def test_static_needs_calibration(small_llm):
    with pytest.raises(EdgeLLMError, match="needs calibration data"):
        quantize(small_llm, Int8Static())


def test_group_size_must_divide(tmp_path):
    from conftest import save_llama

    from edgellm import models

    save_llama(tmp_path / "m", vocab_size=64, hidden_size=96, intermediate_size=192, num_hidden_layers=1)
    m = models.load(tmp_path / "m")
    with pytest.raises(EdgeLLMError, match=r"group size 64 does not divide layer '.*' \(96 inputs\)"):
        quantize(m, Int4WeightOnly(group_size=64))
    assert dataclasses.asdict(Int4WeightOnly(group_size=32))["group_size"] == 32
    with pytest.raises(EdgeLLMError, match="power of two"):
        Int4WeightOnly(group_size=48)
