"""The KServe v2 / Open Inference Protocol: tensors in and out of JSON, Triton's binary tensor
extension, and strict validation of a request against a model's input specs.

Everything that reaches the runtime has been checked here: names, datatypes, ranks, fixed dimensions,
one batch size across inputs, and element counts against the bytes or values given. Nothing is ever
unpickled; binary tensors are raw little-endian arrays as the protocol defines them.

Split models: a server half may take an activation the phone sent as ``FP16`` (cast to the model's
float type) or as ``INT8``/``UINT8`` with its scales, given either as the input's parameters
``{"scale": s, "zero_point": z}`` (per tensor) or as a companion ``FP32`` input ``<name>:scales``
broadcastable to it (per token), so ``x = (q - zero_point) * scale``. A binary input may be compressed
(``"parameters": {"compression": "zstd"}`` or ``"lz4"``; ``binary_data_size`` is then the compressed size);
it is decompressed to exactly the bytes its shape needs, never more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgellm.models.adapter import TensorSpec
from edgellm.partition import wire
from edgellm.partition.wire import V2_TO_NP

# the KServe v2 extensions this server implements (REST and gRPC server metadata)
EXTENSIONS = ["binary_tensor_data", "statistics"]
SCALES_SUFFIX = ":scales"


class ProtocolError(Exception):
    """A malformed or invalid request: HTTP ``status`` and a message that says what to change."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class InferRequest:
    """A validated request: the model's feeds, and which outputs to return (and how)."""

    id: str
    feeds: dict[str, np.ndarray]
    outputs: list[str]
    binary: dict[str, bool] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return int(next(iter(self.feeds.values())).shape[0]) if self.feeds else 0


def v2_datatype(dtype: str | np.dtype) -> str:
    """:func:`edgellm.partition.wire.v2_datatype` for an answer: a dtype it has none for is a 500."""
    try:
        return wire.v2_datatype(dtype)
    except ValueError as exc:
        raise ProtocolError(str(exc), 500) from exc


def decode_tensor(
    name: str, datatype: str, shape: list[int], *, data: Any = None, raw: bytes | None = None
) -> np.ndarray:
    """One input tensor from JSON ``data`` (nested or flat list) or raw bytes."""
    if datatype not in V2_TO_NP:
        raise ProtocolError(
            f"input '{name}': datatype '{datatype}' is not supported (use one of {', '.join(V2_TO_NP)})"
        )
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"input '{name}': shape must be a list of non-negative integers, got {shape!r}")
    if len(shape) > 8:
        raise ProtocolError(f"input '{name}': {len(shape)} dimensions is more than any model here takes")
    count = int(np.prod(shape)) if shape else 1
    dt = np.dtype(V2_TO_NP[datatype]).newbyteorder("<")
    if raw is not None:
        if len(raw) != count * dt.itemsize:
            raise ProtocolError(
                f"input '{name}': {len(raw)} bytes of binary data, but shape {shape} of {datatype} needs "
                f"{count * dt.itemsize}"
            )
        return np.frombuffer(raw, dtype=dt).reshape(shape).astype(dt.newbyteorder("="), copy=True)
    if data is None:
        raise ProtocolError(f"input '{name}' has neither 'data' nor binary data")
    try:
        arr = np.asarray(data, dtype=dt.newbyteorder("="))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"input '{name}': data is not a list of {datatype} values ({exc})") from exc
    if arr.size != count:
        raise ProtocolError(f"input '{name}': {arr.size} values given, shape {shape} needs {count}")
    return arr.reshape(shape)


def validate(
    feeds: dict[str, np.ndarray], specs: list[TensorSpec], params: dict[str, dict]
) -> dict[str, np.ndarray]:
    """Check and convert feeds against the model's inputs (names, dtypes, ranks, fixed dims, batch)."""
    want = {s.name: s for s in specs}
    companions = {n for n in feeds if n.endswith(SCALES_SUFFIX) and n[: -len(SCALES_SUFFIX)] in want}
    unknown = sorted(set(feeds) - set(want) - companions)
    if unknown:
        raise ProtocolError(f"unknown input '{unknown[0]}'; the model takes {', '.join(want)}")
    missing = [n for n in want if n not in feeds]
    if missing:
        raise ProtocolError(f"input '{missing[0]}' is missing; the model takes {', '.join(want)}")
    out: dict[str, np.ndarray] = {}
    batch = None
    for name, spec in want.items():
        arr = _decode_codec(name, feeds[name], spec, feeds.get(name + SCALES_SUFFIX), params.get(name, {}))
        if arr.ndim != len(spec.shape):
            raise ProtocolError(
                f"input '{name}' has {arr.ndim} dimensions {list(arr.shape)}; the model takes {spec.shape}"
            )
        for i, (got, dim) in enumerate(zip(arr.shape, spec.shape)):
            if isinstance(dim, int) and got != dim:
                raise ProtocolError(
                    f"input '{name}' dimension {i} is {got}; the model takes {dim} ({spec.shape})"
                )
        if arr.shape[0] == 0:
            raise ProtocolError(f"input '{name}' has an empty batch")
        if batch is None:
            batch = arr.shape[0]
        elif arr.shape[0] != batch:
            raise ProtocolError(f"input '{name}' has batch {arr.shape[0]}, other inputs {batch}")
        out[name] = arr
    seqs = {a.shape[s.shape.index("sequence")] for s in specs if "sequence" in s.shape for a in [out[s.name]]}
    if len(seqs) > 1:
        raise ProtocolError(f"inputs disagree on the sequence length: {sorted(seqs)}")
    return out


def _decode_codec(name: str, arr: np.ndarray, spec: TensorSpec, scales: Any, p: dict) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if arr.dtype == want:
        return arr
    if want.kind == "f" and arr.dtype.kind == "f":  # fp16 activations from a phone half
        return arr.astype(want)
    if want.kind == "f" and arr.dtype in (np.int8, np.uint8):
        if scales is not None:
            s = np.asarray(scales, dtype=np.float32)
            try:
                return ((arr.astype(np.float32) - float(p.get("zero_point", 0))) * s).astype(want)
            except ValueError as exc:
                raise ProtocolError(
                    f"input '{name}{SCALES_SUFFIX}' does not broadcast to '{name}': {exc}"
                ) from exc
        if "scale" in p:
            return ((arr.astype(np.float32) - float(p.get("zero_point", 0))) * float(p["scale"])).astype(want)
        raise ProtocolError(
            f"input '{name}' is {v2_datatype(arr.dtype)} without scales",
            400,
        )
    raise ProtocolError(f"input '{name}' is {v2_datatype(arr.dtype)}; the model takes {v2_datatype(want)}")


# -- REST bodies ---------------------------------------------------------------------------------
def parse_rest(
    body: bytes, header_length: str | None, specs: list[TensorSpec], output_names: list[str]
) -> InferRequest:
    """A REST infer body: JSON, or JSON + binary tensors (``Inference-Header-Content-Length``)."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError as exc:
            raise ProtocolError(
                f"Inference-Header-Content-Length '{header_length}' is not an integer"
            ) from exc
        if not 0 < n <= len(body):
            raise ProtocolError(
                f"Inference-Header-Content-Length {n} is outside the body's {len(body)} bytes"
            )
        head, rest = body[:n], memoryview(body)[n:]
    else:
        head, rest = body, memoryview(b"")
    try:
        req = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise ProtocolError("request must be a JSON object with a non-empty 'inputs' list")
    feeds: dict[str, np.ndarray] = {}
    params: dict[str, dict] = {}
    offset = 0
    for t in req["inputs"]:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise ProtocolError("every input needs a 'name', 'datatype' and 'shape'")
        name, p = t["name"], t.get("parameters") or {}
        if name in feeds:
            raise ProtocolError(f"input '{name}' is given twice")
        raw = None
        if "binary_data_size" in p:
            size = p["binary_data_size"]
            if not isinstance(size, int) or size < 0 or offset + size > len(rest):
                raise ProtocolError(f"input '{name}': binary_data_size {size} runs past the end of the body")
            raw = bytes(rest[offset : offset + size])
            offset += size
            if p.get("compression"):
                raw = _decompress(name, raw, p["compression"], t.get("datatype"), t.get("shape"))
        feeds[name] = decode_tensor(name, t.get("datatype"), t.get("shape"), data=t.get("data"), raw=raw)
        params[name] = p
    if offset != len(rest):
        raise ProtocolError(
            f"{len(rest) - offset} bytes of binary data follow the inputs that no input claims"
        )
    default_binary = bool((req.get("parameters") or {}).get("binary_data_output", False))
    outs = req.get("outputs")
    binary: dict[str, bool] = {}
    if outs:
        names = []
        for o in outs:
            if not isinstance(o, dict) or o.get("name") not in output_names:
                raise ProtocolError(
                    f"unknown output '{o.get('name') if isinstance(o, dict) else o}'; the model has {', '.join(output_names)}"
                )
            names.append(o["name"])
            binary[o["name"]] = bool((o.get("parameters") or {}).get("binary_data", default_binary))
    else:
        names = list(output_names)
        binary = {n: default_binary for n in names}
    return InferRequest(
        str(req.get("id", "")), validate(feeds, specs, params), names, binary, req.get("parameters") or {}
    )


def _decompress(name: str, raw: bytes, method: Any, datatype: Any, shape: Any) -> bytes:
    from edgellm.errors import EdgeLLMError
    from edgellm.partition.codecs import COMPRESSORS, decompress

    if method not in COMPRESSORS:
        raise ProtocolError(f"input '{name}': compression '{method}' is not supported (use zstd or lz4)")
    if datatype not in V2_TO_NP or not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        raise ProtocolError(f"input '{name}': a compressed input needs a valid 'datatype' and 'shape'")
    expected = int(np.prod(shape)) * np.dtype(V2_TO_NP[datatype]).itemsize if shape else 1
    try:
        return decompress(raw, method, expected)
    except EdgeLLMError as exc:
        raise ProtocolError(f"input '{name}': {exc}") from exc


def encode_rest(
    model: str,
    version: str,
    req: InferRequest,
    results: dict[str, np.ndarray],
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    outs, blobs = [], []
    for name in req.outputs:
        arr = np.ascontiguousarray(results[name])
        entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(arr.dtype), "shape": list(arr.shape)}
        if req.binary.get(name):
            b = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(b)}
            blobs.append(b)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        outs.append(entry)
    resp: dict[str, Any] = {"model_name": model, "model_version": version, "id": req.id, "outputs": outs}
    if parameters:
        resp["parameters"] = parameters
    head = json.dumps(resp).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
