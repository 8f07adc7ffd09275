"""``edgellm init``: project files for users (the CI workflow)."""

from __future__ import annotations

from pathlib import Path

import typer

from edgellm.cli._common import console

app = typer.Typer(help="Project files: a CI workflow that guards accuracy and speed.", no_args_is_help=True)


@app.command("ci")
def ci(
    recipe: str = typer.Option("recipes/demo.yaml", "--recipe", help="The recipe the job runs."),
    artifact: str = typer.Option(
        "compress/minilm-int8-static-sq0.8",
        "--artifact",
        help="The artifact to check, relative to the recipe's output.",
    ),
    release: str = typer.Option(
        ..., "--release", help="Hub reference of the last release, e.g. minilm:int8@prod."
    ),
    hub: str = typer.Option(
        ..., "--hub", help="The hub directory the CI runner reaches (a shared or cached folder)."
    ),
    max_accuracy_drop: float = typer.Option(0.01, "--max-accuracy-drop", min=0.0),
    max_latency_increase: float = typer.Option(0.10, "--max-latency-increase", min=0.0),
    output: Path = typer.Option(
        Path(".github/workflows/edgellm.yml"), "--output", "-o", help="Where to write the workflow."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing workflow file."),
) -> None:
    """Write a GitHub Actions workflow that runs RECIPE and fails on an accuracy or speed regression against
    the last release in the hub.

    Example: edgellm init ci --release minilm:int8@prod --hub /mnt/team/edgellm-hub
    """
    from edgellm.errors import EdgeLLMError
    from edgellm.hub import parse_ref
    from edgellm.hub.compare import ci_workflow
    from edgellm.utils.fs import atomic_write_text

    parse_ref(release)  # a bad reference fails here, not in CI
    if output.exists() and not force:
        raise EdgeLLMError(f"'{output}' already exists", "pass --force to replace it, or another -o")
    output.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in locals().items() if k in ("recipe", "artifact", "release", "hub")}
    settings |= {"max_accuracy_drop": max_accuracy_drop, "max_latency_increase": max_latency_increase}
    atomic_write_text(output, ci_workflow(settings))
    console().print(f"wrote {output}: runs {recipe}, compares {artifact} with {release}", markup=False)
