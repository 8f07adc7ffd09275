"""What to prune (:class:`PruneConfig`) and what was pruned (:class:`PruneRecord`, written to the model
directory as ``pruning.json`` and into every artifact's manifest).

Light on purpose: no torch at import (``edgellm.compress`` exports these names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from edgellm.errors import EdgeLLMError

Score = Literal["l1", "l2", "taylor", "wanda"]  # the built-in importances; a plugin adds its own names


@dataclass
class PruneConfig:
    """What to remove: fractions of heads (KV groups) and FFN channels per layer and of whole blocks
    (transformers), or of coupled channels (``channels``, plain torch modules)."""

    heads: float = field(default=0.0, metadata={"doc": "fraction of attention heads (KV groups) per layer"})
    ffn: float = field(default=0.0, metadata={"doc": "fraction of FFN channels per layer"})
    blocks: float = field(default=0.0, metadata={"doc": "fraction of whole transformer blocks"})
    channels: float = field(default=0.0, metadata={"doc": "plain torch modules: coupled channels to remove"})
    score: Score = field(
        default="l2", metadata={"doc": "importance score (a name in edgellm.compress.prune.importance)"}
    )
    multiple_of: int = field(
        default=1, metadata={"doc": "keep pruned widths multiples of this (8, 16: fast kernels)"}
    )
    scope: Literal["layer", "global"] = field(
        default="layer", metadata={"doc": "the same fraction per layer, or ranked across layers"}
    )

    def __post_init__(self) -> None:
        for name in ("heads", "ffn", "blocks", "channels"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise EdgeLLMError(
                    f"prune ratio {name}={v} is outside (0, 1)",
                    "give the fraction of units to remove, e.g. 0.25 (0 keeps them all)",
                )
        if self.heads == self.ffn == self.blocks == self.channels == 0.0:
            raise EdgeLLMError(
                "nothing to prune: every ratio is 0",
                "set heads, ffn or blocks (transformers) or channels, e.g. 0.25",
            )
        if self.scope not in ("layer", "global"):
            raise EdgeLLMError(
                f"unknown scope '{self.scope}'", "use layer (same fraction per layer) or global"
            )
        from edgellm.compress.prune.importance import get_importance

        get_importance(self.score)  # an unknown name fails here, before any work
        if self.multiple_of < 1:
            raise EdgeLLMError(f"multiple_of {self.multiple_of} < 1", "use 1, 8 or 16")


@dataclass
class PruneRecord:
    """What was removed, for the manifest: per layer the kept/removed unit indices, and the totals."""

    config: dict[str, Any]
    removed_blocks: list[int] = field(default_factory=list)
    heads: dict[int, list[int]] = field(default_factory=dict)  # layer -> removed head (or KV group) ids
    ffn: dict[int, int] = field(default_factory=dict)  # layer -> channels removed
    widths: dict[str, list[int]] = field(default_factory=dict)  # plain modules: module -> [before, after]
    params_before: int = 0
    params_after: int = 0
    flops_before: int = 0
    flops_after: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "removed_blocks": self.removed_blocks,
            "removed_heads": {str(k): v for k, v in self.heads.items()},
            "removed_ffn_channels": {str(k): v for k, v in self.ffn.items()},
            **({"channel_widths": self.widths} if self.widths else {}),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "params_ratio": round(self.params_after / max(1, self.params_before), 4),
            **(
                {
                    "flops_before": self.flops_before,
                    "flops_after": self.flops_after,
                    "flops_ratio": round(self.flops_after / max(1, self.flops_before), 4),
                }
                if self.flops_before
                else {}
            ),
        }


PruningRecord = PruneRecord  # the name for the same record


def flops(adapter: Any, feeds: dict[str, Any] | None = None) -> int:
    """Floating-point operations of one forward pass on ``feeds`` (default: the model's fixed inputs),
    counted by torch's FLOP counter (a multiply-add is 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    f = feeds if feeds is not None else adapter.fixed_inputs()
    args = [torch.as_tensor(f[s.name]) for s in adapter.inputs]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        adapter.module(*args)
    return int(counter.get_total_flops())
