"""Hostile and broken requests against the real server on loopback, over REST (raw HTTP) and gRPC (raw
stubs): every kind gets a 4xx (gRPC: INVALID_ARGUMENT, NOT_FOUND ...) whose message names the problem, and
a valid request succeeds right after each. Also: the access log has every answered request once, errors
and 401s included, and the bearer scheme is case-insensitive.

Two models are served: MiniLM (token ids, with ``value_ranges`` and ``max_sequence`` in its manifest) and
``tail``, a plain float model (the server half of a split model: FP32/FP16/INT8 activations in).
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import uuid
from collections import Counter

import numpy as np
import pytest
import torch

from edgellm.serve import ModelConfig

grpc = pytest.importorskip("grpc", reason="pip install 'edgellm[serve]'")
pb = pytest.importorskip("tritonclient.grpc.service_pb2", reason="pip install 'edgellm[serve]'")
pb_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc", reason="pip install 'edgellm[serve]'")

MINILM = "/v2/models/minilm/infer"
TAIL = "/v2/models/tail/infer"
SEQ = 8
OVERFLOW = [1e4] * 16 + [-1e4] * 16  # finite inputs whose exp overflows in one of the two rows, per output


class Tail(torch.nn.Module):
    """A float model whose outputs overflow for large (finite) inputs: exp of a projection."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(16, 4)

    def forward(self, x):
        return torch.exp(self.lin(x))


@pytest.fixture(scope="module")
def tail_artifact(tmp_path_factory):
    from edgellm import models
    from edgellm.export import export

    torch.manual_seed(0)
    m = models.load(Tail(), example_inputs=torch.randn(2, 16), name="tail")
    return export(m, "x86-server", tmp_path_factory.mktemp("tail") / "tail")


@pytest.fixture(scope="module")
def srv(minilm_artifact, tail_artifact, run_server):
    assert minilm_artifact.manifest["max_sequence"] == 512  # recorded at export: the positions it has
    with run_server(
        [ModelConfig(minilm_artifact.path), ModelConfig(tail_artifact.path)],
        max_batch_size=8,
        max_queue_delay_ms=1,
    ) as s:
        yield s


@pytest.fixture(scope="module")
def feeds(minilm):
    return minilm.example_inputs(batch=1, seq=SEQ, seed=0)


# -- REST -----------------------------------------------------------------------------------------
def post(srv, path, body, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.config.port, timeout=60)
    try:
        conn.request(
            "POST", path, body=body if isinstance(body, bytes) else body.encode(), headers=headers or {}
        )
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def tensors(feeds, **over):
    ts = [
        {"name": k, "datatype": "INT64", "shape": list(v.shape), "data": v.ravel().tolist()}
        for k, v in feeds.items()
    ]
    for t in ts:
        t.update(over.get(t["name"], {}))
    return ts


def req(feeds, body=None, **over):
    return json.dumps({"inputs": tensors(feeds, **over), **(body or {})})


def binary(parts, extra=b"", top=None):
    """A binary-extension body: ``parts`` are (tensor JSON without data, bytes)."""
    head = json.dumps({"inputs": [t for t, _ in parts], **(top or {})}).encode()
    body = head + b"".join(b for _, b in parts) + extra
    return body, {"Inference-Header-Content-Length": str(len(head))}


def tail_json(data, shape=(2, 16), datatype="FP32", **extra):
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": datatype, "shape": list(shape), "data": data, **extra}]}
    )


def tail_bin(arr, datatype="FP32", params=None, more=()):
    t = {"name": "input", "datatype": datatype, "shape": list(arr.shape)}
    t["parameters"] = {"binary_data_size": arr.nbytes, **(params or {})}
    return binary([(t, arr.tobytes()), *more])


def rest_cases(feeds):
    """(label, path, body, headers, status, text the error must contain)."""
    ids = feeds["input_ids"]
    f2k = {k: np.ones((1, 2000), np.int64) for k in feeds}
    nested = "[" * 100_000 + "]" * 100_000
    deep = "[" * 200 + "1" + "]" * 200
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    nan = x.copy()
    nan[1, 3] = np.nan
    inf = x.copy()
    inf[0, 0] = np.inf
    q = np.round(x * 40).astype(np.int8)
    scales_nan = np.full((2, 1), np.nan, np.float32)
    big_scales = np.ones((2, 16, 16), np.float32)
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(b"\0" * (4 * 16 * 2 * 8))  # 8x the bytes the shape needs
    ids_bin = ids.astype("<i8").tobytes()
    others = [
        (
            {
                "name": k,
                "datatype": "INT64",
                "shape": list(v.shape),
                "parameters": {"binary_data_size": v.nbytes},
            },
            v.tobytes(),
        )
        for k, v in feeds.items()
        if k != "input_ids"
    ]

    def ids_part(**p):
        meta = {"name": "input_ids", "datatype": "INT64", "shape": list(ids.shape)}
        meta["parameters"] = {"binary_data_size": len(ids_bin), **p}
        return meta, ids_bin

    full = binary([ids_part(), *others])
    # fmt: off
    c = [
        # structure of the body (item 1)
        ("not JSON", MINILM, b"{not json", {}, 400, "not valid JSON"),
        ("not UTF-8", MINILM, b"\xff\xfe{", {}, 400, "not valid JSON"),
        ("a JSON list", MINILM, b"[]", {}, 400, "non-empty 'inputs' list"),
        ("no inputs", MINILM, b"{}", {}, 400, "non-empty 'inputs' list"),
        ("empty inputs", MINILM, b'{"inputs": []}', {}, 400, "non-empty 'inputs' list"),
        ("inputs a number", MINILM, b'{"inputs": 5}', {}, 400, "non-empty 'inputs' list"),
        ("input a number", MINILM, b'{"inputs": [5]}', {}, 400, "inputs[0] must be an object"),
        ("input without name", MINILM, b'{"inputs": [{"datatype": "INT64"}]}', {}, 400, "'name'"),
        ("request parameters a string", MINILM, req(feeds, {"parameters": "x"}), {}, 400, "'parameters' must be a JSON object"),
        ("outputs a number", MINILM, req(feeds, {"outputs": 5}), {}, 400, "'outputs' must be a list"),
        ("output a string", MINILM, req(feeds, {"outputs": ["x"]}), {}, 400, "unknown output 'x'"),
        ("unknown output", MINILM, req(feeds, {"outputs": [{"name": "logits"}]}), {}, 400, "unknown output 'logits'"),
        ("output parameters a number", MINILM, req(feeds, {"outputs": [{"name": "sentence_embedding", "parameters": 5}]}), {}, 400, "output 'sentence_embedding': 'parameters' must be a JSON object"),
        ("input parameters a number", MINILM, req(feeds, input_ids={"parameters": 5}), {}, 400, "input 'input_ids': 'parameters'"),
        ("binary_data_output a string", MINILM, req(feeds, {"parameters": {"binary_data_output": "yes"}}), {}, 400, "'binary_data_output' must be true or false"),
        ("id a number", MINILM, req(feeds, {"id": 5}), {}, 400, "'id' must be a string"),
        ("huge shape, empty data", MINILM, req(feeds, input_ids={"shape": [4294967296, 4294967296], "data": []}), {}, 400, "shape must be a list of integers"),
        ("negative dimension", MINILM, req(feeds, input_ids={"shape": [-1, SEQ]}), {}, 400, "shape must be"),
        ("shape a string", MINILM, req(feeds, input_ids={"shape": "1x8"}), {}, 400, "shape must be"),
        ("fractional dimension", MINILM, req(feeds, input_ids={"shape": [1, 8.0]}), {}, 400, "shape must be"),
        ("boolean dimension", MINILM, req(feeds, input_ids={"shape": [True, SEQ]}), {}, 400, "shape must be"),
        ("nine dimensions", MINILM, req(feeds, input_ids={"shape": [1] * 9}), {}, 400, "9 dimensions"),
        ("100,000 nested [", MINILM, nested, {}, 400, "nests"),
        ("data nested past numpy's dimensions", MINILM, req(feeds, input_ids={"data": json.loads(deep)}), {}, 400, "not a rectangular list"),
        ("ragged data", MINILM, req(feeds, input_ids={"data": [[1, 2], [3]]}), {}, 400, "not a rectangular list"),
        ("data a string", MINILM, req(feeds, input_ids={"data": "1 2 3"}), {}, 400, "'data' must be a list of INT64"),
        ("data of strings", MINILM, req(feeds, input_ids={"data": ["1"] * SEQ}), {}, 400, "must be numbers, got strings"),
        ("data with null", MINILM, req(feeds, input_ids={"data": [None] * SEQ}), {}, 400, "must be numbers"),
        ("data with objects", MINILM, req(feeds, input_ids={"data": [{}] * SEQ}), {}, 400, "must be numbers"),
        ("no data", MINILM, req(feeds, input_ids={"data": None}), {}, 400, "neither 'data' nor binary data"),
        ("datatype a list", MINILM, req(feeds, input_ids={"datatype": ["INT64"]}), {}, 400, "is not supported"),
        ("unknown datatype", MINILM, req(feeds, input_ids={"datatype": "BF17"}), {}, 400, "'BF17' is not supported"),
        ("wrong datatype", MINILM, req(feeds, input_ids={"datatype": "FP32"}), {}, 400, "FP32; the model takes INT64"),
        ("wrong rank", MINILM, req(feeds, input_ids={"shape": [SEQ]}), {}, 400, "has 1 dimensions"),
        ("count mismatch", MINILM, req(feeds, input_ids={"shape": [1, SEQ + 1]}), {}, 400, f"needs {SEQ + 1}"),
        ("unknown input", MINILM, req(feeds, input_ids={"name": "ids"}), {}, 400, "unknown input 'ids'"),
        ("missing input", MINILM, json.dumps({"inputs": tensors(feeds)[:2]}), {}, 400, "'token_type_ids' is missing"),
        ("input twice", MINILM, json.dumps({"inputs": tensors(feeds) + tensors(feeds)[:1]}), {}, 400, "given twice"),
        ("batch mismatch", MINILM, req(feeds, attention_mask={"shape": [2, SEQ // 2]}), {}, 400, "has batch 2"),
        ("sequence mismatch", MINILM, req(feeds, attention_mask={"shape": [1, 4], "data": [1] * 4}), {}, 400, "disagree on the sequence"),
        ("empty batch", MINILM, req(feeds, input_ids={"shape": [0, SEQ], "data": []}), {}, 400, "empty batch"),
        ("NaN literal", TAIL, tail_json("NAN").replace('"NAN"', "[NaN]"), {}, 400, "NaN is not a JSON number"),
        ("Infinity literal", TAIL, tail_json("INF").replace('"INF"', "[Infinity]"), {}, 400, "Infinity is not a JSON number"),
        # values against the model (items 2 and 12)
        ("input_ids 10**9", MINILM, req(feeds, input_ids={"data": [10**9] * SEQ}), {}, 400, "value 1000000000 at [0, 0], outside the model's range 0..30521"),
        ("input_ids -5", MINILM, req(feeds, input_ids={"data": [-5] * SEQ}), {}, 400, "value -5 at [0, 0], outside the model's range 0..30521"),
        ("token_type_ids 5", MINILM, req(feeds, token_type_ids={"data": [5] * SEQ}), {}, 400, "'token_type_ids' has value 5 at [0, 0], outside the model's range 0..1"),
        ("2,000 tokens", MINILM, json.dumps({"inputs": tensors(f2k)}), {}, 400, "sequence of 2000 tokens; the model takes at most 512"),
        ("INT64 101.5", MINILM, req(feeds, input_ids={"data": [101.5] * SEQ}), {}, 400, "'input_ids' is INT64: value 101.5 is not an integer"),
        ("INT64 past int64", MINILM, req(feeds, input_ids={"data": [2**70] * SEQ}), {}, 400, "'input_ids'"),
        ("INT64 booleans", MINILM, req(feeds, input_ids={"data": [True] * SEQ}), {}, 400, "got booleans"),
        ("BOOL from numbers", TAIL, tail_json([1] * 32, datatype="BOOL"), {}, 400, "must be true/false"),
        ("FP32 booleans", TAIL, tail_json([True] * 32), {}, 400, "FP32 data must be numbers, got booleans"),
        # the binary tensor extension
        ("truncated binary", MINILM, full[0][:-10], full[1], 400, "runs past the end"),
        ("header length zero", MINILM, full[0], {"Inference-Header-Content-Length": "0"}, 400, "outside the body"),
        ("header past the body", MINILM, binary([ids_part(), *others])[0], {"Inference-Header-Content-Length": "99999"}, 400, "outside the body"),
        ("header length not a number", MINILM, binary([ids_part(), *others])[0], {"Inference-Header-Content-Length": "ten"}, 400, "not an integer"),
        ("binary size past the end", MINILM, *binary([ids_part(binary_data_size=10**6), *others]), 400, "runs past the end"),
        ("binary size a string", MINILM, *binary([ids_part(binary_data_size="64"), *others]), 400, "binary_data_size '64'"),
        ("binary size negative", MINILM, *binary([ids_part(binary_data_size=-8), *others]), 400, "runs past the end"),
        ("bytes no input claims", MINILM, *binary([ids_part(), *others], extra=b"\0" * 8), 400, "no input claims"),
        ("bytes not the shape's", MINILM, *binary([({**ids_part()[0], "shape": [1, SEQ + 1]}, ids_bin), *others]), 400, "needs 72"),
        ("both data and binary", MINILM, *binary([({**ids_part()[0], "data": [1] * SEQ}, ids_bin), *others]), 400, "both 'data' and binary data"),
        ("unknown compression", MINILM, *binary([ids_part(compression="gzip"), *others]), 400, "compression 'gzip' is not supported"),
        ("compression a list", MINILM, *binary([ids_part(compression=["zstd"]), *others]), 400, "is not supported"),
        ("corrupt zstd", MINILM, *binary([ids_part(compression="zstd"), *others]), 400, "does not decompress"),
        ("zstd bomb", TAIL, *binary([({"name": "input", "datatype": "FP32", "shape": [2, 16], "parameters": {"binary_data_size": len(bomb), "compression": "zstd"}}, bomb)]), 400, "input 'input'"),
        ("decompresses past any limit", TAIL, *binary([({"name": "input", "datatype": "FP32", "shape": [2**20, 2**20], "parameters": {"binary_data_size": len(bomb), "compression": "lz4"}}, bomb)]), 413, "more than the 1024 MiB"),
        # float activations (items 1 and 7)
        ("FP32 NaN, binary", TAIL, *tail_bin(nan), 400, "not finite in FP32 (NaN, infinity, or past the type's range), the first at [1, 3]"),
        ("FP32 inf, binary", TAIL, *tail_bin(inf), 400, "not finite"),
        ("FP16 inf, binary", TAIL, *tail_bin(inf.astype(np.float16), "FP16"), 400, "not finite in FP16"),
        ("FP32 1e39, JSON", TAIL, tail_json([1e39] * 32), {}, 400, "not finite in FP32"),
        ("INT8 scale 'abc'", TAIL, tail_json(q.ravel().tolist(), datatype="INT8", parameters={"scale": "abc"}), {}, 400, "parameter 'scale' must be a finite number, got 'abc'"),
        ("INT8 zero_point a list", TAIL, tail_json(q.ravel().tolist(), datatype="INT8", parameters={"scale": 0.1, "zero_point": [1]}), {}, 400, "'zero_point' must be a finite number"),
        ("INT8 without scales", TAIL, tail_json(q.ravel().tolist(), datatype="INT8"), {}, 400, "without scales"),
        ("INT8 value 300", TAIL, tail_json([300] * 32, datatype="INT8", parameters={"scale": 0.1}), {}, 400, "does not fit INT8 (-128..127)"),
        ("INT8 scales of NaN", TAIL, *tail_bin(q, "INT8", more=[({"name": "input:scales", "datatype": "FP32", "shape": [2, 1], "parameters": {"binary_data_size": 8}}, scales_nan.tobytes())]), 400, "input 'input:scales' has 2 value(s) that are not finite"),
        ("INT8 scales that grow the input", TAIL, *tail_bin(q, "INT8", more=[({"name": "input:scales", "datatype": "FP32", "shape": [2, 16, 16], "parameters": {"binary_data_size": big_scales.nbytes}}, big_scales.tobytes())]), 400, "does not fit 'input' of shape [2, 16]: give one scale per row (shape [2, 1])"),
        ("output overflows, JSON", TAIL, tail_json(OVERFLOW), {}, 422, "output 'output' has"),
        # routing and size
        ("unknown model", "/v2/models/nope/infer", req(feeds), {}, 404, "unknown model 'nope'"),
        ("unknown version", "/v2/models/minilm/versions/9/infer", req(feeds), {}, 404, "no version '9'"),
        ("body past the limit", MINILM, b"x" * (70 * 2**20), {}, 413, "larger than"),
    ]
    # fmt: on
    return c


def test_rest_malformed_matrix(srv, feeds, minilm):
    ref = minilm.run(feeds)["sentence_embedding"]
    valid = req(feeds)
    statuses: Counter = Counter()
    cases = rest_cases(feeds)
    assert len({c[0] for c in cases}) == len(cases) >= 40
    for label, path, body, headers, status, text in cases:
        try:
            got, _, resp = post(srv, path, body, headers)
        except (ConnectionResetError, BrokenPipeError):  # the server may close on an oversized body
            got, resp = 413, json.dumps({"error": "request body is larger than the limit"}).encode()
        assert got == status, (label, got, resp)
        error = json.loads(resp)["error"]  # always JSON, never a traceback
        assert text in error, (label, error)
        statuses[got] += 1
        ok, _, out = post(srv, MINILM, valid)  # the server still answers right after it
        assert ok == 200, (label, out)
        np.testing.assert_allclose(
            np.asarray(json.loads(out)["outputs"][0]["data"]).reshape(ref.shape), ref, atol=1e-4
        )
    print(json.dumps({"rest_kinds": len(cases), "statuses": dict(sorted(statuses.items()))}))


def test_strict_values_that_are_fine_are_still_taken(srv, feeds):
    """Integral floats for an INT64 input, FP16 activations, an INT8 activation with its scale, and
    non-finite outputs asked for as binary data (raw IEEE values carry them) all answer 200."""
    ok, _, _ = post(
        srv, MINILM, req(feeds, input_ids={"data": [float(v) for v in feeds["input_ids"].ravel()]})
    )
    assert ok == 200
    x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    assert post(srv, TAIL, *tail_bin(x.astype(np.float16), "FP16"))[0] == 200
    q = np.round(x * 40).astype(np.int8)
    assert (
        post(srv, TAIL, tail_json(q.ravel().tolist(), datatype="INT8", parameters={"scale": 0.025}))[0] == 200
    )
    body = json.dumps(
        {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 16], "data": OVERFLOW}],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    )
    status, headers, resp = post(srv, TAIL, body)
    n = int(headers["Inference-Header-Content-Length"])
    assert status == 200
    out = np.frombuffer(resp[n:], "<f4")
    assert out.size == 8 and not np.isfinite(out).all()
    json.loads(resp[:n])  # the JSON head stays valid JSON


# -- gRPC ------------------------------------------------------------------------------------------
def tensor(name, datatype, shape, **contents):
    t = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=list(shape))
    for field, vals in contents.items():
        getattr(t.contents, field).extend(vals)
    return t


def grpc_req(model, tensors, raw=(), outputs=()):
    r = pb.ModelInferRequest(model_name=model, inputs=tensors)
    r.raw_input_contents.extend(raw)
    for o in outputs:
        r.outputs.append(pb.ModelInferRequest.InferRequestedOutputTensor(name=o))
    return r


def minilm_tensors(feeds, **over):
    """MiniLM's three inputs as int64_contents; ``over[input]`` replaces its name, datatype, shape or contents."""
    out = []
    for k, v in feeds.items():
        t = {
            "name": k,
            "datatype": "INT64",
            "shape": list(v.shape),
            "contents": {"int64_contents": v.ravel().tolist()},
        }
        t.update(over.get(k, {}))
        out.append(tensor(t["name"], t["datatype"], t["shape"], **t["contents"]))
    return out


def with_param(t, key, **value):
    t.parameters[key].CopyFrom(pb.InferParameter(**value))
    return t


def grpc_cases(feeds):
    ids = feeds["input_ids"]
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    nan = x.copy()
    nan[0, 1] = np.nan
    q = np.round(x * 40).astype(np.int8)
    raw3 = [v.astype("<i8").tobytes() for v in feeds.values()]
    names3 = [tensor(k, "INT64", v.shape) for k, v in feeds.items()]
    f2k = {k: np.ones((1, 2000), np.int64) for k in feeds}
    INV, NF = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    # fmt: off
    return [
        ("fp32_contents for INT64", grpc_req("minilm", minilm_tensors(feeds, input_ids={"contents": {"fp32_contents": [101.5] * SEQ}})), INV, "'input_ids' is INT64 but its values are in fp32_contents; put them in int64_contents"),
        ("two contents fields", grpc_req("minilm", minilm_tensors(feeds, input_ids={"contents": {"int64_contents": ids.ravel().tolist(), "fp32_contents": [1.0]}})), INV, "fp32_contents"),
        ("input_ids 10**9", grpc_req("minilm", minilm_tensors(feeds, input_ids={"contents": {"int64_contents": [10**9] * SEQ}})), INV, "value 1000000000 at [0, 0], outside the model's range 0..30521"),
        ("input_ids -5", grpc_req("minilm", minilm_tensors(feeds, input_ids={"contents": {"int64_contents": [-5] * SEQ}})), INV, "value -5"),
        ("token_type_ids 5", grpc_req("minilm", minilm_tensors(feeds, token_type_ids={"contents": {"int64_contents": [5] * SEQ}})), INV, "'token_type_ids' has value 5"),
        ("2,000 tokens", grpc_req("minilm", minilm_tensors(f2k)), INV, "sequence of 2000 tokens; the model takes at most 512"),
        ("raw count mismatch", grpc_req("minilm", names3, raw=raw3[:2]), INV, "2 raw_input_contents for 3 inputs"),
        ("raw bytes not the shape's", grpc_req("minilm", names3, raw=[raw3[0][:-8], *raw3[1:]]), INV, "56 bytes of binary data"),
        ("contents and raw", grpc_req("minilm", minilm_tensors(feeds), raw=raw3), INV, "both contents and raw_input_contents"),
        ("unknown datatype", grpc_req("minilm", minilm_tensors(feeds, input_ids={"datatype": "BF17"})), INV, "'BF17' is not supported"),
        ("no datatype", grpc_req("minilm", minilm_tensors(feeds, input_ids={"datatype": ""})), INV, "datatype '' is not supported"),
        ("negative dimension", grpc_req("minilm", minilm_tensors(feeds, input_ids={"shape": [-1, SEQ]})), INV, "shape must be"),
        ("huge shape", grpc_req("minilm", minilm_tensors(feeds, input_ids={"shape": [2**32, 2**32], "contents": {}})), INV, "shape must be"),
        ("count mismatch", grpc_req("minilm", minilm_tensors(feeds, input_ids={"shape": [1, SEQ + 1]})), INV, f"needs {SEQ + 1}"),
        ("no values", grpc_req("minilm", minilm_tensors(feeds, input_ids={"contents": {}})), INV, "neither 'data' nor binary data"),
        ("no name", grpc_req("minilm", minilm_tensors(feeds, input_ids={"name": ""})), INV, "inputs[0] has no name"),
        ("unknown input", grpc_req("minilm", minilm_tensors(feeds, input_ids={"name": "ids"})), INV, "unknown input 'ids'"),
        ("missing input", grpc_req("minilm", minilm_tensors(feeds)[:2]), INV, "'token_type_ids' is missing"),
        ("input twice", grpc_req("minilm", minilm_tensors(feeds) + minilm_tensors(feeds)[:1]), INV, "given twice"),
        ("unknown output", grpc_req("minilm", minilm_tensors(feeds), outputs=["logits"]), INV, "unknown output 'logits'"),
        ("wrong datatype", grpc_req("minilm", minilm_tensors(feeds, input_ids={"datatype": "INT32", "contents": {"int_contents": [1] * SEQ}})), INV, "INT32; the model takes INT64"),
        ("unknown model", grpc_req("nope", minilm_tensors(feeds)), NF, "unknown model 'nope'"),
        ("FP16 in contents", grpc_req("tail", [tensor("input", "FP16", [2, 16], fp32_contents=x.ravel().tolist())]), INV, "FP16 values cannot travel in contents"),
        ("FP32 NaN, raw", grpc_req("tail", [tensor("input", "FP32", [2, 16])], raw=[nan.tobytes()]), INV, "not finite in FP32"),
        ("FP32 inf, contents", grpc_req("tail", [tensor("input", "FP32", [2, 16], fp32_contents=[float("inf")] * 32)]), INV, "not finite in FP32"),
        ("INT8 scale 'abc'", grpc_req("tail", [with_param(tensor("input", "INT8", [2, 16], int_contents=q.ravel().tolist()), "scale", string_param="abc")]), INV, "parameter 'scale' must be a finite number"),
        ("INT8 scale NaN", grpc_req("tail", [with_param(tensor("input", "INT8", [2, 16], int_contents=q.ravel().tolist()), "scale", double_param=float("nan"))]), INV, "parameter 'scale' must be a finite number"),
        ("INT8 value 300", grpc_req("tail", [with_param(tensor("input", "INT8", [2, 16], int_contents=[300] * 32), "scale", double_param=0.1)]), INV, "does not fit INT8"),
        ("INT8 without scales", grpc_req("tail", [tensor("input", "INT8", [2, 16], int_contents=q.ravel().tolist())]), INV, "without scales"),
    ]
    # fmt: on


def test_grpc_malformed_matrix(srv, feeds, minilm):
    ref = minilm.run(feeds)["sentence_embedding"]
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{srv.config.grpc_port}"))
    valid = grpc_req("minilm", minilm_tensors(feeds))
    cases = grpc_cases(feeds)
    assert len({c[0] for c in cases}) == len(cases) >= 25
    codes: Counter = Counter()
    for label, request, code, text in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=60)
        assert info.value.code() == code, (label, info.value.code(), info.value.details())
        assert text in info.value.details(), (label, info.value.details())
        codes[code.name] += 1
        r = stub.ModelInfer(valid, timeout=60)  # still serving right after it
        got = np.frombuffer(r.raw_output_contents[0], "<f4").reshape(ref.shape)
        np.testing.assert_allclose(got, ref, atol=1e-4)
    print(json.dumps({"grpc_kinds": len(cases), "codes": dict(sorted(codes.items()))}))


# -- the access log and the bearer scheme ------------------------------------------------------------
def access_lines(caplog, until=lambda lines: True):
    """The access-log lines so far; aiohttp writes one after the response is sent, so wait for ``until``."""
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgellm.serve.access"]
        if until(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_access_log_has_every_error_response_once(srv, feeds, caplog):
    nope = f"/v2/models/nope-{uuid.uuid4().hex[:8]}/infer"
    with caplog.at_level(logging.INFO, logger="edgellm.serve.access"):
        assert post(srv, MINILM, b"{not json")[0] == 400
        assert post(srv, nope, req(feeds))[0] == 404
        assert post(srv, MINILM, req(feeds, input_ids={"data": [-5] * SEQ}))[0] == 400
        assert post(srv, TAIL, tail_json(OVERFLOW))[0] == 422
        assert post(srv, MINILM, req(feeds))[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", srv.config.port, timeout=30)
        conn.request("GET", "/v2/health/ready", headers={"X-Filler": "a" * 100_000})  # refused by the parser
        assert conn.getresponse().status in (400, 431)
        lines = access_lines(caplog, lambda ls: len(ls) >= 6)
    assert [e["status"] for e in lines if e["path"] == nope] == [404]  # once, with its status
    by_path = Counter((e["path"], e["status"]) for e in lines)
    assert by_path[(MINILM, 400)] == 2 and by_path[(MINILM, 200)] == 1 and by_path[(TAIL, 422)] == 1
    assert any(e["status"] in (400, 431) for e in lines if e["path"] != MINILM and e["path"] != nope)
    assert all(e["method"] in ("GET", "POST") and e["ms"] >= 0 for e in lines if e["path"] in (MINILM, nope))


def test_bearer_scheme_is_case_insensitive_and_401s_are_logged(minilm_artifact, feeds, run_server, caplog):
    with run_server([ModelConfig(minilm_artifact.path)], api_key="s3cret") as s:
        with caplog.at_level(logging.INFO, logger="edgellm.serve.access"):
            for header in ("Bearer s3cret", "bearer s3cret", "BEARER s3cret", "  bEaReR   s3cret  "):
                assert post(s, MINILM, req(feeds), {"Authorization": header})[0] == 200, header
            for header in ("Basic s3cret", "Bearer wrong", "s3cret", "Bearer", ""):
                status, _, body = post(s, MINILM, req(feeds), {"Authorization": header})
                assert status == 401 and "Authorization: Bearer <key>" in json.loads(body)["error"], header
            lines = access_lines(caplog, lambda ls: len(ls) >= 9)
        statuses = [e["status"] for e in lines if e["path"] == MINILM]
        assert statuses.count(200) == 4 and statuses.count(401) == 5
        stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{s.config.grpc_port}"))
        r = stub.ModelInfer(
            grpc_req("minilm", minilm_tensors(feeds)), metadata=[("authorization", "bearer s3cret")]
        )
        assert r.outputs[0].name == "sentence_embedding"
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(
                grpc_req("minilm", minilm_tensors(feeds)), metadata=[("authorization", "Basic s3cret")]
            )
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_bounds_come_from_the_manifest_and_not_from_a_plain_modules_example():
    from edgellm.serve.protocol import InputBounds

    hf = InputBounds.from_manifest(
        {"task": "embedding", "value_ranges": {"input_ids": 30522}, "max_sequence": 512}
    )
    assert hf == InputBounds({"input_ids": 30522}, 512)
    # a plain module's ranges are its example's maxima: they bound nothing a client may send
    plain = InputBounds.from_manifest({"task": "custom", "value_ranges": {"ids": 7}})
    assert plain == InputBounds({}, None)
    assert InputBounds.from_manifest({"value_ranges": {"ids": "x"}, "max_sequence": -1}) == InputBounds(
        {}, None
    )
