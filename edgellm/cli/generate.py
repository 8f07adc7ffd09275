"""``edgellm generate``: stream text from a generation artifact or a split pair, with its timings."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from edgellm.cli._common import console, emit_json, kv_table


def generate(
    artifact: Path = typer.Argument(
        ...,
        help="A generation artifact (export/compress --generate) or a split pair (split export --generate).",
    ),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The prompt text."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", help="Tokens to generate at most."),
    temperature: float = typer.Option(0.0, "--temperature", help="0: greedy; else the sampling temperature."),
    top_k: int = typer.Option(0, "--top-k", help="Sample among the K most likely tokens (0: all)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus: the smallest set reaching this probability."),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", help="> 1 discourages repeats."),
    stop: list[str] = typer.Option([], "--stop", help="A string that ends generation (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Runtime threads."),
    runtime: Optional[str] = typer.Option(
        None, "--runtime", help="onnxruntime or openvino (default: the artifact's own runtime)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print token ids, text and timings as JSON."),
) -> None:
    """Generate from ARTIFACT: streams the text, then time to first token and tokens/s.

    Example: edgellm generate edgellm-out/tl-gen-int4 -p "The with statement" --max-new-tokens 32

    Example: edgellm generate out/tl-gen-int4 -p "def" --temperature 0.8 --top-p 0.9 --seed 7 --json

    Example: edgellm generate out/tl-gen-ov -p "def" --runtime openvino   (from: export --generate --format openvino)
    """
    from edgellm.runtime.generator import Generator
    from edgellm.runtime.sampling import GenerationConfig

    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        stop=tuple(stop),
        seed=seed,
    )
    gen = Generator(artifact, threads=threads, runtime=runtime)
    stream = gen.stream(prompt, cfg)
    if json_out:
        for _ in stream:
            pass
        emit_json({"artifact": str(artifact), **gen.last.to_dict()})
        return
    out = sys.stdout
    out.write(prompt)
    for tok in stream:
        out.write(tok.text)
        out.flush()
    out.write("\n")
    c = gen.last
    rate = f"{c.decode_tok_s:.1f} tokens/s" if c.decode_tok_s else "-"
    console().print(
        f"[dim]{len(c.token_ids)} tokens ({c.stop_reason}); time to first token {c.ttft_ms:.1f} ms "
        f"(prefill {len(c.prompt_ids)} tokens at {c.prefill_tok_s:.0f} tokens/s); decode {rate}[/dim]"
    )


def print_generation(path: Path, m: dict[str, Any], tries: list[dict[str, Any]] | None = None) -> None:
    """The table ``export --generate`` and ``compress --generate`` print."""
    g = m["generation"]
    p = g["parity"]
    w = g.get("weights", {})
    size = sum(v["bytes"] for r, v in m["files"].items() if not r.startswith("tokenizer/"))
    rows = [
        ("artifact", path),
        (
            "target",
            f"{m['target']['name']} ({m['target']['runtime']}, {m['target']['format']}, {g['precision']})",
        ),
        ("model", f"{m['model']['name']} [{g['family']}], {g['layers']} layers, vocab {g['vocab']}"),
        (
            "cache",
            f"{g['cache']['layout']}, context {g['context']} positions, {g['kv_heads']} kv heads x {g['head_dim']}",
        ),
        (
            "variant",
            f"{g.get('variant')}"
            + "".join(
                f"; rejected {r['variant']}: {r['reason'][:80]}" for r in g.get("rejected_variants", [])
            ),
        ),
        ("size", f"{size / 2**20:.1f} MB"),
    ]
    if w:
        head = w["lm_head"]
        rows.append(
            (
                "lm_head / embeddings",
                f"{head['precision']} {head['bytes'] / 2**20:.1f} MB (fp32 {head['fp32_bytes'] / 2**20:.1f} MB); "
                f"embeddings fp32 {w['embeddings']['bytes'] / 2**20:.1f} MB"
                + (" (tied)" if w["embeddings"]["tied_to_lm_head"] else ""),
            )
        )
    rows.append(
        (
            "parity",
            f"{p['tokens']} greedy tokens x {p['prompts']} prompts vs {p['reference']}: "
            f"agreement {p['agreement']:.0%}, logits cosine min {p['logits_cosine_min']:.5f}",
        )
    )
    if "vs_fp32" in p:
        rows.append(
            (
                "vs fp32",
                f"agreement {p['vs_fp32']['agreement']:.0%}, logits cosine min {p['vs_fp32']['logits_cosine_min']:.5f}",
            )
        )
    for t in tries or []:
        if "verdict" in t:
            rows.append((f"try {t['label']}", f"{t['recipe']}: {t['verdict']} ({t['quantize_s']} s)"))
        else:
            rows.append((f"quantize {t['recipe']}", f"{t['quantize_s']} s"))
    kv_table("generation artifact", rows)
