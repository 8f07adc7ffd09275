"""INT8 benchmark: edgellm's INT8 artifacts of MiniLM vs Optimum's best INT8 recipes, side by side.

All variants run in this one process, interleaved (each round times every variant once, rotating the
order), same thread count, batch 8, sequence 128. Accuracy: mean/min cosine of sentence embeddings vs
torch fp32 on held-out sentences (pydoc evaluation split).

    .venv/bin/python benchmarks/bench_int8_minilm.py --runs 40

Optimum's candidates (issue 3): (a) Optimum's export + ORTQuantizer with
AutoQuantizationConfig.avx2(is_static=False, per_channel=True); (b) Optimum's O2-optimised graph +
ONNX Runtime's quantize_dynamic (s8 weights, per channel). Goal: edgellm best / Optimum best p50 <= 0.9
with edgellm mean cosine >= 0.995.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np


def optimum_variants(model_dir: str, work: Path) -> dict[str, Path]:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from optimum.exporters.onnx import main_export
        from optimum.onnxruntime import ORTOptimizer, ORTQuantizer
        from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig
    except ImportError:
        return {}
    raw, o2, qa = work / "opt-raw", work / "opt-o2", work / "opt-avx2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main_export(
            model_dir, output=raw, task="feature-extraction", library_name="transformers", do_validation=False
        )
        ORTQuantizer.from_pretrained(raw).quantize(
            save_dir=qa, quantization_config=AutoQuantizationConfig.avx2(is_static=False, per_channel=True)
        )
        ORTOptimizer.from_pretrained(raw).optimize(
            save_dir=o2, optimization_config=AutoOptimizationConfig.O2()
        )
        qb = work / "opt-o2-dyn.onnx"
        quantize_dynamic(
            str(o2 / "model_optimized.onnx"),
            str(qb),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": 1},
        )  # float: shape inference stops at contrib ops
    return {"optimum-avx2-dynamic": next(qa.glob("*.onnx")), "optimum-o2+dynamic": qb}


def main() -> int:
    import psutil

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=psutil.cpu_count(logical=False) or 1)
    ap.add_argument("--output", default="edgellm-out/bench_int8_minilm.json")
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    from edgellm.bench import benchmark
    from edgellm.compress.calibration import corpus_parts, make_batches
    from edgellm.compress.evaluate import embedding_accuracy
    from edgellm.compress.quant import Int8Dynamic, Int8Static, quantize
    from edgellm.export import Tolerance, export
    from edgellm.models import load
    from edgellm.runtime import make_runner
    from edgellm.runtime.ort_runner import OrtRunner

    model = load("minilm")
    train, held, cs, es = corpus_parts(None, None)
    calib = make_batches(model, train, cs, max_sequences=64)
    evalb = make_batches(model, held, es, max_sequences=256)
    variants = {
        "edgellm-int8-dynamic": Int8Dynamic(),
        "edgellm-int8-dynamic-sq0.7": Int8Dynamic(smoothquant_alpha=0.7),
        "edgellm-int8-static-sq0.8": Int8Static(smoothquant_alpha=0.8),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runners = {
            "edgellm-fp32": make_runner(
                export(model, "x86-server", work / "fp32"), intra_op_threads=args.threads
            )
        }
        for name, cfg in variants.items():
            spec = quantize(model, cfg, calib.feeds)
            art = export(model, "x86-server", work / name, quant=spec, tolerance=Tolerance.quantized())
            runners[name] = make_runner(art, intra_op_threads=args.threads)
        for name, path in optimum_variants(model.source["path"], work).items():
            runners[name] = OrtRunner(path, intra_op_threads=args.threads)

        ref = np.concatenate([model.run(f)["sentence_embedding"] for f in evalb.feeds])
        acc = {}
        for name, r in runners.items():
            outs = []
            for f in evalb.feeds:
                o = next(iter(r.run({s.name: f[s.name] for s in r.inputs}).values()))
                if o.ndim == 3:  # Optimum's graphs return token states: pool as sentence-transformers does
                    m = f["attention_mask"][..., None].astype(o.dtype)
                    o = (o * m).sum(1) / np.maximum(m.sum(1), 1e-9)
                outs.append(o)
            a = embedding_accuracy(ref, np.concatenate(outs))
            acc[name] = {k: round(v, 5) for k, v in a.items() if k != "sentences"}
        rep = benchmark(
            runners,
            lambda b, s: model.example_inputs(batch=b, seq=s, padded=False),
            batches=[args.batch],
            seqs=[args.seq],
            runs=args.runs,
            warmup=args.warmup,
            baseline="edgellm-fp32",
            progress=sys.stderr.isatty(),
        )
    d = rep.to_dict()
    p50 = {r["name"]: r["p50_ms"] for r in d["results"]}
    ours = {n: p50[n] for n in p50 if n.startswith("edgellm-int8") and acc[n]["cosine_mean"] >= 0.995}
    theirs = {n: p50[n] for n in p50 if n.startswith("optimum")}
    summary = {"accuracy_vs_torch_fp32": acc, "p50_ms": p50}
    if ours and theirs:
        best_ours, best_theirs = min(ours, key=ours.get), min(theirs, key=theirs.get)
        summary["best_edgellm_int8_meeting_cosine_0.995"] = best_ours
        summary["best_optimum_int8"] = best_theirs
        summary["ratio_best_edgellm_vs_best_optimum"] = round(p50[best_ours] / p50[best_theirs], 4)
    d["summary"] = summary
    d["config"].update(
        {
            "threads": args.threads,
            "command": "python benchmarks/bench_int8_minilm.py " + " ".join(sys.argv[1:]),
        }
    )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(d, indent=2) + "\n")
    print(json.dumps(d, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
