"""The run's report: ``OUTPUT/report.md`` (tables, lineage, stage timings), ``report.json`` and PNG plots:
latency per target and precision, accuracy vs size, latency per cut, torch vs ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgellm.bench.report import markdown_table
from edgellm.partition.report import PLAN_COLUMNS
from edgellm.utils.fs import atomic_write_text
from edgellm.utils.plots import save_figure

TARGET_COLUMNS = [
    ("target", "target"),
    ("format", "format"),
    ("precision", "precision"),
    ("size_mb", "size MB"),
    ("parity_cosine_min", "parity cos (vs its reference)"),
    ("cosine_vs_fp32", "cos vs fp32"),
    ("cosine_vs_fp32_arm64", "cos vs fp32 (arm64)"),
    ("host_p50_ms", "host p50 ms"),
    ("estimate_ms", "target est. ms"),
]
SPLIT_PARTS = ("device_ms", "encode_ms", "network_ms", "server_ms", "decode_ms", "total_ms")


def _cell(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if key in ("parity_cosine_min", "cosine_vs_fp32", "cosine_vs_fp32_arm64"):
        return f"{v:.5f}"
    return (
        f"{v:.1f}"
        if isinstance(v, float) and abs(v) >= 10
        else (f"{v:.2f}" if isinstance(v, float) else str(v))
    )


def target_cells(r: dict[str, Any]) -> list[str]:
    keys = [k for k, _ in TARGET_COLUMNS]
    cells = [_cell(k, r.get(k)) for k in keys]
    if r.get("arm64_skipped") and r.get("cosine_vs_fp32_arm64") is None:
        cells[keys.index("cosine_vs_fp32_arm64")] = "not checked"
    if r.get("engine") == "pending":
        cells[keys.index("host_p50_ms")] = "engine pending"
    if r.get("error"):
        first = keys.index("size_mb")
        cells[first:] = ["failed: " + r["error"][:60]] + [""] * (len(keys) - first - 1)
    return cells


def arm64_notes(matrix: list[dict[str, Any]]) -> list[str]:
    """Why the arm64 column is empty where it is (each reason once), and what it measures."""
    reasons = dict.fromkeys(r["arm64_skipped"] for r in matrix if r.get("arm64_skipped"))
    notes = [f"arm64 not checked: {why}" for why in reasons]
    cpus = dict.fromkeys(r["arm64_cpu"] for r in matrix if r.get("arm64_cpu"))
    if cpus:
        notes.append(
            "cos vs fp32 (arm64): the same fixed sentences on arm64 kernels, emulated (qemu-user, "
            + ", ".join(cpus)
            + "); no timing is taken under emulation"
        )
    return notes


# -- plots -------------------------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_targets(matrix: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Latency per target and precision: host p50 of each artifact beside the target's roofline estimate."""
    plt = _plt()
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


def _quality(acc: dict[str, Any]) -> tuple[float, str]:
    """One accuracy number per model family, and its axis label."""
    if acc.get("metric") == "perplexity":
        return 100.0 * acc["perplexity_increase"], "perplexity increase vs fp32 (%)"
    return acc["cosine_mean"], "mean cosine vs fp32"


def plot_accuracy_size(rows: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy vs size: one panel per model, fp32 and each compressed artifact as points."""
    plt = _plt()
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(4.4 * len(models), 3.8), squeeze=False)
    for ax, m in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == m]
        label = ""
        for r in mine:
            y, label = _quality(r["accuracy_detail"])
            ax.scatter(r["size_mb"], y, s=40)
            ax.annotate(r["recipe"], (r["size_mb"], y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        fp32_y = 0.0 if "perplexity" in label else 1.0
        ax.scatter(mine[0]["fp32_size_mb"], fp32_y, marker="s", color="black", s=40)
        ax.annotate(
            "fp32", (mine[0]["fp32_size_mb"], fp32_y), fontsize=7, xytext=(4, 4), textcoords="offset points"
        )
        ax.set_xlabel("artifact size (MB)")
        ax.set_ylabel(label)
        ax.set_title(m, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("accuracy vs size (held-out text, ONNX Runtime)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_split(check: dict[str, Any], predicted: dict[str, Any], path: Path) -> Path:
    """The split check's measured time per part on loopback beside the plan's prediction on the targets."""
    plt = _plt()
    meas = [check["ms"][k]["p50"] for k in SPLIT_PARTS[:-1]]
    pred = [
        predicted.get("device_ms", 0.0),
        predicted.get("codec_ms", 0.0),
        predicted.get("upload_ms", 0.0) + predicted.get("rtt_ms", 0.0) + predicted.get("download_ms", 0.0),
        predicted.get("server_ms", 0.0),
        0.0,
    ]
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    left = [0.0, 0.0]
    for i, k in enumerate(SPLIT_PARTS[:-1]):
        vals = [meas[i], pred[i]]
        ax.barh([0, 1], vals, left=left, label=k.removesuffix("_ms"))
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks([0, 1])
    ax.set_yticklabels(["measured here\n(loopback, p50)", "predicted\n(targets + network)"], fontsize=8)
    ax.set_xlabel("ms per request")
    ax.legend(fontsize=7, ncol=3)
    ax.set_title("split inference: where the time goes", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


# -- console -----------------------------------------------------------------------------------------------
def print_targets(matrix: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    from edgellm.utils.console import console

    t = Table(title=title)
    for _, head in TARGET_COLUMNS:
        t.add_column(head)
    for r in matrix:
        t.add_row(*target_cells(r))
    console().print(t)
    for r in matrix:
        if r.get("kept_fp32"):
            console().print(
                f"note: {r['target']} {r['format']} {r['precision']} keeps in fp32: {', '.join(r['kept_fp32'])}"
            )
    for note in arm64_notes(matrix):
        console().print(f"note: {note}")
    console().print("target est. = roofline on the target profile (an estimate, not a measurement)")


def print_compression(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from edgellm.utils.console import console

    t = Table(title="compressed artifacts vs fp32 (ONNX Runtime, this host, same run)")
    for col in ("model", "recipe", "accuracy vs fp32", "size MB", "p50 ms", "fp32 p50 ms", "ratio", "shape"):
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
            console().print(f"[yellow]warning:[/] {r['model']}: {w}", markup=True)


def print_summary(summary: dict[str, Any]) -> None:
    """The tables a user reads after ``edgellm run``: bench, targets, compression, split, stages."""
    from rich.table import Table

    from edgellm.bench.report import print_table
    from edgellm.utils.console import console

    res = summary["results"]
    for name, b in res.items():
        if name.startswith("bench:"):
            if b.get("host"):
                print_table(b["host"], title=f"{b['model']}: torch fp32 vs ONNX Runtime fp32 (x86-server)")
            print_targets(b["matrix"], f"{b['model']}: every target (batch 1, seq 128)")
    rows = compression_rows(res)
    if rows:
        print_compression(rows)
    if "partition" in res:
        p = res["partition"]
        b = p["best"]
        console().print(
            f"split plan {p['id']} ({p['device']} + {p['server']}, {p['network']['bandwidth']} up, RTT "
            f"{p['network']['rtt']}): cut after {b['after_block'] or '(input)'} with {b['codec']}, "
            f"{b['total_ms']:.1f} ms predicted",
            markup=False,
        )
    if "split" in res:
        c = res["split"]["check"]
        console().print(
            f"split check through the real server on loopback: {c['requests']} requests, cosine vs unsplit "
            f">= {c['cosine_min']:.5f}, p50 {c['ms']['total_ms']['p50']:.1f} ms "
            f"(device {c['ms']['device_ms']['p50']:.1f}, server {c['ms']['server_ms']['p50']:.1f}), "
            f"{c['upload_bytes']} B up",
            markup=False,
        )
    from edgellm.pipeline.run_generate import generation_rows, print_generation

    if gen := generation_rows(res):
        print_generation(gen)
    t = Table(title=f"edgellm run {summary['recipe']['name']}: stages")
    for col in ("stage", "status", "seconds", "when it last ran"):
        t.add_column(col)
    for s in summary["stages"]:
        t.add_row(s["stage"], s["status"], f"{s['seconds']:.1f}", f"{s.get('ran_s', s['seconds']):.1f}")
    console().print(t)


def compression_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for k, v in results.items() if k.startswith("compress:")]


# -- the report --------------------------------------------------------------------------------------------
def write_report(summary: dict[str, Any], out: Path) -> Path:
    """Write ``report.json``, the plots and ``report.md`` under ``out``; returns the markdown's path."""
    from edgellm.bench.report import plot_latency

    res = summary["results"]
    plots: dict[str, str] = {}
    for name, b in res.items():
        if not name.startswith("bench:"):
            continue
        m = b["model"]
        if b.get("host"):
            plots[f"latency:{m}"] = plot_latency(
                b["host"], out / f"latency-{m}.png", title=f"{m}: torch fp32 vs ONNX Runtime fp32"
            ).name
        if any(not r.get("error") for r in b["matrix"]):
            plots[f"targets:{m}"] = plot_targets(
                b["matrix"], out / f"targets-{m}.png", title=f"{m}: latency per target and precision"
            ).name
    rows = compression_rows(res)
    if rows:
        plots["accuracy_size"] = plot_accuracy_size(rows, out / "accuracy-size.png").name
    if "partition" in res:
        plots["plan"] = str(Path(res["partition"]["plot"]).resolve().relative_to(out.resolve()))
    if "split" in res:
        plots["split"] = plot_split(res["split"]["check"], res["split"]["predicted"], out / "split.png").name
    from edgellm.pipeline.run_generate import generation_rows

    if gen := generation_rows(res):
        from edgellm.bench.generation import plot_generate

        plots["generation"] = plot_generate(
            [{**r["rate"], "artifact": r["label"]} for r in gen], out / "generation.png"
        ).name
    summary = {**summary, "plots": plots}
    atomic_write_text(out / "report.json", json.dumps(summary, indent=2, default=str) + "\n")
    atomic_write_text(out / "report.md", render_markdown(summary))
    return out / "report.md"


def render_markdown(s: dict[str, Any]) -> str:
    res, plots = s["results"], s["plots"]
    rec = s["recipe"]
    lines = [
        f"# edgellm run: {rec['name']}",
        "",
        f"- recipe: `{rec['path']}` (sha256 {rec['sha256'][:16]})",
        f"- output: `{s['output']}`; total wall time {s['elapsed_s']:.1f} s",
        "",
    ]
    if "data" in res:
        d = res["data"]
        lines += ["## Data", "", f"- dataset version: `{d['ref']}`"]
        if d.get("clean"):
            c = d["clean"]
            lines.append(
                f"- cleaned: {c.get('documents_in')} documents in, {c.get('documents_out')} out; "
                f"duplicates {json.dumps(c.get('duplicates'))}; PII {json.dumps(c.get('pii'))}"
            )
        lines.append("")
    if "train" in res:
        t = res["train"]["summary"]
        f = t.get("final", {})
        lines += [
            "## Training",
            "",
            f"- {t['steps']} steps on {t['processes']} process(es), {t['tokens_per_s']:.0f} tokens/s, "
            f"{t['seconds']:.0f} s; final loss {f.get('loss', float('nan')):.4f}, held-out loss "
            f"{f.get('eval_loss', float('nan')):.4f}"
            + (f", perplexity {f['eval_ppl']:.2f}" if "eval_ppl" in f else "")
            + (f" (unigram baseline {t['unigram_ppl']})" if "unigram_ppl" in t else "")
            + (
                f", accuracy {f['eval_accuracy']:.3f}, macro-F1 {f['eval_macro_f1']:.3f} "
                f"(majority class {t['majority_accuracy']:.3f})"
                if "eval_accuracy" in f
                else ""
            ),
            f"- model: `{res['train']['model']}`",
            "",
        ]
    if "prune" in res:
        pr = res["prune"]
        rec = pr["record"]
        lines += [
            "## Structured pruning",
            "",
            "- removed: "
            + ", ".join(
                f"{k} {rec['config'][k]}"
                for k in ("heads", "ffn", "blocks", "channels")
                if rec["config"].get(k)
            )
            + f" (score {rec['config']['score']}, scope {rec['config'].get('scope', 'layer')}); parameters "
            f"{rec['params_before']:,} -> {rec['params_after']:,} ({rec['params_ratio']:.3f})",
        ]
        if "report" in pr:
            r = pr["report"]
            lines.append(
                f"- FLOPs {r['flops']['ratio']:.3f} of the unpruned model's; ONNX {r['onnx_size_mb']['pruned']:.1f} MB "
                f"vs {r['onnx_size_mb']['unpruned']:.1f} MB; ONNX Runtime p50 {r['latency']['p50_ms']['pruned']:.2f} ms "
                f"vs {r['latency']['p50_ms']['unpruned']:.2f} ms ({r['latency']['ratio']:.2f}x, batch "
                f"{r['latency']['batch']}, same run)"
            )
        lines += [f"- quality vs the unpruned model, {k}: {v}" for k, v in pr["quality_text"].items()]
        lines += [f"- model: `{pr['model']}`", ""]
    if compression_rows(res):
        lines += [
            "## Compressed artifacts (accuracy on held-out text, latency vs the fp32 artifact, same run)",
            "",
            "| model | recipe | accuracy vs fp32 | size MB (fp32) | p50 ms | fp32 p50 ms | ratio | shape |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in compression_rows(res):
            lines.append(
                f"| {r['model']} | {r['recipe']} | {r['accuracy']} | {r['size_mb']:.1f} ({r['fp32_size_mb']:.1f}) "
                f"| {r['p50_ms']:.1f} | {r['fp32_p50_ms']:.1f} | {r['latency_ratio']:.2f} | {r['shape']} |"
            )
        lines += ["", f"![accuracy vs size]({plots['accuracy_size']})", ""]
        for r in compression_rows(res):
            lines += [f"- warning ({r['model']}): {w}" for w in r["warnings"]]
        lines.append("")
    for name, b in res.items():
        if not name.startswith("bench:"):
            continue
        m = b["model"]
        if b.get("host"):
            host = b["host"]
            lines += [
                f"## {m}: torch fp32 vs ONNX Runtime fp32 on this host",
                "",
                f"- host: {host['host'].get('cpu')} ({host['host'].get('logical_cores')} logical cores)",
                f"- runs: {host['config']['runs']} timed, {host['config']['warmup']} warm-up, interleaved",
                "",
                markdown_table(host),
                "",
            ]
            for pair, vals in host.get("ratios_p50", {}).items():
                lines.append(f"- p50 ratio {pair}: " + ", ".join(f"{k} = {v:.3f}" for k, v in vals.items()))
            lines += ["", f"![latency]({plots[f'latency:{m}']})", ""]
        lines += [
            f"## {m}: every target (batch 1, sequence 128)",
            "",
            "Host p50 is measured on this machine with all runners interleaved in one run; the target",
            "figure is the roofline estimate on the target's profile, not a measurement.",
            "",
            "| " + " | ".join(h for _, h in TARGET_COLUMNS) + " |",
            "|" + "---|" * len(TARGET_COLUMNS),
        ]
        lines += ["| " + " | ".join(target_cells(r)) + " |" for r in b["matrix"]]
        lines += [""] + [
            f"- {r['target']} {r['format']} {r['precision']} keeps in fp32: {', '.join(r['kept_fp32'])}"
            for r in b["matrix"]
            if r.get("kept_fp32")
        ]
        lines += [f"- {note}" for note in arm64_notes(b["matrix"])]
        if f"targets:{m}" in plots:
            lines += ["", f"![latency per target]({plots[f'targets:{m}']})", ""]
    if "partition" in res:
        p = res["partition"]
        lines += [
            f"## Split plan: {p['model']} on {p['device']} + {p['server']} "
            f"({p['network']['bandwidth']} up, RTT {p['network']['rtt']})",
            "",
            "| cut after | codec | device ms | codec ms | upload ms | rtt ms | server ms | download ms | total ms | note |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in sorted(p["candidates"], key=lambda c: c["total_ms"])[:12]:
            note = "BEST" if c == p["best"] else (c.get("reason") or "")
            lines.append(
                f"| {c['after_block'] or '(input)'} | {c['codec']} | "
                + " | ".join(f"{c[k]:.1f}" for k in PLAN_COLUMNS)
                + f" | {note} |"
            )
        lines += ["", "The 12 fastest of every cut x codec; predicted, not measured.", ""]
        lines += [f"![latency per cut]({plots['plan']})", ""]
    if "split" in res:
        sp = res["split"]
        c = sp["check"]
        path = (
            "the device half, the codec, HTTP and the server half served by edgellm's batching server"
            if c.get("served", True)
            else "the device half alone (this plan runs every block on the device; no server)"
        )
        lines += [
            "## Split check through the real server on loopback",
            "",
            f"- plan {sp['plan_id']}: cut after {sp['after_block'] or '(input)'}, codec {sp['codec']}; "
            f"artifacts in `{sp['dir']}`",
            f"- export parity of the chain: cosine {sp['export_parity']['cosine_min']:.5f} "
            f"(needs {sp['export_parity'].get('min_cosine_required')})",
            f"- {c['requests']} requests through {path}: cosine vs the unsplit model >= "
            f"{c['cosine_min']:.5f}; {c['upload_bytes']} B up, {c['download_bytes']} B down per request",
            "",
            "Measured on this host over loopback, each request at its sentence's own length; the plan",
            "predicts the phone, the link and the server at sequence length 128 (see the plot).",
            "",
            "| part | p50 ms | p90 ms |",
            "|---|---|---|",
        ]
        lines += [
            f"| {k.removesuffix('_ms')} | {c['ms'][k]['p50']:.2f} | {c['ms'][k]['p90']:.2f} |"
            for k in SPLIT_PARTS
        ]
        lines += ["", f"![split]({plots['split']})", ""]
    from edgellm.pipeline.run_generate import generation_markdown, generation_rows

    if gen := generation_rows(res):
        lines += generation_markdown(gen, plots.get("generation"))
    lines += ["## Stages", "", "| stage | status | seconds | seconds when it last ran |", "|---|---|---|---|"]
    lines += [
        f"| {t['stage']} | {t['status']} | {t['seconds']:.1f} | {t.get('ran_s', t['seconds']):.1f} |"
        for t in s["stages"]
    ]
    lines += [
        "",
        "A stage is skipped when its inputs (its recipe section, the dataset version, the source model's",
        "hash, the stages it depends on) are unchanged since it last finished; every artifact's",
        "manifest records that lineage.",
        "",
    ]
    return "\n".join(lines)
