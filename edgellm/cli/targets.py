"""``edgellm targets list|show``: the target profiles in targets/*.yaml."""

from __future__ import annotations

import typer

from edgellm.cli._common import console, emit_json, kv_table

app = typer.Typer(help="List and show target profiles (targets/*.yaml).", no_args_is_help=True)


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List every known target.

    Example: edgellm targets list
    """
    from rich.table import Table

    from edgellm.targets import list_targets, load_target

    targets = {n: load_target(p) for n, p in list_targets().items()}
    if json_out:
        emit_json({n: t.model_dump() for n, t in targets.items()})
        return
    t = Table(title="targets")
    for col in ("name", "kind", "runtimes", "precisions", "description"):
        t.add_column(col)
    for n, tg in targets.items():
        t.add_row(n, tg.kind, ", ".join(tg.runtimes), ", ".join(tg.precisions), tg.description)
    console().print(t)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Target name (see 'edgellm targets list') or a YAML path."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show one target's runtimes, precisions, peak compute, memory and sources.

    Example: edgellm targets show x86-server
    """
    from edgellm.targets import load_target

    tg = load_target(name)
    if json_out:
        emit_json(tg.model_dump())
        return
    rows = [
        (k, v) for k, v in tg.model_dump().items() if k not in ("peak_compute_tops", "hardware", "sources")
    ]
    rows += [(f"peak {p} (TOPS)", v) for p, v in tg.peak_compute_tops.items()]
    rows += [(f"hardware.{k}", v) for k, v in tg.hardware.items()]
    rows += [("source", s) for s in tg.sources]
    kv_table(f"target {tg.name}", rows)
