"""Structured pruning of the bundled models (heads + FFN at 25 % and 50 %): quality before and after a
distillation recovery from the unpruned model, and ONNX Runtime latency against the unpruned model, all
in this one process (latencies interleaved).

    .venv/bin/python benchmarks/bench_prune.py --steps 60 --runs 20

Quality on held-out text against the unpruned model: MiniLM mean cosine and Spearman of the sentence
embeddings; tiny-llama perplexity (its 2 KV groups cannot lose 25 % of the heads as whole groups, so its
25 % row prunes the FFN only). Importance: Wanda on 32 calibration sequences. Prints JSON.

MiniLM is also pruned by Torch-Pruning (``torch-pruning``, bench extra; DepGraph with its magnitude
importance, whole heads, the same per-layer ratios) and by edgellm's l2 score: the same parameter count
(the same numbers of heads and channels go), the same recovery (steps, data, learning rate), so the
quality columns compare only *which* structures each method removed. ``tp_check_max_abs`` is the
difference between Torch-Pruning's own pruned model and edgellm's removal of the same structures.
tiny-llama: Torch-Pruning picks the FFN channels; it cannot group GQA heads, so its 50 % row takes the
heads from edgellm's l2 (``heads_from`` says so) and differs from edgellm-l2 only in the FFN choice.
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
    ap.add_argument("--no-compare", dest="compare", action="store_false", help="skip the Torch-Pruning rows")
    ap.add_argument("--output", type=Path, default=Path("edgellm-out/bench_prune.json"))
    args = ap.parse_args()

    from edgellm.bench import benchmark
    from edgellm.bench.report import write_json
    from edgellm.compress.calibration import corpus_parts, make_batches
    from edgellm.compress.evaluate import evaluate
    from edgellm.compress.prune import PruneConfig, prune_model
    from edgellm.export import export
    from edgellm.models import load
    from edgellm.pipeline.prune import recover
    from edgellm.runtime import make_runner

    sys.path.insert(0, str(Path(__file__).parent))
    from torch_pruning_baseline import removed_counts, tp_scores, tp_scores_llama

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
        methods = [f"edgellm-{args.score}"]
        if args.compare:
            methods += ["edgellm-l2", "torch-pruning-l2"]
        for pct, (heads, ffn) in RATIOS[name].items():
            rows[pct] = {"heads": heads, "ffn": ffn, "methods": {}}
            for method in methods:
                tag = f"{name}-p{pct}-{method}"
                cfg = PruneConfig(heads=heads, ffn=ffn, score=method.rsplit("-", 1)[1])
                extra = {}
                scores = None
                if method.startswith("torch-pruning"):
                    f = base.fixed_inputs()
                    if base.family == "bert":
                        scores, tp_out = tp_scores(base, heads, ffn, f)
                        extra["removed"] = removed_counts(scores)
                    else:
                        scores, tp_out = tp_scores_llama(base, heads, ffn, f)
                        extra["ffn_removed"] = [int((s == 0).sum()) for s in scores["ffn"]]
                        if heads:
                            extra["heads_from"] = "edgellm-l2 (Torch-Pruning cannot group GQA heads)"
                pruned, rec = prune_model(base, cfg, root / tag, calib, scores=scores)
                if scores is not None and tp_out is not None:
                    ours = pruned.run(f)[pruned.outputs[0].name]
                    extra["tp_check_max_abs"] = float(abs(ours - tp_out.numpy()).max())
                before = evaluate(ref, make_runner(pruned, "torch"), base, evalb)
                model_dir, summary = recover(
                    root / tag, base.source["path"], root / f"{tag}-r", steps=args.steps
                )
                recovered = load(model_dir)
                after = evaluate(ref, make_runner(recovered, "torch"), base, evalb)
                if method == methods[0]:
                    runners[f"pruned-{pct}"] = make_runner(
                        export(recovered, "x86-server", root / f"{tag}-onnx")
                    )
                rows[pct]["params_ratio"] = round(rec.params_after / rec.params_before, 3)
                rows[pct]["methods"][method] = {
                    "params": rec.params_after,
                    "before_recovery": before,
                    "after_recovery": after,
                    "recovery_s": summary["seconds"],
                    **extra,
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
