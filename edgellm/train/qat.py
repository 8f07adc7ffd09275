"""Quantization-aware training: the recipe's fake quantization in the forward pass, straight-through
gradients in the backward pass, and plain float weights at the end.

The layers and grids are those of the compression recipe (:func:`edgellm.compress.quant.config_for`):
the same ``quantizable_layers`` and ``keep`` patterns, int8 per-channel symmetric weights or int4 groups
(:func:`edgellm.compress.quant.primitives.fake_quant_weight`), and for the int8 recipes the activations
quantized per tensor as at run time (static recipes train against the dynamic range, their calibrated
ranges not being known yet). The weights are registered as a ``torch.nn.utils.parametrize``
parametrization, so the optimizer updates the float weights; :func:`remove` takes it off and leaves those
float weights, which the ordinary lowering then quantizes (``edgellm compress`` / ``export --precision``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from edgellm.compress.quant.primitives import fake_quant_dynamic, fake_quant_weight


class _FakeQuantWeight(nn.Module):
    def __init__(self, bits: int, group_size: int | None, symmetric: bool) -> None:
        super().__init__()
        self.bits, self.group_size, self.symmetric = bits, group_size, symmetric

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q = fake_quant_weight(w, self.bits, self.group_size, self.symmetric).to(w.dtype)
        return w + (q - w).detach()  # straight-through: the forward sees q, the gradient flows to w


def _fake_quant_input(_m: nn.Module, args: tuple) -> tuple:
    x = args[0]
    return (x + (fake_quant_dynamic(x) - x).detach(), *args[1:])


def prepare(adapter: Any, recipe: str, **options: Any) -> dict[str, Any]:
    """Put fake quantization on ``adapter``'s quantizable layers (in place); returns a handle for
    :func:`remove` and what was done."""
    from edgellm.compress.quant import config_for
    from edgellm.compress.quant.config import Int4WeightOnly
    from edgellm.compress.quant.quantize import matches, quantizable_layers

    cfg = config_for(recipe, **options)
    layers = {n: m for n, m in quantizable_layers(adapter).items() if not matches(n, cfg.keep)}
    if isinstance(cfg, Int4WeightOnly):
        bits, group, sym, act = 4, cfg.group_size, cfg.symmetric, False
    else:
        bits, group, sym, act = 8, None, True, True  # int8: symmetric, one scale per output channel
    hooks = []
    for m in layers.values():
        parametrize.register_parametrization(m, "weight", _FakeQuantWeight(bits, group, sym))
        if act:
            hooks.append(m.register_forward_pre_hook(_fake_quant_input))
    return {"layers": layers, "hooks": hooks, "recipe": recipe, "bits": bits, "activations": act}


def remove(handle: dict[str, Any]) -> None:
    """Take the fake quantization off, leaving the trained float weights in place."""
    for h in handle["hooks"]:
        h.remove()
    for m in handle["layers"].values():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
