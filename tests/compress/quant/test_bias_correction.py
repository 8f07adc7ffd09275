"""Fast bias correction and the per-layer SmoothQuant alpha search, on real torch layers; the
``int8-static-ov`` recipe lowered for ONNX Runtime with its corrections folded into the graph's biases."""

import dataclasses

import numpy as np
import onnx
import pytest
import torch

from edgellm import models
from edgellm.compress.quant import Int8Static, Int8StaticOV, QuantSpec, apply_quant, config_for, quantize
from edgellm.compress.quant.bias_correction import output_shift
from edgellm.compress.quant.observers import Observer, run_calibration
from edgellm.compress.quant.smoothing import quantized_output_error, smoothing_factors
from edgellm.errors import EdgeLLMError
from edgellm.export import Tolerance, export
from edgellm.runtime import make_runner


def offset_mlp(outliers: bool = False):
    """A two-layer MLP fed inputs with a non-zero mean; ``outliers``: a few of the first layer's output
    channels (the second layer's inputs) 40x larger than the rest."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    if outliers:
        with torch.no_grad():
            net[0].weight[:3] *= 40.0
            net[0].bias[:3] += 20.0
    model = models.load(net, example_inputs=torch.randn(2, 32))
    name = model.inputs[0].name
    gen = torch.Generator().manual_seed(1)

    def feeds(n: int) -> list[dict[str, np.ndarray]]:
        return [{name: (torch.randn(64, 32, generator=gen) + 2.0).numpy()} for _ in range(n)]

    return model, feeds


def layers_of(model):
    return {n: m for n, m in model.module.named_modules() if isinstance(m, torch.nn.Linear)}


def test_bias_correction_removes_the_mean_output_shift(tmp_path):
    model, feeds = offset_mlp()
    calib, held = feeds(8), feeds(8)
    cfg = dict(per_channel=False)  # one weight scale per tensor: a coarse grid with a visible shift
    plain = quantize(model, Int8Static(**cfg), calib)
    corrected = quantize(model, Int8Static(bias_correction=True, **cfg), calib)
    targets = layers_of(model)
    assert set(corrected.layers) == set(targets)
    for data, shrink in ((calib, 1e-3), (held, 0.5)):
        before = output_shift(model, targets, plain.layers, data)
        after = output_shift(model, targets, corrected.layers, data)  # the shift that remains
        for n in targets:
            left = after[n]
            assert before[n].abs().mean() > 1e-3, n  # quantization does shift the outputs
            assert left.abs().mean() < shrink * before[n].abs().mean(), (n, data is calib)
    # the torch reference carries the corrected bias: its outputs' mean moves back toward fp32
    x = torch.as_tensor(np.concatenate([f[model.inputs[0].name] for f in held]))
    ref = model.module(x)
    err_plain = (apply_quant(model, plain).module(x) - ref).mean(0).abs().mean()
    err_corr = (apply_quant(model, corrected).module(x) - ref).mean(0).abs().mean()
    assert err_corr < 0.5 * err_plain
    corrected.save(tmp_path / "spec")  # the corrections survive the spec's round trip
    back = QuantSpec.load(tmp_path / "spec")
    assert all(
        torch.equal(back.layers[n].bias_correction, corrected.layers[n].bias_correction) for n in targets
    )


def test_alpha_search_picks_per_layer_alphas_that_beat_a_fixed_alpha():
    model, feeds = offset_mlp(outliers=True)
    calib, held = feeds(8), feeds(8)
    targets = layers_of(model)
    inv, alphas = smoothing_factors(model, targets, "auto", calib)
    assert set(alphas) == set(targets) == set(inv)
    assert len(set(alphas.values())) == 2  # the outlier layer and the plain one want different alphas
    obs = Observer(targets, max_rows=4096, seed=3)
    run_calibration(model, held, obs)  # judged on held-out inputs

    def error(factors_by_layer, name):
        w = targets[name].weight.detach().float()
        return quantized_output_error([w], obs.stats[name], factors_by_layer[name])

    for fixed in (0.3, 0.5, 0.8, 0.95):
        at = smoothing_factors(model, targets, fixed, calib)[0]
        for n in targets:
            assert error(inv, n) < error(at, n), (fixed, n)
    outlier = "2"
    assert error({outlier: torch.ones(64)}, outlier) > 3 * error(inv, outlier)  # smoothing matters here
    # the search feeds the recipe: the quantized layers carry those factors
    spec = quantize(model, Int8Static(smoothquant_alpha="auto"), calib)
    assert torch.allclose(spec.layers[outlier].input_scale, inv[outlier])


def test_alpha_options_are_validated():
    assert config_for("int8-static-ov").bias_correction
    with pytest.raises(EdgeLLMError, match="not a number"):
        Int8Static(smoothquant_alpha="best")
    with pytest.raises(EdgeLLMError, match="smoothquant_grid"):
        Int8Static(smoothquant_alpha="auto", smoothquant_grid=(0.5, 1.5))


def test_int8_static_ov_exports_with_corrections_folded(minilm, pydoc_batches, tmp_path):
    calib, evalb = pydoc_batches(minilm, n_calib=16, n_eval=8)
    spec = quantize(minilm, Int8StaticOV(), calib.feeds)
    assert all(lq.bias_correction is not None and lq.input_scale is not None for lq in spec.layers.values())
    art = export(minilm, "x86-server", tmp_path / "a", quant=spec, tolerance=Tolerance.quantized())
    ops = art.manifest["recipe"]["quantization"]["ops"]
    # every linear a QDQ MatMul; every correction folded into an existing bias (no extra Add)
    assert (
        ops["QDQ MatMul"] == 36 and ops["bias correction folded"] == 36 and "bias correction Add" not in ops
    )
    assert art.manifest["recipe"]["quantization"]["unmatched_layers"] == []
    feeds = evalb.feeds[0]
    got = make_runner(art).run({s.name: feeds[s.name] for s in art.inputs})["sentence_embedding"]
    fake = apply_quant(minilm, spec).run(feeds)["sentence_embedding"]
    uncorrected = {n: dataclasses.replace(lq, bias_correction=None) for n, lq in spec.layers.items()}
    plain = apply_quant(minilm, dataclasses.replace(spec, layers=uncorrected))
    to_corrected = np.abs(got - fake).mean()
    to_plain = np.abs(got - plain.run(feeds)["sentence_embedding"]).mean()
    assert to_corrected < 0.7 * to_plain  # ONNX Runtime runs the corrected biases, not the fp32 ones
    n_add = sum(n.op_type == "Add" for n in onnx.load(art.model_path).graph.node)
    assert n_add == 37  # the fp32 graph's Adds, none added
