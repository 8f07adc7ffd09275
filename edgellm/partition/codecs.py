"""Activation codecs at a cut: what the phone half sends to the server half.

``fp32`` (as is), ``fp16`` (half the bytes) and ``int8`` with one scale per token (last axis: each row
of a ``[batch, seq, hidden]`` activation gets ``absmax / 127``), so that ``x ~ q * scale``. The payload is
raw little-endian bytes (codes, then scales); nothing is pickled. These are the encodings the batching
server decodes (FP16 input, or INT8 with a ``<name>:scales`` companion input).

Example:
    >>> c = Codec("int8")
    >>> payload, meta = c.encode(x)          # doctest: +SKIP
    >>> y = c.decode(payload, meta)          # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError

CODECS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Codec:
    name: str = "fp16"

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise EdgeLLMError(f"unknown activation codec '{self.name}'", f"use one of: {', '.join(CODECS)}")

    def nbytes(self, shape: tuple[int, ...] | list[int]) -> int:
        """Bytes on the wire for an activation of ``shape`` (no data needed)."""
        n = int(np.prod(shape)) if len(shape) else 1
        if self.name == "fp32":
            return 4 * n
        if self.name == "fp16":
            return 2 * n
        rows = n // shape[-1] if len(shape) else 1
        return n + 4 * rows

    def encode(self, x: np.ndarray) -> tuple[bytes, dict[str, Any]]:
        x = np.asarray(x, dtype=np.float32)
        meta = {"codec": self.name, "shape": list(x.shape)}
        if self.name == "fp32":
            return x.astype("<f4").tobytes(), meta
        if self.name == "fp16":
            return x.astype("<f2").tobytes(), meta
        scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-12) / 127.0
        q = np.clip(np.round(x / scale), -127, 127).astype(np.int8)
        return q.tobytes() + scale.astype("<f4").tobytes(), meta

    def decode(self, payload: bytes, meta: dict[str, Any]) -> np.ndarray:
        if meta.get("codec") != self.name:
            raise EdgeLLMError(
                f"the activation was encoded with '{meta.get('codec')}', this side decodes '{self.name}'",
                "export both halves from one SplitPlan so they agree on the codec",
            )
        shape = tuple(meta["shape"])
        n = int(np.prod(shape)) if shape else 1
        if len(payload) != self.nbytes(shape):
            raise EdgeLLMError(
                f"activation payload has {len(payload)} bytes, {self.name} of shape {list(shape)} needs "
                f"{self.nbytes(shape)}",
                "the payload was truncated or belongs to another shape",
            )
        if self.name == "fp32":
            return np.frombuffer(payload, "<f4").reshape(shape).astype(np.float32)
        if self.name == "fp16":
            return np.frombuffer(payload, "<f2").reshape(shape).astype(np.float32)
        q = np.frombuffer(payload[:n], np.int8).reshape(shape)
        scale = np.frombuffer(payload[n:], "<f4").reshape((*shape[:-1], 1))
        return q.astype(np.float32) * scale
