"""``edgellm plugins``: the installed plugins (entry points) and whether each loads."""

from __future__ import annotations

import typer

from edgellm.cli._common import console, emit_json


def plugins(json_out: bool = typer.Option(False, "--json", help="Print the plugins as JSON.")) -> None:
    """List the plugins installed packages provide (cleaning steps, importance scores, quantization
    methods, exporters, runners, metrics), importing each to show whether it loads.

    Example: edgellm plugins --json
    """
    from rich.table import Table

    from edgellm.plugins import load_all

    _import_registries()
    found = load_all()
    rows = [
        {"group": p.group, "name": p.name, "package": p.package, "value": p.value, "status": p.status}
        for p in found
    ]
    if json_out:
        emit_json(rows)
        return
    if not rows:
        console().print(
            "no plugins installed (a package declares them as entry points in groups edgellm.cleaning_steps, "
            "edgellm.scores, edgellm.quant_methods, edgellm.exporters, edgellm.runners, edgellm.metrics)",
            markup=False,
        )
        return
    t = Table(title="edgellm plugins")
    for col in ("group", "name", "package", "provides", "status"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["group"].removeprefix("edgellm."), r["name"], str(r["package"]), r["value"], r["status"])
    console().print(t)


def _import_registries() -> None:
    """The stages that own a plugin group, so each object is checked by its stage as it is listed."""
    import importlib

    for module in (
        "edgellm.data.steps",
        "edgellm.compress.prune.importance",
        "edgellm.compress.quant.config",
        "edgellm.compress.evaluate",
        "edgellm.export.base",
        "edgellm.runtime.base",
    ):
        importlib.import_module(module)
