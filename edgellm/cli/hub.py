"""``edgellm hub``: the local model registry (push, list, show, pull, tag, gc)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgellm.cli._common import console, emit_json

app = typer.Typer(
    help="The model hub: a content-addressed registry of models and artifacts with their lineage.\n\n"
    "Example: edgellm hub push edgellm-out/minilm-int8 --name minilm:int8 --tag staging",
    no_args_is_help=True,
)

HUB_HELP = "Hub directory (default: $EDGELLM_HUB, else ~/.edgellm/hub; a shared folder serves a team)."


def _hub(root: Optional[Path]):
    from edgellm.hub import Hub

    return Hub(root)


@app.command("push")
def push(
    path: Path = typer.Argument(..., help="An artifact or model directory."),
    name: str = typer.Option(..., "--name", "-n", help="Entry name, e.g. minilm or minilm:int8."),
    tag: list[str] = typer.Option([], "--tag", "-t", help="Tag(s) for this version (repeatable)."),
    hub: Optional[Path] = typer.Option(None, "--hub", help=HUB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the entry as JSON."),
) -> None:
    """Add PATH as the next version of NAME, with its lineage (dataset, recipe, parent, compression,
    parity, benchmark figures).

    Example: edgellm hub push edgellm-out/minilm-int8 --name minilm:int8 --tag staging
    """
    e = _hub(hub).push(path, name, tags=tag)
    if json_out:
        emit_json(e)
        return
    console().print(
        f"{e['ref']} ({e['kind']}, {len(e['files'])} files, {e['bytes'] / 1e6:.1f} MB)", markup=False
    )


@app.command("list")
def list_cmd(
    hub: Optional[Path] = typer.Option(None, "--hub", help=HUB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the entries as JSON."),
) -> None:
    """List the hub's models: versions, tags, size.

    Example: edgellm hub list --hub /shared/edgellm-hub
    """
    from rich.table import Table

    rows = _hub(hub).list()
    if json_out:
        emit_json(rows)
        return
    t = Table(title=f"hub {_hub(hub).root}")
    for col in ("name", "latest", "versions", "tags", "kind", "MB", "created"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["name"],
            str(r["latest"]),
            ",".join(map(str, r["versions"])),
            ", ".join(f"{k}={v}" for k, v in sorted(r["tags"].items())),
            r["kind"],
            f"{r['bytes'] / 1e6:.1f}",
            r["created"],
        )
    console().print(t)


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="NAME, NAME@VERSION or NAME@TAG."),
    hub: Optional[Path] = typer.Option(None, "--hub", help=HUB_HELP),
) -> None:
    """Print an entry: files with their hashes, lineage, where and when it was pushed.

    Example: edgellm hub show minilm:int8@staging
    """
    emit_json(_hub(hub).entry(ref))


@app.command("pull")
def pull(
    ref: str = typer.Argument(..., help="NAME, NAME@VERSION or NAME@TAG."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
    hub: Optional[Path] = typer.Option(None, "--hub", help=HUB_HELP),
) -> None:
    """Copy an entry out, verifying every file's sha256 (a mismatch is refused, nothing is written).

    Example: edgellm hub pull minilm:int8@3 -o deploy/minilm
    """
    _hub(hub).pull(ref, output, force=force)
    console().print(f"{ref} -> {output}", markup=False)


@app.command("tag")
def tag(
    ref: str = typer.Argument(..., help="NAME@VERSION (or another reference) to tag."),
    tag_name: str = typer.Argument(..., help="The tag, e.g. prod."),
    hub: Optional[Path] = typer.Option(None, "--hub", help=HUB_HELP),
) -> None:
    """Point TAG of the entry's name at its version.

    Example: edgellm hub tag minilm:int8@3 prod
    """
    e = _hub(hub).tag(ref, tag_name)
    console().print(f"{e['name']}@{tag_name} -> version {e['version']}", markup=False)


@app.command("gc")
def gc(
    keep_last: Optional[int] = typer.Option(
        None, "--keep-last", min=1, help="Keep the N newest versions of each name (tagged ones always stay)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would go, remove nothing."),
    hub: Optional[Path] = typer.Option(None, "--hub", help=HUB_HELP),
) -> None:
    """Remove old untagged versions (with --keep-last) and every file no entry references.

    Example: edgellm hub gc --keep-last 3
    """
    r = _hub(hub).gc(keep_last=keep_last, dry_run=dry_run)
    console().print(
        f"{'would remove' if dry_run else 'removed'} {len(r['removed_entries'])} entries, "
        f"{r['removed_objects']} files ({r['freed_bytes'] / 1e6:.1f} MB)",
        markup=False,
    )


@app.command("compare")
def compare_cmd(
    candidate: str = typer.Argument(..., help="The new artifact (directory or hub reference)."),
    against: str = typer.Option(..., "--against", help="The release to compare with, e.g. minilm:int8@prod."),
    max_accuracy_drop: float = typer.Option(
        0.01, "--max-accuracy-drop", min=0.0, help="Largest accuracy drop allowed."
    ),
    max_latency_increase: float = typer.Option(
        0.10,
        "--max-latency-increase",
        min=0.0,
        help="Largest growth of the latency ratio to fp32 (0.10 = 10 %).",
    ),
    hub: Optional[Path] = typer.Option(None, "--hub", help=HUB_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Compare accuracy and speed (both as edgellm compress measured them) with a release; exit 1 on a
    regression beyond the budgets (what a CI job fails on).

    Example: edgellm hub compare edgellm-out/compress/minilm-int8-static --against minilm:int8@prod --max-accuracy-drop 0.01
    """
    from rich.table import Table

    from edgellm.hub.compare import compare

    rep = compare(
        candidate,
        against,
        max_accuracy_drop=max_accuracy_drop,
        max_latency_increase=max_latency_increase,
        hub=hub,
    )
    if json_out:
        emit_json(rep)
    else:
        t = Table(title=f"{candidate} vs {against} ({rep['metric']})")
        for col in ("check", "release", "candidate", "change", "within budget"):
            t.add_column(col)
        for ch in rep["checks"]:
            t.add_row(
                ch["check"],
                f"{ch['release']:.5g}",
                f"{ch['candidate']:.5g}",
                f"{ch['change']:+.4f}",
                "yes" if ch["ok"] else "NO",
            )
        console().print(t)
        console().print("no regression" if rep["passed"] else "REGRESSION beyond the budgets", markup=False)
    if not rep["passed"]:
        raise typer.Exit(1)
