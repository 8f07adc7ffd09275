"""The step engine of an ExecuTorch static-cache program (cache layout ``static``): the key/value cache
lives inside the program as mutable buffers, so a step passes only the new token ids and their first
position (``forward(tokens [1, T], input_pos [1]) -> logits [1, 1, vocab]``).

A prompt longer than the program's ``max_new_per_call`` runs in chunks of that many positions; a decode
step is one call with ``T = 1``. ``reset()`` only rewinds the position: the program masks every key
beyond the query's position, so what an earlier sequence left in the buffers is never read.

Example:
    >>> eng = StaticCacheEngine("out/tl-pte/model.pte", gen, threads=2)   # doctest: +SKIP
    >>> logits = eng.step([1, 17, 94]); eng.length                        # doctest: +SKIP
    3
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgellm.runtime.base import context_full


class StaticCacheEngine:
    """Run a static-cache ``.pte`` one step at a time (the protocol of
    :class:`~edgellm.runtime.engines.StepEngine`).

    Args:
        path: the program.
        gen: the artifact's ``generation`` section (``context``, ``cache.max_new_per_call``).
        threads: ExecuTorch's thread-pool size (process-wide; None: its default).
    """

    def __init__(self, path: str | Path, gen: dict[str, Any], *, threads: int | None = None) -> None:
        import torch

        from edgellm.runtime.executorch_runner import load_program, set_threads

        self.gen = gen
        self.context = int(gen["context"])
        self.chunk = int((gen.get("cache") or {}).get("max_new_per_call") or 1)
        self.num_threads = set_threads(threads)
        self.program, self.method = load_program(path)
        self._torch = torch
        self._pos = torch.zeros(1, dtype=torch.long)
        self._one = torch.zeros(1, 1, dtype=torch.long)  # a decode step's input, reused
        self._pos_np, self._one_np = self._pos.numpy(), self._one.numpy()  # views: cheap writes
        self.length = 0

    def reset(self) -> None:
        self.length = 0

    def step(self, ids: list[int]) -> np.ndarray:
        """Feed ``ids`` (a prompt or one token); the float32 logits ``[vocab]`` after the last one."""
        n = len(ids)
        if n == 0:
            raise ValueError("step() needs at least one token id")
        if self.length + n > self.context:
            raise context_full(self.context, self.length, n)
        torch = self._torch
        out = None
        for i in range(0, n, self.chunk):
            if n == 1:
                self._one_np[0, 0] = int(ids[0])
                part = self._one
            else:
                part = torch.tensor([list(ids[i : i + self.chunk])], dtype=torch.long)
            self._pos_np[0] = self.length
            out = self.method.execute([part, self._pos])[0]
            self.length += part.shape[1]
        return np.array(out.numpy()[0, -1], dtype=np.float32)


__all__ = ["StaticCacheEngine"]
