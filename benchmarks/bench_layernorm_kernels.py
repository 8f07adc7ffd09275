"""Why edgellm writes residual adds as ``Sum``: ONNX Runtime's CPU ``SkipLayerNormalization`` kernel
against ``Add`` + ``LayerNormalization`` on the same tensor, in one process, interleaved.

    .venv/bin/python benchmarks/bench_layernorm_kernels.py --runs 200

With known shapes ONNX Runtime fuses Add + LayerNormalization into SkipLayerNormalization at load
time; with ``Sum`` (or unknown shapes) it keeps the two ops. Prints JSON with both p50s and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def session(kind: str, hidden: int, threads: int):
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    g, b = rng.random(hidden).astype(np.float32), rng.standard_normal(hidden).astype(np.float32)
    residual = "Add" if kind == "skip (Add, fused by ORT)" else "Sum"
    nodes = [
        helper.make_node(residual, ["x", "r"], ["s"]),
        helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1, epsilon=1e-12),
    ]
    shape = [8, 128, hidden]
    graph = helper.make_graph(
        nodes,
        "ln",
        [helper.make_tensor_value_info("x", 1, shape), helper.make_tensor_value_info("r", 1, shape)],
        [helper.make_tensor_value_info("y", 1, None)],
        [numpy_helper.from_array(g, "g"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    kinds = ["skip (Add, fused by ORT)", "Sum + LayerNormalization"]
    sess = {k: session(k, args.hidden, args.threads) for k in kinds}
    rng = np.random.default_rng(1)
    feeds = {
        "x": rng.standard_normal((8, 128, args.hidden)).astype(np.float32),
        "r": rng.standard_normal((8, 128, args.hidden)).astype(np.float32),
    }
    outs = {k: s.run(None, feeds)[0] for k, s in sess.items()}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for i in range(args.runs):
        for k in kinds if i % 2 == 0 else kinds[::-1]:
            t = time.perf_counter()
            sess[k].run(None, feeds)
            times[k].append((time.perf_counter() - t) * 1e3)
    p50 = {k: float(np.percentile(v, 50)) for k, v in times.items()}
    print(
        json.dumps(
            {
                "p50_ms": p50,
                "ratio_skip_over_sum": p50[kinds[0]] / p50[kinds[1]],
                "max_abs_difference": float(np.abs(outs[kinds[0]] - outs[kinds[1]]).max()),
                "shape": [8, 128, args.hidden],
                "threads": args.threads,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
