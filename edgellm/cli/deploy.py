"""``edgellm deploy``: deployment manifests for a served artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Deployment manifests for a served artifact.", no_args_is_help=True)


@app.command("k8s")
def k8s(
    artifact: str = typer.Argument(
        ...,
        help="Artifact directory to serve (a split pair's folder: its server half), or a hub reference "
        "(minilm:int8@prod).",
    ),
    output: Path = typer.Option(Path("k8s"), "--output", "-o", help="Folder for the YAML files."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name (default: the manifest's)."),
    image: str = typer.Option("edgellm:latest", "--image", help="Container image with edgellm installed."),
    min_replicas: int = typer.Option(2, "--min-replicas", min=1),
    max_replicas: int = typer.Option(
        10, "--max-replicas", min=1, help="Most pods; split: one Service and Ingress path per replica."
    ),
    cpu_target: int = typer.Option(70, "--cpu-target", help="HPA target CPU utilisation in percent."),
    cpu: str = typer.Option("2", "--cpu", help="CPU request and limit per pod."),
    max_batch_size: int = typer.Option(
        8,
        "--max-batch-size",
        min=1,
        help="Rows (LLM: running requests) per pass; the LLM HPA aims at 3/4 of it.",
    ),
    max_sessions: int = typer.Option(
        64, "--max-sessions", min=1, help="Split: sessions per pod; the HPA aims at 3/4 of it."
    ),
    drain_timeout: float = typer.Option(
        30.0, "--drain-timeout", min=0.001, help="Split/LLM: seconds a terminating pod lets work finish."
    ),
    idle_timeout: float = typer.Option(
        60.0, "--idle-timeout", min=0.01, help="Split: seconds before an idle session is freed."
    ),
    ingress_class: Optional[str] = typer.Option(
        None, "--ingress-class", help="Split/LLM: the Ingress's ingressClassName (default: the cluster's)."
    ),
    gateway: Optional[str] = typer.Option(
        None,
        "--gateway",
        help="Split/LLM: also write httproute.yaml, Gateway API HTTPRoutes attached to this Gateway with the "
        "Ingress's paths (a CRD: not checked against the core schemas).",
    ),
) -> None:
    """Write Kubernetes manifests for ARTIFACT.

    A tensor model: a Deployment, a Service and an autoscaling/v2 HorizontalPodAutoscaler on CPU.

    A split-generation server half or an LLM (whole-model generation artifact): a StatefulSet (pods
    APP-0..N-1; each names its replica in its session URLs), a main Service (ready pods), a headless
    Service, for split one Service per replica that still reaches a draining pod, an Ingress with
    /v2/generate/MODEL/replicas/I -> that replica, the rest -> the main Service, and an HPA on running
    requests (LLM) or open sessions (split) per pod, then CPU (the metric comes through
    prometheus-adapter: see docs/serve.md).

    Example: edgellm deploy k8s edgellm-out/minilm-x86-server --min-replicas 2 --max-replicas 10 --cpu-target 70 -o k8s/

    Example: edgellm deploy k8s out/tl-gen --max-replicas 8 --max-sessions 32 --gateway edge-gw -o k8s/
    """
    from edgellm.export import Artifact
    from edgellm.hub import resolve_path
    from edgellm.serve.k8s import manifests, write

    path = resolve_path(artifact)
    if not (path / "manifest.json").is_file() and (path / "server" / "manifest.json").is_file():
        path = path / "server"  # a split pair's folder: the server half is what is served
    objs = manifests(
        Artifact.load(path),
        name=name,
        image=image,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        cpu_target=cpu_target,
        cpu=cpu,
        max_batch_size=max_batch_size,
        max_sessions=max_sessions,
        drain_timeout_s=drain_timeout,
        idle_timeout_s=idle_timeout,
        ingress_class=ingress_class,
        gateway=gateway,
    )
    for p in write(objs, output):
        print(p)
