"""Scaling out split sessions: `edgellm deploy k8s` for a split pair and an LLM writes manifests that pass
the Kubernetes schemas (kubernetes-validate, strict) and keep a session on its replica; a real server with
--replica-id answers session URLs that name it, serves steps there and 404s another replica's path naming
its own; the phone client follows the URL; a draining server lets an open session finish."""

import http.client
import json
import signal
import time

import pytest
import yaml
from generation_helpers import PROMPTS

from edgellm.cli import main
from edgellm.serve.k8s import LLM_METRIC, SPLIT_METRIC
from edgellm.serve.replicas import replica_ordinal
from edgellm.split.generation_client import GenerationClient

kv = pytest.importorskip("kubernetes_validate", reason="pip install 'edgellm[dev]'")

K8S = "1.30"  # the oldest Kubernetes these manifests target (autoscaling/v2, networking.k8s.io/v1)


def deploy(artifact, out, *flags):
    assert main(["deploy", "k8s", str(artifact), "-o", str(out), *map(str, flags)]) == 0
    return {p.stem: list(yaml.safe_load_all(p.read_text())) for p in sorted(out.glob("*.yaml"))}


def validate(docs):
    for objs in docs.values():
        for obj in objs:
            if obj["apiVersion"].startswith("gateway.networking.k8s.io"):
                continue  # a CRD: not among the core schemas
            kv.validate(obj, K8S, strict=True)  # raises ValidationError naming the field


def test_split_manifests_validate_and_route_each_session_to_its_replica(gen_dir, tmp_path):
    docs = deploy(gen_dir, tmp_path / "k8s", "--max-replicas", 4, "--max-sessions", 32, "--gateway", "edge")
    assert set(docs) == {
        "statefulset",
        "service",
        "service-headless",
        "service-replicas",
        "ingress",
        "hpa",
        "httproute",
    }
    validate(docs)
    (sts,), (svc,), (headless,) = docs["statefulset"], docs["service"], docs["service-headless"]
    app = sts["metadata"]["name"]
    model = "tiny-llama-gen-server"
    assert sts["kind"] == "StatefulSet" and sts["spec"]["serviceName"] == headless["metadata"]["name"]
    pod = sts["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c["env"]
    assert c["args"][:2] == ["serve", f"{model}=/models/server"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    drain, idle = (float(c["args"][c["args"].index(f) + 1]) for f in ("--drain-timeout", "--idle-timeout"))
    assert pod["terminationGracePeriodSeconds"] >= drain + idle + 10
    assert "publishNotReadyAddresses" not in svc["spec"]  # new sessions: ready pods only
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    replicas = docs["service-replicas"]
    assert [r["metadata"]["name"] for r in replicas] == [f"{app}-r{i}" for i in range(4)]
    for i, r in enumerate(replicas):  # a draining pod stays reachable for its own sessions
        assert r["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == f"{app}-{i}"
        assert r["spec"]["publishNotReadyAddresses"] is True
    (ing,) = docs["ingress"]
    paths = {
        p["path"]: (p["pathType"], p["backend"]["service"]["name"])
        for p in ing["spec"]["rules"][0]["http"]["paths"]
    }
    want = {f"/v2/generate/{model}/replicas/{i}": ("Prefix", f"{app}-r{i}") for i in range(4)}
    assert paths == {**want, "/": ("Prefix", app)}
    (hpa,) = docs["hpa"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": app}
    load, cpu = hpa["spec"]["metrics"]
    assert load["type"] == "Pods" and load["pods"]["metric"]["name"] == SPLIT_METRIC
    assert load["pods"]["target"] == {"type": "AverageValue", "averageValue": "24"}  # 3/4 of 32 sessions
    assert cpu["resource"]["name"] == "cpu"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    (route,) = docs["httproute"]
    assert route["spec"]["parentRefs"] == [{"name": "edge"}]
    matched = {r["matches"][0]["path"]["value"]: r["backendRefs"][0]["name"] for r in route["spec"]["rules"]}
    assert matched == {p: svc for p, (_, svc) in paths.items()}
    # the validator is strict: a misspelt field or a missing selector is refused
    bad = json.loads(json.dumps(replicas[0]))
    bad["spec"]["publishNotReadyAdresses"] = bad["spec"].pop("publishNotReadyAddresses")
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S, strict=True)
    bad = json.loads(json.dumps(sts))
    del bad["spec"]["selector"]
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S, strict=True)


def test_llm_manifests_validate_and_scale_on_running_requests(gen_artifact, tmp_path):
    docs = deploy(gen_artifact, tmp_path / "k8s", "--max-batch-size", 16, "--ingress-class", "nginx")
    assert set(docs) == {"statefulset", "service", "service-headless", "ingress", "hpa"}  # no sessions
    validate(docs)
    (ing,) = docs["ingress"]
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert [p["path"] for p in ing["spec"]["rules"][0]["http"]["paths"]] == ["/"]
    (hpa,) = docs["hpa"]
    load = hpa["spec"]["metrics"][0]
    assert load["pods"]["metric"]["name"] == LLM_METRIC
    assert load["pods"]["target"]["averageValue"] == "12"  # 3/4 of 16 running requests


def test_device_half_and_tensor_gateway_are_refused(gen_dir, minilm_artifact, tmp_path, capsys):
    assert main(["deploy", "k8s", str(gen_dir / "device"), "-o", str(tmp_path / "a")]) == 2
    assert "only the server half is deployed" in capsys.readouterr().err
    assert (
        main(["deploy", "k8s", str(minilm_artifact.path), "--gateway", "g", "-o", str(tmp_path / "b")]) == 2
    )
    assert "tensor model" in capsys.readouterr().err


def test_replica_ordinal_comes_from_the_flag_or_the_pod_name():
    assert replica_ordinal(None, {"POD_NAME": "edgellm-tl-gen-server-7"}) == 7
    assert replica_ordinal(None, {"POD_NAME": "web"}) is None and replica_ordinal(None, {}) is None
    assert replica_ordinal(2, {"POD_NAME": "x-7"}) == 2


def call(port, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    doc = json.loads(r.read() or b"{}")
    conn.close()
    return r.status, doc, r


def test_session_urls_name_the_replica_and_the_client_follows_them(gen_dir, tmp_path, serve_cli):
    proc, port = serve_cli(gen_dir / "server", tmp_path, "--replica-id", 2, "--max-length", 256)
    model = "tiny-llama-gen-server"
    try:
        status, opened, _ = call(port, "POST", f"/v2/generate/{model}/sessions", b"{}")
        sid = opened["session"]
        assert status == 201 and opened["url"] == f"/v2/generate/{model}/replicas/2/sessions/{sid}"
        status, doc, _ = call(port, "POST", f"/v2/generate/{model}/replicas/1/sessions/{sid}/steps", b"x")
        assert status == 404 and f"session '{sid}' is on replica 2" in doc["error"]
        assert opened["url"] in doc["error"]
        status, doc, _ = call(port, "POST", f"/v2/generate/{model}/replicas/0/sessions", b"{}")
        assert status == 404 and "this is replica 2, not replica 0" in doc["error"]
        status, doc, _ = call(port, "POST", f"/v2/generate/{model}/replicas/2/sessions", b"{}")
        assert status == 201 and doc["url"].endswith(f"/replicas/2/sessions/{doc['session']}")
        for s in (opened["url"], doc["url"]):
            assert call(port, "DELETE", s)[0] == 200
        assert call(port, "DELETE", opened["url"])[0] == 404  # closed

        c = GenerationClient(gen_dir, f"http://127.0.0.1:{port}")
        prompt = c.encode(PROMPTS[0])
        got = [t["token"] for t in c.generate(prompt, 12, stop_at_eos=False)]
        c.close()
        assert len(got) == 12
        meta = call(port, "GET", f"/v2/generate/{model}")[1]
        assert meta["sessions"] == 0 and meta["prefills"] == 1 and meta["decode_steps"] == 11
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = (tmp_path / "serve.log").read_text().splitlines()
    lines = [json.loads(x[x.index("{") :]) for x in text if "edgellm.serve.access" in x]
    log = [(x["method"], x["path"], x["status"]) for x in lines]
    steps = [p for _, p, s in log if p.endswith("/steps") and s == 200]  # the client's 12 steps
    assert len(steps) == 12 and all(p.startswith(f"/v2/generate/{model}/replicas/2/sessions/") for p in steps)
    closed = [x for x in log if x[0] == "DELETE"][-1]
    assert closed == ("DELETE", steps[0].removesuffix("/steps"), 200)


def test_an_open_session_keeps_stepping_through_the_drain_until_closed(gen_dir, tmp_path, serve_cli):
    proc, port = serve_cli(gen_dir / "server", tmp_path, "--max-length", 256, "--drain-timeout", 30)
    model = "tiny-llama-gen-server"
    try:
        c = GenerationClient(gen_dir, f"http://127.0.0.1:{port}")
        prompt = c.encode(PROMPTS[1])
        want = [t["token"] for t in c.generate(prompt, 16, stop_at_eos=False)]
        stream = c.generate(prompt, 16, stop_at_eos=False)
        got = [next(stream)["token"] for _ in range(4)]
        proc.send_signal(signal.SIGTERM)
        for _ in range(100):  # the drain has begun: readiness is 503, the main Service drops the pod
            if call(port, "GET", "/v2/health/ready")[0] == 503:
                break
            time.sleep(0.05)
        status, _doc, r = call(port, "POST", f"/v2/generate/{model}/sessions", b"{}")
        assert status == 503 and r.getheader("Retry-After") == "1"  # no new sessions here
        got += [next(stream)["token"] for _ in range(12)]  # the open one keeps its steps
        assert got == want
        assert proc.poll() is None  # still serving its session
        t0 = time.perf_counter()
        stream.close()  # DELETE: the last session is gone, the drain goes on
        rc = proc.wait(20)
        assert rc == 0 and time.perf_counter() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
