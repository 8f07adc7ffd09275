"""Kubernetes manifests for a served artifact: a Deployment (probes on the v2 health paths, resources,
a start-up probe that covers loading and warm-up), a Service and an ``autoscaling/v2`` HPA."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError


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
) -> dict[str, dict[str, Any]]:
    """``{"deployment": ..., "service": ..., "hpa": ...}`` as Kubernetes objects (dicts)."""
    if not 1 <= min_replicas <= max_replicas:
        raise EdgeLLMError(
            f"replicas {min_replicas}..{max_replicas} are not a range",
            "give 1 <= --min-replicas <= --max-replicas",
        )
    if not 1 <= cpu_target <= 100:
        raise EdgeLLMError(f"--cpu-target {cpu_target} is not a percentage", "use e.g. 70")
    model = name or artifact.manifest["model"]["name"]
    app = re.sub(r"[^a-z0-9-]", "-", f"edgellm-{model}".lower()).strip("-")[:63]
    # the model file is read into memory once per instance; leave room for activations and the runtime
    mem = memory_mb or int(artifact.size_bytes / 2**20 * 3 + 512)
    mount = "/models/" + artifact.path.name
    labels = {"app": app, "app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "edgellm"}
    probe = {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "replicas": min_replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {
                    "labels": labels,
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
                            "args": [
                                "serve",
                                f"{model}={mount}",
                                "--host",
                                "0.0.0.0",
                                "--port",
                                str(port),
                                "--grpc-port",
                                str(grpc_port),
                                "--max-batch-size",
                                str(max_batch_size),
                            ],
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
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "selector": {"app": app},
            "ports": [
                {"name": "http", "port": port, "targetPort": "http"},
                {"name": "grpc", "port": grpc_port, "targetPort": "grpc"},
            ],
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": cpu_target},
                    },
                }
            ],
        },
    }
    return {"deployment": deployment, "service": service, "hpa": hpa}


def write(objects: dict[str, dict[str, Any]], out: str | Path) -> list[Path]:
    """One YAML file per object in ``out`` (written whole, then renamed)."""
    import yaml

    from edgellm.utils.fs import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, obj in objects.items():
        p = out / f"{key}.yaml"
        atomic_write_text(p, yaml.safe_dump(obj, sort_keys=False))
        paths.append(p)
    return paths
