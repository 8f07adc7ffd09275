"""The recipe's ``generate:`` stage: each generation artifact is exported (checked by its greedy tokens),
generates from the fixed prompt, and is timed (time to first token, decode tokens/s); the results feed
the report's token-rate table and plot.

Example (recipes/demo.yaml)::

    generate:
      artifacts:
        - {model: tiny-llama, precision: int4}
        - {model: tiny-llama, target: snapdragon-865, format: tflite, precision: int8}
"""

from __future__ import annotations

from typing import Any


def label(item: Any) -> str:
    return (
        item.label or f"{item.model}-{item.target}-{item.format or 'default'}-{item.recipe or item.precision}"
    )


def run_generate_stage(run: Any, stage: Any) -> None:
    """Run every item of ``stage`` as its own cached stage of ``run`` (a :class:`~edgellm.pipeline.run.Run`)."""
    for item in stage.artifacts:
        name = f"generate:{label(item)}"
        run._stage(
            name,
            {
                "item": item.model_dump(mode="json"),
                "settings": stage.model_dump(mode="json", exclude={"artifacts"}),
                "model": run.model_key(item.model),
            },
            lambda item=item: _one(run, stage, item),
        )


def _one(run: Any, stage: Any, item: Any) -> dict[str, Any]:
    from edgellm.bench.generation import bench_generate
    from edgellm.pipeline.generate_export import export_generate
    from edgellm.runtime.generator import Generator
    from edgellm.targets.host import memory_bandwidth_gbs

    dest = run.out / "generate" / label(item)
    with run.lineage(item.model):
        m = export_generate(
            run.adapter(item.model),
            dest,
            target=item.target,
            format=item.format,
            precision=item.precision,
            recipe=item.recipe,
            group_size=item.group_size,
            keep=tuple(item.keep),
            context=item.context,
            check_tokens=stage.check_tokens,
            force=True,
            log=lambda msg: run.say(f"    {msg}"),
        )
    g = m["generation"]
    done = Generator(dest).generate(stage.prompt, max_new_tokens=stage.max_new_tokens)
    ctx = int(g["context"])
    prompts = [p for p in stage.bench_prompt if p + stage.bench_new <= ctx] or [max(1, ctx // 4)]
    rate = bench_generate(
        dest,
        prompts=prompts,
        new=min(stage.bench_new, ctx - max(prompts)),
        bandwidth_gbs=memory_bandwidth_gbs(),
    )
    p = g["parity"]
    row = rate["rows"][0]
    run.say(
        f"    {label(item)}: {g['precision']} {m['target']['format']} ({g['cache']['layout']} cache), "
        f"greedy agreement {p['agreement']:.0%}, TTFT {row['ttft_ms']:.1f} ms, decode {row['decode_tok_s']:.0f} tok/s"
    )
    return {
        "label": label(item),
        "path": str(dest),
        "target": m["target"]["name"],
        "format": m["target"]["format"],
        "runtime": m["target"]["runtime"],
        "precision": g["precision"],
        "recipe": g["recipe"],
        "layout": g["cache"]["layout"],
        "size_mb": round(rate["size_bytes"] / 2**20, 2),
        "parity": {k: p[k] for k in ("agreement", "greedy_equal", "logits_cosine_min", "reference") if k in p}
        | ({"vs_fp32_agreement": p["vs_fp32"]["agreement"]} if "vs_fp32" in p else {}),
        "prompt": stage.prompt,
        "text": done.text,
        "rate": rate,
        "_outputs": [str(dest / "manifest.json")],
    }


def generation_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for k, v in results.items() if k.startswith("generate:")]


def print_generation(rows: list[dict[str, Any]]) -> None:
    """The token-rate table ``edgellm run`` prints."""
    from rich.table import Table

    from edgellm.utils.console import console

    t = Table(title="generation artifacts: greedy parity and token rate (this host)")
    for col in ("artifact", "format", "precision", "cache", "size MB", "parity", "TTFT ms", "decode tok/s"):
        t.add_column(col)
    for r in rows:
        x = r["rate"]["rows"][0]
        t.add_row(
            r["label"],
            r["format"],
            f"{r['precision']}" + (f" ({r['recipe']})" if r["recipe"] else ""),
            r["layout"],
            f"{r['size_mb']:.1f}",
            _parity_text(r["parity"]),
            f"{x['ttft_ms']:.1f} (prompt {x['prompt']})",
            f"{x['decode_tok_s']:.0f}",
        )
    console().print(t)


def _parity_text(p: dict[str, Any]) -> str:
    s = f"{p['agreement']:.0%} greedy vs {'HF' if 'fp32' in p['reference'] else 'fake-quant'}"
    return s + (f", {p['vs_fp32_agreement']:.0%} vs fp32" if "vs_fp32_agreement" in p else "")


def generation_markdown(rows: list[dict[str, Any]], plot: str | None) -> list[str]:
    lines = [
        "## Generation artifacts (greedy-token parity, token rate on this host)",
        "",
        "Each artifact was checked before it was written: its greedy tokens on fixed prompts equal Hugging",
        "Face `generate()` (fp32) or the torch fake-quantized model's (INT8/INT4), or first differ where the",
        "reference's two candidates are tied within rounding noise (the agreement column says how often).",
        "",
        "| artifact | format | precision | cache | size MB | parity | TTFT ms | prefill tok/s | decode tok/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        x = r["rate"]["rows"][0]
        lines.append(
            f"| {r['label']} | {r['format']} | {r['precision']} {r['recipe'] or ''} | {r['layout']} | "
            f"{r['size_mb']:.1f} | {_parity_text(r['parity'])} | {x['ttft_ms']:.1f} | {x['prefill_tok_s']:.0f} | "
            f"{x['decode_tok_s']:.0f} |"
        )
    lines += ["", f"Prompt: *{rows[0]['prompt']}*", ""]
    lines += [f"- **{r['label']}**: {r['text'].strip()[:160]!r}" for r in rows]
    lines += ["", f"![token rate]({plot})" if plot else "", ""]
    return lines
