"""The batching server on loopback with real clients (tritonclient http and grpc, raw HTTP)."""

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edgellm.serve import ModelConfig
from edgellm.serve.metrics import parse

tg = pytest.importorskip("tritonclient.grpc", reason="pip install 'edgellm[serve]'")
th = pytest.importorskip("tritonclient.http", reason="pip install 'edgellm[serve]'")


def inputs(mod, feeds, binary=True):
    out = []
    for name, arr in feeds.items():
        i = mod.InferInput(name, list(arr.shape), "INT64")
        if mod is th:
            i.set_data_from_numpy(arr, binary_data=binary)
        else:
            i.set_data_from_numpy(arr)
        out.append(i)
    return out


def test_http_binary_and_json_and_grpc_round_trips(served, minilm):
    f = minilm.fixed_inputs()
    ref = minilm.run(f)["sentence_embedding"]
    c = th.InferenceServerClient(f"127.0.0.1:{served.config.port}")
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("minilm")
    md = c.get_model_metadata("minilm")
    assert [i["name"] for i in md["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert md["outputs"][0] == {"name": "sentence_embedding", "datatype": "FP32", "shape": [-1, 384]}
    for binary in (True, False):
        out = th.InferRequestedOutput("sentence_embedding", binary_data=binary)
        r = c.infer("minilm", inputs(th, f, binary), outputs=[out], request_id="r1")
        np.testing.assert_allclose(r.as_numpy("sentence_embedding"), ref, atol=1e-5)
        assert r.get_response()["id"] == "r1"
    g = tg.InferenceServerClient(f"127.0.0.1:{served.config.grpc_port}")
    assert g.is_server_live() and g.is_server_ready() and g.is_model_ready("minilm")
    assert g.get_server_metadata().name == "edgellm"
    assert [t.name for t in g.get_model_metadata("minilm").inputs] == [
        "input_ids",
        "attention_mask",
        "token_type_ids",
    ]
    r = g.infer("minilm", inputs(tg, f))
    np.testing.assert_allclose(r.as_numpy("sentence_embedding"), ref, atol=1e-5)


def test_batches_form_under_concurrent_load_and_answers_go_to_the_right_caller(served, minilm):
    before = parse(http_get(served, "/metrics")[1])
    reqs = [minilm.example_inputs(batch=1, seq=s, seed=s) for s in range(5, 37)]  # 32 different lengths
    refs = [minilm.run(f)["sentence_embedding"] for f in reqs]

    def call(f):  # one client per thread: 16 callers at once
        c = th.InferenceServerClient(f"127.0.0.1:{served.config.port}")
        return c.infer("minilm", inputs(th, f)).as_numpy("sentence_embedding")

    with ThreadPoolExecutor(16) as ex:
        got = list(ex.map(call, reqs))
    for g, ref in zip(got, refs):
        np.testing.assert_allclose(g, ref, atol=1e-4)
    after = parse(http_get(served, "/metrics")[1])
    rows = after["nv_inference_count"] - before.get("nv_inference_count", 0)
    execs = after["nv_inference_exec_count"] - before.get("nv_inference_exec_count", 0)
    assert rows == 32 and rows / execs > 1.0  # padded to a common length and batched
    queued = after["nv_inference_queue_duration_us"] - before.get("nv_inference_queue_duration_us", 0)
    assert (
        queued > 0
        and after["edgellm_queue_seconds_count"] - before.get("edgellm_queue_seconds_count", 0) == 32
    )
    assert after["nv_inference_request_success"] - before.get("nv_inference_request_success", 0) == 32


def test_overload_answers_503_and_the_server_keeps_serving(minilm_artifact, minilm, run_server):
    f = minilm.example_inputs(batch=1, seq=128, seed=1)
    with run_server([ModelConfig(minilm_artifact.path)], max_batch_size=1, max_queue_size=2) as srv:
        body = json.dumps(
            {
                "inputs": [
                    {"name": k, "datatype": "INT64", "shape": list(v.shape), "data": v.ravel().tolist()}
                    for k, v in f.items()
                ]
            }
        )
        with ThreadPoolExecutor(24) as ex:
            answers = list(
                ex.map(lambda _: post(srv, "/v2/models/minilm/infer", body, with_headers=True), range(48))
            )
        codes = [a[0] for a in answers]
        assert 503 in codes and 200 in codes and set(codes) <= {200, 503}
        assert all(h.get("Retry-After") == "1" and "overloaded" in t for c, h, t in answers if c == 503)
        status, headers, _ = post(srv, "/v2/models/minilm/infer", body, with_headers=True)
        assert "Retry-After" not in headers
        assert status == 200
        m = parse(http_get(srv, "/metrics")[1])
        assert m["nv_inference_request_failure"] == codes.count(503)


def test_malformed_requests_get_4xx_and_no_crash(served, minilm):
    f = minilm.example_inputs(batch=1, seq=8, seed=0)

    def tensors(**over):
        ts = [
            {"name": k, "datatype": "INT64", "shape": list(v.shape), "data": v.ravel().tolist()}
            for k, v in f.items()
        ]
        for t in ts:
            t.update(over.get(t["name"], {}))
        return ts

    url = "/v2/models/minilm/infer"
    cases = {
        "bad json": (b"{not json", {}, 400, "not valid JSON"),
        "wrong name": (
            json.dumps({"inputs": tensors(input_ids={"name": "ids"})}),
            {},
            400,
            "unknown input 'ids'",
        ),
        "missing input": (json.dumps({"inputs": tensors()[:2]}), {}, 400, "'token_type_ids' is missing"),
        "wrong dtype": (
            json.dumps({"inputs": tensors(input_ids={"datatype": "FP32"})}),
            {},
            400,
            "FP32; the model takes INT64",
        ),
        "wrong rank": (
            json.dumps({"inputs": tensors(input_ids={"shape": [8]})}),
            {},
            400,
            "has 1 dimensions",
        ),
        "count mismatch": (json.dumps({"inputs": tensors(input_ids={"shape": [1, 9]})}), {}, 400, "needs 9"),
        "unknown dtype": (
            json.dumps({"inputs": tensors(input_ids={"datatype": "BF17"})}),
            {},
            400,
            "not supported",
        ),
        "unknown model": (b"{}", {}, 404, "unknown model"),
    }
    binhead = json.dumps(
        {"inputs": [dict(t, data=None, parameters={"binary_data_size": 64}) for t in tensors()]}
    ).encode()
    trunc = binhead + b"\0" * 100  # three inputs of 64 bytes announced, 100 given
    cases["truncated binary"] = (
        trunc,
        {"Inference-Header-Content-Length": str(len(binhead))},
        400,
        "past the end",
    )
    cases["header past body"] = (
        binhead,
        {"Inference-Header-Content-Length": "99999"},
        400,
        "outside the body",
    )
    cases["huge body"] = (b"x" * (70 * 2**20), {}, 413, "larger than")
    for label, (body, headers, status, text) in cases.items():
        path = url if label != "unknown model" else "/v2/models/nope/infer"
        got, resp = post(served, path, body, headers=headers)
        assert got == status, (label, got, resp)
        assert text in json.loads(resp)["error"], (label, resp)
    assert http_get(served, "/v2/health/ready")[0] == 200  # still serving


def test_bearer_token_is_required_when_configured(minilm_artifact, minilm, run_server):
    with run_server([ModelConfig(minilm_artifact.path, name="embed")], api_key="s3cret") as srv:
        assert http_get(srv, "/v2/health/ready")[0] == 200  # probes stay open
        assert http_get(srv, "/v2/models/embed")[0] == 401
        assert http_get(srv, "/v2/models/embed", {"Authorization": "Bearer wrong"})[0] == 401
        assert http_get(srv, "/v2/models/embed", {"Authorization": "Bearer s3cret"})[0] == 200
        c = th.InferenceServerClient(f"127.0.0.1:{srv.config.port}")
        f = minilm.fixed_inputs()
        r = c.infer("embed", inputs(th, f), headers={"Authorization": "Bearer s3cret"})
        assert r.as_numpy("sentence_embedding").shape == (4, 384)
        g = tg.InferenceServerClient(f"127.0.0.1:{srv.config.grpc_port}")
        with pytest.raises(Exception, match="bearer token"):
            g.infer("embed", inputs(tg, f))
        assert g.infer("embed", inputs(tg, f), headers={"authorization": "Bearer s3cret"}).as_numpy(
            "sentence_embedding"
        ).shape == (4, 384)


# -- plain HTTP helpers (the malformed cases are ones a client library would refuse to send) --------
def http_get(srv, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.config.port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read().decode()


def post(srv, path, body, headers=None, with_headers=False):
    conn = http.client.HTTPConnection("127.0.0.1", srv.config.port, timeout=60)
    try:
        conn.request(
            "POST", path, body=body if isinstance(body, bytes) else body.encode(), headers=headers or {}
        )
        r = conn.getresponse()
        data = r.read().decode(errors="replace")
    except (ConnectionResetError, BrokenPipeError):  # a server may close on an oversized body
        return (413, json.dumps({"error": "request body is larger than the limit"}))
    return (r.status, dict(r.getheaders()), data) if with_headers else (r.status, data)


def test_huge_http_header_is_refused_and_the_server_lives(served):
    status, _ = http_get_status(served, "/v2/health/ready", {"X-Filler": "a" * 100_000})
    assert status in (400, 431)
    assert http_get(served, "/v2/health/ready")[0] == 200


def test_access_log_is_one_json_line_per_request(served, caplog):
    import logging
    import time

    def found():
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgellm.serve.access"]
        return any(e["path"] == "/v2/models/minilm" and e["status"] == 200 and e["ms"] >= 0 for e in lines)

    with caplog.at_level(logging.INFO, logger="edgellm.serve.access"):
        assert http_get(served, "/v2/models/minilm")[0] == 200
        deadline = time.monotonic() + 5  # the line is written once the response has gone out
        while not found() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert found()


def http_get_status(srv, path, headers):
    conn = http.client.HTTPConnection("127.0.0.1", srv.config.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    except (ConnectionResetError, BrokenPipeError):
        return 400, b""
