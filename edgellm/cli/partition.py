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
    generate_tokens: Optional[int] = typer.Option(
        None,
        "--generate-tokens",
        min=1,
        help="Causal LMs: plan split generation of N tokens after a --seq prompt (a round trip per token).",
    ),
    output: Path = typer.Option(
        Path("edgellm-out/partition"), "--output", "-o", help="Folder for plan.json and plan.png."
    ),
) -> None:
    """Profile MODEL, predict every cut on DEVICE + SERVER over the network, print the table, plot it.

    Example: edgellm partition minilm --device snapdragon-865 --server x86-server --bandwidth 10mbit --rtt 50ms --device-memory 512MB --min-device-blocks 1

    Then: edgellm split export minilm --plan edgellm-out/partition/plan.json -o out/minilm-split
    """
    from rich.table import Table

    from edgellm.cli._common import console
    from edgellm.models import load
    from edgellm.partition import Network, plan
    from edgellm.partition.report import PLAN_COLUMNS, write_plan

    net = Network.parse(bandwidth, rtt, downlink)
    adapter = load(model)
    split = plan(
        adapter,
        device,
        server,
        net,
        device_memory=device_memory,
        min_device_blocks=min_device_blocks,
        precision=precision,
        codecs=codecs,
        seq=seq,
        runs=runs,
        generate_tokens=generate_tokens,
    )
    dev, srv, basis = split.device, split.server, split.basis
    write_plan(split, output, title=f"{adapter.name}: {dev} + {srv}, {bandwidth}, {rtt}")
    t = Table(title=f"{adapter.name} split between {dev} and {srv} ({bandwidth} up, RTT {rtt}); predicted ms")
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
    for c in split.candidates:
        best = c is split.best
        t.add_row(
            ("[bold]" if best else "") + str(c["after_block"] or "(input)"),
            c["codec"],
            *(f"{c[k]:.1f}" for k in PLAN_COLUMNS),
            "BEST" if best else (c["reason"] or ""),
        )
    console().print(t)
    if generate_tokens is not None:
        b = split.best
        console().print(
            f"generation of {generate_tokens} tokens: the rows show one decode step; chosen: time to first token "
            f"{b['ttft_ms']:.1f} ms, then {b['per_token_ms']:.1f} ms per token ({b['total_ms']:.0f} ms in all)",
            markup=False,
        )
    console().print(
        f"plan {split.id}: cut after {split.best['after_block'] or '(input)'} with {split.best['codec']}, "
        f"{split.best['total_ms']:.1f} ms predicted; host efficiency {basis['host_efficiency']:.3f} of "
        f"{basis['host_peak_gflops']:.0f} GFLOP/s; wrote {output / 'plan.json'} and {output / 'plan.png'}"
    )
