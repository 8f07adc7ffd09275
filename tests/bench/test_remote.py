"""`edgellm bench --remote adb:SERIAL` through a stand-in adb that runs on this host (the only double:
no phone exists here); the artifact, the push, LiteRT's own benchmark tool and the parsing are real.
Also `--estimate`, and the parsers of each tool's output format."""

import json
import sys
from pathlib import Path

import pytest
import torch

from edgellm import models
from edgellm.bench.estimate import estimate_latency
from edgellm.bench.remote import parse_tool_output, remote_bench, tool_command, tool_flavor
from edgellm.errors import EdgeLLMError
from edgellm.export import export

FAKE_ADB = str(Path(__file__).parents[1] / "fakes" / "adb")


@pytest.fixture
def device(tmp_path, monkeypatch):
    root = tmp_path / "device"
    root.mkdir()
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_SERIAL", "EMU123")
    return root


@pytest.fixture(scope="module")
def mlp_tflite(tmp_path_factory):
    pytest.importorskip("ai_edge_litert", reason="pip install 'edgellm[tflite]'")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 512))
    m = models.load(net, example_inputs=torch.randn(1, 512), name="mlp")
    return export(m, "snapdragon-865", tmp_path_factory.mktemp("r") / "mlp")


def litert_tool() -> str:
    import ai_edge_litert.tools.benchmark_litert_model as tool

    return f"{sys.executable} {tool.__file__}"


def test_adb_bench_runs_litert_benchmark_tool_on_the_pushed_model(mlp_tflite, device):
    rep = remote_bench(
        mlp_tflite, "adb:EMU123", tool=litert_tool(), runs=12, warmup=2, threads=2, adb=FAKE_ADB
    )
    pushed = device / "data/local/tmp/edgellm" / mlp_tflite.path.name / "model.tflite"
    assert pushed.read_bytes() == mlp_tflite.model_path.read_bytes()  # the artifact's file went to the device
    r = rep["results"][0]
    assert rep["config"]["tool_flavor"] == "litert-python" and rep["config"]["measured_on"] == "device"
    assert r["runs"] == 12 and r["batch"] == 1
    assert 0 < r["min_ms"] <= r["p50_ms"] <= rep["tool_stats_ms"]["max"]
    assert "--num_runs=12" in rep["config"]["command"] and str(pushed) not in rep["config"]["command"]


def test_cli_remote_prints_the_same_json_rows(mlp_tflite, device, capsys):
    from edgellm.cli import main

    rc = main(
        [
            "bench",
            str(mlp_tflite.path),
            "--remote",
            "adb:EMU123",
            "--tool",
            litert_tool(),
            "--adb",
            FAKE_ADB,
            "--runs",
            "5",
            "--warmup",
            "1",
            "--json",
        ]
    )
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["results"][0]) >= {
        "name",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "throughput_per_s",
        "model_size_mb",
    }


def test_unattached_device_and_wrong_tool_are_clear(mlp_tflite, device, minilm_artifact):
    with pytest.raises(EdgeLLMError, match="'NOPE' is not attached.*EMU123"):
        remote_bench(mlp_tflite, "adb:NOPE", tool=litert_tool(), adb=FAKE_ADB)
    with pytest.raises(EdgeLLMError, match="adb:SERIAL"):
        remote_bench(mlp_tflite, "ssh:host", tool=litert_tool(), adb=FAKE_ADB)
    with pytest.raises(EdgeLLMError, match="cannot run a 'onnx' artifact"):
        remote_bench(minilm_artifact, "adb:EMU123", tool="/data/local/tmp/benchmark_model", adb=FAKE_ADB)
    with pytest.raises(EdgeLLMError, match="cannot tell which benchmark tool"):
        remote_bench(mlp_tflite, "adb:EMU123", tool="/data/local/tmp/mytool", adb=FAKE_ADB)
    with pytest.raises(EdgeLLMError, match="adb executable"):
        remote_bench(mlp_tflite, "adb:EMU123", tool=litert_tool(), adb="/nonexistent/adb")


def test_tool_command_bounds_token_ids():
    cmd = tool_command(
        "bm/benchmark_model",
        "tflite",
        "/d/m.tflite",
        50,
        5,
        4,
        {"input_ids": (0, 30521), "attention_mask": (1, 1)},
    )
    assert (
        "--graph=/d/m.tflite" in cmd
        and "--input_layer_value_range=input_ids,0,30521:attention_mask,1,1" in cmd
    )
    assert tool_flavor("/data/local/tmp/onnxruntime_perf_test") == "ort-perf-test"
    assert "-I" in tool_command("onnxruntime_perf_test", "ort-perf-test", "m.ort", 10, 1, 2)
    assert "-I" not in tool_command(
        "onnxruntime_perf_test", "ort-perf-test", "m.ort", 10, 1, 2, {"input_ids": (0, 9)}
    )


# the tools' documented output formats (LiteRT benchmark_model, onnxruntime_perf_test)
TFLITE_OUT = """STARTING!
Graph: [/data/local/tmp/edgellm/m/model.tflite]
Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=5 first=48210 curr=41007 min=40960 max=48210 avg=42511.2 std=2810
Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=41010 curr=40877 min=40102 max=44418 avg=41203.5 std=702 p5=40320 median=41106 p95=42750
Inference timings in us: Init: 21311, First inference: 48210, Warmup (avg): 42511.2, Inference (avg): 41203.5
Memory footprint delta from the start of the tool (MB): init=95.1 overall=131.4
"""
ORT_OUT = """Session creation time cost: 0.212 s
First inference time cost: 61 ms
Total inference time cost: 2.31 s
Total inference requests: 50
Average inference time cost: 46.2 ms
Total inference run time: 2.32 s
Number of inferences per second: 21.6
Peak working set size: 181403648 bytes
Min Latency: 0.0431 s
Max Latency: 0.0522 s
P50 Latency: 0.0458 s
P90 Latency: 0.0489 s
P95 Latency: 0.0497 s
P99 Latency: 0.0519 s
P999 Latency: 0.0522 s
"""


def test_parsers_read_each_tools_format():
    t = parse_tool_output(TFLITE_OUT, "tflite")
    assert t["runs"] == 50 and t["median"] == pytest.approx(41.106) and t["mean"] == pytest.approx(41.2035)
    assert t["p95"] == pytest.approx(42.75) and t["memory_mb"] == pytest.approx(131.4)
    o = parse_tool_output(ORT_OUT, "ort-perf-test")
    assert o["runs"] == 50 and o["median"] == pytest.approx(45.8) and o["p99"] == pytest.approx(51.9)
    assert o["memory_mb"] == pytest.approx(181403648 / 2**20)
    with pytest.raises(EdgeLLMError, match="no latency figures"):
        parse_tool_output("Segmentation fault", "tflite")


def test_estimate_is_a_labelled_roofline(mlp_tflite, minilm_artifact):
    e = estimate_latency(minilm_artifact, "snapdragon-865", batch=1, seq=128)
    assert e["estimate"] and "ESTIMATE" in e["label"] and e["target"] == "snapdragon-865"
    assert 2.0e9 < e["flops"] < 4.0e9  # MiniLM at 128 tokens: ~1.4 GMAC
    slower = estimate_latency(minilm_artifact, "raspberry-pi-5", batch=1, seq=128)
    faster = estimate_latency(minilm_artifact, "nvidia-h100", batch=1, seq=128)
    assert faster["latency_ms"] < e["latency_ms"]
    assert slower["latency_ms"] > faster["latency_ms"]
    longer = estimate_latency(minilm_artifact, "snapdragon-865", batch=1, seq=256)
    assert longer["flops"] > 1.9 * e["flops"] and longer["latency_ms"] > e["latency_ms"]
    # a plain module cannot be reloaded: 2 x params x tokens, and it says so
    p = estimate_latency(mlp_tflite, batch=1, seq=1)
    assert "parameters" in p["flops_source"]


def test_cli_estimate_and_bad_flag_combinations(minilm_artifact, capsys):
    from edgellm.cli import main

    assert (
        main(
            [
                "bench",
                str(minilm_artifact.path),
                "--estimate",
                "-t",
                "snapdragon-865",
                "-b",
                "1",
                "-s",
                "128",
                "--json",
            ]
        )
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert rep["estimate"] is True and rep["results"][0]["bound"] in ("compute", "memory")
    assert (
        main(
            [
                "bench",
                str(minilm_artifact.path),
                "--estimate",
                "--remote",
                "adb:X",
                "--tool",
                "benchmark_model",
            ]
        )
        == 2
    )
    assert main(["bench", str(minilm_artifact.path), "--remote", "adb:X"]) == 2
    assert "go together" in capsys.readouterr().err
