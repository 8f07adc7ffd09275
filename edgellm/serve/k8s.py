"""Kubernetes manifests for a served artifact.

A tensor model (KServe v2) gets a Deployment (probes on the v2 health paths, resources, a start-up probe
that covers loading and warm-up), a Service and an ``autoscaling/v2`` HPA on CPU.

A split-generation server half (``kind="split"``) or a whole-model LLM (``kind="llm"``) gets what keeps a
session on its replica: a StatefulSet (pods ``APP-0..N-1``; each reads its ordinal from ``POD_NAME``, so
``POST /v2/generate/MODEL/sessions`` answers ``"url": "/v2/generate/MODEL/replicas/{i}/sessions/{id}"``),
a main Service ``APP`` (ready pods: new sessions and OpenAI requests), a headless Service
``APP-headless`` for the StatefulSet, per replica a Service ``APP-r{i}`` that still reaches a draining
pod (``publishNotReadyAddresses``), an Ingress whose ``/v2/generate/MODEL/replicas/{i}`` prefix goes to
``APP-r{i}`` and everything else to ``APP``, and an HPA on a per-pod load metric (running requests for an
LLM, open sessions for split) with CPU as the second metric. An LLM has no sessions (each OpenAI stream is
one request), so it gets no per-replica Services and its Ingress sends everything to ``APP``. With
``gateway=NAME`` a Gateway API ``HTTPRoute`` with the same matches is written too (a CRD: not in the core
schemas the tests validate against).

Example:
    >>> objs = manifests(Artifact.load("out/tl-gen/server"), max_replicas=4)   # doctest: +SKIP
    >>> sorted(objs)                                                             # doctest: +SKIP
    ['hpa', 'ingress', 'service', 'service-headless', 'service-replicas', 'statefulset']
    >>> write(objs, "k8s/")                                                      # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError

KINDS = ("tensor", "split", "llm")
PRESTOP_S = 5  # endpoints drop a terminating pod before the server drains
SCALE_DOWN_WINDOW_S = 300  # sessions are long: scale down on five minutes of low load, not one
LOAD_FRACTION = 0.75  # the HPA aims at 3/4 of a pod's bound (running requests, or sessions)
# the per-pod metrics, as prometheus-adapter names them (edgellm:NAME -> edgellm_NAME: docs/serve.md)
LLM_METRIC = "edgellm_num_requests_running"
SPLIT_METRIC = "edgellm_num_sessions_open"
GATEWAY_RULES = 16  # Gateway API: at most 16 rules per HTTPRoute


def serving_kind(manifest: dict[str, Any]) -> str:
    """``"split"`` for the server half of a split-generation pair, ``"llm"`` for a whole-model generation
    artifact, ``"tensor"`` for anything else (KServe v2); the device half of a pair is refused.

    Example:
        >>> serving_kind({"generation": {"kind": "decoder"}})
        'llm'
    """
    gen = manifest.get("generation")
    if not isinstance(gen, dict):
        return "tensor"
    role = gen.get("role")
    if role == "server":
        return "split"
    if role:
        raise EdgeLLMError(
            f"this is the {role} half of a split-generation pair; only the server half is deployed",
            "pass the pair's server/ folder (or the pair's folder)",
        )
    return "llm" if gen.get("kind") == "decoder" else "tensor"


def manifests(
    artifact: Any,
    *,
    name: str | None = None,
    image: str = "edgellm:latest",
    min_replicas: int = 2,
    max_replicas: int = 10,
    cpu_target: int = 70,
    cpu: str = "2",
    memory_mb: int | None = None,
    port: int = 8000,
    grpc_port: int = 8001,
    max_batch_size: int = 8,
    kind: str | None = None,
    max_sessions: int = 64,
    drain_timeout_s: float = 30.0,
    idle_timeout_s: float = 60.0,
    ingress_class: str | None = None,
    gateway: str | None = None,
) -> dict[str, Any]:
    """Kubernetes objects (dicts) by file name: ``{"deployment", "service", "hpa"}`` for a tensor model;
    for ``kind`` ``"split"``/``"llm"`` (default: :func:`serving_kind` of the manifest) ``statefulset``,
    ``service``, ``service-headless``, ``service-replicas`` (split only, a list), ``ingress``, ``hpa``, and
    ``httproute`` (a list) when ``gateway`` names the Gateway it attaches to."""
    if not 1 <= min_replicas <= max_replicas:
        raise EdgeLLMError(
            f"replicas {min_replicas}..{max_replicas} are not a range",
            "give 1 <= --min-replicas <= --max-replicas",
        )
    if not 1 <= cpu_target <= 100:
        raise EdgeLLMError(f"--cpu-target {cpu_target} is not a percentage", "use e.g. 70")
    kind = kind or serving_kind(artifact.manifest)
    if kind not in KINDS:
        raise EdgeLLMError(f"unknown serving kind '{kind}'", f"use one of {', '.join(KINDS)}")
    if kind == "tensor" and gateway:
        raise EdgeLLMError(
            "--gateway writes session routes, and this artifact is a tensor model (no sessions)",
            "drop --gateway; the Service is enough for KServe v2 requests",
        )
    model = name or artifact.manifest["model"]["name"]
    # the model file is read into memory once per instance; leave room for activations and the runtime
    mem = memory_mb or int(artifact.size_bytes / 2**20 * 3 + 512)
    mount = "/models/" + artifact.path.name
    args = [f"{model}={mount}", "--host", "0.0.0.0", "--port", str(port), "--grpc-port", str(grpc_port)]
    args += ["--max-batch-size", str(max_batch_size)]
    if kind == "tensor":
        app = re.sub(r"[^a-z0-9-]", "-", f"edgellm-{model}".lower()).strip("-")[:63]
        return _tensor(
            app, image, args, port, grpc_port, cpu, mem, mount, min_replicas, max_replicas, cpu_target
        )
    # pods are APP-0.., their controller-revision-hash label APP-<10 chars>, Services APP-headless: <= 63
    app = re.sub(r"[^a-z0-9-]", "-", f"edgellm-{model}".lower())[:40].strip("-")
    args += ["--drain-timeout", f"{drain_timeout_s:g}", "--idle-timeout", f"{idle_timeout_s:g}"]
    if kind == "split":
        args += ["--max-sessions", str(max_sessions)]
    labels = _labels(app)
    pod = _pod_template(app, image, args, port, grpc_port, cpu, mem, mount)
    spec = pod["spec"]
    c = spec["containers"][0]
    # the server's ordinal (its session URLs name it) is the trailing number of the pod's name
    c["env"] = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    c["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_S)]}}}
    # SIGTERM: readiness 503 (no new sessions), open sessions finish (at most the drain timeout; an
    # abandoned one is freed after the idle timeout), then the requests held are answered (at most the
    # drain timeout again); 10 s to spare before the kubelet kills the pod
    spec["terminationGracePeriodSeconds"] = math.ceil(
        PRESTOP_S + drain_timeout_s + max(drain_timeout_s, idle_timeout_s) + 10
    )
    headless = f"{app}-headless"
    objs: dict[str, Any] = {
        "statefulset": {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": app, "labels": labels},
            "spec": {
                "serviceName": headless,
                "replicas": min_replicas,
                "podManagementPolicy": "Parallel",  # pods start and stop together, not one by one
                "selector": {"matchLabels": {"app": app}},
                "template": pod,
            },
        },
        "service": _service(app, labels, {"app": app}, port, grpc_port),
        "service-headless": _service(
            headless, labels, {"app": app}, port, grpc_port, clusterIP="None", publishNotReadyAddresses=True
        ),
    }
    replicas = range(max_replicas) if kind == "split" else range(0)
    if kind == "split":  # a draining pod stays reachable for its own sessions through its own Service
        objs["service-replicas"] = [
            _service(
                f"{app}-r{i}",
                labels,
                {"app": app, "statefulset.kubernetes.io/pod-name": f"{app}-{i}"},
                port,
                grpc_port,
                publishNotReadyAddresses=True,
            )
            for i in replicas
        ]
    routes = [(f"/v2/generate/{model}/replicas/{i}", f"{app}-r{i}") for i in replicas] + [("/", app)]
    objs["ingress"] = _ingress(app, labels, routes, ingress_class)
    metric, bound = (SPLIT_METRIC, max_sessions) if kind == "split" else (LLM_METRIC, max_batch_size)
    objs["hpa"] = _hpa(app, labels, "StatefulSet", min_replicas, max_replicas, cpu_target, metric, bound)
    if gateway:
        objs["httproute"] = _httproutes(app, labels, routes, gateway, port)
    return objs


def _labels(app: str) -> dict[str, str]:
    return {"app": app, "app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "edgellm"}


def _pod_template(
    app: str, image: str, args: list[str], port: int, grpc_port: int, cpu: str, mem: int, mount: str
) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2}
    return {
        "metadata": {
            "labels": _labels(app),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(port),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": {
            "terminationGracePeriodSeconds": 60,  # SIGTERM drains accepted requests first
            "containers": [
                {
                    "name": "server",
                    "image": image,
                    "args": ["serve", *args],
                    "ports": [
                        {"name": "http", "containerPort": port},
                        {"name": "grpc", "containerPort": grpc_port},
                    ],
                    "resources": {
                        "requests": {"cpu": cpu, "memory": f"{mem}Mi"},
                        "limits": {"cpu": cpu, "memory": f"{mem}Mi"},
                    },
                    # loading + warm-up may take a while: up to 5 minutes before liveness applies
                    "startupProbe": {
                        **probe,
                        "httpGet": {"path": "/v2/health/ready", "port": "http"},
                        "failureThreshold": 60,
                        "periodSeconds": 5,
                    },
                    # 503 while loading and while draining: the main Service stops sending new work
                    "readinessProbe": {
                        "httpGet": {"path": "/v2/health/ready", "port": "http"},
                        "periodSeconds": 5,
                        "timeoutSeconds": 2,
                        "failureThreshold": 2,
                    },
                    "livenessProbe": {**probe, "failureThreshold": 3},
                    "volumeMounts": [{"name": "model", "mountPath": mount, "readOnly": True}],
                }
            ],
            "volumes": [{"name": "model", "persistentVolumeClaim": {"claimName": f"{app}-model"}}],
        },
    }


def _service(
    name: str, labels: dict[str, str], selector: dict[str, str], port: int, grpc_port: int, **extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            **extra,
            "selector": selector,
            "ports": [
                {"name": "http", "port": port, "targetPort": "http"},
                {"name": "grpc", "port": grpc_port, "targetPort": "grpc"},
            ],
        },
    }


def _hpa(
    app: str,
    labels: dict[str, str],
    target_kind: str,
    min_replicas: int,
    max_replicas: int,
    cpu_target: int,
    metric: str | None = None,
    bound: int = 0,
) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = []
    if metric:  # per-pod load first: CPU alone misses a pod full of sessions waiting on their phones
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": metric},
                    "target": {"type": "AverageValue", "averageValue": _quantity(LOAD_FRACTION * bound)},
                },
            }
        )
    metrics.append(
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu_target}},
        }
    )
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": target_kind, "name": app},
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "metrics": metrics,
    }
    if metric:  # a pod leaving takes its sessions' time to drain: one at a time, after five calm minutes
        spec["behavior"] = {
            "scaleDown": {
                "stabilizationWindowSeconds": SCALE_DOWN_WINDOW_S,
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
            }
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": app, "labels": labels},
        "spec": spec,
    }


def _quantity(v: float) -> str:
    """A Kubernetes quantity: ``"6"``, or milli-units (``"750m"``) for a fraction."""
    milli = round(v * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def _ingress(
    app: str, labels: dict[str, str], routes: list[tuple[str, str]], ingress_class: str | None
) -> dict[str, Any]:
    """Prefix matches go by whole path segments (``/replicas/1`` does not match ``/replicas/10``), the
    longest first, so the order of the paths does not matter."""
    paths = [
        {
            "path": path,
            "pathType": "Prefix",
            "backend": {"service": {"name": svc, "port": {"name": "http"}}},
        }
        for path, svc in routes
    ]
    spec: dict[str, Any] = {"rules": [{"http": {"paths": paths}}]}
    if ingress_class:
        spec = {"ingressClassName": ingress_class, **spec}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": app, "labels": labels},
        "spec": spec,
    }


def _httproutes(
    app: str, labels: dict[str, str], routes: list[tuple[str, str]], gateway: str, port: int
) -> list[dict[str, Any]]:
    """Gateway API ``HTTPRoute``s (``gateway.networking.k8s.io/v1``) with the Ingress's matches, at most
    16 rules each (the API's limit); the catch-all ``/`` is in the first."""
    rules = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": path}}],
            "backendRefs": [{"name": svc, "port": port}],
        }
        for path, svc in [routes[-1], *routes[:-1]]
    ]
    chunks = [rules[i : i + GATEWAY_RULES] for i in range(0, len(rules), GATEWAY_RULES)]
    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": app if n == 0 else f"{app}-{n}", "labels": labels},
            "spec": {"parentRefs": [{"name": gateway}], "rules": chunk},
        }
        for n, chunk in enumerate(chunks)
    ]


def _tensor(
    app: str,
    image: str,
    args: list[str],
    port: int,
    grpc_port: int,
    cpu: str,
    mem: int,
    mount: str,
    min_replicas: int,
    max_replicas: int,
    cpu_target: int,
) -> dict[str, Any]:
    labels = _labels(app)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "replicas": min_replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": _pod_template(app, image, args, port, grpc_port, cpu, mem, mount),
        },
    }
    service = _service(app, labels, {"app": app}, port, grpc_port)
    hpa = _hpa(app, labels, "Deployment", min_replicas, max_replicas, cpu_target)
    return {"deployment": deployment, "service": service, "hpa": hpa}


def write(objects: dict[str, Any], out: str | Path) -> list[Path]:
    """One YAML file per key in ``out`` (a list: one file of several documents), each written whole, then
    renamed."""
    import yaml

    from edgellm.utils.fs import atomic_write_text

    class Plain(yaml.SafeDumper):  # a label set shared by two objects is written out twice, not aliased
        def ignore_aliases(self, data: Any) -> bool:
            return True

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, obj in objects.items():
        p = out / f"{key}.yaml"
        docs = obj if isinstance(obj, list) else [obj]
        atomic_write_text(p, yaml.dump_all(docs, Dumper=Plain, sort_keys=False))
        paths.append(p)
    return paths
