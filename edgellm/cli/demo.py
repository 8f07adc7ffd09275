"""``edgellm demo``: the main job on the bundled models.

MiniLM -> server ONNX -> validation -> torch vs ONNX Runtime; the same model for every kind of target
(snapdragon-865: TFLite and .ort; nvidia-a100: TensorRT-ready Q/DQ ONNX) with parity, size, host latency
and the target's estimate; then INT8 and INT4 artifacts of MiniLM and tiny-llama with accuracy against
fp32 and latency against the fp32 artifact -> one report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from edgellm.cli._common import console

# (model, label, config factory): what the demo compresses. SmoothQuant's alpha 0.8 is the best of
# 0.3..0.9 measured on MiniLM with the bundled calibration text (benchmarks/bench_int8_minilm.py).
DEMO_COMPRESSION = [
    ("minilm", "int8-static-sq0.8", lambda q: q.SmoothQuant(smoothquant_alpha=0.8)),
    ("minilm", "w4a16-gptq-g32", lambda q: q.Int4WeightOnly(method="gptq", group_size=32)),
    ("tiny-llama", "int8-dynamic", lambda q: q.Int8Dynamic()),
    ("tiny-llama", "w4a16-gptq-g128", lambda q: q.Int4WeightOnly(method="gptq", group_size=128)),
]


def demo(
    model: str = typer.Option("minilm", "--model", "-m", help="Bundled model name or model directory."),
    output: Path = typer.Option(
        Path("edgellm-out"), "--output", "-o", help="Folder for artifacts and report."
    ),
    batch: str = typer.Option("1,8", "--batch", "-b", help="Comma-separated batch sizes."),
    seq: str = typer.Option("128", "--seq", "-s", help="Comma-separated sequence lengths."),
    runs: int = typer.Option(30, "--runs", "-n", min=1, help="Timed runs per shape and runner."),
    warmup: int = typer.Option(5, "--warmup", "-w", min=0, help="Warm-up runs per shape and runner."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="Intra-op threads for both runtimes."
    ),
    compress_models: bool = typer.Option(
        True, "--compress/--no-compress", help="Also build INT8 and INT4 artifacts of the bundled models."
    ),
    targets: bool = typer.Option(
        True, "--targets/--no-targets", help="Also export for the phone (TFLite, .ort) and TensorRT targets."
    ),
) -> None:
    """Run the main job: export for x86-server and every kind of target, validate, benchmark, compress, report.

    Writes OUTPUT/MODEL-x86-server/ (the fp32 artifact), OUTPUT/targets/ (one artifact per target,
    format and precision), one folder per compressed artifact, OUTPUT/report.json, OUTPUT/report.md,
    OUTPUT/latency.png, OUTPUT/targets.png and OUTPUT/compression.png.

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
    steps = 4 + int(compress_models) + int(targets)
    step = 3
    out.print(f"[bold]1/{steps}[/] loading [cyan]{model}[/]")
    adapter = load(model)
    out.print(
        f"    {adapter.family} {adapter.task}, {adapter.num_parameters / 1e6:.1f} M parameters, "
        f"{len(adapter.blocks)} blocks"
    )
    out.print(
        f"[bold]2/{steps}[/] exporting for [cyan]x86-server[/] (ONNX Runtime) and validating against torch"
    )
    art = export(adapter, "x86-server", output / f"{adapter.name}-x86-server", force=True)
    m = art.manifest
    out.print(f"    {art.path}  fusions: {m['recipe']['fusion'].get('ops', 'none')}")
    out.print(f"[bold]3/{steps}[/] benchmarking torch fp32 vs ONNX Runtime fp32, interleaved")
    rep = bench_artifact(
        art, batches=batches, seqs=seqs, runs=runs, warmup=warmup, threads=threads, reference=True
    ).to_dict()
    matrix: list[dict[str, Any]] = []
    if targets:
        from edgellm.bench.targets import bench_matrix, export_matrix

        step += 1
        out.print(
            f"[bold]{step}/{steps}[/] exporting for every kind of target (phone: TFLite, .ort; GPU: TensorRT), "
            "then timing each on this host, interleaved (batch 1, seq 128)"
        )
        mrows = export_matrix(
            adapter, output / "targets", log=out.print, reuse={("x86-server", "onnx", "fp32"): art}
        )
        bench_matrix(mrows, runs=max(10, runs // 2), threads=threads)
        matrix = [r.to_dict() for r in mrows]
    rows: list[dict[str, Any]] = []
    if compress_models:
        step += 1
        out.print(
            f"[bold]{step}/{steps}[/] compressing the bundled models (INT8, INT4), accuracy and speed vs fp32"
        )
        rows = run_compression(output, runs=max(5, runs // 2), log=out.print)
    out.print(f"[bold]{steps}/{steps}[/] writing the report")
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
        "targets": matrix,
        "compression": rows,
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
    write_json(report, output / "report.json")
    plot_latency(rep, output / "latency.png", title=f"{adapter.name}: torch fp32 vs ONNX Runtime fp32")
    if rows:
        plot_compression(rows, output / "compression.png")
    if matrix:
        plot_targets(matrix, output / "targets.png", title=f"{adapter.name} per target (batch 1, seq 128)")
    atomic_write_text(output / "report.md", render_markdown(report))
    print_table(rep, title=f"{adapter.name} on this host: torch vs ONNX Runtime (x86-server artifact)")
    for suite in ("fixed", "random"):
        for name, v in m["parity"][suite].items():
            out.print(
                f"parity {suite:6s} {name}: max_abs={v['max_abs']:.2e} cosine_min={v['cosine_min']:.6f}"
            )
    if matrix:
        print_targets(matrix)
    if rows:
        print_compression(rows)
    plots = ["latency.png"] + (["targets.png"] if matrix else []) + (["compression.png"] if rows else [])
    out.print(f"report: {output / 'report.md'}  (json: {output / 'report.json'}, plots: {', '.join(plots)})")


TARGET_COLUMNS = [
    ("target", "target"),
    ("format", "format"),
    ("precision", "precision"),
    ("size_mb", "size MB"),
    ("parity_cosine_min", "parity cos (vs its reference)"),
    ("cosine_vs_fp32", "cos vs fp32"),
    ("host_p50_ms", "host p50 ms"),
    ("estimate_ms", "target est. ms"),
]


def _cell(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if key in ("parity_cosine_min", "cosine_vs_fp32"):
        return f"{v:.5f}"
    return (
        f"{v:.1f}"
        if isinstance(v, float) and abs(v) >= 10
        else (f"{v:.2f}" if isinstance(v, float) else str(v))
    )


def target_cells(r: dict[str, Any]) -> list[str]:
    cells = [_cell(k, r.get(k)) for k, _ in TARGET_COLUMNS]
    if r.get("engine") == "pending":
        cells[6] = "engine pending"
    if r.get("error"):
        cells[3:] = ["failed: " + r["error"][:60], "", "", "", ""]
    return cells


def print_targets(matrix: list[dict[str, Any]]) -> None:
    from rich.table import Table

    t = Table(
        title="one model, every target: parity, size, latency on this host, roofline estimate on the target"
    )
    for _, head in TARGET_COLUMNS:
        t.add_column(head)
    for r in matrix:
        t.add_row(*target_cells(r))
    console().print(t)
    kept = [r for r in matrix if r.get("kept_fp32")]
    for r in kept:
        console().print(
            f"note: {r['target']} {r['format']} {r['precision']} keeps in fp32: {', '.join(r['kept_fp32'])}"
        )
    console().print("target est. = roofline on the target profile (an estimate, not a measurement)")


def plot_targets(matrix: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Host p50 latency of each artifact, and the cost-model estimate on its target, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgellm.bench.report import save_figure

    ok = [r for r in matrix if not r.get("error")]
    labels = [f"{r['target']}\n{r['format']} {r['precision']}" for r in ok]
    xs = range(len(ok))
    fig, ax = plt.subplots(figsize=(2.0 + 1.2 * len(ok), 4.2))
    ax.bar(
        [x - 0.2 for x in xs],
        [r["host_p50_ms"] or float("nan") for r in ok],
        0.4,
        label="this host, p50 (measured)",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [r["estimate_ms"] or float("nan") for r in ok],
        0.4,
        label="target, roofline (estimate)",
        hatch="//",
        alpha=0.7,
    )
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7, rotation=30, ha="right")
    ax.set_yscale("log")  # a phone's tens of ms and a GPU's tenths on one axis
    ax.set_ylabel("ms per request (log)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def run_compression(output: Path, *, runs: int, log: Any) -> list[dict[str, Any]]:
    """Compress each (model, recipe) of :data:`DEMO_COMPRESSION`; one summary row each."""
    from edgellm.compress import quant
    from edgellm.compress.api import compress
    from edgellm.compress.evaluate import accuracy_text

    rows = []
    for model, label, make in DEMO_COMPRESSION:
        log(f"    {model} -> {label}")
        res = compress(
            model,
            make(quant),
            output=output / f"{model}-{label}",
            force=True,
            runs=runs,
            eval_sequences=128,
            progress=False,
        )
        rep, ev = res.report, res.artifact.manifest["evaluation"]
        acc = ev["accuracy"]
        rows.append(
            {
                "model": model,
                "recipe": label,
                "artifact": str(res.artifact.path),
                "accuracy": accuracy_text(acc),
                "accuracy_detail": acc,
                "size_mb": round(res.artifact.size_bytes / 2**20, 2),
                "fp32_size_mb": rep["fp32"]["size_mb"],
                "p50_ms": ev["speed"]["p50_ms"],
                "fp32_p50_ms": rep["fp32"]["p50_ms"],
                "latency_ratio": round(ev["speed"]["ratio_vs_fp32"], 3),
                "shape": "batch 8, seq 128" if acc["metric"] == "embedding" else "batch 1, seq 128",
                "warnings": rep["warnings"],
            }
        )
    return rows


def print_compression(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    t = Table(title="compressed artifacts vs fp32 (ONNX Runtime, this host, same run)")
    for col in (
        "model",
        "recipe",
        "accuracy vs fp32",
        "size MB",
        "p50 ms",
        "fp32 p50 ms",
        "latency ratio",
        "shape",
    ):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["model"],
            r["recipe"],
            r["accuracy"],
            f"{r['size_mb']:.1f} / {r['fp32_size_mb']:.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['fp32_p50_ms']:.1f}",
            f"{r['latency_ratio']:.2f}",
            r["shape"],
        )
    console().print(t)
    for r in rows:
        for w in r["warnings"]:
            console().print(f"[yellow]warning:[/] {r['model']}: {w}")


def plot_compression(rows: list[dict[str, Any]], path: Path) -> Path:
    """Latency of each compressed artifact relative to its fp32 artifact, and size relative to fp32."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model']}\n{r['recipe']}" for r in rows]
    lat = [r["latency_ratio"] for r in rows]
    size = [r["size_mb"] / r["fp32_size_mb"] for r in rows]
    fig, ax = plt.subplots(figsize=(2.0 + 1.8 * len(rows), 3.8))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], lat, 0.4, label="p50 latency / fp32")
    ax.bar([x + 0.2 for x in xs], size, 0.4, label="file size / fp32")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("relative to fp32")
    ax.set_title("compressed artifacts (ONNX Runtime)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from edgellm.bench.report import save_figure

    return save_figure(fig, path)


def render_markdown(report: dict[str, Any]) -> str:
    """The human report: what was done, parity, the latency table, ratios, compression and the plots."""
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
    if report.get("targets"):
        lines += [
            "## Every target (batch 1, sequence 128)",
            "",
            "Host p50 is measured on this machine with all runners interleaved in one run; the target",
            "figure is the roofline estimate on the target's profile, not a measurement.",
            "",
            "| " + " | ".join(h for _, h in TARGET_COLUMNS) + " |",
            "|" + "---|" * len(TARGET_COLUMNS),
        ]
        lines += ["| " + " | ".join(target_cells(r)) + " |" for r in report["targets"]]
        lines += [""] + [
            f"- {r['target']} {r['format']} {r['precision']} keeps in fp32: {', '.join(r['kept_fp32'])}"
            for r in report["targets"]
            if r.get("kept_fp32")
        ]
        lines += ["", "![targets](targets.png)", ""]
    if report.get("compression"):
        lines += [
            "## Compressed artifacts (accuracy on held-out text, latency vs the fp32 artifact)",
            "",
            "| model | recipe | accuracy vs fp32 | size MB (fp32) | p50 ms | fp32 p50 ms | ratio | shape |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in report["compression"]:
            lines.append(
                f"| {r['model']} | {r['recipe']} | {r['accuracy']} | {r['size_mb']:.1f} ({r['fp32_size_mb']:.1f}) "
                f"| {r['p50_ms']:.1f} | {r['fp32_p50_ms']:.1f} | {r['latency_ratio']:.2f} | {r['shape']} |"
            )
        lines += ["", "![compression](compression.png)", ""]
        for r in report["compression"]:
            lines += [f"- warning ({r['model']}): {w}" for w in r["warnings"]]
    return "\n".join(lines) + "\n"
