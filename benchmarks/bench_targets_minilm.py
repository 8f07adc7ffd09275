"""MiniLM on every kind of target: one artifact per (target, format, precision), then in one process,
all runners interleaved, the host latency at batch 1, sequence 128; parity against each artifact's
reference and against torch fp32; file sizes; and the roofline estimate on each target's profile.

    .venv/bin/python benchmarks/bench_targets_minilm.py --runs 40
    .venv/bin/python benchmarks/bench_targets_minilm.py --runs 40 --formats onnx,tflite,pte

Prints JSON and writes it to edgellm-out/bench_targets_minilm.json. The TensorRT artifacts have no
host latency here (the engine is built where TensorRT and a GPU are); their parity is that of the
validated Q/DQ ONNX on ONNX Runtime CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--output", default="edgellm-out/bench-targets")
    ap.add_argument("--formats", default=None, help="only these formats (comma list), e.g. pte,tflite")
    args = ap.parse_args(argv)

    from edgellm.bench import host_info
    from edgellm.pipeline.target_matrix import MATRIX, PTE_ROWS, bench_matrix, export_matrix

    cases = MATRIX + PTE_ROWS
    if args.formats:
        cases = [c for c in cases if c[1] in args.formats.split(",")]
    rows = export_matrix(args.model, args.output, cases=cases, log=lambda m: print(m, file=sys.stderr))
    rep = bench_matrix(rows, runs=args.runs, warmup=args.warmup, threads=args.threads)
    out = {
        "model": args.model,
        "shape": {"batch": 1, "seq": 128},
        "runs": args.runs,
        "host": host_info(),
        "rows": [r.to_dict() for r in rows],
        "bench": rep,
    }
    text = json.dumps(out, indent=2, default=str)
    Path("edgellm-out").mkdir(exist_ok=True)
    Path("edgellm-out/bench_targets_minilm.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
