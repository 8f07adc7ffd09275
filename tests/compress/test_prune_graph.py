"""The generic dependency graph: plain torch modules with residual adds, concatenations, depthwise
convolutions, norms and flatten get their coupled channels removed together, keep valid shapes, run in
torch and ONNX Runtime, save as a model directory the exporters and the partitioner take, and the graph
names any op it cannot follow."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgellm.compress.prune import PruneConfig, prune, prune_model
from edgellm.compress.prune import graph as G
from edgellm.errors import EdgeLLMError
from edgellm.models import load


class ResidualMLP(nn.Module):
    def __init__(self, norm: bool = False) -> None:
        super().__init__()
        self.stem = nn.Linear(12, 32)
        self.fc1 = nn.Linear(32, 48)
        self.fc2 = nn.Linear(48, 32)
        self.norm = nn.LayerNorm(32) if norm else nn.Identity()
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        h = self.stem(x)
        h = h + self.fc2(torch.relu(self.fc1(h)))  # residual: fc2's rows are tied to stem's
        return self.head(self.norm(h))


class ConcatCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 1)
        self.bn = nn.BatchNorm2d(24)
        self.dw = nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.mix = nn.Conv2d(24, 16, 1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], dim=1)  # channels of a, then of b
        y = nn.functional.relu(self.dw(self.bn(y)))
        y = nn.functional.max_pool2d(self.mix(y), 2)
        return self.fc(torch.flatten(y, 1))  # each channel's 16 features go together


def mlp_adapter(norm=False, seed=0):
    torch.manual_seed(seed)
    return load(ResidualMLP(norm), example_inputs=torch.randn(4, 12))


def cnn_adapter(seed=0):
    torch.manual_seed(seed)
    m = ConcatCNN()
    with torch.no_grad():  # trained-looking BatchNorm statistics
        m.bn.running_mean.uniform_(-0.1, 0.1)
        m.bn.running_var.uniform_(0.5, 1.5)
    return load(m, example_inputs=torch.randn(2, 3, 8, 8))


def test_residual_channels_are_one_group_and_inputs_outputs_stay():
    m = mlp_adapter()
    g = G.trace(m.module, m.example)
    groups = {k: len(v) for k, v in g.groups.items()}
    assert groups == {("fc2", "stem"): 32, ("fc1",): 48}  # the residual stream is one group; head rows fixed


def test_concatenation_and_flatten_map_channels_to_their_consumers():
    m = cnn_adapter()
    g = G.trace(m.module, m.example)
    assert {k: len(v) for k, v in g.groups.items()} == {("a",): 16, ("b",): 8, ("mix",): 16}
    fc_in = next(u for u in g.uses if u.path == "fc" and u.role == "in")
    assert len(fc_in.ids) == 256 and len({g.unit_of[e] for e in fc_in.ids.tolist()}) == 16
    dw = next(u for u in g.uses if u.path == "dw")
    assert dw.role == "dw" and len(dw.ids) == 24


@pytest.mark.parametrize("score", ["l1", "l2", "taylor", "wanda"])
def test_pruned_plain_modules_keep_valid_shapes(score):
    for make, x in ((mlp_adapter, torch.randn(3, 12)), (cnn_adapter, torch.randn(3, 3, 8, 8))):
        m = make()
        ref = m.module(x)
        calib = [m.example_inputs(batch=4, seed=1)]
        rec = prune(m, PruneConfig(channels=0.5, score=score), calib)
        out = m.module(x)
        assert out.shape == ref.shape and torch.isfinite(out).all()
        assert rec.params_after < 0.8 * rec.params_before and rec.flops_after < rec.flops_before
    assert m.module.dw.groups == m.module.dw.in_channels == m.module.bn.num_features == 12  # 8 of a + 4 of b
    assert m.module.fc.in_features == m.module.mix.out_channels * 16


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
        g = G.trace(m.module, m.example)
        scores = G.unit_scores(m.module, g, score, calib)
        drop = G.choose(g, scores, 4 / 80 + 1e-6, "global")  # 80 prunable units: 32 residual + 48 fc1
        assert {g.unit_of[int(g.uses[1].ids[i])] for i in dead} == drop
        G.remove(m.module, g, drop)
        assert m.module.stem.out_features == 28
        torch.testing.assert_close(m.module(x), ref, atol=1e-5, rtol=1e-5)


def test_global_scope_prunes_groups_unevenly_within_the_total():
    m = cnn_adapter()
    g = G.trace(m.module, m.example)
    with torch.no_grad():
        m.module.b.weight.mul_(0.01)  # branch b matters far less than its neighbours
    scores = G.unit_scores(m.module, g, "l2", None)
    drop = G.choose(g, scores, 0.25, "global")
    total = sum(len(v) for v in g.groups.values())
    per = {k: sum(u in drop for u in v) / len(v) for k, v in g.groups.items()}
    assert len(drop) == int(total * 0.25)
    assert len(set(per.values())) > 1  # unlike scope=layer, groups lose different fractions
    layer = G.choose(g, scores, 0.25, "layer", multiple_of=4)
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


def test_the_graph_names_what_it_cannot_follow():
    class Rolls(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.out = nn.Linear(8, 2)

        def forward(self, x):
            return self.out(torch.roll(self.fc(x), 1, dims=1))

    m = load(Rolls(), example_inputs=torch.randn(2, 8))
    with pytest.raises(EdgeLLMError, match=r"cannot follow 'roll' \(node 'roll'\)"):
        prune(m, PruneConfig(channels=0.25))

    grouped = load(
        nn.Sequential(nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 2, 1)),
        example_inputs=torch.randn(1, 4, 6, 6),
    )
    with pytest.raises(EdgeLLMError, match=r"grouped convolution \(groups=2\)"):
        prune(grouped, PruneConfig(channels=0.25))


def test_bad_prune_requests_are_named():
    m = mlp_adapter()
    for bad in (dict(channels=1.0), dict(channels=-0.1)):
        with pytest.raises(EdgeLLMError, match=r"outside \(0, 1\)"):
            PruneConfig(**bad)
    with pytest.raises(EdgeLLMError, match="needs calibration data"):
        prune(copy.deepcopy(m), PruneConfig(channels=0.25, score="wanda"))
    with pytest.raises(EdgeLLMError, match="plain torch module: it has no heads"):
        prune(copy.deepcopy(m), PruneConfig(heads=0.25))
