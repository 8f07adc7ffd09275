"""Fuzzing the KServe v2 parsers (REST JSON, the binary tensor extension, gRPC ``ModelInferRequest``):
hypothesis strategies and the property every input must keep. Shared by ``tests/serve/test_fuzz_kserve.py``
(briefly, in ``make test``) and ``benchmarks/fuzz_kserve.py`` (longer, JSON counts).

The property: a request is either taken -- every model input present with the model's dtype and rank, ids
inside the vocabulary, sequences within the positions, floats finite -- or refused with a
:class:`~edgellm.serve.protocol.ProtocolError` of a 4xx status. Any other exception is a bug (a 500).
"""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import strategies as st

from edgellm.models.adapter import TensorSpec
from edgellm.partition.wire import V2_TO_NP
from edgellm.serve.protocol import InputBounds, ProtocolError, parse_rest, validate

# a MiniLM-like model (token ids) and a float model (a split model's server half)
TOKENS = [
    TensorSpec(n, "int64", ["batch", "sequence"]) for n in ("input_ids", "attention_mask", "token_type_ids")
]
TOKEN_BOUNDS = InputBounds({"input_ids": 100, "token_type_ids": 2}, max_sequence=16)
FLOATS = [TensorSpec("input", "float32", ["batch", 4])]
MODELS = {"tokens": (TOKENS, TOKEN_BOUNDS, ["embedding"]), "floats": (FLOATS, InputBounds(), ["output"])}

DATATYPES = [*V2_TO_NP, "BF16", "BYTES", "", "int64"]
KEYS = ["inputs", "outputs", "parameters", "id", "name", "datatype", "shape", "data", "binary_data_size"]
KEYS += ["compression", "binary_data", "binary_data_output", "scale", "zero_point"]
NAMES = ["input_ids", "attention_mask", "token_type_ids", "input", "input:scales", "embedding", "output", "x"]

numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(-3, 120),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, 101.5, 1e39, -1e39, 2.0**53 + 1]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=6),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), kids, max_size=6),
    ),
    max_leaves=40,
)
dims = st.one_of(st.integers(0, 6), st.integers(-2, 2**40), st.sampled_from([2**31, 2**32, 2**63 - 1]))
shapes = st.one_of(
    st.lists(st.integers(1, 5), min_size=1, max_size=3), st.lists(dims, max_size=9), json_values
)


@st.composite
def tensor_json(draw, binary: bool = False) -> tuple[dict, bytes]:
    """One input tensor, near-valid: a known name, a datatype, a small shape and data to match or not."""
    shape = draw(shapes)
    t: dict = {
        "name": draw(st.sampled_from(NAMES) | st.text(max_size=4)),
        "datatype": draw(st.sampled_from(DATATYPES)),
    }
    t["shape"] = shape
    n = (
        math.prod(shape)
        if isinstance(shape, list) and all(type(d) is int and 0 <= d < 64 for d in shape)
        else 3
    )
    blob = b""
    if binary and draw(st.booleans()):
        blob = draw(st.binary(max_size=8 * min(n, 64) + 8))
        p = {"binary_data_size": draw(st.sampled_from([len(blob), len(blob) + 1, -1, "8", 0]))}
        if draw(st.integers(0, 4)) == 0:
            p["compression"] = draw(st.sampled_from(["zstd", "lz4", "gzip", 5]))
        t["parameters"] = p
    else:
        if draw(st.integers(0, 3)):
            t["data"] = draw(st.lists(numbers | st.booleans(), min_size=min(n, 64), max_size=min(n, 64)))
        else:
            t["data"] = draw(json_values)
        if draw(st.integers(0, 3)) == 0:
            t["parameters"] = draw(
                json_values | st.fixed_dictionaries({"scale": scalars, "zero_point": scalars})
            )
    return t, blob


@st.composite
def model_shaped(draw, model: str) -> dict:
    """A request shaped like ``model``'s: often taken, sometimes one value off."""
    b, s = draw(st.integers(1, 3)), draw(st.integers(1, 18))
    if model == "tokens":
        ids = st.integers(0, 99) | st.integers(-2, 120) if draw(st.booleans()) else st.integers(0, 99)
        inputs = [
            {
                "name": n,
                "datatype": draw(st.sampled_from(["INT64"] * 8 + ["INT32", "FP32"])),
                "shape": [b, s],
                "data": draw(
                    st.lists(ids if n == "input_ids" else st.integers(0, 1), min_size=b * s, max_size=b * s)
                ),
            }
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ]
    else:
        dtype = draw(st.sampled_from(["FP32", "FP16", "FP64", "INT8", "UINT8"]))
        vals = st.integers(-128, 127) if dtype.startswith(("INT", "UINT")) else numbers
        t = {
            "name": "input",
            "datatype": dtype,
            "shape": [b, 4],
            "data": draw(st.lists(vals, min_size=4 * b, max_size=4 * b)),
        }
        if draw(st.booleans()):
            t["parameters"] = {"scale": draw(numbers | st.just(0.05)), "zero_point": draw(st.integers(-2, 2))}
        inputs = [t]
    return {"inputs": inputs}


@st.composite
def rest_bodies(draw, model: str) -> tuple[bytes, str | None]:
    """A REST body for ``model`` and its ``Inference-Header-Content-Length`` (None: plain JSON)."""
    kind = draw(st.integers(0, 4))
    if kind == 4:
        return json.dumps(draw(model_shaped(model))).encode(), None
    if kind == 0:  # anything JSON (NaN/Infinity literals included: the parser must refuse them)
        return json.dumps(draw(json_values)).encode(), None
    if kind == 1:  # bytes that are almost JSON
        return draw(st.binary(max_size=64)) + b"{" + draw(st.binary(max_size=64)), None
    parts = draw(st.lists(tensor_json(binary=kind == 3), min_size=1, max_size=4))
    req: dict = {"inputs": [t for t, _ in parts]}
    for key, values in (("outputs", json_values), ("parameters", json_values), ("id", scalars)):
        if draw(st.integers(0, 3)) == 0:
            req[key] = draw(values)
    head = json.dumps(req).encode()
    tail = b"".join(b for _, b in parts) + draw(st.binary(max_size=4))
    header = (
        draw(st.sampled_from([str(len(head)), str(len(head) + 1), "0", "x", None])) if kind == 3 else None
    )
    return head + tail, header


# (model, (body, header)): what the property is checked on
rest_cases = st.sampled_from(sorted(MODELS)).flatmap(lambda m: st.tuples(st.just(m), rest_bodies(m)))


def check_rest(model: str, body: bytes, header: str | None) -> str | int:
    """``"taken"`` or the refusal's status; raises on a broken property (or any other exception)."""
    specs, bounds, outputs = MODELS[model]
    try:
        req = parse_rest(body, header, specs, outputs, bounds)
    except ProtocolError as exc:
        assert 400 <= exc.status < 500, (exc.status, str(exc))
        assert str(exc), "a refusal names its problem"
        return exc.status
    check_feeds(req.feeds, specs, bounds)
    assert set(req.outputs) <= set(outputs)
    return "taken"


def check_feeds(feeds: dict[str, np.ndarray], specs: list[TensorSpec], bounds: InputBounds) -> None:
    assert sorted(feeds) == sorted(s.name for s in specs)
    for s in specs:
        a = feeds[s.name]
        assert a.dtype == np.dtype(s.dtype) and a.ndim == len(s.shape) and a.shape[0] > 0, (
            s,
            a.dtype,
            a.shape,
        )
        if a.dtype.kind == "f":
            assert np.isfinite(a).all()
        if s.name in bounds.value_ranges:
            assert a.min() >= 0 and a.max() < bounds.value_ranges[s.name]
        if "sequence" in s.shape and bounds.max_sequence:
            assert a.shape[s.shape.index("sequence")] <= bounds.max_sequence


# -- gRPC -----------------------------------------------------------------------------------------
CONTENT_VALUES = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32, allow_nan=True, allow_infinity=True),
    "fp64_contents": st.floats(allow_nan=True, allow_infinity=True),
}


@st.composite
def grpc_requests(draw):
    from tritonclient.grpc import service_pb2 as pb

    r = pb.ModelInferRequest(model_name="m")
    use_raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 4))):
        shape = draw(
            st.lists(st.integers(1, 4), min_size=1, max_size=3)
            | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)
        )
        t = pb.ModelInferRequest.InferInputTensor(
            name=draw(st.sampled_from(NAMES) | st.text(max_size=3)),
            datatype=draw(st.sampled_from(DATATYPES)),
            shape=shape,
        )
        for field in draw(st.lists(st.sampled_from(sorted(CONTENT_VALUES)), max_size=2)):
            getattr(t.contents, field).extend(draw(st.lists(CONTENT_VALUES[field], max_size=24)))
        for key in draw(st.lists(st.sampled_from(["scale", "zero_point", "x"]), max_size=2)):
            which = draw(st.sampled_from(["bool_param", "int64_param", "string_param", "double_param"]))
            value = {
                "bool_param": st.booleans(),
                "int64_param": st.integers(-(2**63), 2**63 - 1),
                "string_param": st.text(max_size=4),
                "double_param": st.floats(allow_nan=True, allow_infinity=True),
            }[which]
            t.parameters[key].CopyFrom(pb.InferParameter(**{which: draw(value)}))
        r.inputs.append(t)
        if use_raw:
            r.raw_input_contents.append(draw(st.binary(max_size=200)))
    return r


@st.composite
def grpc_model_shaped(draw, model: str):
    """:func:`model_shaped` as a gRPC request: values in their datatype's contents field, or raw bytes."""
    from tritonclient.grpc import service_pb2 as pb

    from edgellm.serve.grpc import CONTENTS_FIELD

    r = pb.ModelInferRequest(model_name="m")
    raw = draw(st.booleans())
    for t in draw(model_shaped(model))["inputs"]:
        pt = pb.ModelInferRequest.InferInputTensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        dt = np.dtype(V2_TO_NP[t["datatype"]])
        with np.errstate(all="ignore"):
            values = np.asarray([v if dt.kind == "f" else int(v) for v in t["data"]], dtype=np.float64)
            arr = values.astype(dt) if dt.kind == "f" else np.clip(values, *_range(dt)).astype(dt)
        if raw or t["datatype"] not in CONTENTS_FIELD:
            r.raw_input_contents.append(arr.astype(dt.newbyteorder("<")).tobytes())
        else:
            getattr(pt.contents, CONTENTS_FIELD[t["datatype"]]).extend(arr.tolist())
        for k, v in (t.get("parameters") or {}).items():
            pt.parameters[k].CopyFrom(pb.InferParameter(double_param=float(v)))
        r.inputs.append(pt)
    return r


def _range(dt: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dt)
    return info.min, info.max


# (model, request): a random request, or one shaped like the model's
grpc_cases = st.sampled_from(sorted(MODELS)).flatmap(
    lambda m: st.tuples(st.just(m), grpc_requests() | grpc_model_shaped(m))
)


def check_grpc(model: str, request) -> str | int:
    from edgellm.serve.grpc import decode_inputs

    specs, bounds, _ = MODELS[model]
    try:
        feeds, params = decode_inputs(request)
        feeds = validate(feeds, specs, params, bounds)
    except ProtocolError as exc:
        assert 400 <= exc.status < 500, (exc.status, str(exc))
        return exc.status
    check_feeds(feeds, specs, bounds)
    return "taken"
