"""Small models the pruning tests share: plain torch modules whose channels couple through a residual
add, a concatenation, a depthwise convolution and a flatten; helpers for transformer outputs."""

import torch
from torch import nn

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


def logits(adapter, feeds):
    return adapter.run(feeds)[adapter.outputs[0].name]


def zero_unit(adapter, layer, kv_group, channels):
    """Zero every weight of one KV group and of some FFN channels: their contribution is exactly 0."""
    lm = adapter.module.lm
    attn, mlp = lm.model.layers[layer].self_attn, lm.model.layers[layer].mlp
    d, g = 32, 2
    with torch.no_grad():
        q = slice(kv_group * g * d, (kv_group + 1) * g * d)
        k = slice(kv_group * d, (kv_group + 1) * d)
        attn.q_proj.weight[q] = 0
        attn.k_proj.weight[k] = 0
        attn.v_proj.weight[k] = 0
        attn.o_proj.weight[:, q] = 0
        mlp.gate_proj.weight[channels] = 0
        mlp.up_proj.weight[channels] = 0
        mlp.down_proj.weight[:, channels] = 0
