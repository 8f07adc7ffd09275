"""Rendering a benchmark: a terminal table, JSON, Markdown and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgellm.utils.fs import atomic_write_text
from edgellm.utils.plots import save_figure

COLUMNS = [
    ("name", "runner"),
    ("batch", "batch"),
    ("seq", "seq"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p99_ms", "p99 ms"),
    ("throughput_per_s", "seq/s"),
    ("peak_rss_mb", "peak RSS MB"),
    ("model_size_mb", "size MB"),
]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return str(v)


def rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in report["results"]:
        out.append([_fmt(r[k]) for k, _ in COLUMNS])
    return out


def print_table(report: dict[str, Any], title: str = "benchmark") -> None:
    """A rich table on stdout, ratios below it."""
    from rich.table import Table

    from edgellm.utils.console import console

    table = Table(title=title)
    for _, head in COLUMNS:
        table.add_column(head, justify="right" if head not in ("runner",) else "left")
    for row in rows(report):
        table.add_row(*row)
    out = console()
    out.print(table)
    for pair, vals in report.get("ratios_p50", {}).items():
        out.print(f"p50 ratio {pair}: " + ", ".join(f"{k}={v:.3f}" for k, v in vals.items()))


def markdown_table(report: dict[str, Any]) -> str:
    head = "| " + " | ".join(h for _, h in COLUMNS) + " |"
    sep = "|" + "---|" * len(COLUMNS)
    return "\n".join([head, sep, *("| " + " | ".join(r) + " |" for r in rows(report))])


def write_json(report: dict[str, Any], path: str | Path) -> None:
    atomic_write_text(path, json.dumps(report, indent=2, default=str) + "\n")


def plot_latency(report: dict[str, Any], path: str | Path, title: str = "p50 latency") -> Path:
    """Grouped bars: p50 latency per runner for every (batch, seq), with p90 whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = report["results"]
    names = list(dict.fromkeys(r["name"] for r in res))
    shapes = list(dict.fromkeys((r["batch"], r["seq"]) for r in res))
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(shapes) * max(1, len(names)) / 2, 3.6))
    for i, n in enumerate(names):
        by = {(r["batch"], r["seq"]): r for r in res if r["name"] == n}
        xs = [j + i * width for j in range(len(shapes))]
        p50 = [by[s]["p50_ms"] if s in by else 0 for s in shapes]
        err = [(by[s]["p90_ms"] - by[s]["p50_ms"]) if s in by else 0 for s in shapes]
        ax.bar(xs, p50, width, yerr=[[0] * len(err), err], capsize=3, label=n)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(shapes))])
    ax.set_xticklabels([f"batch {b}\nseq {s}" for b, s in shapes])
    ax.set_ylabel("latency, ms (p50, whisker to p90)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
