"""INT4 GPTQ at LLM scale: a Qwen2.5-0.5B-shaped decoder (0.36 B parameters) in under 10 minutes and
at most 3x its fp32 weights of memory (benchmarks/bench_gptq_scale.py measures the same, with figures)."""

import json
import subprocess
import sys

import pytest

CHILD = r"""
import json, resource, sys, time, logging
logging.disable(logging.WARNING)
from edgellm import models
from edgellm.compress.calibration import corpus_parts, make_batches
from edgellm.compress.quant import Int4WeightOnly, quantizable_layers, quantize

m = models.load(sys.argv[1])
train, _, src, _ = corpus_parts(None, None)
calib = make_batches(m, train, src, max_sequences=64)  # what `edgellm compress` calibrates on
fp32 = sum(p.numel() * 4 for p in {id(p): p for p in m.module.parameters()}.values())
t = time.perf_counter()
spec = quantize(m, Int4WeightOnly(method="gptq", group_size=128), calib.feeds)
wall = time.perf_counter() - t
print(json.dumps({
    "wall_s": wall, "fp32_bytes": fp32,
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "layers": sorted(spec.layers), "kept": sorted(spec.kept),
    "targets": sorted(quantizable_layers(m)), "n_tokens": calib.n_tokens,
}))
"""


@pytest.mark.slow
def test_gptq_g128_on_a_qwen2_5_0_5b_shaped_decoder_fits_time_and_memory(tmp_path):
    from edgellm.models.synthetic import synthesize

    path = synthesize("qwen2.5-0.5b", tmp_path / "qwen")
    # a fresh process: its peak RSS (loading included) is the compression's alone
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=1200
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rep = json.loads(out.stdout.strip().splitlines()[-1])
    assert rep["n_tokens"] >= 64 * 128
    assert rep["wall_s"] < 600, rep["wall_s"]
    assert rep["peak_rss_bytes"] <= 3 * rep["fp32_bytes"], (rep["peak_rss_bytes"], rep["fp32_bytes"])
    decoder = [n for n in rep["targets"] if ".layers." in n]
    assert len(decoder) == 24 * 7  # q, k, v, o, gate, up, down in each of 24 layers
    assert set(decoder) <= set(rep["layers"]) and not rep["kept"]
