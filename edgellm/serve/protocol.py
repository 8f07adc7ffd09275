"""The KServe v2 / Open Inference Protocol: tensors in and out of JSON, Triton's binary tensor
extension, and strict validation of a request against a model's input specs.

Everything that reaches the runtime has been checked here: the type of every JSON field, names, datatypes,
ranks, fixed dimensions, one batch size across inputs, element counts against the bytes or values given,
values against their datatype (integers for ``INT*``, finite numbers for floats), and the model's
:class:`InputBounds` (token ids inside the vocabulary, sequences within its positions). A refusal is a
:class:`ProtocolError` with a 4xx status that names the field. Nothing is ever unpickled; binary tensors are
raw little-endian arrays as the protocol defines them.

Split models: a server half may take an activation the phone sent as ``FP16`` (cast to the model's
float type) or as ``INT8``/``UINT8`` with its scales, given either as the input's parameters
``{"scale": s, "zero_point": z}`` (per tensor) or as a companion ``FP32`` input ``<name>:scales``
broadcastable to it (per token), so ``x = (q - zero_point) * scale``. A binary input may be compressed
(``"parameters": {"compression": "zstd"}`` or ``"lz4"``; ``binary_data_size`` is then the compressed size);
it is decompressed to exactly the bytes its shape needs, never more.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgellm.partition import wire
from edgellm.partition.wire import V2_TO_NP
from edgellm.utils.specs import TensorSpec

# the KServe v2 extensions this server implements (REST and gRPC server metadata)
EXTENSIONS = ["binary_tensor_data", "statistics"]
SCALES_SUFFIX = ":scales"
MAX_DIM = 2**31 - 1  # no dimension of any tensor a request carries is longer
MAX_DECOMPRESSED = 1 << 30  # bytes one compressed input may expand to


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
    name: str, datatype: Any, shape: Any, *, data: Any = None, raw: bytes | None = None
) -> np.ndarray:
    """One input tensor from JSON ``data`` (nested or flat list) or raw bytes, checked strictly: integers for
    integer datatypes (no fractions, within the type's range), booleans for ``BOOL``, finite numbers for floats."""
    if not isinstance(datatype, str) or datatype not in V2_TO_NP:
        raise ProtocolError(
            f"input '{name}': datatype {datatype!r} is not supported (use one of {', '.join(V2_TO_NP)})"
        )
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape):
        raise ProtocolError(
            f"input '{name}': shape must be a list of integers from 0 to {MAX_DIM}, got {_short(shape)}"
        )
    if len(shape) > 8:
        raise ProtocolError(f"input '{name}': {len(shape)} dimensions is more than any model here takes")
    count = math.prod(shape)  # Python ints: a huge shape cannot wrap around to a small count
    dt = np.dtype(V2_TO_NP[datatype])
    if raw is not None:
        if data is not None:
            raise ProtocolError(f"input '{name}' has both 'data' and binary data; send one")
        if len(raw) != count * dt.itemsize:
            raise ProtocolError(
                f"input '{name}': {len(raw)} bytes of binary data, but shape {shape} of {datatype} needs "
                f"{count * dt.itemsize}"
            )
        arr = np.frombuffer(raw, dtype=dt.newbyteorder("<")).reshape(shape).astype(dt, copy=True)
    else:
        if data is None:
            raise ProtocolError(f"input '{name}' has neither 'data' nor binary data")
        arr = _from_values(name, datatype, dt, data)
        if arr.size != count:
            raise ProtocolError(f"input '{name}': {arr.size} values given, shape {shape} needs {count}")
        arr = arr.reshape(shape)
    if dt.kind == "f":
        _check_finite(f"input '{name}'", arr, datatype)
    return arr


def _from_values(name: str, datatype: str, dt: np.dtype, data: Any) -> np.ndarray:
    """JSON values as ``dt``: numpy reads the nesting, then each kind is checked against the datatype."""
    if not isinstance(data, list):
        raise ProtocolError(
            f"input '{name}': 'data' must be a list of {datatype} values, got {type(data).__name__}"
        )
    try:
        src = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ProtocolError(
            f"input '{name}': 'data' is not a rectangular list of numbers ({str(exc)[:160]})"
        ) from exc
    kind = "f" if src.size == 0 else src.dtype.kind  # an empty list reads as float64: any datatype takes it
    if dt.kind == "b":
        if kind != "b" and src.size:
            raise ProtocolError(f"input '{name}' is BOOL: its data must be true/false, got {_kind(kind)}")
        return src.astype(bool)
    if kind not in "iuf":
        raise ProtocolError(f"input '{name}': {datatype} data must be numbers, got {_kind(kind)}")
    if dt.kind in "iu":
        if kind == "f":
            fractional = src != np.floor(src)
            if fractional.any():
                bad = float(src[fractional].flat[0])
                raise ProtocolError(
                    f"input '{name}' is {datatype}: value {bad!r} is not an integer (send whole numbers)"
                )
            if src.size and np.abs(src).max() > 2**53:  # floats that large no longer hold an exact integer
                raise ProtocolError(f"input '{name}' is {datatype}: send its values as integers, not floats")
        info = np.iinfo(dt)
        lo, hi = (src.min(), src.max()) if src.size else (0, 0)
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            raise ProtocolError(
                f"input '{name}': value {int(bad)} does not fit {datatype} ({info.min}..{info.max})"
            )
        return src.astype(dt)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, refused by the caller
        return src.astype(dt)


def _kind(kind: str) -> str:
    return {
        "b": "booleans",
        "U": "strings",
        "S": "strings",
        "O": "nulls, objects or out-of-range integers",
    }.get(kind, "floats" if kind == "f" else "integers" if kind in "iu" else "other values")


def _check_finite(what: str, arr: np.ndarray, datatype: str) -> None:
    ok = np.isfinite(arr)
    if not ok.all():
        where = [int(i) for i in np.argwhere(~ok)[0]]
        raise ProtocolError(
            f"{what} has {int(ok.size - ok.sum())} value(s) that are not finite in {datatype} (NaN, infinity, "
            f"or past the type's range), the first at {where}: send finite numbers"
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class InputBounds:
    """What a model takes beyond its specs: integer inputs below an exclusive bound (token ids below the
    vocabulary size, token types below the type vocabulary) and the longest sequence (its positions)."""

    value_ranges: dict[str, int] = field(default_factory=dict)
    max_sequence: int | None = None

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> InputBounds:
        """The manifest's ``value_ranges`` and ``max_sequence``. A plain module's ranges are read from its
        example inputs (``task: custom``), so they bound nothing a client may send and are not enforced."""
        ranges = manifest.get("value_ranges") or {}
        if manifest.get("task") == "custom":
            ranges = {}
        seq = manifest.get("max_sequence")
        return cls(
            {k: int(v) for k, v in ranges.items() if isinstance(v, int) and v > 0},
            seq if isinstance(seq, int) and seq > 0 else None,
        )


def validate(
    feeds: dict[str, np.ndarray],
    specs: list[TensorSpec],
    params: dict[str, dict],
    bounds: InputBounds | None = None,
) -> dict[str, np.ndarray]:
    """Check and convert feeds against the model's inputs (names, dtypes, ranks, fixed dims, batch) and its
    ``bounds`` (token ids inside the vocabulary, sequences no longer than its positions)."""
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
        if arr.ndim and arr.shape[0] == 0:
            raise ProtocolError(f"input '{name}' has an empty batch")
        if arr.ndim:
            if batch is None:
                batch = arr.shape[0]
            elif arr.shape[0] != batch:
                raise ProtocolError(f"input '{name}' has batch {arr.shape[0]}, other inputs {batch}")
        out[name] = arr
    seqs = {a.shape[s.shape.index("sequence")] for s in specs if "sequence" in s.shape for a in [out[s.name]]}
    if len(seqs) > 1:
        raise ProtocolError(f"inputs disagree on the sequence length: {sorted(seqs)}")
    if bounds is not None:
        _check_bounds(out, specs, bounds)
    return out


def _check_bounds(out: dict[str, np.ndarray], specs: list[TensorSpec], bounds: InputBounds) -> None:
    limit = bounds.max_sequence
    for s in specs:
        if limit and "sequence" in s.shape and out[s.name].shape[s.shape.index("sequence")] > limit:
            n = out[s.name].shape[s.shape.index("sequence")]
            raise ProtocolError(
                f"input '{s.name}' has a sequence of {n} tokens; the model takes at most {limit} "
                "(its position embeddings): truncate or split the text"
            )
    for name, high in bounds.value_ranges.items():
        arr = out.get(name)
        if arr is None or arr.dtype.kind not in "iu" or not arr.size:
            continue
        bad = (arr < 0) | (arr >= high)
        if bad.any():
            where = [int(i) for i in np.argwhere(bad)[0]]
            raise ProtocolError(
                f"input '{name}' has value {int(arr[tuple(where)])} at {where}, outside the model's range "
                f"0..{high - 1} (ids from the model's own tokenizer are inside it)"
            )


def _number(name: str, p: dict, key: str, default: float) -> float:
    v = p.get(key, default)
    if type(v) not in (int, float) or not math.isfinite(v):
        raise ProtocolError(f"input '{name}': parameter '{key}' must be a finite number, got {_short(v)}")
    return float(v)


def _decode_codec(name: str, arr: np.ndarray, spec: TensorSpec, scales: Any, p: dict) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if arr.dtype == want:
        return arr
    if want.kind == "f" and arr.dtype.kind == "f":  # fp16 activations from a phone half
        with np.errstate(over="ignore"):
            out = arr.astype(want)
        _check_finite(f"input '{name}'", out, v2_datatype(want))
        return out
    if want.kind == "f" and arr.dtype in (np.int8, np.uint8):
        zero = _number(name, p, "zero_point", 0)
        if scales is not None:
            with np.errstate(over="ignore"):
                s = np.asarray(scales, dtype=np.float32)
            _check_finite(f"input '{name}{SCALES_SUFFIX}'", s, "FP32")
            try:
                fits = np.broadcast_shapes(arr.shape, s.shape) == arr.shape
            except ValueError:
                fits = False
            if not fits:  # scales that do not broadcast, or would grow the activation
                raise ProtocolError(
                    f"input '{name}{SCALES_SUFFIX}' of shape {list(s.shape)} does not fit '{name}' of shape "
                    f"{list(arr.shape)}: give one scale per row (shape {[*arr.shape[:-1], 1]})"
                )
            with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN: refused below
                out = ((arr.astype(np.float32) - zero) * s).astype(want)
        elif "scale" in p:
            with np.errstate(over="ignore", invalid="ignore"):
                out = ((arr.astype(np.float32) - zero) * _number(name, p, "scale", 1.0)).astype(want)
        else:
            raise ProtocolError(
                f"input '{name}' is {v2_datatype(arr.dtype)} without scales (give parameters "
                f"{{\"scale\": s}} or an FP32 input '{name}{SCALES_SUFFIX}')",
                400,
            )
        _check_finite(f"input '{name}' (dequantized)", out, v2_datatype(want))
        return out
    raise ProtocolError(f"input '{name}' is {v2_datatype(arr.dtype)}; the model takes {v2_datatype(want)}")


# -- REST bodies ---------------------------------------------------------------------------------
def parse_rest(
    body: bytes,
    header_length: str | None,
    specs: list[TensorSpec],
    output_names: list[str],
    bounds: InputBounds | None = None,
) -> InferRequest:
    """A REST infer body: JSON, or JSON + binary tensors (``Inference-Header-Content-Length``).

    Every field is checked for its type before it is used, so a structurally wrong body is a 400 that names
    the field (never a 500)."""
    head, rest = _split_body(body, header_length)
    req = _load_json(head)
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise ProtocolError("request must be a JSON object with a non-empty 'inputs' list")
    rid = req.get("id", "")
    if not isinstance(rid, str):
        raise ProtocolError(f"the request's 'id' must be a string, got {_short(rid)}")
    req_params = _object(req.get("parameters"), "the request's 'parameters'")
    feeds: dict[str, np.ndarray] = {}
    params: dict[str, dict] = {}
    offset = 0
    for i, t in enumerate(req["inputs"]):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise ProtocolError(
                f"inputs[{i}] must be an object with a 'name' (a string), 'datatype', 'shape' and 'data'"
            )
        name = t["name"]
        p = _object(t.get("parameters"), f"input '{name}': 'parameters'")
        if name in feeds:
            raise ProtocolError(f"input '{name}' is given twice")
        raw = None
        if "binary_data_size" in p:
            size = p["binary_data_size"]
            if type(size) is not int or size < 0 or offset + size > len(rest):
                raise ProtocolError(
                    f"input '{name}': binary_data_size {_short(size)} runs past the end of the body "
                    f"({len(rest) - offset} bytes of binary data left)"
                )
            raw = bytes(rest[offset : offset + size])
            offset += size
            if p.get("compression") is not None:
                raw = _decompress(name, raw, p["compression"], t.get("datatype"), t.get("shape"))
        feeds[name] = decode_tensor(name, t.get("datatype"), t.get("shape"), data=t.get("data"), raw=raw)
        params[name] = p
    if offset != len(rest):
        raise ProtocolError(
            f"{len(rest) - offset} bytes of binary data follow the inputs that no input claims"
        )
    default_binary = _flag(req_params, "binary_data_output", False, "the request's parameters")
    outs = req.get("outputs")
    if outs is not None and not isinstance(outs, list):
        raise ProtocolError(f"'outputs' must be a list of {{\"name\": ...}} objects, got {_short(outs)}")
    binary: dict[str, bool] = {}
    if outs:
        names = []
        for o in outs:
            if not isinstance(o, dict) or o.get("name") not in output_names:
                got = o.get("name") if isinstance(o, dict) else o
                raise ProtocolError(f"unknown output {_short(got)}; the model has {', '.join(output_names)}")
            op = _object(o.get("parameters"), f"output '{o['name']}': 'parameters'")
            names.append(o["name"])
            binary[o["name"]] = _flag(op, "binary_data", default_binary, f"output '{o['name']}'")
    else:
        names = list(output_names)
        binary = {n: default_binary for n in names}
    return InferRequest(rid, validate(feeds, specs, params, bounds), names, binary, req_params)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    try:
        n = int(header_length)
    except ValueError as exc:
        raise ProtocolError(f"Inference-Header-Content-Length '{header_length}' is not an integer") from exc
    if not 0 < n <= len(body):
        raise ProtocolError(f"Inference-Header-Content-Length {n} is outside the body's {len(body)} bytes")
    return body[:n], memoryview(body)[n:]


def _no_constant(token: str) -> Any:
    raise ProtocolError(
        f"request body is not valid JSON: {token} is not a JSON number (and the model takes finite numbers)"
    )


def _load_json(head: bytes) -> Any:
    try:
        return json.loads(head, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ProtocolError("request body nests lists or objects too deeply to be a tensor request") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"request body is not valid JSON: {exc}") from exc


def _object(value: Any, what: str) -> dict:
    """A JSON object field that may be left out (``null`` is the same as absent)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {_short(value)}")
    return value


def _flag(p: dict, key: str, default: bool, what: str) -> bool:
    v = p.get(key, default)
    if not isinstance(v, bool):
        raise ProtocolError(f"{what}: parameter '{key}' must be true or false, got {_short(v)}")
    return v


def _decompress(name: str, raw: bytes, method: Any, datatype: Any, shape: Any) -> bytes:
    from edgellm.errors import EdgeLLMError
    from edgellm.runtime.codecs import COMPRESSORS, decompress

    if not isinstance(method, str) or method not in COMPRESSORS:
        raise ProtocolError(
            f"input '{name}': compression {_short(method)} is not supported (use zstd or lz4)"
        )
    if (
        not isinstance(datatype, str)
        or datatype not in V2_TO_NP
        or not isinstance(shape, list)
        or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape)
    ):
        raise ProtocolError(f"input '{name}': a compressed input needs a valid 'datatype' and 'shape'")
    expected = math.prod(shape) * np.dtype(V2_TO_NP[datatype]).itemsize
    if expected > MAX_DECOMPRESSED:
        raise ProtocolError(
            f"input '{name}': shape {shape} of {datatype} decompresses to {expected} bytes, more than the "
            f"{MAX_DECOMPRESSED >> 20} MiB one input may take; send fewer rows per request",
            413,
        )
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
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():  # JSON has no NaN: never send bare NaN
                bad = int(arr.size - np.isfinite(arr).sum())
                raise ProtocolError(
                    f"output '{name}' has {bad} value(s) that are not finite (NaN or infinity), which JSON "
                    "cannot carry: the input drove the model out of its float range (check its scale), or "
                    f"ask for the output as binary data to get the raw values",
                    422,
                )
            entry["data"] = arr.reshape(-1).tolist()
        outs.append(entry)
    resp: dict[str, Any] = {"model_name": model, "model_version": version, "id": req.id, "outputs": outs}
    if parameters:
        resp["parameters"] = parameters
    head = json.dumps(resp, allow_nan=False).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
