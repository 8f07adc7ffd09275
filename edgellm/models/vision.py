"""Vision CNNs defined in edgellm: ResNet-18 and MobileNet-V2, for split inference where cutting pays.

Both follow the published architectures (He et al. 2016, basic blocks [2, 2, 2, 2]; Sandler et al. 2018,
inverted residuals with the (t, c, n, s) table) and are built as an ``nn.Sequential`` of named blocks
(``stem``, ``layer1_0``..., ``head``) so the planner can cut between any two. Their input image
(``3 x 224 x 224`` fp32, 602 KB) is larger than their mid-network feature maps, the case where running
the first blocks on the phone shrinks what crosses the network. Weights are random (seeded): latency and
data sizes are what these models are for, not accuracy.

Example:
    >>> m = edgellm.models.load("resnet18")          # doctest: +SKIP
    >>> [b.name for b in m.blocks][:3]                # doctest: +SKIP
    ['stem', 'layer1_0', 'layer1_1']
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=False)
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.down(x))


class ClassifierHead(nn.Module):
    """Global average pool, flatten, linear."""

    def __init__(self, cin: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet18(classes: int = 1000) -> nn.Sequential:
    """ResNet-18: 7x7/2 stem + max-pool, four stages of two basic blocks (64, 128, 256, 512), head."""
    blocks: list[tuple[str, nn.Module]] = [
        (
            "stem",
            nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            ),
        )
    ]
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for i in range(2):
            blocks.append((f"layer{stage}_{i}", BasicBlock(cin, cout, 2 if (i == 0 and stage > 1) else 1)))
            cin = cout
    blocks.append(("head", ClassifierHead(512, classes)))
    return nn.Sequential(OrderedDict(blocks))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


# (expansion t, channels c, repeats n, first stride s), as in the MobileNet-V2 paper's Table 2
_MBV2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenet_v2(classes: int = 1000) -> nn.Sequential:
    """MobileNet-V2 (width 1.0): 3x3/2 stem, 17 inverted residuals, 1x1 conv to 1280, head.

    One block per inverted-residual stage (``stage1``..``stage7``), so every cut lies between stages.
    """
    blocks: list[tuple[str, nn.Module]] = [
        ("stem", nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()))
    ]
    cin = 32
    for s, (t, c, n, stride) in enumerate(_MBV2, start=1):
        stage = [InvertedResidual(cin if i == 0 else c, c, stride if i == 0 else 1, t) for i in range(n)]
        blocks.append((f"stage{s}", nn.Sequential(*stage)))
        cin = c
    blocks.append(
        ("last_conv", nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()))
    )
    blocks.append(("head", ClassifierHead(1280, classes)))
    return nn.Sequential(OrderedDict(blocks))


def _randomize_bn(model: nn.Module, seed: int) -> None:
    """BatchNorm statistics as after training (not the identity), so activations have real spread."""
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


VISION: dict[str, tuple[str, Callable[..., nn.Sequential]]] = {
    "resnet18": ("ResNet-18 image classifier (11.7 M params, random weights), 3x224x224 input", resnet18),
    "mobilenet-v2": (
        "MobileNet-V2 image classifier (3.5 M params, random weights), 3x224x224 input",
        mobilenet_v2,
    ),
}


def build(name: str, *, resolution: int = 224, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The named CNN in eval mode with seeded random weights, and an example image batch."""
    torch.manual_seed(seed)
    model = VISION[name][1]()
    _randomize_bn(model, seed)
    example = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))
    return model.eval(), example
