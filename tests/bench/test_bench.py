import json

import pytest
import torch

from edgellm import models
from edgellm.bench import bench_artifact, parse_int_list
from edgellm.bench.report import plot_latency
from edgellm.errors import EdgeLLMError
from edgellm.export import export


@pytest.fixture()
def mlp_artifact(mlp, tmp_path):
    return export(models.load(mlp, example_inputs=torch.randn(2, 16)), "x86-server", tmp_path / "mlp")


def test_bench_artifact_report(mlp_artifact, tmp_path):
    rep = bench_artifact(
        mlp_artifact, batches=[1, 4], seqs=[128], runs=7, warmup=1, threads=1, progress=False
    )
    d = json.loads(json.dumps(rep.to_dict()))
    assert [(r["batch"], r["seq"]) for r in d["results"]] == [(1, 0), (4, 0)]  # no sequence axis on an MLP
    for r in d["results"]:
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput_per_s"] == pytest.approx(r["batch"] * 1e3 / r["p50_ms"], rel=1e-3)
        assert r["peak_rss_mb"] > 10 and r["runs"] == 7
        assert r["model_size_mb"] == pytest.approx(mlp_artifact.size_bytes / 2**20, rel=1e-3)
    assert d["host"]["logical_cores"] >= 1
    png = plot_latency(d, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_with_reference_has_ratios(minilm_artifact):
    rep = bench_artifact(
        minilm_artifact, batches=[2], seqs=[16], runs=3, warmup=1, reference=True, progress=False
    )
    d = rep.to_dict()
    assert {r["name"] for r in d["results"]} == {"torch", "onnxruntime"}
    ratio = d["ratios_p50"]["onnxruntime/torch"]["b2_s16"]
    p = {r["name"]: r["p50_ms"] for r in d["results"]}
    assert ratio == pytest.approx(p["onnxruntime"] / p["torch"], rel=1e-3)


@pytest.mark.parametrize("text", ["", "a,b", "0", "1,-2"])
def test_parse_int_list_rejects(text):
    with pytest.raises(EdgeLLMError, match="--batch"):
        parse_int_list(text, "--batch")


def test_parse_int_list():
    assert parse_int_list("1,8", "--batch") == [1, 8]
