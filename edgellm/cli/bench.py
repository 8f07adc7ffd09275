"""``edgellm bench``: latency percentiles, throughput, memory and size of an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgellm.cli._common import emit_json


def bench(
    artifact: Path = typer.Argument(..., help="Artifact directory written by 'edgellm export'."),
    batch: str = typer.Option("1,8", "--batch", "-b", help="Comma-separated batch sizes."),
    seq: str = typer.Option("128", "--seq", "-s", help="Comma-separated sequence lengths."),
    runs: int = typer.Option(50, "--runs", "-n", min=1, help="Timed runs per shape."),
    warmup: int = typer.Option(5, "--warmup", "-w", min=0, help="Untimed warm-up runs per shape."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="Intra-op threads (default: runtime's)."
    ),
    reference: bool = typer.Option(
        False, "--reference", help="Also time the torch fp32 source model, interleaved."
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the JSON report here."),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON report to stdout."),
) -> None:
    """Measure p50/p90/p99 latency, throughput, peak memory and model size of ARTIFACT.

    Example: edgellm bench edgellm-out/minilm-x86-server --batch 1,8 --seq 128 --runs 50 --warmup 5 --reference
    """
    from edgellm.bench import bench_artifact, parse_int_list
    from edgellm.bench.report import print_table, write_json

    batches = parse_int_list(batch, "--batch")
    seqs = parse_int_list(seq, "--seq")
    rep = bench_artifact(
        artifact,
        batches=batches,
        seqs=seqs,
        runs=runs,
        warmup=warmup,
        threads=threads,
        reference=reference,
        progress=not json_out,
    ).to_dict()
    if output is not None:
        write_json(rep, output)
    if json_out:
        emit_json(rep)
    else:
        print_table(rep, title=f"bench {artifact}")
