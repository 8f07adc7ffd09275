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

import math
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
    """Decompress at most ``expected`` bytes; anything else is an error (no decompression bombs: the
    output is read a chunk at a time and reading stops one byte past ``expected``)."""
    if method not in COMPRESSORS:
        raise EdgeLLMError(f"unknown compression '{method}'", f"use one of: {', '.join(COMPRESSORS)}")
    try:
        if method == "zstd":
            import zstandard

            with zstandard.ZstdDecompressor().stream_reader(data) as reader:
                out = _read_at_most(reader.read, expected + 1)
        else:
            import lz4.frame

            d, pending = lz4.frame.LZ4FrameDecompressor(), [data]

            def read(n: int) -> bytes:
                return b"" if d.eof else d.decompress(pending.pop() if pending else b"", max_length=n)

            out = _read_at_most(read, expected + 1)
            if not d.eof and len(out) <= expected:
                raise ValueError("the frame is incomplete")
    except Exception as exc:  # both libraries raise their own error types for corrupt frames
        raise EdgeLLMError(
            f"the {method} payload does not decompress: {exc}", "the payload was truncated or corrupted"
        ) from exc
    if len(out) != expected:
        more = " or more" if len(out) > expected else ""
        raise EdgeLLMError(
            f"the {method} payload decompresses to {len(out)}{more} bytes, the shape needs {expected}",
            "the payload belongs to another shape or codec",
        )
    return out


def _read_at_most(read: Any, limit: int, chunk: int = 1 << 20) -> bytes:
    parts, total = [], 0
    while total < limit:
        part = read(min(chunk, limit - total))
        if not part:
            break
        parts.append(part)
        total += len(part)
    return b"".join(parts)


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
        n = math.prod(shape)  # exact: a hostile shape cannot overflow into a small size
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
        """The activation of one payload and its metadata; ``EdgeLLMError`` naming the field when the
        metadata is malformed, the payload's size disagrees with it or an int8 scale is not finite and > 0
        (nothing a peer sends is trusted: sizes are exact integers, checked before any array is built)."""
        if meta.get("codec") != self.name:
            raise EdgeLLMError(
                f"the activation was encoded with '{meta.get('codec')}', this side decodes '{self.name}'",
                "export both halves from one SplitPlan so they agree on the codec",
            )
        unknown = sorted(set(meta) - {"codec", "shape", "codes_bytes"})
        if unknown:
            raise EdgeLLMError(
                f"activation metadata has unknown keys {unknown}; it holds codec, shape and codes_bytes",
                "int8 scales travel in the payload, after the codes: encode the activation with Codec",
            )
        shape = _shape(meta.get("shape"))
        n_codes = meta.get("codes_bytes", len(payload))
        if not _is_int(n_codes) or not 0 <= n_codes <= len(payload):
            raise EdgeLLMError(
                f"activation codes_bytes {n_codes!r} is not an integer in 0..{len(payload)} "
                f"(the payload has {len(payload)} bytes)",
                "the payload was truncated or the metadata belongs to another payload",
            )
        n_scales = 4 * math.prod(scale_shape(shape)) if self.format == "int8" else 0
        if n_codes + n_scales != len(payload):
            raise EdgeLLMError(
                f"activation payload has {len(payload)} bytes, {self.name} of shape {list(shape)} needs "
                f"{n_codes + n_scales}",
                "the payload was truncated or belongs to another shape",
            )
        codes = self.unpack(payload[:n_codes], shape)
        if not n_scales:
            return self.dequantize(codes, None)
        scales = np.frombuffer(payload[n_codes:], "<f4").reshape(scale_shape(shape))
        return self.dequantize(codes, check_scales(scales))


def check_scales(scales: Any, what: str = "int8 scale") -> np.ndarray:
    """``scales`` (a number or an array of them) as float32 when each is a finite number > 0, else
    ``EdgeLLMError`` naming ``what``, the first bad value and where it is: for the scales a peer sends
    (the payload's, a KServe input's ``scale`` parameter or its ``<name>:scales`` companion).

    Example:
        >>> check_scales("abc", "input 'hidden' parameter 'scale'")
        Traceback (most recent call last):
        ...
        edgellm.errors.EdgeLLMError: input 'hidden' parameter 'scale' is 'abc', not a number (a scale is a finite number > 0: absmax / 127 of its row)
    """
    hint = "a scale is a finite number > 0: absmax / 127 of its row"
    arr = None
    if not isinstance(scales, str | bytes | bool | dict) and scales is not None:
        try:
            arr = np.asarray(scales)
        except (TypeError, ValueError):  # ragged lists
            arr = None
    if arr is None or arr.dtype.kind not in "fiu":
        raise EdgeLLMError(f"{what} is {_short(scales)}, not a number", hint)
    with np.errstate(over="ignore"):
        arr = arr.astype(np.float32)  # past float32's range: inf, refused below
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        at = [int(i) for i in np.argwhere(bad)[0]] if arr.ndim else []
        where = f" at {at}" if arr.ndim else ""
        many = f" ({int(bad.sum())} of {arr.size})" if arr.size > 1 else ""
        raise EdgeLLMError(
            f"{what} {float(arr[tuple(at)])!r}{where} is not finite and > 0{many}",
            hint,
        )
    return arr


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _shape(shape: Any) -> tuple[int, ...]:
    """An activation's shape from a peer's metadata: a list of integers >= 0, or ``EdgeLLMError``."""
    if not isinstance(shape, list | tuple) or not all(_is_int(d) for d in shape):
        raise EdgeLLMError(
            f"activation shape {shape!r} is not a list of integers",
            "the metadata's 'shape' is the codes' shape, e.g. [1, 5, 384]",
        )
    neg = [d for d in shape if d < 0]
    if neg:
        raise EdgeLLMError(
            f"activation shape {list(shape)} has the dimension {neg[0]}; dimensions are >= 0",
            "the metadata's 'shape' is the codes' shape, e.g. [1, 5, 384]",
        )
    return tuple(int(d) for d in shape)
