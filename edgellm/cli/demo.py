"""``edgellm demo``: bundled MiniLM -> server ONNX -> validation -> torch vs ONNX Runtime -> report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from edgellm.cli._common import console


def demo(
    model: str = typer.Option("minilm", "--model", "-m", help="Bundled model name or model directory."),
    output: Path = typer.Option(
        Path("edgellm-out"), "--output", "-o", help="Folder for the artifact and report."
    ),
    batch: str = typer.Option("1,8", "--batch", "-b", help="Comma-separated batch sizes."),
    seq: str = typer.Option("128", "--seq", "-s", help="Comma-separated sequence lengths."),
    runs: int = typer.Option(30, "--runs", "-n", min=1, help="Timed runs per shape and runner."),
    warmup: int = typer.Option(5, "--warmup", "-w", min=0, help="Warm-up runs per shape and runner."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="Intra-op threads for both runtimes."
    ),
) -> None:
    """Run the main job on the bundled model: export for x86-server, validate, benchmark, write a report.

    Writes OUTPUT/MODEL-x86-server/ (the artifact), OUTPUT/report.json, OUTPUT/report.md and
    OUTPUT/latency.png.

    Example: edgellm demo --runs 30 --batch 1,8 --seq 128
    """
    from edgellm.bench import bench_artifact, parse_int_list
    from edgellm.bench.report import plot_latency, print_table, write_json
    from edgellm.export import export
    from edgellm.models import load
    from edgellm.utils.fs import atomic_write_text

    batches, seqs = parse_int_list(batch, "--batch"), parse_int_list(seq, "--seq")
    out = console()
    t0 = time.perf_counter()
    out.print(f"[bold]1/4[/] loading [cyan]{model}[/]")
    adapter = load(model)
    out.print(
        f"    {adapter.family} {adapter.task}, {adapter.num_parameters / 1e6:.1f} M parameters, "
        f"{len(adapter.blocks)} blocks"
    )
    out.print("[bold]2/4[/] exporting for [cyan]x86-server[/] (ONNX Runtime) and validating against torch")
    art = export(adapter, "x86-server", output / f"{adapter.name}-x86-server", force=True)
    m = art.manifest
    out.print(f"    {art.path}  fusions: {m['recipe']['fusion'].get('ops', 'none')}")
    out.print("[bold]3/4[/] benchmarking torch fp32 vs ONNX Runtime fp32, interleaved")
    rep = bench_artifact(
        art, batches=batches, seqs=seqs, runs=runs, warmup=warmup, threads=threads, reference=True
    ).to_dict()
    out.print("[bold]4/4[/] writing the report")
    report = {
        "model": m["model"],
        "artifact": str(art.path),
        "export": {
            "exporter": m["recipe"]["exporter"],
            "fusion": m["recipe"]["fusion"],
            "parity": m["parity"],
            "size_mb": round(art.size_bytes / 2**20, 2),
        },
        "bench": rep,
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
    write_json(report, output / "report.json")
    plot_latency(rep, output / "latency.png", title=f"{adapter.name}: torch fp32 vs ONNX Runtime fp32")
    atomic_write_text(output / "report.md", render_markdown(report))
    print_table(rep, title=f"{adapter.name} on this host: torch vs ONNX Runtime (x86-server artifact)")
    par = m["parity"]
    for suite in ("fixed", "random"):
        for name, v in par[suite].items():
            out.print(
                f"parity {suite:6s} {name}: max_abs={v['max_abs']:.2e} cosine_min={v['cosine_min']:.6f}"
            )
    out.print(
        f"report: {output / 'report.md'}  (json: {output / 'report.json'}, plot: {output / 'latency.png'})"
    )


def render_markdown(report: dict[str, Any]) -> str:
    """The human report: what was done, parity, the latency table, ratios and the plot."""
    from edgellm.bench.report import markdown_table

    bench, exp = report["bench"], report["export"]
    lines = [
        f"# edgellm demo: {report['model']['name']}",
        "",
        f"- model: {report['model']['name']} ({report['model']['family']}), "
        f"{report['model']['num_parameters']:,} parameters",
        f"- artifact: `{report['artifact']}` ({exp['size_mb']} MB, exporter {exp['exporter']})",
        f"- ONNX Runtime fusions: {json.dumps(exp['fusion'].get('ops', {}))}",
        f"- host: {bench['host'].get('cpu')} ({bench['host'].get('logical_cores')} logical cores; "
        f"{', '.join(bench['host'].get('features', []))})",
        f"- runs: {bench['config']['runs']} timed, {bench['config']['warmup']} warm-up, runners interleaved",
        "",
        "## Parity against torch fp32",
        "",
        "| suite | output | max abs error | min cosine |",
        "|---|---|---|---|",
    ]
    for suite in ("fixed", "random"):
        for name, v in exp["parity"][suite].items():
            lines.append(f"| {suite} | {name} | {v['max_abs']:.2e} | {v['cosine_min']:.6f} |")
    lines += ["", "## Latency", "", markdown_table(bench), ""]
    for pair, vals in bench.get("ratios_p50", {}).items():
        lines.append(f"- p50 ratio {pair}: " + ", ".join(f"{k} = {v:.3f}" for k, v in vals.items()))
    lines += ["", "![latency](latency.png)", ""]
    return "\n".join(lines)
