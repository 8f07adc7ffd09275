"""The surgery on a dependency graph (:mod:`~edgellm.compress.prune.dependency`): choose the units of
coupled channels to remove and remove them physically from a plain torch module.

``scope="layer"`` removes the same fraction of every group, ``scope="global"`` ranks all units by their
score relative to their group's mean; every group keeps at least one unit (rounded up to ``multiple_of``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from edgellm.compress.prune.config import PruneConfig, PruneRecord, flops
from edgellm.compress.prune.dependency import Graph, trace
from edgellm.compress.prune.importance import channel_scores, weight_importance
from edgellm.errors import EdgeLLMError


def prune_channels(adapter: Any, config: PruneConfig, calib: list[dict[str, Any]] | None) -> PruneRecord:
    """Prune ``config.channels`` of a plain torch module's coupled channels in place, by ``config.score``."""
    if config.heads or config.ffn or config.blocks:
        raise EdgeLLMError(
            f"'{adapter.name}' is a plain torch module: it has no heads, FFN or blocks to prune by family",
            "give channels: the fraction of coupled channels to remove, e.g. 0.25",
        )
    imp = weight_importance(config.score)
    if imp.needs_data and not calib:
        raise EdgeLLMError(
            f"the '{config.score}' score needs calibration data",
            "pass calibration inputs, or use the l1 / l2 score",
        )
    assert adapter.example is not None
    g = trace(adapter.module, adapter.example)
    scores = channel_scores(adapter.module, g, config.score, calib)
    drop = choose(g, scores, config.channels, config.scope, config.multiple_of)
    record = PruneRecord(config=vars(config).copy(), params_before=adapter.num_parameters)
    record.flops_before = flops(adapter)
    record.widths = remove(adapter.module, g, drop)
    record.params_after = adapter.num_parameters
    record.flops_after = flops(adapter)
    return record


def choose(
    g: Graph, scores: dict[int, float], ratio: float, scope: str = "layer", multiple_of: int = 1
) -> set[int]:
    """The units to remove: ``ratio`` of every group (``layer``), or the lowest ``ratio`` of all units
    by score relative to their group's mean (``global``); every group keeps at least one unit (rounded up
    to ``multiple_of``)."""
    if not 0.0 < ratio < 1.0:
        raise EdgeLLMError(f"prune ratio {ratio} is outside (0, 1)", "give the fraction to remove, e.g. 0.25")
    if not g.groups:
        raise EdgeLLMError(
            "the model has no prunable channels: every channel reaches an input or the output",
            "prune a model with hidden layers",
        )

    def floor_keep(n: int) -> int:
        return min(n, max(multiple_of, 1)) if multiple_of > 1 else 1

    drop: set[int] = set()
    if scope == "layer":
        for units in g.groups.values():
            n = len(units)
            keep = max(floor_keep(n), n - math.floor(n * ratio + 1e-9))
            if multiple_of > 1:
                keep = min(n, math.ceil(keep / multiple_of) * multiple_of)
            ranked = sorted(units, key=lambda u: scores.get(u, 0.0))
            drop |= set(ranked[: n - keep])
        return drop
    if scope != "global":
        raise EdgeLLMError(f"unknown scope '{scope}'", "use layer or global")
    rel = []
    for key, units in g.groups.items():
        mean = float(np.mean([scores.get(u, 0.0) for u in units])) or 1.0
        rel += [(scores.get(u, 0.0) / mean, key, u) for u in units]
    rel.sort(key=lambda t: t[0])
    total = sum(len(u) for u in g.groups.values())
    target = math.floor(total * ratio + 1e-9)
    left = {k: len(v) for k, v in g.groups.items()}
    for _, key, u in rel:
        if len(drop) >= target:
            break
        if left[key] - 1 >= floor_keep(len(g.groups[key])):
            drop.add(u)
            left[key] -= 1
    if multiple_of > 1:  # give units back until every group's width is a multiple
        for key, units in g.groups.items():
            while left[key] % multiple_of and left[key] < len(units):
                back = max((u for u in units if u in drop), key=lambda u: scores.get(u, 0.0))
                drop.discard(back)
                left[key] += 1
    return drop


def remove(module: nn.Module, g: Graph, drop: set[int]) -> dict[str, Any]:
    """Physically remove the channels of ``drop`` units from ``module`` (in place); returns the per-module
    widths before and after."""
    widths: dict[str, list[int]] = {}
    for use in g.uses:
        keep = torch.tensor(
            [i for i, e in enumerate(use.ids.tolist()) if g.unit_of[e] not in drop], dtype=torch.long
        )
        mod = module.get_submodule(use.path)
        if len(keep) == len(use.ids):
            continue
        with torch.no_grad():
            if use.role == "out":
                widths.setdefault(use.path, [mod.weight.shape[0]]).append(len(keep))
                mod.weight = nn.Parameter(mod.weight[keep].clone())
                if mod.bias is not None:
                    mod.bias = nn.Parameter(mod.bias[keep].clone())
                if isinstance(mod, nn.Linear):
                    mod.out_features = len(keep)
                else:
                    mod.out_channels = len(keep)
            elif use.role == "in":
                mod.weight = nn.Parameter(mod.weight[:, keep].clone())
                if isinstance(mod, nn.Linear):
                    mod.in_features = len(keep)
                else:
                    mod.in_channels = len(keep)
            elif use.role == "dw":
                widths.setdefault(use.path, [mod.weight.shape[0]]).append(len(keep))
                mod.weight = nn.Parameter(mod.weight[keep].clone())
                if mod.bias is not None:
                    mod.bias = nn.Parameter(mod.bias[keep].clone())
                mod.in_channels = mod.out_channels = mod.groups = len(keep)
            else:  # BatchNorm / LayerNorm
                if mod.weight is not None:
                    mod.weight = nn.Parameter(mod.weight[keep].clone())
                if getattr(mod, "bias", None) is not None:
                    mod.bias = nn.Parameter(mod.bias[keep].clone())
                if isinstance(mod, nn.LayerNorm):
                    mod.normalized_shape = (len(keep),)
                else:
                    mod.running_mean = mod.running_mean[keep].clone()
                    mod.running_var = mod.running_var[keep].clone()
                    mod.num_features = len(keep)
    return widths
