"""Structured pruning (compression core, part 3).

- :mod:`~edgellm.compress.prune.transformer`: attention heads (GQA groups kept whole), FFN channels and
  whole blocks of Hugging Face transformers, removed physically into an ordinary, smaller model directory.
- :mod:`~edgellm.compress.prune.scores`: l1 / l2 magnitude, first-order Taylor and Wanda importance.
"""

from edgellm.compress.prune.transformer import PruneConfig, PruneRecord, prune, prune_model, save_pruned

__all__ = ["PruneConfig", "PruneRecord", "prune", "prune_model", "save_pruned"]
