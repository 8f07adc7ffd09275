"""TensorRT artifacts: the validated QDQ/fp32 ONNX and the build script on CPU; the engine where TensorRT is."""

import numpy as np
import onnx
import pytest

from edgellm.compress.quant import Int8Dynamic, Int8Static, apply_quant, quantize
from edgellm.errors import ExportError
from edgellm.export import Tolerance, export
from edgellm.export.validate import compare
from edgellm.runtime.ort_runner import OrtRunner


def test_fp32_tensorrt_artifact(small_llm, tmp_path):
    art = export(small_llm, "jetson-orin-nano", tmp_path / "trt")
    m = art.manifest
    assert m["target"]["format"] == "tensorrt" and m["target"]["runtime"] == "tensorrt"
    assert m["recipe"]["tensorrt"]["engine"] == "pending"
    assert {n.domain for n in onnx.load(art.model_path).graph.node} <= {"", "ai.onnx"}  # standard ops only
    script = (art.path / "build_engine.sh").read_text()
    assert "trtexec --onnx=model.onnx" in script and "--minShapes=input_ids:1x1" in script
    # the longest sequence is the model's own limit (max_position_embeddings 256 here)
    assert "--maxShapes=input_ids:32x256" in script and "--int8" not in script
    prof = m["recipe"]["tensorrt"]["profiles"]["attention_mask"]
    assert prof == {"min": [1, 1], "opt": [8, 128], "max": [32, 256]}


def test_int8_qdq_for_tensorrt(minilm, pydoc_batches, tmp_path):
    calib, evalb = pydoc_batches(minilm, n_calib=16, n_eval=8)
    spec = quantize(minilm, Int8Static(symmetric_activations=True, smoothquant_alpha=0.8), calib.feeds)
    art = export(minilm, "nvidia-a100", tmp_path / "q", quant=spec, tolerance=Tolerance.quantized())
    graph = onnx.load(art.model_path).graph
    init = {t.name: t for t in graph.initializer}
    q_nodes = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and n.input[0].startswith("edgellm_q/x_dq")]
    # every one of the 36 linears reads a quantized input; q, k and v share one (6 x 4 distinct inputs)
    assert len(matmuls) == 36 and len(q_nodes) == 24 == len({m.input[0] for m in matmuls})
    for n in q_nodes:  # TensorRT's explicit quantization: int8 activations, zero point 0
        zp = onnx.numpy_helper.to_array(init[n.input[2]])
        assert zp.dtype == np.int8 and int(zp) == 0
    assert "--int8" in (art.path / "build_engine.sh").read_text()
    f = evalb.feeds[0]
    got = compare(apply_quant(minilm, spec).run(f), OrtRunner(art.model_path).run(f), minilm.outputs, f)
    assert got["sentence_embedding"]["cosine_min"] > 0.99


def test_tensorrt_refuses_ort_only_recipes(minilm, tmp_path):
    with pytest.raises(ExportError, match="static, symmetric activations"):
        export(minilm, "nvidia-h100", tmp_path / "x", quant=quantize(minilm, Int8Dynamic()))
    assert not (tmp_path / "x").exists()


@pytest.mark.requires_tensorrt
@pytest.mark.requires_cuda
def test_engine_builds(tiny_llama, tmp_path):
    from edgellm.export.tensorrt import build_engine

    art = export(tiny_llama, "nvidia-a100", tmp_path / "trt")
    plan = build_engine(art.path)
    assert plan.stat().st_size > 0
    # the engine runs through runtime/ and matches torch
    from edgellm.export import Artifact
    from edgellm.export.validate import check_parity, passes
    from edgellm.runtime import make_runner

    runner = make_runner(Artifact.load(art.path))
    parity = check_parity(tiny_llama, runner)
    assert passes(parity["random"], Tolerance(max_abs=5e-2, min_cosine=0.999)), parity


def test_runner_says_what_is_missing(small_llm, tmp_path):
    import importlib.util

    from edgellm.errors import EdgeLLMError
    from edgellm.export import Artifact
    from edgellm.runtime import make_runner

    art = export(small_llm, "jetson-orin-nano", tmp_path / "trt")
    with pytest.raises(EdgeLLMError) as e:
        make_runner(Artifact.load(art.path))
    if importlib.util.find_spec("tensorrt") is None:
        assert "pip install 'edgellm[tensorrt]'" in str(e.value)
    else:  # TensorRT present: no GPU here, or the engine is not built yet
        assert "GPU" in str(e.value) or "build_engine.sh" in str(e.value)


def test_int4_weight_only_for_tensorrt(small_llm, tmp_path):
    from edgellm.compress.quant import Int4WeightOnly

    spec = quantize(small_llm, Int4WeightOnly(group_size=64))
    art = export(small_llm, "nvidia-a100", tmp_path / "i4", quant=spec)
    model = onnx.load(art.model_path)
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {21}
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}  # no MatMulNBits: standard ops only
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == len(spec.layers)
    init = {t.name: t for t in model.graph.initializer}
    for n in dq:  # signed int4 codes, blocked along the input dimension, no zero point (symmetric)
        assert init[n.input[0]].data_type == onnx.TensorProto.INT4 and len(n.input) == 2
        assert {a.name: a.i for a in n.attribute} == {"axis": 0, "block_size": 64}
    rec = art.manifest["recipe"]["tensorrt"]
    assert rec["int4_weight_only"] and "--stronglyTyped" in rec["build_command"]
    # int4 codes and scales in the file: the quantized linears take about a seventh of their fp32 bytes
    # (the token embedding, a lookup, stays fp32: most of this small model's file)
    w = spec.weight_bytes()
    fp32 = sum(p.numel() * 4 for p in small_llm.module.parameters())
    assert art.size_bytes < fp32 - w["fp32"] + 1.2 * w["quantized"]
    # without ONNX Runtime's own fusions the graph computes exactly the fake-quantized model
    f = small_llm.example_inputs(batch=2, seq=16, seed=3)
    exact = OrtRunner(art.model_path, graph_optimization="basic").run(f)
    got = compare(apply_quant(small_llm, spec).run(f), exact, small_llm.outputs, f)
    assert got["logits"]["max_abs"] < 1e-3


def test_tensorrt_refuses_asymmetric_int4(small_llm, tmp_path):
    from edgellm.compress.quant import Int4WeightOnly

    spec = quantize(small_llm, Int4WeightOnly(group_size=64, symmetric=False))
    with pytest.raises(ExportError, match="symmetric INT4"):
        export(small_llm, "nvidia-a100", tmp_path / "a", quant=spec)
    assert not (tmp_path / "a").exists()
