"""Choosing the next token from a position's logits: greedy at temperature 0, else a seeded sample from
the softmax at ``temperature``, restricted to the ``top_k`` most likely tokens when ``top_k`` > 0.

Example:
    >>> import numpy as np
    >>> pick(np.array([0.1, 2.0, 0.5]), 0.0, 0, np.random.default_rng(0))
    1
"""

from __future__ import annotations

import numpy as np


def pick(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    """The next token from one position's logits: argmax at temperature 0, else a seeded sample."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < len(z):
        cut = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cut, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(rng.choice(len(p), p=p))
