"""INT4 (W4A16) benchmark on the bundled tiny-llama: RTN vs GPTQ vs AWQ at group sizes 32 and 128.

Perplexity on the held-out pydoc split is measured on the ONNX Runtime artifacts (MatMulNBits with
edgellm's own codes), next to fp32; weight bytes of the quantized linears vs fp32; latency of every
artifact vs the fp32 artifact at batch 1, sequence 128, all in this one process, interleaved.

    .venv/bin/python benchmarks/bench_int4_tiny_llama.py --runs 30

Goals (issue 3): perplexity increase of GPTQ and AWQ <= half of RTN's; quantized weights <= 0.2x fp32.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path


def main() -> int:
    import psutil

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", default="32,128")
    ap.add_argument("--methods", default="rtn,gptq,awq")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--accuracy-level", type=int, default=0, help="MatMulNBits compute: 0 fp32, 4 int8")
    ap.add_argument("--threads", type=int, default=psutil.cpu_count(logical=False) or 1)
    ap.add_argument("--output", default="edgellm-out/bench_int4_tiny_llama.json")
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    from edgellm.bench import benchmark
    from edgellm.compress.calibration import corpus_parts, make_batches
    from edgellm.compress.evaluate import evaluate
    from edgellm.compress.quant import Int4WeightOnly, quantize
    from edgellm.export import Tolerance, export
    from edgellm.models import load
    from edgellm.runtime import make_runner

    model = load("tiny-llama")
    train, held, cs, es = corpus_parts(None, None)
    calib = make_batches(model, train, cs, max_sequences=64)
    evalb = make_batches(model, held, es, max_sequences=256)
    reference = make_runner(model, "torch")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp32 = export(model, "x86-server", work / "fp32")
        runners = {"fp32": make_runner(fp32, intra_op_threads=args.threads)}
        acc = evaluate(reference, runners["fp32"], model, evalb.feeds)
        results["fp32"] = {"perplexity": acc["perplexity"], "size_mb": fp32.size_bytes / 2**20}
        for g in [int(x) for x in args.groups.split(",")]:
            for method in args.methods.split(","):
                name = f"{method}-g{g}"
                spec = quantize(model, Int4WeightOnly(method=method, group_size=g), calib.feeds)
                art = export(
                    model,
                    "x86-server",
                    work / name,
                    quant=spec,
                    tolerance=Tolerance.quantized(),
                    accuracy_level=args.accuracy_level,
                )
                runners[name] = make_runner(art, intra_op_threads=args.threads)
                a = evaluate(reference, runners[name], model, evalb.feeds)
                wb = spec.weight_bytes()
                results[name] = {
                    "perplexity": a["perplexity"],
                    "perplexity_increase_pct": 100 * a["perplexity_increase"],
                    "top1_agreement": a["top1_agreement"],
                    "weight_bytes_ratio": wb["quantized"] / wb["fp32"],
                    "size_mb": art.size_bytes / 2**20,
                }
        rep = benchmark(
            runners,
            lambda b, s: model.example_inputs(batch=b, seq=s, padded=False),
            batches=[1],
            seqs=[128],
            runs=args.runs,
            warmup=args.warmup,
            baseline="fp32",
            progress=sys.stderr.isatty(),
        ).to_dict()
    for r in rep["results"]:
        results[r["name"]]["p50_ms"] = r["p50_ms"]
        results[r["name"]]["latency_ratio_vs_fp32"] = r["p50_ms"] / results["fp32"].get("p50_ms", r["p50_ms"])
    goals = {}
    for g in args.groups.split(","):
        rtn = results.get(f"rtn-g{g}", {}).get("perplexity_increase_pct")
        for m in ("gptq", "awq"):
            v = results.get(f"{m}-g{g}", {}).get("perplexity_increase_pct")
            if rtn is not None and v is not None:
                goals[f"{m}-g{g}: increase / rtn increase"] = round(v / rtn, 3) if rtn > 0 else None
    out = {
        "results": results,
        "goals": goals,
        "fp32_perplexity": results["fp32"]["perplexity"],
        "eval": evalb.describe(),
        "calibration": calib.describe(),
        "bench": rep,
        "command": "python benchmarks/bench_int4_tiny_llama.py " + " ".join(sys.argv[1:]),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
