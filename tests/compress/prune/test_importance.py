"""The importance registry: every score (l1, l2, taylor, wanda) ranks a structure of exactly zero
contribution first, through the transformer path and the dependency-graph path alike; a score
registered by name is taken by both."""

import numpy as np
import pytest
import torch
from prune_models import logits, mlp_adapter, zero_unit

from edgellm.compress.prune import PruneConfig, prune, prune_model
from edgellm.compress.prune.dependency import trace
from edgellm.compress.prune.importance import IMPORTANCES, channel_scores, lookup, register_importance
from edgellm.compress.prune.surgery import choose, remove
from edgellm.errors import EdgeLLMError
from edgellm.models import load


@pytest.mark.parametrize("score", ["l1", "l2", "wanda", "taylor"])
def test_a_structure_of_zero_importance_is_removed_and_outputs_do_not_change(
    small_lm, tmp_path, pydoc_batches, score
):
    base = load(small_lm)
    chans = list(range(0, 256, 4))  # 64 channels = the 25 % to remove
    for layer in (0, 1):
        zero_unit(base, layer, kv_group=1, channels=chans)
    calib = pydoc_batches(base, 8, 8)[0].feeds
    f = base.example_inputs(batch=2, seq=10, seed=3)
    ref = logits(base, f)
    pruned, rec = prune_model(base, PruneConfig(heads=0.5, ffn=0.25, score=score), tmp_path / score, calib)
    assert rec.heads == {0: [1], 1: [1]}
    assert np.allclose(logits(pruned, f), ref, atol=1e-4), score


def test_a_zero_importance_channel_goes_first_and_changes_nothing():
    """Channels whose weights are all zero carry nothing: removing them leaves outputs unchanged, and
    every score picks them first."""
    for score in ("l1", "l2", "taylor", "wanda"):
        m = mlp_adapter(seed=3)
        dead = [1, 7, 20, 30]  # residual channels: zero in both producers (stem, fc2) and every reader
        with torch.no_grad():
            for lin in (m.module.stem, m.module.fc2):
                lin.weight[dead] = 0
                lin.bias[dead] = 0
            for lin in (m.module.fc1, m.module.head):
                lin.weight[:, dead] = 0
        x = torch.randn(6, 12)
        ref = m.module(x)
        calib = [{"input": np.random.default_rng(0).standard_normal((8, 12)).astype(np.float32)}]
        g = trace(m.module, m.example)
        scores = channel_scores(m.module, g, score, calib)
        drop = choose(g, scores, 4 / 80 + 1e-6, "global")  # 80 prunable units: 32 residual + 48 fc1
        assert {g.unit_of[int(g.uses[1].ids[i])] for i in dead} == drop
        remove(m.module, g, drop)
        assert m.module.stem.out_features == 28
        torch.testing.assert_close(m.module(x), ref, atol=1e-5, rtol=1e-5)


def test_a_registered_score_is_taken_by_both_paths(small_lm):
    """A score added with the decorator (here: l1 negated, so the largest units go first) prunes a
    transformer's FFN and a plain module's channels; a score of whole transformer units (a plugin's form)
    is refused by the dependency graph with the names it takes."""
    register_importance("test-neg-l1")(lambda w, grad, norm: -w.abs())
    register_importance("test-units", whole=True)(lambda adapter, layout, units, calib: {})
    try:
        assert lookup("test-neg-l1").needs_data is False and lookup("wanda").needs_data is True
        base = load(small_lm)
        kept = {}
        for score in ("l1", "test-neg-l1"):
            pruned, _ = prune(base, PruneConfig(ffn=0.5, score=score))  # type: ignore[arg-type]
            mlps = [la.mlp for la in pruned.module.lm.model.layers]
            kept[score] = sum(
                float(getattr(m, p).weight.abs().sum())
                for m in mlps
                for p in ("gate_proj", "up_proj", "down_proj")
            )
        assert kept["test-neg-l1"] < kept["l1"]  # it kept the weakest channels: its own order
        m = mlp_adapter()
        g = trace(m.module, m.example)
        neg, pos = channel_scores(m.module, g, "test-neg-l1", None), channel_scores(m.module, g, "l1", None)
        assert all(abs(neg[u] + pos[u]) < 1e-6 for u in pos)
        pruned, _ = prune(m, PruneConfig(channels=0.5, score="test-neg-l1"))  # type: ignore[arg-type]
        assert pruned.module.fc1.out_features == 24
        with pytest.raises(EdgeLLMError, match="plain modules go through the dependency graph"):
            prune(m, PruneConfig(channels=0.5, score="test-units"))  # type: ignore[arg-type]
    finally:
        IMPORTANCES.pop("test-neg-l1")
        IMPORTANCES.pop("test-units")
    assert lookup("test-neg-l1") is None
