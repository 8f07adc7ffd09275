"""Canary releases on the real server: two versions behind a traffic split; a canary whose latency breaks
the budget, or whose every answer fails, is rolled back automatically under steady load, with no failed
request for the callers; a healthy canary is promoted; bad splits are refused."""

import dataclasses
import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch import nn

from edgellm.errors import EdgeLLMError
from edgellm.serve import CanaryConfig, ModelConfig
from edgellm.serve.release import parse_traffic


class Slow(nn.Module):
    """~85 M multiply-adds per row from 4 MB of weights: one 1024x1024 layer applied 80 times."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(16, 1024), nn.Linear(1024, 1024), nn.Linear(1024, 8)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        for _ in range(80):
            h = torch.tanh(self.mid(h))
        return self.out(h)


def artifact(tmp_path, name, module, static_batch=False):
    from edgellm.export import export
    from edgellm.models import load

    torch.manual_seed(0)
    m = load(module.eval(), example_inputs=torch.randn(1, 16), dynamic_axes={} if static_batch else None)
    return export(m, "x86-server", tmp_path / name).path


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    root = tmp_path_factory.mktemp("canary")
    fast = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    slow = Slow()
    return {
        "fast": artifact(root, "fast", fast),
        "fast2": artifact(root, "fast2", nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))),
        "slow": artifact(root, "slow", slow),
        "batch1": artifact(root, "batch1", fast, static_batch=True),  # fails every request of 2 rows
    }


def infer(port, rows=1, version=None):
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 16], "data": [0.5] * (16 * rows)}]
    }
    path = "/v2/models/m" + (f"/versions/{version}" if version else "") + "/infer"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read())


def load_test(port, n, rows=1):
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: infer(port, rows), range(n)))


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.read().decode()


def canary_budget_ms(port) -> float:
    """Half the extra milliseconds the slow version costs over the fast one, from requests pinned to each on
    a server that sends the slow one no traffic: every unpinned request the slow canary serves then takes
    more than the budget whatever the speed of the machine (a fixed 10 ms was above the slow model's time on
    a fast CPU: the canary served 61 requests before queueing pushed its p90 over it)."""

    def best_ms(version):
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            assert infer(port, 1, version)[0] == 200
            times.append((time.perf_counter() - t0) * 1000.0)
        return min(times)

    infer(port, 1, "1"), infer(port, 1, "2")  # warm both sessions
    extra = best_ms("2") - best_ms("1")
    assert extra > 0.5, f"the slow version costs only {extra:.2f} ms more than the fast one"
    return extra / 2


@pytest.mark.parametrize(
    "canary,rows,policy,why",
    [
        ("slow", 1, CanaryConfig(max_p90_ms=None, min_requests=10), "p90"),
        ("batch1", 2, CanaryConfig(max_error_rate=0.2, min_requests=10), "error rate"),
    ],
)
def test_a_failing_canary_is_rolled_back_without_failed_requests(
    versions, run_server, canary, rows, policy, why
):
    models = [ModelConfig(versions["fast"], "m", "1"), ModelConfig(versions[canary], "m", "2")]
    if why == "p90":  # the budget: half of what the slow version costs over the fast one on this machine
        with run_server(models, traffic={"m": {"1": 100, "2": 0}}, max_queue_delay_ms=0) as srv:
            policy = dataclasses.replace(policy, max_p90_ms=canary_budget_ms(srv.config.port))
    with run_server(models, traffic={"m": {"1": 50, "2": 50}}, canary=policy, max_queue_delay_ms=0) as srv:
        port = srv.config.port
        results = load_test(port, 160, rows)
        assert all(status == 200 for status, _ in results)  # the stable version answered for the canary
        _, rel = get(port, "/v2/models/m/release")
        rel = json.loads(rel)
        d = rel["decisions"]
        assert (
            len(d) == 1 and d[0]["action"] == "rollback" and d[0]["version"] == "2" and why in d[0]["reason"]
        )
        assert (
            rel["traffic_percent"] == {"1": 100.0, "2": 0.0} and d[0]["first_bad_to_decision_s"] is not None
        )
        served_by_canary = rel["counts"]["2"]["requests"]
        assert served_by_canary <= policy.min_requests + 4  # judged as soon as the window is full
        after = load_test(port, 20, rows)
        assert all(r["model_version"] == "1" for _, r in after)
        metrics = get(port, "/metrics")[1]
        assert 'edgellm_release_decisions_total{action="rollback",model="m",version="2"} 1.0' in metrics
        assert 'edgellm_traffic_percent{model="m",version="2"} 0.0' in metrics


def test_a_healthy_canary_is_promoted_and_pinned_versions_stay_reachable(versions, run_server):
    models = [ModelConfig(versions["fast"], "m", "1"), ModelConfig(versions["fast2"], "m", "2")]
    policy = CanaryConfig(max_p90_ms=1000.0, min_requests=5, promote_after=15)
    with run_server(models, traffic={"m": {"1": 70, "2": 30}}, canary=policy) as srv:
        port = srv.config.port
        assert all(s == 200 for s, _ in load_test(port, 120))
        rel = json.loads(get(port, "/v2/models/m/release")[1])
        assert rel["decisions"][-1]["action"] == "promote" and rel["stable"] == "2"
        assert rel["traffic_percent"] == {"1": 0.0, "2": 100.0}
        s, r = infer(port, version="1")  # a pinned version is still served
        assert s == 200 and r["model_version"] == "1"
        a, b = np.asarray(r["outputs"][0]["data"]), np.asarray(infer(port)[1]["outputs"][0]["data"])
        assert a.shape == b.shape and not np.allclose(a, b)  # two different models, really


def test_bad_traffic_splits_are_refused(versions):
    from edgellm.serve import Server, ServerConfig

    with pytest.raises(EdgeLLMError, match="sums to 90 %, not 100 %"):
        parse_traffic("m=1:80,2:10")
    with pytest.raises(EdgeLLMError, match="is not NAME=VERSION:PERCENT"):
        parse_traffic("m:80")
    two = [ModelConfig(versions["fast"], "m", "1"), ModelConfig(versions["fast2"], "m", "2")]
    with pytest.raises(EdgeLLMError, match="without a traffic split"):
        Server(two, ServerConfig(port=0, grpc_port=None))
    with pytest.raises(EdgeLLMError, match=r"names version\(s\) \['3'\] that are not served"):
        Server(two, ServerConfig(port=0, grpc_port=None, canary=CanaryConfig({"m": {"1": 50, "3": 50}})))
    with pytest.raises(EdgeLLMError, match="sums to 120 %"):
        Server(two, ServerConfig(port=0, grpc_port=None, canary=CanaryConfig({"m": {"1": 60, "2": 60}})))
