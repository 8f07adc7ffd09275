"""``edgellm deploy``: deployment manifests for a served artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Deployment manifests for a served artifact.", no_args_is_help=True)


@app.command("k8s")
def k8s(
    artifact: str = typer.Argument(
        ..., help="Artifact directory to serve, or a hub reference (minilm:int8@prod)."
    ),
    output: Path = typer.Option(Path("k8s"), "--output", "-o", help="Folder for the YAML files."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name (default: the manifest's)."),
    image: str = typer.Option("edgellm:latest", "--image", help="Container image with edgellm installed."),
    min_replicas: int = typer.Option(2, "--min-replicas", min=1),
    max_replicas: int = typer.Option(10, "--max-replicas", min=1),
    cpu_target: int = typer.Option(70, "--cpu-target", help="HPA target CPU utilisation in percent."),
    cpu: str = typer.Option("2", "--cpu", help="CPU request and limit per pod."),
    max_batch_size: int = typer.Option(8, "--max-batch-size", min=1),
) -> None:
    """Write a Deployment, a Service and an autoscaling/v2 HorizontalPodAutoscaler for ARTIFACT.

    Example: edgellm deploy k8s edgellm-out/minilm-x86-server --min-replicas 2 --max-replicas 10 --cpu-target 70 -o k8s/
    """
    from edgellm.export import Artifact
    from edgellm.hub import resolve_path
    from edgellm.serve.k8s import manifests, write

    objs = manifests(
        Artifact.load(resolve_path(artifact)),
        name=name,
        image=image,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        cpu_target=cpu_target,
        cpu=cpu,
        max_batch_size=max_batch_size,
    )
    for p in write(objs, output):
        print(p)
