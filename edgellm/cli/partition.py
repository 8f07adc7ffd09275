"""``edgellm partition``: where to cut a model between a phone and a server, for a given network."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def partition(
    model: str = typer.Argument(..., help="A bundled model name or a Hugging Face model directory."),
    device: str = typer.Option("snapdragon-865", "--device", help="The phone's target profile."),
    server: str = typer.Option("x86-server", "--server", help="The server's target profile."),
    bandwidth: str = typer.Option("10mbit", "--bandwidth", help="Uplink bandwidth, e.g. 10mbit."),
    downlink: Optional[str] = typer.Option(
        None, "--downlink", help="Downlink bandwidth (default: the uplink's)."
    ),
    rtt: str = typer.Option("50ms", "--rtt", help="Round-trip time, e.g. 50ms."),
    device_memory: Optional[str] = typer.Option(
        None, "--device-memory", help="Weights the phone may hold, e.g. 512MB."
    ),
    min_device_blocks: int = typer.Option(
        1, "--min-device-blocks", min=0, help="Blocks that must run on the phone."
    ),
    precision: str = typer.Option("fp32", "--precision", help="Precision both halves run at."),
    codecs: str = typer.Option(
        "fp32,fp16,int8",
        "--codecs",
        help="Activation codecs to consider, comma-separated (int8+zstd, fp16+lz4...), or 'all'.",
    ),
    seq: int = typer.Option(128, "--seq", min=1, help="Sequence length to plan for."),
    runs: int = typer.Option(10, "--runs", min=1, help="Profiling runs per block on this host."),
    output: Path = typer.Option(
        Path("edgellm-out/partition"), "--output", "-o", help="Folder for plan.json and plan.png."
    ),
) -> None:
    """Profile MODEL, predict every cut on DEVICE + SERVER over the network, print the table, plot it.

    Example: edgellm partition minilm --device snapdragon-865 --server x86-server --bandwidth 10mbit --rtt 50ms --device-memory 512MB --min-device-blocks 1

    Then: edgellm split export minilm --plan edgellm-out/partition/plan.json -o out/minilm-split
    """
    import json

    from rich.table import Table

    from edgellm.cli._common import console
    from edgellm.models import load
    from edgellm.partition.codecs import ALL_CODECS, Codec
    from edgellm.partition.cost import cost_table
    from edgellm.partition.planner import Network, make_plan, parse_size
    from edgellm.partition.profile import profile_blocks
    from edgellm.targets import load_target
    from edgellm.utils.fs import atomic_write_text

    chosen = (
        ALL_CODECS if codecs.strip() == "all" else tuple(c.strip() for c in codecs.split(",") if c.strip())
    )
    for c in chosen:
        Codec(c)  # an unknown codec fails before any profiling
    net = Network.parse(bandwidth, rtt, downlink)
    budget = parse_size(device_memory) if device_memory else None
    dev, srv = load_target(device), load_target(server)
    adapter = load(model)
    prof = profile_blocks(adapter, batch=1, seq=seq, runs=runs, codecs=chosen)
    table, basis = cost_table(adapter, prof, dev, srv, device_precision=precision, server_precision=precision)
    plan = make_plan(table, net, codecs=chosen, device_memory=budget, min_device_blocks=min_device_blocks)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "plan.json", json.dumps({**plan.to_dict(), "basis": basis}, indent=2) + "\n")
    plot_plan(plan, output / "plan.png", title=f"{adapter.name}: {dev.name} + {srv.name}, {bandwidth}, {rtt}")
    t = Table(
        title=f"{adapter.name} split between {dev.name} and {srv.name} ({bandwidth} up, RTT {rtt}); predicted ms"
    )
    for col in (
        "cut after",
        "codec",
        "device",
        "codec",
        "upload",
        "rtt",
        "server",
        "download",
        "total",
        "note",
    ):
        t.add_column(col)
    for c in plan.candidates:
        best = c is plan.best
        t.add_row(
            ("[bold]" if best else "") + str(c["after_block"] or "(input)"),
            c["codec"],
            *(
                f"{c[k]:.1f}"
                for k in (
                    "device_ms",
                    "codec_ms",
                    "upload_ms",
                    "rtt_ms",
                    "server_ms",
                    "download_ms",
                    "total_ms",
                )
            ),
            "BEST" if best else (c["reason"] or ""),
        )
    console().print(t)
    console().print(
        f"plan {plan.id}: cut after {plan.best['after_block'] or '(input)'} with {plan.best['codec']}, "
        f"{plan.best['total_ms']:.1f} ms predicted; host efficiency {basis['host_efficiency']:.3f} of "
        f"{basis['host_peak_gflops']:.0f} GFLOP/s; wrote {output / 'plan.json'} and {output / 'plan.png'}"
    )


def plot_plan(plan, path: Path, title: str) -> Path:
    """Predicted latency per cut (its best codec), stacked by component."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgellm.bench.report import save_figure

    per_cut: dict[int, dict] = {}
    for c in plan.candidates:
        if c["cut"] not in per_cut or c["total_ms"] < per_cut[c["cut"]]["total_ms"]:
            per_cut[c["cut"]] = c
    rows = [per_cut[k] for k in sorted(per_cut)]
    parts = ["device_ms", "codec_ms", "upload_ms", "rtt_ms", "server_ms", "download_ms"]
    fig, ax = plt.subplots(figsize=(2.0 + 0.7 * len(rows), 4.0))
    bottom = [0.0] * len(rows)
    for p in parts:
        vals = [r[p] for r in rows]
        ax.bar(range(len(rows)), vals, bottom=bottom, label=p.removesuffix("_ms"))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(
        [
            f"{r['after_block'] or 'input'}\n{r['codec']}" + ("" if r["feasible"] else "\n(infeasible)")
            for r in rows
        ],
        fontsize=7,
    )
    ax.set_ylabel("predicted ms")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
