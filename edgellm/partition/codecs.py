"""Activation codecs at a cut: what the phone half sends to the server half.

A codec is a number format, optionally followed by a compressor: ``fp32``, ``fp16``, ``int8``,
``int8+zstd``, ``fp16+lz4``...

- ``fp32`` as is; ``fp16`` half the bytes.
- ``int8`` with one scale per row: per token for a ``[batch, seq, hidden]`` activation, per channel for a
  ``[batch, channels, h, w]`` feature map (every axis after the second is reduced; a 2-D ``[batch, n]``
  gets one scale per sample), ``scale = absmax / 127`` and ``x ~ q * scale``.
- ``+zstd`` (level 3) or ``+lz4`` compress the codes (scales stay raw: they are small). Post-ReLU feature
  maps and int8 codes compress; random fp32 noise does not, and the planner only counts what the
  profiled activation really compressed to.

On the wire the codes and the scales are raw little-endian arrays (nothing is pickled): the batching
server takes the codes as the input (``FP32``/``FP16``/``INT8``, with a ``compression`` parameter when
compressed) and the scales as the companion input ``<name>:scales``.

Example:
    >>> c = Codec("int8+zstd")
    >>> payload, meta = c.encode(x)          # doctest: +SKIP
    >>> y = c.decode(payload, meta)          # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError

FORMATS = ("fp32", "fp16", "int8")
COMPRESSORS = ("zstd", "lz4")
CODECS = FORMATS  # the planner's default set; compressed variants are opted into
ALL_CODECS = FORMATS + tuple(f"{f}+{c}" for f in FORMATS for c in COMPRESSORS)
_DTYPE = {"fp32": "<f4", "fp16": "<f2", "int8": "i1"}


def compress(data: bytes, method: str) -> bytes:
    if method == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    import lz4.frame

    return lz4.frame.compress(data)


def decompress(data: bytes, method: str, expected: int) -> bytes:
    """Decompress at most ``expected`` bytes; anything else is an error (no decompression bombs)."""
    if method not in COMPRESSORS:
        raise EdgeLLMError(f"unknown compression '{method}'", f"use one of: {', '.join(COMPRESSORS)}")
    try:
        if method == "zstd":
            import zstandard

            out = zstandard.ZstdDecompressor().decompress(data, max_output_size=expected)
        else:
            import lz4.frame

            d = lz4.frame.LZ4FrameDecompressor()
            out = d.decompress(data, max_length=expected + 1)  # one byte more tells a bomb from a fit
            if len(out) == expected and not d.eof:
                out += b"?"  # the frame goes on past what the shape needs: refused below
    except Exception as exc:  # both libraries raise their own error types for corrupt frames
        raise EdgeLLMError(
            f"the {method} payload does not decompress: {exc}", "the payload was truncated or corrupted"
        ) from exc
    if len(out) != expected:
        raise EdgeLLMError(
            f"the {method} payload decompresses to {len(out)} bytes, the shape needs {expected}",
            "the payload belongs to another shape or codec",
        )
    return out


def _keep(ndim: int) -> int:
    return 0 if ndim <= 1 else 1 if ndim == 2 else 2


def scale_shape(shape: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """Shape of the int8 scales for an activation of ``shape``: one per row of the leading axes
    (batch, then token or channel); every later axis is reduced."""
    shape = tuple(shape)
    keep = _keep(len(shape))
    return shape[:keep] + (1,) * (len(shape) - keep)


@dataclass(frozen=True)
class Codec:
    name: str = "fp16"

    def __post_init__(self) -> None:
        if self.name not in ALL_CODECS:
            raise EdgeLLMError(
                f"unknown activation codec '{self.name}'",
                f"use one of: {', '.join(ALL_CODECS)}",
            )

    @property
    def format(self) -> str:
        return self.name.split("+")[0]

    @property
    def compression(self) -> str | None:
        return self.name.split("+")[1] if "+" in self.name else None

    def nbytes(self, shape: tuple[int, ...] | list[int]) -> int:
        """Bytes before compression for an activation of ``shape`` (codes + scales; no data needed)."""
        n = int(np.prod(shape)) if len(shape) else 1
        if self.format == "fp32":
            return 4 * n
        if self.format == "fp16":
            return 2 * n
        return n + 4 * int(np.prod(scale_shape(shape)))

    # -- arrays (what the wire carries as tensors) ------------------------------------------------
    def quantize(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(codes, scales)``: codes in the codec's number format; scales only for int8."""
        x = np.asarray(x, dtype=np.float32)
        if self.format == "fp32":
            return x, None
        if self.format == "fp16":
            return x.astype(np.float16), None
        red = tuple(
            i for i, (a, b) in enumerate(zip(x.shape, scale_shape(x.shape))) if b == 1 and i >= _keep(x.ndim)
        )
        scale = np.maximum(np.abs(x).max(axis=red, keepdims=True), 1e-12) / 127.0
        q = np.clip(np.round(x / scale), -127, 127).astype(np.int8)
        return q, scale.astype(np.float32)

    @staticmethod
    def dequantize(codes: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
        if scales is None:
            return codes.astype(np.float32)
        return codes.astype(np.float32) * scales

    def pack(self, codes: np.ndarray) -> bytes:
        """The codes' bytes on the wire, compressed if the codec says so."""
        raw = np.ascontiguousarray(codes).astype(_DTYPE[self.format], copy=False).tobytes()
        return compress(raw, self.compression) if self.compression else raw

    def unpack(self, data: bytes, shape: tuple[int, ...] | list[int]) -> np.ndarray:
        n = int(np.prod(shape)) if len(shape) else 1
        size = n * np.dtype(_DTYPE[self.format]).itemsize
        if self.compression:
            data = decompress(data, self.compression, size)
        elif len(data) != size:
            raise EdgeLLMError(
                f"activation codes have {len(data)} bytes, {self.format} of shape {list(shape)} needs {size}",
                "the payload was truncated or belongs to another shape",
            )
        return np.frombuffer(data, _DTYPE[self.format]).reshape(tuple(shape))

    # -- one payload (codes, then scales) ---------------------------------------------------------
    def encode(self, x: np.ndarray) -> tuple[bytes, dict[str, Any]]:
        codes, scales = self.quantize(x)
        body = self.pack(codes)
        meta = {"codec": self.name, "shape": list(codes.shape), "codes_bytes": len(body)}
        return body + (b"" if scales is None else scales.astype("<f4").tobytes()), meta

    def decode(self, payload: bytes, meta: dict[str, Any]) -> np.ndarray:
        if meta.get("codec") != self.name:
            raise EdgeLLMError(
                f"the activation was encoded with '{meta.get('codec')}', this side decodes '{self.name}'",
                "export both halves from one SplitPlan so they agree on the codec",
            )
        shape = tuple(meta["shape"])
        n_codes = int(meta.get("codes_bytes", len(payload)))
        n_scales = 4 * int(np.prod(scale_shape(shape))) if self.format == "int8" else 0
        if n_codes + n_scales != len(payload):
            raise EdgeLLMError(
                f"activation payload has {len(payload)} bytes, {self.name} of shape {list(shape)} needs "
                f"{n_codes + n_scales}",
                "the payload was truncated or belongs to another shape",
            )
        codes = self.unpack(payload[:n_codes], shape)
        scales = np.frombuffer(payload[n_codes:], "<f4").reshape(scale_shape(shape)) if n_scales else None
        return self.dequantize(codes, scales)
