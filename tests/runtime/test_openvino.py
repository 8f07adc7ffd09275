"""OpenVINO: the runner over edgellm's ONNX files and IR, parity per runtime, the preferred runtime chosen
by measurement, and the paths that use it (make_runner, bench, serve, generation)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

pytest.importorskip("openvino", reason="pip install 'edgellm[openvino]'")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm):
    """A random 2-layer BERT (64 wide) with MiniLM's tokenizer: every fusion of the BERT family, in ms."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from edgellm import models

    path = tmp_path_factory.mktemp("ov") / "tiny-bert"
    tok = AutoTokenizer.from_pretrained(minilm.source["path"])
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return models.load(path)


@pytest.fixture(scope="module")
def selected(tiny_bert, tmp_path_factory):
    """tiny-bert exported for x86-server, validated in every runtime the target lists and timed."""
    from edgellm.export import export

    return export(tiny_bert, "x86-server", tmp_path_factory.mktemp("ov") / "sel", runtimes="auto", threads=1)


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


def test_runner_reads_the_onnx_artifact_at_f32_and_bf16(minilm, minilm_artifact):
    from edgellm.runtime import make_runner
    from edgellm.runtime.openvino_runner import OpenVinoRunner, device_precisions

    feeds = minilm.example_inputs(batch=3, seq=33, seed=1)
    ref = minilm.run(feeds)["sentence_embedding"]
    ort = make_runner(minilm_artifact).run(feeds)["sentence_embedding"]
    r = OpenVinoRunner(minilm_artifact.model_path, threads=1, precision="f32")
    assert [s.name for s in r.inputs] == [s.name for s in minilm_artifact.inputs]
    assert "sequence" in r.inputs[0].shape  # named axes read from the ONNX file, not OpenVINO's '?'
    got = r.run({s.name: feeds[s.name] for s in r.inputs})["sentence_embedding"]
    assert r.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert r.describe()["precision"] == "f32"
    assert np.abs(got - ref).max() < 1e-4 and _cos(got, ort) > 0.99999
    if "bf16" in device_precisions():
        b = OpenVinoRunner(minilm_artifact.model_path, precision="bf16")
        got16 = b.run({s.name: feeds[s.name] for s in b.inputs})["sentence_embedding"]
        assert 0.9999 <= _cos(got16, ref) < 1.0 - 1e-9  # bf16 really ran: close, not identical


def test_a_precision_the_cpu_lacks_falls_back_to_f32_and_says_so(tiny_bert, selected):
    from edgellm.errors import EdgeLLMError
    from edgellm.runtime.openvino_runner import OpenVinoRunner, device_precisions, resolve_precision

    missing = [p for p in ("bf16", "f16") if p not in device_precisions()]
    if not missing:
        pytest.skip("this CPU runs every precision natively")
    assert resolve_precision(missing[0])[0] == "f32"
    with pytest.warns(RuntimeWarning, match=f"no native {missing[0]}"):
        r = OpenVinoRunner(selected.model_path, precision=missing[0])
    assert r.describe()["precision"] == "f32" and missing[0] in r.describe()["note"]
    with pytest.raises(EdgeLLMError, match="unknown OpenVINO inference precision 'fp8'"):
        resolve_precision("fp8")


def test_an_op_openvino_cannot_convert_is_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from edgellm.errors import EdgeLLMError
    from edgellm.runtime.openvino_runner import OpenVinoRunner

    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    onnx.save(m, tmp_path / "odd.onnx")
    with pytest.raises(EdgeLLMError, match="Frobnicate") as info:
        OpenVinoRunner(tmp_path / "odd.onnx")
    assert "onnxruntime" in info.value.hint


def test_export_validates_every_runtime_and_records_the_fastest(selected):
    from edgellm.runtime import make_runner

    sec = selected.manifest["runtimes"]
    names = [c["name"] for c in sec["candidates"]]
    assert names[0] == "onnxruntime" and "openvino-f32" in names
    timed = {c["name"]: c["latency"]["p50_ms"] for c in sec["candidates"] if c.get("passed")}
    assert all(
        c["parity"]["random"]["sentence_embedding"]["cosine_min"] >= 0.9999
        for c in sec["candidates"]
        if c["passed"]
    )
    best = min(timed, key=timed.get)
    assert sec["preferred"]["name"] == best and sec["measured"]["batch"] == 8
    assert sec["preferred"]["speedup"] == pytest.approx(timed["onnxruntime"] / timed[best], rel=1e-2)
    r = make_runner(selected)  # the default is the preferred runtime, at its precision
    assert r.runtime == sec["preferred"]["runtime"]
    if r.runtime == "openvino":
        assert r.describe()["precision"] == sec["preferred"]["options"]["precision"]
    assert make_runner(selected, "onnxruntime").runtime == "onnxruntime"


def test_openvino_refuses_an_artifact_it_did_not_validate(minilm_artifact, tiny_bert, tmp_path):
    from edgellm.compress.quant import Int8Dynamic, quantize
    from edgellm.errors import EdgeLLMError
    from edgellm.export import export
    from edgellm.runtime import make_runner

    with pytest.raises(EdgeLLMError, match="has not passed parity in openvino") as info:
        make_runner(minilm_artifact, "openvino")
    assert "--runtimes openvino" in info.value.hint
    # ONNX Runtime's fused QAttention has no OpenVINO conversion: the artifact stays on ONNX Runtime
    art = export(
        tiny_bert, "x86-server", tmp_path / "dyn", quant=quantize(tiny_bert, Int8Dynamic()), runtimes="auto"
    )
    ov = [c for c in art.manifest["runtimes"]["candidates"] if c["runtime"] == "openvino"]
    assert ov and all(not c["passed"] and "QAttention" in c["error"] for c in ov)
    assert str(tmp_path) not in ov[0]["error"]  # names the file, not the scratch folder
    assert art.manifest["runtimes"]["preferred"]["runtime"] == "onnxruntime"
    assert make_runner(art).runtime == "onnxruntime"
    with pytest.raises(EdgeLLMError, match="QAttention"):
        make_runner(art, "openvino")


def test_unknown_or_foreign_runtimes_are_refused(tiny_bert, tmp_path):
    from edgellm.errors import EdgeLLMError
    from edgellm.export import export
    from edgellm.targets import load_target

    with pytest.raises(EdgeLLMError, match="does not run format 'onnx' in 'litert'"):
        export(tiny_bert, "x86-server", tmp_path / "x", runtimes="litert")
    assert not (tmp_path / "x").exists()  # nothing half-written
    assert load_target("x86-server").runtimes_for("onnx") == ["onnxruntime", "openvino"]
    assert load_target("snapdragon-865").runtimes_for("tflite") == [load_target("snapdragon-865").runtimes[0]]


def test_target_profiles_check_their_runtime_lists(tmp_path):
    import yaml

    from edgellm.errors import TargetError
    from edgellm.targets import load_target
    from edgellm.targets.profiles import list_targets

    data = yaml.safe_load(list_targets()["x86-server"].read_text())
    data["format_runtimes"] = {"qnn-context-binary": ["onnxruntime"]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(TargetError, match="format_runtimes names formats not in 'formats'"):
        load_target(tmp_path / "bad.yaml")


def test_openvino_ir_format(tiny_bert, tmp_path, monkeypatch):
    from edgellm.export import export
    from edgellm.runtime import make_runner

    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGELLM_OPENVINO_CACHE", str(cache))
    art = export(tiny_bert, "x86-server", tmp_path / "ir", format="openvino", runtimes="auto")
    m = art.manifest
    assert m["target"] == {**m["target"], "runtime": "openvino", "format": "openvino"}
    assert {"model.xml", "model.bin"} <= set(m["files"]) and not any(f.endswith(".onnx") for f in m["files"])
    params = sum(p.numel() for p in tiny_bert.module.parameters())
    assert m["files"]["model.bin"]["bytes"] < 0.6 * params * 4  # weights stored as fp16
    assert m["recipe"]["openvino"]["weights"] == "fp16" and m["parity"]["passed"]
    assert m["runtimes"]["candidates"][0]["name"] == "openvino-f32"
    r = make_runner(art)
    assert r.runtime == "openvino" and any(cache.iterdir())  # compiled blob cached
    feeds = tiny_bert.example_inputs(batch=2, seq=16)
    out = r.run({s.name: feeds[s.name] for s in r.inputs})["sentence_embedding"]
    assert _cos(out, tiny_bert.run(feeds)["sentence_embedding"]) > 0.9999


def test_isolated_runner_reports_the_childs_error_and_times_in_rounds(selected, tmp_path):
    from edgellm.errors import EdgeLLMError
    from edgellm.runtime.isolated import IsolatedRunner, time_interleaved

    bad = IsolatedRunner("openvino", tmp_path / "missing.onnx")
    with pytest.raises(EdgeLLMError, match="does not exist"):
        bad.start()
    bad.close()
    a = IsolatedRunner("onnxruntime", str(selected.path), threads=1)
    b = IsolatedRunner("openvino", str(selected.path), threads=1, precision="f32")
    feeds = {"input_ids": np.ones((2, 8), np.int64), "attention_mask": np.ones((2, 8), np.int64)}
    feeds = {s.name: feeds.get(s.name, np.zeros((2, 8), np.int64)) for s in a.inputs}
    assert _cos(a.run(feeds)["sentence_embedding"], b.run(feeds)["sentence_embedding"]) > 0.9999
    t = time_interleaved({"a": a, "b": b}, feeds, rounds=2, runs=3, warmup=1)
    assert set(t) == {"a", "b"} and all(v["samples"] == 6 and v["p50_ms"] > 0 for v in t.values())
    assert a.peak_rss_mb() > 10
    proc = a._proc
    a.close()
    b.close()
    assert proc.poll() is not None  # the child is gone


def test_bench_times_every_validated_runtime(selected):
    from edgellm.bench import bench_artifact

    rep = bench_artifact(
        selected, batches=[2], seqs=[16], runs=3, warmup=1, threads=1, progress=False
    ).to_dict()
    passed = [c["name"] for c in selected.manifest["runtimes"]["candidates"] if c["passed"]]
    assert [r["name"] for r in rep["results"]] == passed
    assert {r["runtime"] for r in rep["results"]} == {"onnxruntime", "openvino"}
    assert rep["config"]["preferred_runtime"]["name"] in passed
    one = bench_artifact(
        selected, batches=[2], seqs=[16], runs=2, warmup=0, runtime="onnxruntime", progress=False
    )
    assert [r.name for r in one.results] == ["onnxruntime"]


def test_served_on_openvino(selected, run_server):
    import tritonclient.http as httpclient

    from edgellm.runtime import make_runner
    from edgellm.serve import ModelConfig

    feeds = {"input_ids": np.full((2, 12), 7, np.int64), "attention_mask": np.ones((2, 12), np.int64)}
    feeds = {s.name: feeds.get(s.name, np.zeros((2, 12), np.int64)) for s in selected.inputs}
    want = make_runner(selected, "openvino", precision="f32").run(feeds)["sentence_embedding"]
    with run_server([ModelConfig(selected.path, name="m")], runtime="openvino") as srv:
        c = httpclient.InferenceServerClient(f"127.0.0.1:{srv.config.port}")
        assert c.get_model_metadata("m")["platform"] == "openvino"
        ins = []
        for k, v in feeds.items():
            i = httpclient.InferInput(k, list(v.shape), "INT64")
            i.set_data_from_numpy(v)
            ins.append(i)
        got = c.infer("m", ins).as_numpy("sentence_embedding")
    assert _cos(got, want) > 0.9999  # at the artifact's recorded OpenVINO precision


def test_generation_on_openvino(small_llm, gen_artifact, tmp_path):
    from edgellm.errors import EdgeLLMError
    from edgellm.pipeline.generate_export import export_generate
    from edgellm.runtime.generator import Generator
    from edgellm.runtime.openvino_runner import device_precisions

    man = export_generate(small_llm, tmp_path / "ov", format="openvino", precision="int4", check_tokens=16)
    g = man["generation"]
    assert man["target"]["runtime"] == "openvino" and g["cache"]["layout"] == "concat"
    assert g["runtime"]["precision"] == ("bf16" if "bf16" in device_precisions() else "f32")
    assert g["parity"]["agreement"] == 1.0 or g["parity"]["equal_up_to_ties"]
    gen = Generator(tmp_path / "ov", threads=1)
    assert type(gen.engine).__name__ == "StatefulEngine"
    a = gen.generate([1, 5, 9, 13], max_new_tokens=8)
    b = gen.generate([1, 5, 9, 13], max_new_tokens=8)  # the state is reset between requests
    assert a.token_ids == b.token_ids and len(a.token_ids) == 8
    with pytest.raises(EdgeLLMError, match="has not passed parity in openvino"):
        Generator(gen_artifact, runtime="openvino")


def test_cli_export_shows_the_runtimes_and_bench_takes_one(tiny_bert, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "cli"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgellm.cli",
            "export",
            tiny_bert.source["path"],
            "-o",
            str(out),
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "runtime openvino-f32" in res.stdout and "preferred runtime" in res.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["runtimes"]["preferred"]["name"] in res.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "edgellm.cli", "bench", str(out), "--runtime", "tflite-ish", "--runs", "1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "unknown runtime 'tflite-ish'" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr


def test_no_warning_on_the_normal_path(selected):
    from edgellm.runtime import make_runner

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_runner(selected, "openvino", precision="f32")


def test_split_server_half_validated_in_openvino(tiny_bert, tmp_path):
    from edgellm.partition.split_export import export_split
    from edgellm.runtime import make_runner

    s = export_split(
        tiny_bert, cut=1, codec="fp16", device_format="ort", output=tmp_path / "s", server_runtimes="auto"
    )
    cands = {c["name"]: c for c in s.server.manifest["runtimes"]["candidates"]}
    assert (
        cands["openvino-f32"]["passed"] and s.device.manifest.get("runtimes") is None
    )  # phone half: its own
    r = make_runner(s.server, "openvino", precision="f32")
    feeds = {x.name: np.ones([d if isinstance(d, int) else 2 for d in x.shape], x.dtype) for x in r.inputs}
    ort = make_runner(s.server, "onnxruntime").run(feeds)
    got = r.run(feeds)
    assert all(_cos(got[k].reshape(2, -1), ort[k].reshape(2, -1)) > 0.9999 for k in ort)


def test_int8_for_openvino_is_static_qdq_with_bias_correction(tiny_bert, tmp_path):
    import onnx

    from edgellm.pipeline.export_many import export_at, quant_config

    assert quant_config("int8", "onnx").recipe == "int8-dynamic"  # ONNX Runtime alone: dynamic
    art = export_at(
        tiny_bert, "x86-server", tmp_path / "q", precision="int8", runtimes="auto", select_runtime=False
    )
    q = art.manifest["recipe"]["quantization"]
    assert q["recipe"] == "int8-static-ov" and q["config"]["bias_correction"]
    ov = [c for c in art.manifest["runtimes"]["candidates"] if c["runtime"] == "openvino"]
    assert ov and all(c["passed"] for c in ov) and "preferred" in art.manifest["runtimes"]
    ops = [n.op_type for n in onnx.load(art.model_path).graph.node]
    assert "DynamicQuantizeMatMul" not in ops and "QAttention" not in ops
    # q, k and v read one quantized tensor: fewer QuantizeLinear than quantized MatMuls
    assert 0 < ops.count("QuantizeLinear") < q["ops"]["QDQ MatMul"]


def test_streams_and_hint_reach_the_compiled_model(selected):
    from edgellm.runtime.openvino_runner import OpenVinoRunner

    r = OpenVinoRunner(selected.model_path, streams=2, hint="THROUGHPUT", precision="f32")
    assert r.compiled.get_property("NUM_STREAMS") == 2 and r.describe()["streams"] == 2


def test_openvino_missing_names_the_extra(selected, monkeypatch):
    import sys

    from edgellm.errors import MissingDependencyError
    from edgellm.runtime.openvino_runner import OpenVinoRunner

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match="openvino") as info:
        OpenVinoRunner(selected.model_path)
    assert "edgellm[openvino]" in str(info.value) + info.value.hint
