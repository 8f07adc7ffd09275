"""`edgellm bench --remote adb:SERIAL --tool llama-bench|executor_runner` for GGUF and .pte artifacts, through
the stand-in adb that runs the device's commands on this host (the only double: no phone exists here).

llama-bench is llama.cpp's real tool where one is built (EDGELLM_LLAMA_BENCH, else the repository's
.peers/llama.cpp/build/bin/llama-bench), on a real GGUF file that llama.cpp's own converter writes from a tiny
random-weight Llama; CI has neither and skips, and the parsers are also tested on captured real output
(llama_bench_output.json, with its note). No executor_runner binary exists here (the executorch wheel ships
none): its command line and the log lines its source prints are tested, not a run of it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgellm.bench.remote import remote_bench, tool_flavor
from edgellm.bench.remote_llm import (
    executor_runner_command,
    llama_bench_commands,
    llama_bench_rows,
    parse_executor_runner,
    parse_llama_bench,
    step_rows,
)
from edgellm.errors import EdgeLLMError
from edgellm.runtime.artifact import Artifact, write_manifest

ROOT = Path(__file__).parents[2]
FAKE_ADB = str(ROOT / "tests" / "fakes" / "adb")
CAPTURED = Path(__file__).with_name("llama_bench_output.json")


def llama_bench() -> Path | None:
    env = os.environ.get("EDGELLM_LLAMA_BENCH")
    path = Path(env) if env else ROOT / ".peers" / "llama.cpp" / "build" / "bin" / "llama-bench"
    return path if path.is_file() and os.access(path, os.X_OK) else None


@pytest.fixture
def device(tmp_path, monkeypatch):
    root = tmp_path / "device"
    root.mkdir()
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_SERIAL", "EMU123")
    return root


def make_artifact(folder: Path, model_file: str, fmt: str, runtime: str, **extra) -> Artifact:
    """An artifact folder around an existing model file, with the manifest the exporters write."""
    fields = {
        "model_file": model_file,
        "task": "text-generation",
        "model": {"name": "small-lm", "family": "llama"},
        "target": {"name": "snapdragon-8-gen-3", "runtime": runtime, "format": fmt, "kind": "phone"},
        "precision": "fp32",
        "inputs": extra.pop("inputs", [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "new"]}]),
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", "new", 4096]}],
        "recipe": {},
        **extra,
    }
    write_manifest(folder, fields)
    return Artifact.load(folder)


@pytest.fixture(scope="module")
def gguf_artifact(small_lm, tmp_path_factory):
    """small-lm (2 layers, 128 wide) written as F32 GGUF by llama.cpp's own converter."""
    tool = llama_bench()
    if tool is None:
        pytest.skip("no llama-bench: set EDGELLM_LLAMA_BENCH or build .peers/llama.cpp (CI has none)")
    llama_dir = tool.parents[2]  # <llama.cpp>/build/bin/llama-bench
    if not (llama_dir / "convert_hf_to_gguf.py").is_file():
        pytest.skip(f"no convert_hf_to_gguf.py in {llama_dir} to write the GGUF file")
    folder = tmp_path_factory.mktemp("gguf") / "small-lm-gguf"
    folder.mkdir()
    script = ROOT / "benchmarks" / "peers_convert.py"
    args = ["--llama-dir", str(llama_dir), "--", str(small_lm), "--outtype", "f32"]
    subprocess.run(
        [sys.executable, str(script), *args, "--outfile", str(folder / "model.gguf")],
        check=True,
        capture_output=True,
    )
    gen = {"kind": "decoder", "vocab": 4096, "context": 256, "precision": "fp32"}
    return make_artifact(folder, "model.gguf", "gguf", "llama.cpp", generation=gen)


def test_llama_bench_over_adb_gives_generation_rows(gguf_artifact, device):
    tool = str(llama_bench())
    rep = remote_bench(
        gguf_artifact,
        "adb:EMU123",
        tool=tool,
        prompts=[16, 32],
        new=8,
        runs=2,
        warmup=1,
        threads=1,
        adb=FAKE_ADB,
    )
    pushed = device / "data/local/tmp/edgellm" / gguf_artifact.path.name / "model.gguf"
    assert pushed.read_bytes() == gguf_artifact.model_path.read_bytes()
    assert rep["config"]["tool_flavor"] == "llama-bench" and rep["config"]["measured_on"] == "device"
    prefill_cmd, decode_cmd = rep["config"]["commands"]
    assert "-p 16,32 -n 0 -t 1 -r 2 -o json" in prefill_cmd and "-p 0 -n 8 -d 16,32" in decode_cmd
    assert [r["prompt"] for r in rep["rows"]] == [16, 32]
    for r in rep["rows"]:
        assert r["new"] == 8 and r["decode_depth"] == r["prompt"] and r["runs"] == 2
        assert r["ttft_ms"] > 0 and r["decode_tok_s"] > 0
        assert r["prefill_tok_s"] == pytest.approx(r["prompt"] * 1000 / r["ttft_ms"], rel=0.01)
        assert r["decode_ms_per_token"] == pytest.approx(1000 / r["decode_tok_s"], rel=0.01)
        assert r["weight_gb_per_s"] > 0
    tests = {(e["n_prompt"], e["n_gen"], e["n_depth"]) for e in rep["tool_stats"]}
    assert tests == {(16, 0, 0), (32, 0, 0), (0, 8, 16), (0, 8, 32)}
    assert rep["tool_stats"][0]["model_n_params"] > 0 and rep["size_bytes"] == gguf_artifact.size_bytes


def test_captured_llama_bench_output_parses_to_median_rows():
    doc = json.loads(CAPTURED.read_text())
    prefill, decode = (parse_llama_bench(t) for t in doc["stdout"])
    rows = llama_bench_rows(prefill, decode, [32, 64], 16)
    # pp32 samples 43.3, 70.1, 636.0 ms (a busy shared host): the median, not llama-bench's mean of 249.8
    assert rows[0]["ttft_ms"] == pytest.approx(70.13, abs=0.01)
    assert rows[0]["prefill_tok_s"] == pytest.approx(32 / 0.0701343, rel=1e-3)
    # tg16 after 64 cached tokens: median 53.17 ms for 16 tokens
    assert rows[1]["decode_ms_per_token"] == pytest.approx(53.1713 / 16, rel=1e-3)
    assert rows[1]["decode_tok_s"] == pytest.approx(16 / 0.0531713, rel=1e-3)
    assert prefill[0]["model_type"] == "llama ?B Q8_0" and decode[1]["n_depth"] == 64
    with pytest.raises(EdgeLLMError, match=r"no pp128 test.*pp32, pp64, tg16@d32, tg16@d64"):
        llama_bench_rows(prefill, decode, [128], 16)


def test_llama_bench_commands_and_bad_output():
    pp, tg = llama_bench_commands("/d/llama-bench", "/d/m dir/model.gguf", [128, 512], 64, 5, 0, 4)
    assert pp == "/d/llama-bench -m '/d/m dir/model.gguf' -p 128,512 -n 0 -t 4 -r 5 -o json --no-warmup"
    assert tg.startswith("/d/llama-bench -m '/d/m dir/model.gguf' -p 0 -n 64 -d 128,512 -t 4 -r 5")
    with pytest.raises(EdgeLLMError, match="no llama-bench results.*failed to load model 'x.gguf'"):
        parse_llama_bench("[\nllama_bench: error: failed to load model 'x.gguf'")
    with pytest.raises(EdgeLLMError, match="no llama-bench results.*empty"):
        parse_llama_bench("")


@pytest.fixture
def stub_gguf(tmp_path):
    """A GGUF artifact whose model file no runtime opens (the errors below come before any tool runs
    it, or from a tool that is not llama-bench)."""
    folder = tmp_path / "stub-gguf"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF" + bytes(60))
    return make_artifact(folder, "model.gguf", "gguf", "llama.cpp", generation={"vocab": 4096, "context": 64})


@pytest.fixture
def stub_pte(tmp_path):
    """A generation .pte artifact (one-token step program, weights in a .ptd file); no runtime opens it."""
    folder = tmp_path / "stub-pte"
    folder.mkdir()
    (folder / "model.pte").write_bytes(bytes(64))
    (folder / "weights.ptd").write_bytes(bytes(32))
    ins = [
        {"name": "input_ids", "dtype": "int64", "shape": [1, 1]},
        {"name": "input_pos", "dtype": "int64", "shape": [1]},
    ]
    gen = {"vocab": 4096, "context": 64, "precision": "8da4w", "cache": {"layout": "static"}}
    return make_artifact(folder, "model.pte", "pte", "executorch", inputs=ins, generation=gen)


def test_tools_must_match_the_format_and_exist(stub_gguf, stub_pte, device):
    assert tool_flavor("/data/local/tmp/llama-bench") == "llama-bench"
    assert tool_flavor("taskset f0 /data/local/tmp/xnn_executor_runner") == "executor_runner"
    assert tool_flavor("executor_runner") == "executor_runner"
    with pytest.raises(
        EdgeLLMError, match="executor_runner tool cannot run a 'gguf' artifact.*llama-bench for"
    ):
        remote_bench(stub_gguf, "adb:EMU123", tool="/data/local/tmp/executor_runner", adb=FAKE_ADB)
    with pytest.raises(EdgeLLMError, match="llama-bench tool cannot run a 'pte' artifact"):
        remote_bench(stub_pte, "adb:EMU123", tool="/data/local/tmp/llama-bench", adb=FAKE_ADB)
    with pytest.raises(EdgeLLMError, match="tflite tool cannot run a 'gguf'"):
        remote_bench(stub_gguf, "adb:EMU123", tool="benchmark_model", adb=FAKE_ADB)
    # a tool that is not on the device: adb's exit status and the shell's own words
    with pytest.raises(EdgeLLMError, match=r"failed on EMU123 \(exit 127\).*llama-bench: No such file"):
        remote_bench(
            stub_gguf, "adb:EMU123", tool="/data/local/tmp/llama-bench", prompts=[8], new=8, adb=FAKE_ADB
        )
    # a command that runs but prints no llama-bench JSON: the error quotes what it printed
    with pytest.raises(
        EdgeLLMError, match="no llama-bench results found in the tool's output: llama-bench -m"
    ):
        remote_bench(stub_gguf, "adb:EMU123", tool="echo llama-bench", prompts=[8], new=8, adb=FAKE_ADB)
    with pytest.raises(EdgeLLMError, match="exceed the artifact's context of 64"):
        remote_bench(stub_gguf, "adb:EMU123", tool="llama-bench", prompts=[32], new=64, adb=FAKE_ADB)


def test_executor_runner_over_adb_pushes_program_and_weights(stub_pte, device):
    # no executor_runner binary exists on this host: the push and the exact command are real, the run fails
    with pytest.raises(
        EdgeLLMError, match=r"'/data/local/tmp/xnn_executor_runner' failed on EMU123 \(exit 127\)"
    ):
        remote_bench(stub_pte, "adb:EMU123", tool="/data/local/tmp/xnn_executor_runner", adb=FAKE_ADB)
    on_device = device / "data/local/tmp/edgellm" / "stub-pte"
    assert (on_device / "model.pte").read_bytes() == (stub_pte.path / "model.pte").read_bytes()
    assert (on_device / "weights.ptd").is_file()
    cmd = executor_runner_command(
        "xnn_executor_runner", "/d/model.pte", 50, 5, 4, method="forward", data_path="/d/w.ptd"
    )
    assert cmd == (
        "xnn_executor_runner --model_path=/d/model.pte --num_executions=55 --cpu_threads=4 "
        "--method_name=forward --data_path=/d/w.ptd 2>&1"
    )


# executor_runner's log, in the format its source prints (pytorch/executorch
# examples/portable/executor_runner/executor_runner.cpp, main at 018a3a5: ET_LOG(Info, "Model loaded in %f ms.",
# ...) after load_method; ET_LOG(Info, "Iteration %" PRIu32 " of %" PRIu32 ": %f ms", ...) per execution;
# ET_LOG(Info, "Model executed successfully %" PRIu32 " time(s) in %f ms.", ...) at the end), each line
# prefixed by the POSIX platform layer's "%c %02u:%02u:%02u.%06lu executorch:%s:%zu] "
# (runtime/platform/default/posix.cpp, et_pal_emit_log_message). Older runners print no per-iteration line.
RUNNER_LOG = """I 00:00:00.000412 executorch:executor_runner.cpp:189] Resetting threadpool with num threads = 4
I 00:00:00.010050 executorch:executor_runner.cpp:412] Model file /data/local/tmp/edgellm/m/model.pte is loaded.
I 00:00:00.010101 executorch:executor_runner.cpp:421] Using method forward
I 00:00:00.031877 executorch:executor_runner.cpp:560] Model loaded in 21.812000 ms.
I 00:00:00.052310 executorch:executor_runner.cpp:703] Iteration 1 of 4: 20.301000 ms
I 00:00:00.064411 executorch:executor_runner.cpp:703] Iteration 2 of 4: 12.004000 ms
I 00:00:00.076420 executorch:executor_runner.cpp:703] Iteration 3 of 4: 11.900000 ms
I 00:00:00.088831 executorch:executor_runner.cpp:703] Iteration 4 of 4: 12.396000 ms
I 00:00:00.088840 executorch:executor_runner.cpp:712] Model executed successfully 4 time(s) in 56.601000 ms.
I 00:00:00.088850 executorch:executor_runner.cpp:718] 1 outputs:
OutputX 0: tensor(sizes=[1, 1, 4096], [0.1, 0.2, ...])
"""
OLD_RUNNER_LOG = """I 00:00:00.010050 executorch:executor_runner.cpp:125] Model file model.pte is loaded.
I 00:00:01.200000 executorch:executor_runner.cpp:230] Model executed successfully 10 time(s) in 123.500000 ms.
"""


def test_executor_runner_log_parses_to_latency_and_step_rows(stub_pte):
    s = parse_executor_runner(RUNNER_LOG, warmup=1)  # the cold first iteration is dropped
    assert s["runs"] == 3 and s["min"] == pytest.approx(11.9) and s["max"] == pytest.approx(12.396)
    assert s["median"] == pytest.approx(12.004) and s["load_ms"] == pytest.approx(21.812)
    old = parse_executor_runner(OLD_RUNNER_LOG, warmup=1)
    assert old["mean"] == pytest.approx(12.35) and old["runs"] == 10 and old["per_iteration"] == 0
    with pytest.raises(EdgeLLMError, match="no latency figures.*executor_runner output.*Failed to parse"):
        parse_executor_runner(
            "E 00:00:00.01 executorch:executor_runner.cpp:125] Failed to parse model file x"
        )
    (row,) = step_rows(stub_pte, s, wbytes=10**7)
    assert row["new"] == 1 and row["decode_ms_per_token"] == pytest.approx(12.004)
    assert row["decode_tok_s"] == pytest.approx(1000 / 12.004, rel=1e-3) and "one decode step" in row["timed"]
