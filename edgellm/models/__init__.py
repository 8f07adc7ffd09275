"""Model intake: bundled models, local Hugging Face directories and plain torch modules.

Example:
    >>> from edgellm import models
    >>> m = models.load("minilm")                    # doctest: +SKIP
    >>> m.task, len(m.blocks)                         # doctest: +SKIP
    ('embedding', 8)
"""

from edgellm.models.adapter import Block, ModelAdapter, TensorSpec
from edgellm.models.bundled import bundled_names, bundled_path
from edgellm.models.families import FAMILIES
from edgellm.models.loader import load

__all__ = ["FAMILIES", "Block", "ModelAdapter", "TensorSpec", "bundled_names", "bundled_path", "load"]
