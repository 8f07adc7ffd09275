"""A split plan on disk: ``plan.json`` (what ``edgellm split export --plan`` reads) and ``plan.png``.

Example:
    >>> write_plan(plan("minilm"), "edgellm-out/partition", title="minilm")   # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgellm.partition.planner import SplitPlan
from edgellm.utils.plots import save_figure

# the predicted time of a cut, part by part, then the total (plan.json candidates, tables, plots)
PLAN_PARTS = ("device_ms", "codec_ms", "upload_ms", "rtt_ms", "server_ms", "download_ms")
PLAN_COLUMNS = (*PLAN_PARTS, "total_ms")


def write_plan(plan: SplitPlan, output: str | Path, *, title: str) -> tuple[Path, Path]:
    """``OUTPUT/plan.json`` (what ``edgellm split export --plan`` reads) and ``OUTPUT/plan.png``."""
    from edgellm.utils.fs import atomic_write_text

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "plan.json", json.dumps(plan.to_dict(), indent=2) + "\n")
    return output / "plan.json", plot_plan(plan.candidates, output / "plan.png", title=title)


def plot_plan(candidates: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Predicted latency per cut (its best codec), stacked by component."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_cut: dict[int, dict] = {}
    for c in candidates:
        if c["cut"] not in per_cut or c["total_ms"] < per_cut[c["cut"]]["total_ms"]:
            per_cut[c["cut"]] = c
    rows = [per_cut[k] for k in sorted(per_cut)]
    parts = PLAN_PARTS
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
