"""The dependency graph: plain torch modules with residual adds, concatenations, depthwise convolutions,
norms and flatten get their coupled channels found (one unit per coupled set, inputs and outputs fixed),
and the graph names any op it cannot follow."""

import pytest
import torch
from prune_models import cnn_adapter, mlp_adapter
from torch import nn

from edgellm.compress.prune import PruneConfig, prune
from edgellm.compress.prune.dependency import trace
from edgellm.errors import EdgeLLMError
from edgellm.models import load


def test_residual_channels_are_one_group_and_inputs_outputs_stay():
    m = mlp_adapter()
    g = trace(m.module, m.example)
    groups = {k: len(v) for k, v in g.groups.items()}
    assert groups == {("fc2", "stem"): 32, ("fc1",): 48}  # the residual stream is one group; head rows fixed


def test_concatenation_and_flatten_map_channels_to_their_consumers():
    m = cnn_adapter()
    g = trace(m.module, m.example)
    assert {k: len(v) for k, v in g.groups.items()} == {("a",): 16, ("b",): 8, ("mix",): 16}
    fc_in = next(u for u in g.uses if u.path == "fc" and u.role == "in")
    assert len(fc_in.ids) == 256 and len({g.unit_of[e] for e in fc_in.ids.tolist()}) == 16
    dw = next(u for u in g.uses if u.path == "dw")
    assert dw.role == "dw" and len(dw.ids) == 24


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
