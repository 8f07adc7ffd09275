"""One call from a model to a split plan: profile, cost every cut on the two targets, pick the best.

Example:
    >>> plan, basis, *_ = plan_split("minilm", bandwidth="10mbit", rtt="50ms")  # doctest: +SKIP
    >>> plan.best["after_block"], plan.best["codec"]                            # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError

# the predicted time of a cut, part by part, then the total (plan.json candidates, tables, plots)
PLAN_PARTS = ("device_ms", "codec_ms", "upload_ms", "rtt_ms", "server_ms", "download_ms")
PLAN_COLUMNS = (*PLAN_PARTS, "total_ms")


def plan_split(
    model: Any,
    *,
    device: str = "snapdragon-865",
    server: str = "x86-server",
    bandwidth: str = "10mbit",
    rtt: str = "50ms",
    downlink: str | None = None,
    device_memory: str | None = None,
    min_device_blocks: int = 1,
    precision: str = "fp32",
    codecs: str | Sequence[str] = ("fp32", "fp16", "int8"),
    seq: int = 128,
    runs: int = 10,
    generate_tokens: int | None = None,
) -> tuple[Any, dict[str, Any], Any, Any, Any]:
    """Profile ``model`` on this host and plan its split; returns (plan, basis, adapter, device, server).

    With ``generate_tokens`` (causal LMs), plan split generation: a prefill of ``seq`` tokens, then
    ``generate_tokens - 1`` one-token decode steps, each a round trip (:func:`make_generation_plan`;
    decode steps are profiled at one token without a cache, so attention over a long context is not
    counted).

    ``codecs`` is a list, a comma-separated string, or ``"all"``. Bad codec, network or target names fail
    before any profiling.
    """
    from edgellm.models import ModelAdapter, load
    from edgellm.partition.codecs import ALL_CODECS, Codec
    from edgellm.partition.cost import cost_table
    from edgellm.partition.planner import Network, make_generation_plan, make_plan, parse_size
    from edgellm.partition.profile import profile_blocks
    from edgellm.targets import load_target

    if isinstance(codecs, str):
        chosen = (
            ALL_CODECS
            if codecs.strip() == "all"
            else tuple(c.strip() for c in codecs.split(",") if c.strip())
        )
    else:
        chosen = tuple(codecs)
    for c in chosen:
        Codec(c)
    net = Network.parse(bandwidth, rtt, downlink)
    budget = parse_size(device_memory) if device_memory else None
    dev, srv = load_target(device), load_target(server)
    adapter = model if isinstance(model, ModelAdapter) else load(model)
    prof = profile_blocks(adapter, batch=1, seq=seq, runs=runs, codecs=chosen)
    table, basis = cost_table(adapter, prof, dev, srv, device_precision=precision, server_precision=precision)
    if generate_tokens is not None:
        if adapter.task != "causal-lm":
            raise EdgeLLMError(
                f"--generate-tokens plans token generation; '{adapter.name}' is a {adapter.task} model",
                "drop --generate-tokens, or plan a causal LM",
            )
        prof1 = profile_blocks(adapter, batch=1, seq=1, runs=runs, codecs=chosen)
        step, _ = cost_table(adapter, prof1, dev, srv, device_precision=precision, server_precision=precision)
        plan = make_generation_plan(
            table,
            step,
            net,
            tokens=generate_tokens,
            codecs=chosen,
            device_memory=budget,
            min_device_blocks=min_device_blocks,
        )
        return plan, basis, adapter, dev, srv
    plan = make_plan(table, net, codecs=chosen, device_memory=budget, min_device_blocks=min_device_blocks)
    return plan, basis, adapter, dev, srv


def write_plan(plan: Any, basis: dict[str, Any], output: str | Path, *, title: str) -> tuple[Path, Path]:
    """``OUTPUT/plan.json`` (what ``edgellm split export --plan`` reads) and ``OUTPUT/plan.png``."""
    from edgellm.utils.fs import atomic_write_text

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "plan.json", json.dumps({**plan.to_dict(), "basis": basis}, indent=2) + "\n")
    return output / "plan.json", plot_plan(plan.candidates, output / "plan.png", title=title)


def plot_plan(candidates: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Predicted latency per cut (its best codec), stacked by component."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgellm.bench.report import save_figure

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
