"""Structured pruning (compression core, part 3): ``prune(model, config) -> (model, PruneRecord)``.

- :mod:`~edgellm.compress.prune.config`: :class:`PruneConfig` (what to remove) and :class:`PruneRecord`
  (what was removed).
- :mod:`~edgellm.compress.prune.pruner`: the verbs, :func:`prune` (a pruned copy), :func:`prune_` (in
  place), :func:`save_pruned` and :func:`prune_model` (prune, save as a model directory, reload).
- :mod:`~edgellm.compress.prune.importance`: the importance-score registry (``l1`` / ``l2`` magnitude,
  first-order ``taylor``, ``wanda``; :func:`register_importance` adds one) and its activation hooks.
- :mod:`~edgellm.compress.prune.transformer`: attention heads (GQA groups kept whole), FFN channels and
  whole blocks of Hugging Face transformers (where each family keeps them:
  :mod:`~edgellm.compress.prune.layout`).
- :mod:`~edgellm.compress.prune.dependency` and :mod:`~edgellm.compress.prune.surgery`: plain torch
  modules, the coupled channels traced with torch.fx, then chosen and removed.

Importing this package stays light (no torch until a verb runs).
"""

from edgellm.compress.prune.config import PruneConfig, PruneRecord, PruningRecord
from edgellm.compress.prune.pruner import prune, prune_, prune_model, save_pruned

__all__ = ["PruneConfig", "PruneRecord", "PruningRecord", "prune", "prune_", "prune_model", "save_pruned"]
