"""Lifecycle and edge cases: SIGTERM drains accepted requests (a real `edgellm serve` process),
timeouts, withdrawn requests, split-model activation codecs, the CLI and the Kubernetes manifests."""

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import yaml

from edgellm import models
from edgellm.serve import ModelConfig
from edgellm.serve.metrics import parse

tg = pytest.importorskip("tritonclient.grpc", reason="pip install 'edgellm[serve]'")
th = pytest.importorskip("tritonclient.http", reason="pip install 'edgellm[serve]'")


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _json_body(feeds):
    return json.dumps(
        {
            "inputs": [
                {"name": k, "datatype": "INT64", "shape": list(v.shape), "data": v.ravel().tolist()}
                for k, v in feeds.items()
            ]
        }
    ).encode()


def test_sigterm_during_load_loses_no_accepted_request(minilm_artifact, minilm, tmp_path):
    import http.client

    port, gport = _free_port(), _free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - the server process writes to it until the end
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgellm.cli",
            "serve",
            str(minilm_artifact.path),
            "--port",
            str(port),
            "--grpc-port",
            str(gport),
            "--max-batch-size",
            "4",
            "--threads",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        c = th.InferenceServerClient(f"127.0.0.1:{port}")
        for _ in range(600):
            try:
                if c.is_server_ready():
                    break
            except Exception:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("server did not become ready: " + (tmp_path / "serve.log").read_text()[-2000:])
        body = _json_body(minilm.example_inputs(batch=1, seq=128, seed=0))

        def call(i):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request("POST", "/v2/models/minilm/infer", body=body)
                r = conn.getresponse()
                return r.status, r.read()
            except (ConnectionError, OSError):
                return None, b""  # refused after the listener closed: never accepted

        with ThreadPoolExecutor(24) as ex:
            futs = [ex.submit(call, i) for i in range(96)]
            time.sleep(0.3)  # load is on; requests are queued and running
            proc.send_signal(signal.SIGTERM)
            results = [f.result() for f in futs]
        assert proc.wait(60) == 0
        ok = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] in (None, 503)]
        assert len(ok) + len(refused) == len(results)  # every answer is a result or a clean refusal
        assert ok and all(len(json.loads(b)["outputs"][0]["data"]) == 384 for _, b in ok)
        assert all(r[0] != 500 for r in results)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_timeout_504_and_withdrawn_requests_are_skipped(minilm_artifact, minilm, run_server):
    import http.client

    with run_server([ModelConfig(minilm_artifact.path)], max_batch_size=1, request_timeout_s=0.05) as srv:
        body = _json_body(minilm.example_inputs(batch=4, seq=256, seed=0))

        def call(_):
            conn = http.client.HTTPConnection("127.0.0.1", srv.config.port, timeout=60)
            conn.request("POST", "/v2/models/minilm/infer", body=body)
            r = conn.getresponse()
            return r.status, r.read()

        with ThreadPoolExecutor(8) as ex:
            res = list(ex.map(call, range(8)))
        assert 504 in [s for s, _ in res]
        assert any("timed out" in json.loads(b)["error"] for s, b in res if s == 504)
        time.sleep(1.0)  # the queue empties: timed-out callers were withdrawn, not run
        m = parse(http_get(srv, "/metrics"))
        assert m["nv_inference_pending_request_count"] == 0
        assert m["nv_inference_exec_count"] < 8 + 1 + 4  # warm-up runs are not counted; not every request ran


@pytest.fixture(scope="module")
def server_half(tmp_path_factory):
    """A stand-in for the server half of a split model: float activations in, a projection out."""
    from edgellm.export import export

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.LayerNorm(32), torch.nn.Linear(32, 8))
    m = models.load(net, example_inputs=torch.randn(2, 32), name="tail")
    return m, export(m, "x86-server", tmp_path_factory.mktemp("half") / "tail")


def test_split_codecs_fp16_and_int8_with_scales(server_half, run_server):
    import http.client

    m, art = server_half
    x = np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)
    ref = m.run({"input": x})["output"]
    with run_server([ModelConfig(art.path)]) as srv:
        g = tg.InferenceServerClient(f"127.0.0.1:{srv.config.grpc_port}")
        i = tg.InferInput("input", [3, 32], "FP16")
        i.set_data_from_numpy(x.astype(np.float16))
        np.testing.assert_allclose(g.infer("tail", [i]).as_numpy("output"), ref, atol=2e-2)
        # int8 with per-row (per-token) scales, as the phone half's codec sends them
        scale = np.abs(x).max(axis=1, keepdims=True) / 127.0
        q = np.round(x / scale).astype(np.int8)
        qi = tg.InferInput("input", [3, 32], "INT8")
        qi.set_data_from_numpy(q)
        si = tg.InferInput("input:scales", [3, 1], "FP32")
        si.set_data_from_numpy(scale.astype(np.float32))
        got = g.infer("tail", [qi, si]).as_numpy("output")
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.999
        # per-tensor scale as the input's parameters, over REST
        s = float(np.abs(x).max() / 127.0)
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "INT8",
                        "shape": [3, 32],
                        "data": np.round(x / s).astype(int).ravel().tolist(),
                        "parameters": {"scale": s},
                    }
                ]
            }
        )
        conn = http.client.HTTPConnection("127.0.0.1", srv.config.port, timeout=30)
        conn.request("POST", "/v2/models/tail/infer", body=body)
        r = conn.getresponse()
        out = np.asarray(json.loads(r.read())["outputs"][0]["data"]).reshape(3, 8)
        assert r.status == 200 and np.abs(out - ref).max() < 0.1
        # int8 without scales is refused with the reason
        conn.request(
            "POST",
            "/v2/models/tail/infer",
            body=body.replace(f'"parameters": {{"scale": {s!r}}}', '"parameters": {}'),
        )
        r = conn.getresponse()
        assert r.status == 400 and "without scales" in json.loads(r.read())["error"]


def test_grpc_overload_is_resource_exhausted(minilm_artifact, minilm, run_server):
    f = minilm.example_inputs(batch=2, seq=128, seed=0)
    with run_server([ModelConfig(minilm_artifact.path)], max_batch_size=1, max_queue_size=1) as srv:

        def call(_):
            g = tg.InferenceServerClient(f"127.0.0.1:{srv.config.grpc_port}")
            ins = []
            for k, v in f.items():
                i = tg.InferInput(k, list(v.shape), "INT64")
                i.set_data_from_numpy(v)
                ins.append(i)
            try:
                g.infer("minilm", ins)
                return "ok"
            except Exception as exc:
                return str(exc)

        with ThreadPoolExecutor(16) as ex:
            res = list(ex.map(call, range(32)))
        assert "ok" in res and any("RESOURCE_EXHAUSTED" in r or "overloaded" in r for r in res)


def test_cli_serve_errors(minilm_artifact, tmp_path, capsys):
    from edgellm.cli import main

    assert main(["serve", f"={minilm_artifact.path}"]) == 2
    assert "empty NAME" in capsys.readouterr().err
    assert main(["serve", str(minilm_artifact.path), "--api-key-file", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing-artifact")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_k8s_manifests(minilm_artifact, tmp_path, capsys):
    from edgellm.cli import main

    out = tmp_path / "k8s"
    assert (
        main(
            [
                "deploy",
                "k8s",
                str(minilm_artifact.path),
                "--min-replicas",
                "2",
                "--max-replicas",
                "10",
                "--cpu-target",
                "70",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    dep = yaml.safe_load((out / "deployment.yaml").read_text())
    svc = yaml.safe_load((out / "service.yaml").read_text())
    hpa = yaml.safe_load((out / "hpa.yaml").read_text())
    assert dep["apiVersion"] == "apps/v1" and dep["kind"] == "Deployment" and dep["spec"]["replicas"] == 2
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert (
        c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
        and c["startupProbe"]["failureThreshold"] >= 30
    )
    assert c["resources"]["requests"]["cpu"] == c["resources"]["limits"]["cpu"]
    assert "--host" in c["args"] and "0.0.0.0" in c["args"]
    assert dep["spec"]["selector"]["matchLabels"] == {"app": dep["metadata"]["name"]}
    assert svc["kind"] == "Service" and {p["name"] for p in svc["spec"]["ports"]} == {"http", "grpc"}
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert (
        main(
            [
                "deploy",
                "k8s",
                str(minilm_artifact.path),
                "--min-replicas",
                "5",
                "--max-replicas",
                "2",
                "-o",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )


def http_get(srv, path):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", srv.config.port, timeout=30)
    conn.request("GET", path)
    return conn.getresponse().read().decode()


def test_disconnected_client_is_dropped_from_the_queue(minilm_artifact, minilm, run_server):
    import http.client
    import socket

    with run_server([ModelConfig(minilm_artifact.path)], max_batch_size=1) as srv:
        before = parse(http_get(srv, "/metrics"))
        slow = _json_body(minilm.example_inputs(batch=8, seq=256, seed=0))  # keeps the one worker busy
        small = _json_body(minilm.example_inputs(batch=1, seq=8, seed=1))

        def busy():
            conn = http.client.HTTPConnection("127.0.0.1", srv.config.port, timeout=60)
            conn.request("POST", "/v2/models/minilm/infer", body=slow)
            return conn.getresponse().status

        with ThreadPoolExecutor(1) as ex:
            first = ex.submit(busy)
            time.sleep(0.05)
            for _ in range(5):  # send, then hang up while the request waits in the queue
                sock = socket.create_connection(("127.0.0.1", srv.config.port))
                sock.sendall(
                    b"POST /v2/models/minilm/infer HTTP/1.1\r\nHost: x\r\nContent-Length: "
                    + str(len(small)).encode()
                    + b"\r\n\r\n"
                    + small
                )
                sock.close()
            assert first.result() == 200
        time.sleep(0.5)
        after = parse(http_get(srv, "/metrics"))
        assert (
            after["nv_inference_count"] - before.get("nv_inference_count", 0) == 8
        )  # only the busy request ran
        assert after["nv_inference_request_failure"] - before.get("nv_inference_request_failure", 0) == 5
