"""Counting the FLOPs of one forward pass of a model, per module, with torch's FlopCounterMode.

Example:
    >>> from edgellm.models import load
    >>> from edgellm.models.flops import count_flops
    >>> count_flops(load("minilm"), batch=1, seq=128)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any


def flop_counts(model: Any, batch: int, seq: int) -> dict[str, int]:
    """FLOPs of one forward pass at (batch, seq) per module (``"Global"`` is the total), counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    feeds = model.example_inputs(batch=batch, seq=seq, seed=0, padded=False)
    args = [torch.as_tensor(feeds[s.name]) for s in model.inputs]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.module(*args)
    return {k: int(sum(v.values())) for k, v in counter.get_flop_counts().items()}


def count_flops(model: Any, batch: int, seq: int) -> int:
    """Floating-point operations of one forward pass at (batch, seq)."""
    return flop_counts(model, batch, seq).get("Global", 0)
