"""Token-rate benchmark of a generation artifact (or split pair): time to first token, prefill and decode
tokens/s, peak memory and size, for each prompt length.

Each row prefills a prompt of seeded random token ids (every id a real token of the vocabulary) and decodes
exactly ``new`` tokens (no stop token), after one untimed warm-up generation; ``runs`` rounds give the
median. Weight bytes read per decoded token (the model files, less the embeddings that a decode step
gathers one row of) against the machine's memory bandwidth give the fraction of the limit a rate reaches.

Example:
    >>> rows = bench_generate("out/tl-int4", prompts=[128, 512], new=128)        # doctest: +SKIP
    >>> rows["rows"][0]["decode_tok_s"]                                          # doctest: +SKIP
    341.2
"""

from __future__ import annotations

import resource
import statistics
from pathlib import Path
from typing import Any

import numpy as np


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB: Linux's ``VmHWM`` (of this program only;
    ``ru_maxrss`` would carry over the high-water mark of the process that forked it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def decode_weight_bytes(gen: Any, size_bytes: int) -> int:
    """Bytes a decode step reads: the model files, less the embedding table when the LM head does not read
    it (untied, or the head quantized separately): a step gathers one of its rows."""
    w = gen.get("weights") or {}
    emb = w.get("embeddings", {})
    head = w.get("lm_head", {})
    separate = not emb.get("tied_to_lm_head") or head.get("precision") != "fp32"
    if "reads_embeddings" in head:  # recorded by the exporter (GGUF): the head is the table, or apart
        separate = not head["reads_embeddings"]
    return int(size_bytes - (emb.get("bytes", 0) if separate else 0))


def bench_generate(
    source: str | Path,
    *,
    prompts: list[int] | tuple[int, ...] = (128,),
    new: int = 128,
    runs: int = 1,
    threads: int | None = None,
    bandwidth_gbs: float | None = None,
    seed: int = 0,
    runtime: str | None = None,
) -> dict[str, Any]:
    """Time generation from ``source`` for each prompt length; returns ``{"artifact", "rows", ...}``.
    ``runtime``: ``onnxruntime`` or ``openvino`` (default: the artifact's own)."""
    from edgellm.errors import EdgeLLMError
    from edgellm.runtime.generator import Generator
    from edgellm.runtime.sampling import GenerationConfig

    gen = Generator(source, threads=threads, runtime=runtime)
    info = gen.gen
    vocab = int(info.get("vocab") or 0)
    if not vocab:
        raise EdgeLLMError(f"'{source}' does not record its vocabulary", "re-export it with --generate")
    size = _size(Path(source))
    wbytes = decode_weight_bytes(info, size)
    rng = np.random.default_rng(seed)
    cfg = GenerationConfig(max_new_tokens=new, stop_token_ids=())
    gen.generate(
        rng.integers(3, vocab, size=8).tolist(), GenerationConfig(max_new_tokens=4, stop_token_ids=())
    )
    rows = []
    for p in prompts:
        if p + new > gen.context:
            raise EdgeLLMError(
                f"prompt {p} + {new} new tokens exceed the artifact's context of {gen.context}",
                "use shorter --prompt/--new, or export with a larger --context",
            )
        ids = rng.integers(3, vocab, size=p).tolist()
        done = [gen.generate(ids, cfg) for _ in range(runs)]
        dec = statistics.median(c.decode_tok_s or 0.0 for c in done)
        row = {
            "prompt": p,
            "new": new,
            "ttft_ms": round(statistics.median(c.ttft_ms for c in done), 2),
            "prefill_tok_s": round(statistics.median(c.prefill_tok_s for c in done), 1),
            "decode_tok_s": round(dec, 2),
            "decode_ms_per_token": round(1000.0 / dec, 3) if dec else None,
            "weight_gb_per_s": round(wbytes * dec / 1e9, 2),
        }
        if bandwidth_gbs:
            row["bandwidth_fraction"] = round(wbytes * dec / 1e9 / bandwidth_gbs, 3)
        rows.append(row)
    return {
        "artifact": str(source),
        "precision": info.get("precision") or info.get("codec"),
        "cache_layout": (info.get("cache") or {}).get("layout", "split"),
        "runtime_precision": getattr(gen.engine, "precision", None),
        "context": gen.context,
        "size_bytes": size,
        "decode_weight_bytes": wbytes,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": threads,
        "runs": runs,
        "rows": rows,
    }


def _size(path: Path) -> int:
    """Bytes of the model files of an artifact (or both halves of a split pair), tokenizer excluded."""
    import json

    total = 0
    for m in [path / "manifest.json", path / "device" / "manifest.json", path / "server" / "manifest.json"]:
        if m.is_file():
            files = json.loads(m.read_text())["files"]
            total += sum(v["bytes"] for r, v in files.items() if not r.startswith("tokenizer/"))
    return total


def plot_generate(reports: list[dict[str, Any]], path: str | Path) -> Path:
    """Decode tokens/s and time to first token per artifact and prompt length, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgellm.utils.plots import save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = [Path(r["artifact"]).name for r in reports]
    prompts = sorted({row["prompt"] for r in reports for row in r["rows"]})
    width = 0.8 / max(len(prompts), 1)
    for i, p in enumerate(prompts):
        dec = [next((x["decode_tok_s"] for x in r["rows"] if x["prompt"] == p), 0) for r in reports]
        ttft = [next((x["ttft_ms"] for x in r["rows"] if x["prompt"] == p), 0) for r in reports]
        xs = [j + i * width for j in range(len(reports))]
        a.bar(xs, dec, width, label=f"prompt {p}")
        b.bar(xs, ttft, width, label=f"prompt {p}")
    for ax, title in ((a, "decode tokens/s"), (b, "time to first token (ms)")):
        ax.set_xticks([j + width * (len(prompts) - 1) / 2 for j in range(len(reports))], labels, rotation=20)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
