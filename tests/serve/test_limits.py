"""Per-request limits and slow clients against a real `edgellm serve` process: an oversized request is
refused with 413 naming the limit or run in batches of at most --max-batch-size rows, and the server's
memory (RSS, read with psutil) stays bounded; stalled connections are closed within their timeout, a huge
Content-Length gets 413 before any body is read, and connections beyond the cap get 503."""

import http.client
import json
import socket
import time

import numpy as np
import pytest

from edgellm.serve.metrics import parse

pytest.importorskip("aiohttp", reason="pip install 'edgellm[serve]'")
psutil = pytest.importorskip("psutil")

TIMEOUT_S = 0.5  # --header-timeout and --body-timeout of the server below
MAX_CONNECTIONS = 6


def binary_body(feeds):
    blobs = [np.ascontiguousarray(v, dtype="<i8").tobytes() for v in feeds.values()]
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": k,
                    "datatype": "INT64",
                    "shape": list(v.shape),
                    "parameters": {"binary_data_size": len(b)},
                }
                for (k, v), b in zip(feeds.items(), blobs)
            ]
        }
    ).encode()
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head))}


def post(port, body, headers, timeout=120):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", "/v2/models/minilm/infer", body=body, headers=headers)
    r = c.getresponse()
    return r.status, json.loads(r.read())


@pytest.fixture(scope="module")
def server(minilm_artifact, tmp_path_factory, serve_cli):
    proc, port = serve_cli(
        minilm_artifact.path,
        tmp_path_factory.mktemp("limits"),
        *("--max-batch-size", 8, "--threads", 2, "--timeout", 120),
        *("--header-timeout", TIMEOUT_S, "--body-timeout", TIMEOUT_S, "--max-connections", MAX_CONNECTIONS),
    )
    yield proc, port
    proc.terminate()
    proc.wait(30)


def rss_mb(proc) -> float:
    return psutil.Process(proc.pid).memory_info().rss / 2**20


def test_oversized_request_is_refused_or_batched_and_memory_stays_bounded(server, minilm):
    proc, port = server
    before = rss_mb(proc)
    # [128, 512] (1.5 MB binary): over the 64 rows a request may hold (8 x --max-batch-size): 413 at once
    t0 = time.perf_counter()
    status, body = post(port, *binary_body(minilm.example_inputs(batch=128, seq=512, seed=0)))
    assert status == 413 and "at most 64 rows" in body["error"] and "--max-request-rows" in body["error"]
    assert time.perf_counter() - t0 < 5
    # [32, 256]: accepted, run as 4 batches of at most 8 rows; as one batch it kept ~250 MB of arena
    m0 = _get(port, "/metrics")
    feeds = minilm.example_inputs(batch=32, seq=256, seed=1)
    status, body = post(port, *binary_body(feeds))
    assert status == 200
    out = np.asarray(body["outputs"][0]["data"], dtype=np.float32).reshape(body["outputs"][0]["shape"])
    assert out.shape == (32, 384)
    row = {k: v[5:6] for k, v in feeds.items()}  # a part's rows went back to their place
    status, one = post(port, *binary_body(row))
    np.testing.assert_allclose(out[5], one["outputs"][0]["data"], atol=1e-4)
    m1 = _get(port, "/metrics")
    execs = parse(m1)["nv_inference_exec_count"] - parse(m0).get("nv_inference_exec_count", 0)
    rows = parse(m1)["nv_inference_count"] - parse(m0).get("nv_inference_count", 0)
    assert rows == 33 and execs >= 5  # 32 rows in >= 4 batches, then the single row
    assert _batches_over(m1, 8) == 0  # no batch of more than --max-batch-size rows
    time.sleep(0.5)
    grown = rss_mb(proc) - before
    assert grown < 120, f"the server's RSS grew by {grown:.0f} MB"


def _batches_over(text, rows):
    """Batches of more than ``rows`` rows, from the edgellm_batch_size histogram."""
    upto = total = 0.0
    for line in text.splitlines():
        if line.startswith("edgellm_batch_size_bucket") and f'le="{float(rows)}"' in line:
            upto += float(line.rsplit(" ", 1)[1])
        elif line.startswith("edgellm_batch_size_count"):
            total += float(line.rsplit(" ", 1)[1])
    return total - upto


def _get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path)
    return c.getresponse().read().decode()


def _read_until_closed(sock, limit_s):
    """Everything the server sends until it closes the connection; fails past ``limit_s``."""
    sock.settimeout(limit_s)
    data = b""
    t0 = time.perf_counter()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            pytest.fail(f"connection still open after {limit_s} s (got {data[:200]!r})")
        if not chunk:
            break
        data += chunk
    return data, time.perf_counter() - t0


def test_stalled_clients_are_timed_out_and_a_huge_body_is_refused_early(server):
    _, port = server
    head = b"POST /v2/models/minilm/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    # half the headers, then nothing: closed by the header timeout
    s1 = socket.create_connection(("127.0.0.1", port))
    s1.sendall(head)
    # whole headers and half the body, then nothing: 408 by the body timeout, then closed
    s2 = socket.create_connection(("127.0.0.1", port))
    s2.sendall(head + b"Content-Length: 1000\r\n\r\n" + b'{"inputs": [' + b" " * 488)
    # connected, nothing sent at all
    s3 = socket.create_connection(("127.0.0.1", port))
    data1, _ = _read_until_closed(s1, 5 * TIMEOUT_S + 2)
    data2, _ = _read_until_closed(s2, 5 * TIMEOUT_S + 2)
    data3, _ = _read_until_closed(s3, 5 * TIMEOUT_S + 2)
    assert data1 == b"" and data3 == b""
    assert data2.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in data2
    # Content-Length 10**10 and no body: 413 at once (not after reading 64 MB), and the connection closes
    s4 = socket.create_connection(("127.0.0.1", port))
    t0 = time.perf_counter()
    s4.sendall(head + b"Content-Length: 10000000000\r\n\r\n")
    data4, _ = _read_until_closed(s4, 15)
    assert data4.startswith(b"HTTP/1.1 413") and b"--max-body-mb" in data4
    assert b"connection: close" in data4.lower()
    assert data4.index(b"\r\n\r\n") and time.perf_counter() - t0 < 12
    for s in (s1, s2, s3, s4):
        s.close()


def test_connections_beyond_the_cap_get_503(server):
    _, port = server
    time.sleep(0.2)  # the previous test's connections are gone
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.1)
        extra = socket.create_connection(("127.0.0.1", port))
        data, _ = _read_until_closed(extra, 5)
        assert data.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in data and b"too many" in data
        extra.close()
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/v2/health/ready")
    assert c.getresponse().status == 200  # below the cap again: served


def test_sequence_and_element_limits_over_rest_and_grpc(minilm_artifact, minilm, run_server):
    from edgellm.serve import ModelConfig

    tg = pytest.importorskip("tritonclient.grpc", reason="pip install 'edgellm[serve]'")
    cfg = dict(max_batch_size=4, max_request_seq=32, max_request_elements=300)
    with run_server([ModelConfig(minilm_artifact.path)], **cfg) as srv:
        port = srv.config.port
        assert srv.models["minilm"].limits == {"rows": 32, "seq": 32, "elements": 300}
        status, body = post(port, *binary_body(minilm.example_inputs(batch=1, seq=64, seed=0)))
        assert (
            status == 413
            and "sequence length is 64" in body["error"]
            and "--max-request-seq" in body["error"]
        )
        status, body = post(port, *binary_body(minilm.example_inputs(batch=4, seq=30, seed=0)))
        assert status == 413 and "360 elements" in body["error"] and "at most 300" in body["error"]
        assert post(port, *binary_body(minilm.example_inputs(batch=3, seq=30, seed=0)))[0] == 200
        g = tg.InferenceServerClient(f"127.0.0.1:{srv.config.grpc_port}")
        ins = []
        for k, v in minilm.example_inputs(batch=1, seq=64, seed=0).items():
            i = tg.InferInput(k, list(v.shape), "INT64")
            i.set_data_from_numpy(v)
            ins.append(i)
        with pytest.raises(Exception, match="RESOURCE_EXHAUSTED|--max-request-seq"):
            g.infer("minilm", ins)


def test_limit_and_listener_settings_are_validated():
    from edgellm.errors import EdgeLLMError
    from edgellm.serve import HttpConfig, LimitsConfig, ServerConfig

    with pytest.raises(EdgeLLMError, match="max_request_rows 0 < 1"):
        LimitsConfig(max_request_rows=0)
    with pytest.raises(EdgeLLMError, match="header_timeout_s 0 <= 0"):
        HttpConfig(header_timeout_s=0)
    with pytest.raises(EdgeLLMError, match="max_connections 0 < 1"):
        HttpConfig(max_connections=0)
    cfg = ServerConfig.from_flat(max_batch_size=4, max_request_seq=128, body_timeout_s=2.0)
    assert cfg.limits.rows(cfg.batching.max_batch_size) == 32 and cfg.limits.max_request_seq == 128
    assert cfg.http.body_timeout_s == 2.0
