"""Fast bias correction (as NNCF's ``FastBiasCorrection``): remove the mean output shift quantization
adds to each layer.

Rounding the weights and clipping the activations moves a layer's outputs by a small amount per output
channel that does not average out: ``E[W x] - E[Wq dq(x)]`` over the calibration tokens. Adding that
shift to the layer's bias makes the quantized layer unbiased on the calibration data. The correction
is folded into the bias the runtime already adds, so it costs nothing at run time.

Example:
    >>> qlayers = correct_biases(model, targets, qlayers, calib_feeds)         # doctest: +SKIP
    >>> output_shift(model, targets, qlayers, calib_feeds)[name].abs().max()   # doctest: +SKIP
    tensor(1.2e-08)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from edgellm.compress.quant.observers import run_calibration
from edgellm.compress.quant.spec import LayerQuant, QuantLinear

Feeds = list[dict[str, np.ndarray]]


class ShiftObserver:
    """Forward hooks on the fp32 layers that accumulate, per output channel and over the tokens that
    count, ``W x - (Wq dq(x) + c)``: the quantized layer on the same input, with the bias correction
    ``c`` it already has (none: 0) and without the fp32 bias both share."""

    def __init__(self, layers: dict[str, nn.Linear], qlayers: dict[str, LayerQuant]) -> None:
        self.layers = layers
        self.quant = {n: QuantLinear(lq, None) for n, lq in qlayers.items() if n in layers}
        self.sums: dict[str, torch.Tensor] = {}
        self.count: dict[str, int] = {}
        self.mask: torch.Tensor | None = None
        self._batch = 0
        self._handles: list = []

    def __enter__(self) -> ShiftObserver:
        for name in self.quant:
            self._handles.append(self.layers[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(mod: nn.Linear, args: tuple, _out: torch.Tensor) -> None:
            x = args[0].detach().float()
            shift = nn.functional.linear(x, mod.weight.float()) - self.quant[name](x)
            if self.mask is not None and shift.dim() == 3 and shift.shape[:2] == self.mask.shape:
                shift = shift[self.mask]
            shift = shift.reshape(-1, shift.shape[-1]).double()
            self.sums[name] = shift.sum(0) + self.sums.get(name, 0)
            self.count[name] = self.count.get(name, 0) + shift.shape[0]

        return hook

    def mean(self) -> dict[str, torch.Tensor]:
        return {n: (s / max(self.count[n], 1)).float() for n, s in self.sums.items()}


@torch.inference_mode()
def output_shift(
    model: Any, targets: dict[str, nn.Linear], qlayers: dict[str, LayerQuant], calib: Feeds
) -> dict[str, torch.Tensor]:
    """Per layer, the mean over calibration tokens of ``W x - (Wq dq(x) + bias_correction)`` (shape
    (out,)): the output shift the quantized layer still has, each layer fed the inputs it sees in the
    fp32 model."""
    obs = ShiftObserver(targets, qlayers)
    run_calibration(model, calib, obs)  # type: ignore[arg-type]
    return obs.mean()


def correct_biases(
    model: Any, targets: dict[str, nn.Linear], qlayers: dict[str, LayerQuant], calib: Feeds
) -> dict[str, LayerQuant]:
    """``qlayers`` with each layer's :func:`output_shift` added to its ``bias_correction`` (in place)."""
    for n, d in output_shift(model, targets, qlayers, calib).items():
        old = qlayers[n].bias_correction
        qlayers[n].bias_correction = d if old is None else old + d
    return qlayers
