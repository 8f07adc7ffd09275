"""The surgery on the dependency graph: coupled channels of plain torch modules are chosen (per group or
globally, multiples kept) and removed together, keep valid shapes, run in torch and every runtime, and
save as a model directory the exporters and the partitioner take."""

import copy

import numpy as np
import pytest
import torch
from prune_models import cnn_adapter, mlp_adapter

from edgellm.compress.prune import PruneConfig, prune, prune_model
from edgellm.compress.prune.dependency import trace
from edgellm.compress.prune.importance import channel_scores
from edgellm.compress.prune.surgery import choose
from edgellm.errors import EdgeLLMError
from edgellm.models import load


@pytest.mark.parametrize("score", ["l1", "l2", "taylor", "wanda"])
def test_pruned_plain_modules_keep_valid_shapes(score):
    for make, x in ((mlp_adapter, torch.randn(3, 12)), (cnn_adapter, torch.randn(3, 3, 8, 8))):
        m = make()
        ref = m.module(x)
        calib = [m.example_inputs(batch=4, seed=1)]
        pruned, rec = prune(m, PruneConfig(channels=0.5, score=score), calib)
        out = pruned.module(x)
        assert out.shape == ref.shape and torch.isfinite(out).all()
        assert torch.equal(m.module(x), ref)  # the verb prunes a copy
        assert rec.params_after < 0.8 * rec.params_before and rec.flops_after < rec.flops_before
    p = pruned.module
    assert p.dw.groups == p.dw.in_channels == p.bn.num_features == 12  # 8 of a + 4 of b
    assert p.fc.in_features == p.mix.out_channels * 16


def test_global_scope_prunes_groups_unevenly_within_the_total():
    m = cnn_adapter()
    g = trace(m.module, m.example)
    with torch.no_grad():
        m.module.b.weight.mul_(0.01)  # branch b matters far less than its neighbours
    scores = channel_scores(m.module, g, "l2", None)
    drop = choose(g, scores, 0.25, "global")
    total = sum(len(v) for v in g.groups.values())
    per = {k: sum(u in drop for u in v) / len(v) for k, v in g.groups.items()}
    assert len(drop) == int(total * 0.25)
    assert len(set(per.values())) > 1  # unlike scope=layer, groups lose different fractions
    layer = choose(g, scores, 0.25, "layer", multiple_of=4)
    assert all((len(v) - sum(u in layer for u in v)) % 4 == 0 for v in g.groups.values())


def test_pruned_cnn_saves_as_a_model_directory_for_exporters_and_the_partitioner(tmp_path):
    from edgellm.export import export
    from edgellm.partition.cut import split_model

    _pruned, rec = prune_model("mobilenet-v2", PruneConfig(channels=0.25, multiple_of=8), tmp_path / "mbv2")
    assert rec.params_after < 0.8 * rec.params_before and (tmp_path / "mbv2" / "pruning.json").is_file()
    again = load(tmp_path / "mbv2")  # an ordinary directory: module, example, I/O names
    assert [b.name for b in again.blocks] == [b.name for b in load("mobilenet-v2").blocks]
    x = again.example["image"]
    full = again.run({"image": x})["logits"]
    halves = split_model(again, 3)
    act = halves.device.run({"image": x})
    np.testing.assert_allclose(halves.server.run(act)["logits"], full, atol=1e-4)
    art = export(again, "x86-server", tmp_path / "art")
    assert art.manifest["parity"]["passed"] and art.manifest["pruning"]["params_ratio"] < 0.8


@pytest.mark.parametrize(
    "target,fmt", [("x86-server", None), ("snapdragon-865", "tflite"), ("snapdragon-865", "ort")]
)
def test_a_pruned_plain_module_runs_in_every_runtime(target, fmt, tmp_path):
    """Residual + concatenation + depthwise + flatten, pruned and saved, then exported with parity."""
    from edgellm.export import export

    m = cnn_adapter()
    prune_model(m, PruneConfig(channels=0.5, score="l1"), tmp_path / "p")
    pruned = load(tmp_path / "p")
    assert pruned.module.mix.out_channels == 8 and pruned.module.fc.in_features == 8 * 16
    art = export(pruned, target, tmp_path / "art", **({"format": fmt} if fmt else {}))
    assert art.manifest["parity"]["passed"] and art.manifest["pruning"]["channel_widths"]["mix"] == [16, 8]


def test_bad_prune_requests_are_named():
    m = mlp_adapter()
    for bad in (dict(channels=1.0), dict(channels=-0.1)):
        with pytest.raises(EdgeLLMError, match=r"outside \(0, 1\)"):
            PruneConfig(**bad)
    with pytest.raises(EdgeLLMError, match="needs calibration data"):
        prune(copy.deepcopy(m), PruneConfig(channels=0.25, score="wanda"))
    with pytest.raises(EdgeLLMError, match="plain torch module: it has no heads"):
        prune(copy.deepcopy(m), PruneConfig(heads=0.25))
