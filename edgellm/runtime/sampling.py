"""Choosing the next token: greedy, temperature, top-k, top-p (nucleus) and a repetition penalty, seeded.

:class:`GenerationConfig` holds every option of a generation and checks it when built, so a bad value
fails with one line that names it (never in the middle of a generation). :func:`next_token` applies the
penalty, then picks: the argmax at temperature 0, else a sample from the softmax at ``temperature``
restricted to the ``top_k`` most likely tokens and to the smallest set whose probability reaches ``top_p``.

Example:
    >>> import numpy as np
    >>> next_token(np.array([0.1, 2.0, 0.5]), GenerationConfig(), np.random.default_rng(0), [])
    1
    >>> GenerationConfig(top_p=0)
    Traceback (most recent call last):
    ...
    edgellm.errors.EdgeLLMError: top_p is 0; use a number in (0, 1] (1: no nucleus cut) (see edgellm generate --help)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgellm.errors import EdgeLLMError

SEED_MAX = 2**64 - 1


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def _integer(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class GenerationConfig:
    """How tokens are chosen and when generation stops.

    Args:
        max_new_tokens: tokens to generate at most (>= 1).
        temperature: 0 for greedy; else the softmax temperature (> 0).
        top_k: sample among the ``top_k`` most likely tokens (0: all).
        top_p: sample among the smallest set of tokens whose probability reaches ``top_p`` (1: all).
        repetition_penalty: > 1 makes tokens already in the prompt or output less likely (1: off).
        stop: strings that end generation; the text is cut before the first one.
        stop_token_ids: token ids that end generation; ``None``: the model's end-of-sequence token.
        seed: the sampling seed (generation is reproducible for one seed).
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    stop_token_ids: tuple[int, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, value: object, allowed: str) -> EdgeLLMError:
            return EdgeLLMError(f"{name} is {value!r}; use {allowed}", "see edgellm generate --help")

        if not _integer(self.max_new_tokens) or self.max_new_tokens < 1:
            raise bad("max_new_tokens", self.max_new_tokens, "an integer >= 1")
        if not _number(self.temperature) or self.temperature < 0:
            raise bad("temperature", self.temperature, "a number >= 0 (0: greedy)")
        if not _integer(self.top_k) or self.top_k < 0:
            raise bad("top_k", self.top_k, "an integer >= 0 (0: the whole vocabulary)")
        if not _number(self.top_p) or not 0 < self.top_p <= 1:
            raise bad("top_p", self.top_p, "a number in (0, 1] (1: no nucleus cut)")
        if not _number(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise bad("repetition_penalty", self.repetition_penalty, "a number > 0 (1: off)")
        if not _integer(self.seed) or not 0 <= self.seed <= SEED_MAX:
            raise bad("seed", self.seed, "an integer in 0..2**64-1")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if any(not isinstance(s, str) or not s for s in stop):
            raise bad("stop", self.stop, "non-empty strings")
        object.__setattr__(self, "stop", stop)
        if self.stop_token_ids is not None:
            ids = tuple(self.stop_token_ids)
            if any(not _integer(t) or t < 0 for t in ids):
                raise bad("stop_token_ids", self.stop_token_ids, "token ids (integers >= 0)")
            object.__setattr__(self, "stop_token_ids", ids)
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(self, "repetition_penalty", float(self.repetition_penalty))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def penalize(logits: np.ndarray, history: Sequence[int], penalty: float) -> np.ndarray:
    """The repetition penalty of CTRL / Hugging Face: a seen token's positive logit is divided by
    ``penalty``, a negative one multiplied by it."""
    if penalty == 1.0 or not len(history):
        return logits
    out = logits.astype(np.float32, copy=True)
    seen = np.unique(np.asarray(history, dtype=np.int64))
    seen = seen[(seen >= 0) & (seen < len(out))]
    v = out[seen]
    out[seen] = np.where(v > 0, v / penalty, v * penalty)
    return out


def next_token(
    logits: np.ndarray, config: GenerationConfig, rng: np.random.Generator, history: Sequence[int]
) -> int:
    """The next token from one position's logits ``[vocab]`` (``history``: prompt + generated ids)."""
    x = penalize(logits, history, config.repetition_penalty)
    return sample(x, config.temperature, config.top_k, config.top_p, rng)


def sample(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> int:
    """The argmax at temperature 0, else a seeded sample from the softmax at ``temperature`` among the
    ``top_k`` most likely tokens (0: all) and the nucleus reaching ``top_p`` (1: all). The logits are
    shifted to a maximum of 0 first, so a tiny temperature gives the argmax, never an overflow."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64)
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        z = (z - z.max()) / temperature
    if 0 < top_k < len(z):
        cut = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cut, z, -np.inf)
    p = np.exp(z)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cum, top_p) + 1)]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(len(p), p=p))
