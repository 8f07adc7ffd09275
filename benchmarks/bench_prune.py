"""Structured pruning of the bundled models (heads + FFN at 25 % and 50 %): quality before and after a
distillation recovery from the unpruned model, and ONNX Runtime latency against the unpruned model, all
in this one process (latencies interleaved).

    .venv/bin/python benchmarks/bench_prune.py --steps 60 --runs 20

Quality on held-out text against the unpruned model: MiniLM mean cosine and Spearman of the sentence
embeddings; tiny-llama perplexity (its 2 KV groups cannot lose 25 % of the heads as whole groups, so its
25 % row prunes the FFN only). Importance: Wanda on 32 calibration sequences. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

RATIOS = {"minilm": {25: (0.25, 0.25), 50: (0.5, 0.5)}, "tiny-llama": {25: (0.0, 0.25), 50: (0.5, 0.5)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="minilm,tiny-llama")
    ap.add_argument("--steps", type=int, default=60, help="recovery steps (distillation)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--score", default="wanda")
    ap.add_argument("--output", type=Path, default=Path("edgellm-out/bench_prune.json"))
    args = ap.parse_args()

    from edgellm.bench import benchmark
    from edgellm.bench.report import write_json
    from edgellm.compress.calibration import corpus_parts, make_batches
    from edgellm.compress.evaluate import evaluate
    from edgellm.compress.prune import PruneConfig, prune_model
    from edgellm.compress.prune.recover import recover
    from edgellm.export import export
    from edgellm.models import load
    from edgellm.runtime import make_runner

    root = Path(tempfile.mkdtemp(prefix="edgellm-prune-"))
    train, held, cs, es = corpus_parts(None, None)
    out: dict = {"score": args.score, "recovery_steps": args.steps, "models": {}}
    for name in args.models.split(","):
        base = load(name)
        calib = make_batches(base, train, cs, max_sequences=32).feeds
        evalb = make_batches(base, held, es, max_sequences=128).feeds
        ref = make_runner(base, "torch")
        b = 8 if base.task == "embedding" else 1
        runners = {"unpruned": make_runner(export(base, "x86-server", root / f"{name}-fp32"))}
        rows = {}
        for pct, (heads, ffn) in RATIOS[name].items():
            cfg = PruneConfig(heads=heads, ffn=ffn, score=args.score)
            pruned, rec = prune_model(base, cfg, root / f"{name}-p{pct}", calib)
            before = evaluate(ref, make_runner(pruned, "torch"), base, evalb)
            model_dir, summary = recover(
                root / f"{name}-p{pct}", base.source["path"], root / f"{name}-r{pct}", steps=args.steps
            )
            recovered = load(model_dir)
            after = evaluate(ref, make_runner(recovered, "torch"), base, evalb)
            runners[f"pruned-{pct}"] = make_runner(
                export(recovered, "x86-server", root / f"{name}-r{pct}-onnx")
            )
            rows[pct] = {
                "heads": heads,
                "ffn": ffn,
                "params_ratio": round(rec.params_after / rec.params_before, 3),
                "before_recovery": before,
                "after_recovery": after,
                "recovery_s": summary["seconds"],
            }
        bench = benchmark(
            runners,
            lambda bb, ss, m=base: m.example_inputs(batch=bb, seq=ss, padded=False),
            batches=[b],
            seqs=[128],
            runs=args.runs,
            warmup=3,
            baseline="unpruned",
            progress=False,
        ).to_dict()
        p50 = {r["name"]: r["p50_ms"] for r in bench["results"]}
        for pct in rows:
            rows[pct]["latency_ratio"] = round(p50[f"pruned-{pct}"] / p50["unpruned"], 3)
        out["models"][name] = {"batch": b, "seq": 128, "unpruned_p50_ms": p50["unpruned"], "ratios": rows}
    out["command"] = "python benchmarks/bench_prune.py " + " ".join(sys.argv[1:])
    write_json(out, args.output)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
