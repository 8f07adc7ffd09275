"""Time onnxruntime-genai generation on one model folder; prints one JSON object.

Runs inside the peer's own environment (``.peers/genai-venv``, made by ``benchmarks/peers.py``), so it
imports only onnxruntime-genai and numpy, never edgellm. Greedy search, batch 1, a prompt of random
token ids (seeded, special ids 0-2 left out), end-of-sequence held off until ``--new`` tokens are out.
Time to first token = ``append_tokens`` (the prefill) + the first ``generate_next_token``; decode
tokens/s = the other ``new - 1`` tokens over their time. Best of ``--runs`` (and the median) after one
warm-up generation.

    .peers/genai-venv/bin/python benchmarks/peers_genai.py --model .peers/genai/qwen05-int4-b32-a4 \\
        --prompt 128 --new 128 --threads 2 --runs 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time


def generate_once(og: object, model: object, ids: list[int], new: int) -> tuple[float, float, int]:
    """One greedy generation: (prefill+first-token seconds, seconds for the remaining tokens, tokens)."""
    total = len(ids) + new
    params = og.GeneratorParams(model)  # type: ignore[attr-defined]
    params.set_search_options(max_length=total, min_length=total, do_sample=False)
    gen = og.Generator(model, params)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    gen.append_tokens(ids)
    gen.generate_next_token()
    t1 = time.perf_counter()
    n = 1
    while n < new and not gen.is_done():
        gen.generate_next_token()
        n += 1
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, n


def main(argv: list[str] | None = None) -> int:
    """Load the model with ``--threads`` intra-op threads, warm up, time ``--runs`` generations."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model builder output folder (genai_config.json)")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(args.model)
    threads = {"intra_op_num_threads": args.threads, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": threads}}}))
    t0 = time.perf_counter()
    model = og.Model(config)
    load_s = time.perf_counter() - t0
    with open(f"{args.model}/genai_config.json") as f:
        vocab = json.load(f)["model"]["vocab_size"]
    ids = np.random.default_rng(args.seed).integers(3, vocab, size=args.prompt).tolist()

    generate_once(og, model, ids[: min(16, args.prompt)], min(8, args.new))  # warm-up
    ttft, decode, tokens = [], [], 0
    for _ in range(args.runs):
        first, rest, tokens = generate_once(og, model, ids, args.new)
        ttft.append(first)
        decode.append(rest)
    decode_rates = [(tokens - 1) / d for d in decode if d > 0]
    out = {
        "runtime": "onnxruntime-genai",
        "version": og.__version__ if hasattr(og, "__version__") else None,
        "prompt": args.prompt,
        "new": tokens,
        "threads": args.threads,
        "runs": args.runs,
        "load_s": round(load_s, 3),
        "ttft_ms": round(1e3 * min(ttft), 2),
        "ttft_ms_median": round(1e3 * statistics.median(ttft), 2),
        "prefill_tok_s": round(args.prompt / min(ttft), 2),
        "prefill_tok_s_median": round(args.prompt / statistics.median(ttft), 2),
        "decode_tok_s": round(max(decode_rates), 2) if decode_rates else None,
        "decode_tok_s_median": round(statistics.median(decode_rates), 2) if decode_rates else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
