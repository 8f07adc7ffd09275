"""``edgellm run RECIPE``: the whole pipeline from one YAML; ``edgellm demo``: the bundled demo recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def recipe_path(name_or_path: str) -> Path:
    """A recipe file, or the name of a recipe shipped with edgellm (``demo``, ``tiny-llama``)."""
    from edgellm.errors import EdgeLLMError

    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return p
    pkg = Path(__file__).resolve().parents[1]
    for d in (pkg.parent / "recipes", pkg / "_recipes"):
        if (d / f"{name_or_path}.yaml").is_file():
            return d / f"{name_or_path}.yaml"
    known = sorted(
        {f.stem for d in (pkg.parent / "recipes", pkg / "_recipes") if d.is_dir() for f in d.glob("*.yaml")}
    )
    raise EdgeLLMError(
        f"no recipe file or shipped recipe named '{name_or_path}'",
        f"give a recipe YAML path, or one of: {', '.join(known) or 'none found'}",
    )


def run(
    recipe: str = typer.Argument(..., help="recipe.yaml, or a shipped recipe's name (demo, tiny-llama)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Override the recipe's output folder."
    ),
    force: bool = typer.Option(False, "--force", help="Re-run every stage, even unchanged ones."),
) -> None:
    """Run RECIPE: data -> train -> compress -> partition -> export -> bench -> split check -> report.

    Stages whose inputs (their recipe section, the dataset version, the source model's hash, the stages
    they depend on) have not changed since they last finished are skipped; an interrupted run resumes
    where it stopped. Every artifact's manifest records its lineage. Sections: name, output, seed, data,
    train, compress, partition, export, bench, split, report (see recipes/demo.yaml).

    Example: edgellm run recipes/demo.yaml

    Example: edgellm run demo -o /tmp/demo --force
    """
    from edgellm.cli._common import console
    from edgellm.pipeline import run_recipe
    from edgellm.pipeline.report import print_summary

    out = console()
    summary = run_recipe(
        recipe_path(recipe), output=output, force=force, log=lambda m: out.print(m, markup=False)
    )
    print_summary(summary)
    if summary.get("report"):
        out.print(f"report: {summary['report']} (json and plots beside it)", markup=False)


def demo(
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Folder for artifacts and report (default: edgellm-out)."
    ),
    force: bool = typer.Option(False, "--force", help="Re-run every stage, even unchanged ones."),
) -> None:
    """Run the demo recipe on the bundled models: INT8/INT4, every target, a split plan and check, report.

    The same as: edgellm run demo. Writes OUTPUT/report.md with tables and plots.

    Example: edgellm demo
    """
    run("demo", output=output, force=force)
