"""Server benchmark: torch fp32 vs edgellm's fp32 artifact in ONNX Runtime and in OpenVINO (f32, bf16)
vs Optimum's O2 export.

Every runtime runner lives in a process of its own (ONNX Runtime sessions run 10-50 % slower in a process
that also holds OpenVINO models) and is timed there; torch runs in this process, which holds no other
runtime. All are interleaved round by round (each round times every runner once, in a rotating order),
with the same thread count; ratios are of p50 latencies measured side by side. Prints one JSON document
to stdout and writes it to --output.

    .venv/bin/python benchmarks/bench_server_onnx.py --batch 1,8 --seq 128 --runs 40

Goals: edgellm-ort/optimum-o2 p50 <= 1.0 at batch 1 and 8 (issue 2), edgellm cosine >= 0.9999 vs torch;
edgellm-ov-bf16/edgellm-ort <= 0.6 at cosine >= 0.9999 (issue 21).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np


def optimum_o2(model_dir: str, workdir: Path) -> Path | None:
    """Optimum's own pipeline: main_export (feature-extraction) then ORTOptimizer with O2."""
    try:
        from optimum.exporters.onnx import main_export
        from optimum.onnxruntime import ORTOptimizer
        from optimum.onnxruntime.configuration import AutoOptimizationConfig
    except ImportError:
        return None
    raw, o2 = workdir / "optimum-raw", workdir / "optimum-o2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main_export(
            model_dir, output=raw, task="feature-extraction", library_name="transformers", do_validation=False
        )
        ORTOptimizer.from_pretrained(raw).optimize(
            save_dir=o2, optimization_config=AutoOptimizationConfig.O2()
        )
    return o2 / "model_optimized.onnx"


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(hidden.dtype)
    e = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def main() -> int:
    import psutil

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--seq", default="128")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=psutil.cpu_count(logical=False) or 1)
    ap.add_argument("--output", default="edgellm-out/bench_server_onnx.json")
    args = ap.parse_args()

    logging.disable(logging.WARNING)
    from edgellm.bench import benchmark, parse_int_list
    from edgellm.export import export
    from edgellm.models import load
    from edgellm.runtime import make_runner
    from edgellm.runtime.isolated import IsolatedRunner

    batches, seqs = parse_int_list(args.batch, "--batch"), parse_int_list(args.seq, "--seq")
    eager = load(args.model)  # eager attention: the graph ONNX Runtime fuses
    ref = load(args.model, attn_implementation="sdpa")  # torch's fastest fp32 path, the baseline
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        art = export(eager, "x86-server", work / "edgellm")
        peer = optimum_o2(eager.source["path"], work)
        t = args.threads
        runners = {
            "torch": make_runner(ref, "torch", threads=t),
            "edgellm-ort": IsolatedRunner("onnxruntime", art.model_path, threads=t),
        }
        try:
            import openvino  # noqa: F401

            for p in ("f32", "bf16"):
                runners[f"edgellm-ov-{p}"] = IsolatedRunner(
                    "openvino", art.model_path, threads=t, precision=p
                )
        except ImportError:
            pass
        if peer is not None:
            runners["optimum-o2"] = IsolatedRunner("onnxruntime", peer, threads=t)

        # accuracy on real sentences, all against torch fp32
        feeds = eager.fixed_inputs()
        base = runners["torch"].run(feeds)["sentence_embedding"]
        acc = {
            n: cosine_min(base, runners[n].run(feeds)["sentence_embedding"])
            for n in runners
            if n.startswith("edgellm")
        }
        if peer is not None:
            hidden = runners["optimum-o2"].run({s.name: feeds[s.name] for s in runners["optimum-o2"].inputs})
            acc["optimum-o2"] = cosine_min(
                base, mean_pool(next(iter(hidden.values())), feeds["attention_mask"])
            )

        rep = benchmark(
            runners,
            lambda b, s: ref.example_inputs(batch=b, seq=s, padded=False),
            batches=batches,
            seqs=seqs,
            runs=args.runs,
            warmup=args.warmup,
            baseline="torch",
            progress=sys.stderr.isatty(),
        )
        for r in runners.values():
            r.close()
    d = rep.to_dict()
    p50 = {(r["name"], r["batch"], r["seq"]): r["p50_ms"] for r in d["results"]}
    if peer is not None:
        d["ratios_p50"]["edgellm-ort/optimum-o2"] = {
            f"b{b}_s{s}": round(p50[("edgellm-ort", b, s)] / p50[("optimum-o2", b, s)], 4)
            for b in batches
            for s in seqs
        }
    for n in ("edgellm-ov-f32", "edgellm-ov-bf16", "optimum-o2"):
        if n in runners:
            d["ratios_p50"][f"{n}/edgellm-ort"] = {
                f"b{b}_s{s}": round(p50[(n, b, s)] / p50[("edgellm-ort", b, s)], 4)
                for b in batches
                for s in seqs
            }
    d["cosine_min_vs_torch"] = acc
    d["config"].update(
        {
            "model": args.model,
            "threads": args.threads,
            "optimum": peer is not None,
            "isolation": "each runtime runner in its own process, timed there; torch in this one",
            "command": "python benchmarks/bench_server_onnx.py " + " ".join(sys.argv[1:]),
        }
    )
    text = json.dumps(d, indent=2)
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
