"""Choosing the next token from a position's logits: greedy at temperature 0, else a seeded sample from
the softmax at ``temperature``, restricted to the ``top_k`` most likely tokens when ``top_k`` > 0.

:class:`Sampling` holds a session's choice and checks it when built (a client's JSON is not trusted: a
NaN temperature or a negative seed is refused there, not in the middle of a generation).

Example:
    >>> import numpy as np
    >>> pick(np.array([0.1, 2.0, 0.5]), 0.0, 0, np.random.default_rng(0))
    1
    >>> Sampling(temperature=float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: session option 'temperature' is nan; use a finite number >= 0 (0: greedy)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgellm.runtime.sampling import sample

SEED_MAX = 2**64 - 1  # numpy's generators take any integer >= 0; a seed is one 64-bit word


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Sampling:
    """A session's sampling: ``temperature`` (0: greedy), ``top_k`` (0: the whole vocabulary), ``seed``.

    ``ValueError`` names the option, its bad value and what is allowed (JSON ``true`` is not 1, ``1.5``
    is not an integer, ``"7"`` is not a number)."""

    temperature: float = 0.0
    top_k: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        t = self.temperature
        if not isinstance(t, int | float) or isinstance(t, bool):
            raise ValueError(f"session option 'temperature' is {t!r}; use a number >= 0 (0: greedy)")
        if not math.isfinite(t) or t < 0:
            raise ValueError(f"session option 'temperature' is {t!r}; use a finite number >= 0 (0: greedy)")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(
                f"session option 'top_k' is {self.top_k!r}; use an integer >= 0 (0: the whole vocabulary)"
            )
        if not _is_int(self.seed) or not 0 <= self.seed <= SEED_MAX:
            raise ValueError(f"session option 'seed' is {self.seed!r}; use an integer in 0..2**64-1")
        object.__setattr__(self, "temperature", float(t))


def pick(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    """The next token from one position's logits: argmax at temperature 0, else a seeded sample
    (:func:`edgellm.runtime.sampling.sample`, the kernel every generation path shares)."""
    return sample(logits, temperature, top_k, 1.0, rng)
