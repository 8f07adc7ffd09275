"""INT4 GPTQ at LLM scale: wall time and peak memory of ``quantize`` on a Qwen2.5-0.5B-shaped decoder.

Synthesizes the decoder (24 layers, hidden 896, intermediate 4864, 0.36 B parameters, vocabulary 4096,
seeded random weights) unless ``--model`` names a directory, builds the calibration batches the way
``edgellm compress`` does (64 windows of 128 tokens of the bundled corpus), and runs
``quantize(model, Int4WeightOnly(method="gptq", group_size=G))`` once per group size, each in its own
process so that each peak is its own. Peak RSS is read two ways: over the whole process (``ru_maxrss``,
loading included) and during ``quantize`` alone (``VmHWM`` after resetting it via ``/proc/self/clear_refs``).

    .venv/bin/python benchmarks/bench_gptq_scale.py --groups 128,32

Goals (issue 20): under 600 s and a peak RSS of at most 3x the fp32 weights per run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time, logging
logging.disable(logging.WARNING)
import torch
from edgellm import models
from edgellm.compress.calibration import corpus_parts, make_batches
from edgellm.compress.quant import Int4WeightOnly, quantizable_layers, quantize

path, group, sequences = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0

t0 = time.perf_counter()
m = models.load(path)
train, _, src, _ = corpus_parts(None, None)
calib = make_batches(m, train, src, max_sequences=sequences)
load_s = time.perf_counter() - t0
params = {id(p): p for p in m.module.parameters()}
fp32 = sum(p.numel() * 4 for p in params.values())
rss_before = hwm()
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
    reset = True
except OSError:
    reset = False
t = time.perf_counter()
spec = quantize(m, Int4WeightOnly(method="gptq", group_size=group), calib.feeds)
wall = time.perf_counter() - t
targets = quantizable_layers(m)
print(json.dumps({
    "group_size": group, "quantize_s": round(wall, 1), "load_and_batches_s": round(load_s, 1),
    "fp32_weight_bytes": fp32, "parameters": sum(p.numel() for p in params.values()),
    "peak_rss_quantize_bytes": hwm() if reset else None,
    "peak_rss_process_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "peak_rss_before_quantize_bytes": rss_before,
    "calibration": {"sequences": calib.n_sequences, "tokens": calib.n_tokens},
    "layers_quantized": len(spec.layers), "layers_targeted": len(targets),
    "torch_threads": torch.get_num_threads(),
}))
"""


def run_one(model: Path, group: int, sequences: int) -> dict:
    """One ``quantize`` in a fresh process; its JSON line."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(group), str(sequences)],
        check=True,
        capture_output=True,
        text=True,
    )
    rep = json.loads(out.stdout.strip().splitlines()[-1])
    budget = 3 * rep["fp32_weight_bytes"]
    peak = rep["peak_rss_quantize_bytes"] or rep["peak_rss_process_bytes"]
    rep["peak_over_fp32"] = round(peak / rep["fp32_weight_bytes"], 2)
    rep["within_goals"] = rep["quantize_s"] < 600 and peak <= budget
    return rep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a model directory (default: synthesize qwen2.5-0.5b)")
    ap.add_argument("--preset", default="qwen2.5-0.5b")
    ap.add_argument("--groups", default="128,32")
    ap.add_argument("--sequences", type=int, default=64, help="calibration windows of 128 tokens")
    ap.add_argument("--output", default="edgellm-out/bench_gptq_scale.json")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else None
        if model is None:
            from edgellm.models.synthetic import synthesize

            model = synthesize(args.preset, Path(tmp) / args.preset)
        runs = [run_one(model, int(g), args.sequences) for g in args.groups.split(",")]
    report = {"preset": args.preset if not args.model else str(args.model), "runs": runs}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if all(r["within_goals"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
