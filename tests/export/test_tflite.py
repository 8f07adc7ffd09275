"""TFLite/LiteRT artifacts: precisions, the op list and XNNPACK fallback in the manifest, builtin ops
only, the padding runner, and clear errors. Conversion and validation run for real (litert-torch,
ai-edge-litert); the conformance suite covers every model x precision."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgellm import models
from edgellm.compress.quant import Int4WeightOnly, Int8Dynamic, Int8Static, quantize
from edgellm.errors import EdgeLLMError, ExportError
from edgellm.export import Artifact, export
from edgellm.export.tflite import TFLiteExporter
from edgellm.runtime import make_runner

pytest.importorskip("litert_torch", reason="pip install 'edgellm[tflite]'")
pytestmark = pytest.mark.target_tflite


# MiniLM at the default sequence length (128), as tests/conformance exports it: litert-torch converts it
# once for the run (conftest: EDGELLM_EXPORT_CACHE), and the fp16 files below reuse that conversion
@pytest.fixture(scope="module")
def minilm_tflite(minilm, tmp_path_factory):
    return export(minilm, "snapdragon-865", tmp_path_factory.mktemp("tfl") / "minilm")


def test_fp32_artifact_manifest_lists_ops_and_fallbacks(minilm_tflite):
    m = minilm_tflite.manifest
    assert m["target"] == {**m["target"], "runtime": "litert", "format": "tflite"}
    t = m["recipe"]["tflite"]
    assert t["file_inputs"]["input_ids"] == {"shape": [1, 128], "dtype": "int32"}
    assert t["ops"]["FULLY_CONNECTED"] == 36 and t["builtin_only"]
    # the embedding lookups are not XNNPACK ops: they run on TFLite's reference kernels, and say so
    assert "EMBEDDING_LOOKUP" in t["xnnpack_fallback_ops"]
    assert all(f["layer"] for f in t["xnnpack_fallback"])
    assert "FULLY_CONNECTED" not in t["xnnpack_fallback_ops"]
    assert m["parity"]["random"]["sentence_embedding"]["cosine_min"] > 0.9999


def test_runner_pads_and_loops_batch(minilm, minilm_tflite):
    runner = make_runner(Artifact.load(minilm_tflite.path))
    feeds = minilm.example_inputs(batch=3, seq=20, seed=5)
    out = runner.run(feeds)["sentence_embedding"]
    ref = minilm.run(feeds)["sentence_embedding"]
    assert out.shape == (3, 384)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    with pytest.raises(EdgeLLMError, match="at most 128"):
        runner.run(minilm.example_inputs(batch=1, seq=129))


def test_fp16_halves_the_file(minilm, minilm_tflite, tmp_path):
    art = export(minilm, "snapdragon-865", tmp_path / "fp16", precision="fp16")
    assert art.manifest["precision"] == "fp16"
    assert art.size_bytes < 0.55 * minilm_tflite.size_bytes
    assert art.manifest["parity"]["vs_fp32"]["random"]["sentence_embedding"]["cosine_min"] > 0.9999


def test_full_integer_uses_the_quantspec_scales(small_llm, pydoc_batches, tmp_path):
    calib = pydoc_batches(small_llm, 16, 8)[0].feeds
    spec = quantize(small_llm, Int8Static(), calib)
    art = export(small_llm, "snapdragon-865", tmp_path / "int8", quant=spec, seq_len=32)
    t = art.manifest["recipe"]["tflite"]
    assert t["mode"] == "int8-full"
    assert t["int8_ops"]["FULLY_CONNECTED"] == len(spec.layers)  # every quantized linear runs in int8
    # the int8 output of the last layer carries the spec's output grid (uint8 grid shifted to int8)
    lm = spec.layers["lm.lm_head"]
    out = t["int8_outputs"]["logits"]
    assert out["scale"] == pytest.approx(lm.out_scale, rel=1e-6)
    assert out["zero_point"] == lm.out_zero_point - 128
    assert art.manifest["parity"]["vs_fp32"]["random"]["logits"]["cosine_min"] > 0.98
    # and the weights really are int8: the quantized linears take about a quarter of their fp32 bytes
    # (the token embedding, a lookup, stays fp32: most of this small model's file)
    w = spec.weight_bytes()
    fp32 = sum(p.numel() * 4 for p in small_llm.module.parameters())
    assert art.size_bytes < fp32 - w["fp32"] + 1.2 * w["quantized"]


def test_dynamic_int8_leaves_kept_layers_in_float(small_llm, tmp_path):
    spec = quantize(small_llm, Int8Dynamic(keep=("lm_head",)))
    art = export(small_llm, "snapdragon-865", tmp_path / "dyn", quant=spec, seq_len=32)
    t = art.manifest["recipe"]["tflite"]
    assert t["mode"] == "int8-dynamic"
    assert t["int8_ops"]["FULLY_CONNECTED"] == len(spec.layers)  # lm_head is not among them
    assert "lm.lm_head" in art.manifest["recipe"]["quantization"]["kept_fp32"]


def test_dynamic_int8_gives_the_same_answer_on_every_kernel(tmp_path):
    """Every hybrid FC quantizes its input per row asymmetrically (``asymmetric_quantize_inputs``), so
    TFLite's own hybrid kernels (what runs where XNNPACK does not: emulated arm64, an interpreter without
    the delegate) compute what XNNPACK computes. Symmetric rows lose a bit on a ReLU's output."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))
    mlp = models.load(net, example_inputs=torch.randn(4, 64), name="mlp")
    art = export(mlp, "snapdragon-865", tmp_path / "dyn", quant=quantize(mlp, Int8Dynamic()))
    path = str(Path(art.path) / "model.tflite")
    m = fbu.read_model(path)
    g = m.subgraphs[0]
    hybrid = [
        op
        for op in g.operators
        if fbu.opcode_to_name(m, op.opcodeIndex) == "FULLY_CONNECTED" and g.tensors[op.inputs[1]].type == 9
    ]
    assert hybrid and all(op.builtinOptions.asymmetricQuantizeInputs for op in hybrid)
    assert art.manifest["recipe"]["tflite"]["asymmetric_inputs"] == len(hybrid)
    x = np.asarray(mlp.example_inputs(batch=4, seq=0, seed=5)["input"], np.float32)
    outs = []
    for resolver in (OpResolverType.AUTO, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES):
        it = Interpreter(model_path=path, num_threads=1, experimental_op_resolver_type=resolver)
        it.allocate_tensors()
        got = it.get_signature_runner()(input=x)
        outs.append(np.asarray(next(iter(got.values())), np.float64))
    err = np.abs(outs[0] - outs[1]).max() / np.abs(outs[0]).max()
    assert err < 2e-3, err  # the same scheme on both kernels


def test_plain_module_with_float_input_quantizes_its_input(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.ReLU(), torch.nn.Linear(24, 3))
    mlp = models.load(net, example_inputs=torch.randn(4, 12), name="mlp")
    spec = quantize(mlp, Int8Static(), [mlp.example_inputs(batch=64, seq=0, seed=s) for s in range(4)])
    art = export(mlp, "snapdragon-865", tmp_path / "mlp", quant=spec)
    t = art.manifest["recipe"]["tflite"]
    assert t["file_inputs"]["input"]["dtype"] == "int8" and "input" in t["int8_inputs"]
    r = make_runner(Artifact.load(art.path))
    assert r.run(mlp.example_inputs(batch=5, seq=0, seed=9))["output"].dtype == np.float32


def test_errors_name_the_fix(minilm, small_llm, tmp_path):
    int4 = quantize(small_llm, Int4WeightOnly(group_size=64))
    with pytest.raises(ExportError, match="8-bit QuantSpecs"):
        TFLiteExporter(quant=int4)
    with pytest.raises(ExportError, match="does not run int4"):
        export(
            small_llm,
            "snapdragon-865",
            tmp_path / "b",
            quant=quantize(small_llm, Int4WeightOnly(group_size=64)),
        )
    with pytest.raises(ExportError, match="no fp16 variant"):
        export(minilm, "x86-server", tmp_path / "c", precision="fp16")
    with pytest.raises(ExportError, match="does not take option"):
        export(minilm, "snapdragon-865", tmp_path / "d", bogus=1)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_unsupported_op_names_the_op_and_the_layer(tmp_path):
    class Bucket(torch.nn.Module):
        def forward(self, x):
            return torch.bucketize(x, torch.tensor([0.0, 0.5])).float()

    class Net(torch.nn.Module):  # forward's argument is not called 'input': inputs are passed by spec name
        def __init__(self):
            super().__init__()
            self.proj, self.bucket = torch.nn.Linear(16, 16), Bucket()

        def forward(self, x):
            return self.bucket(self.proj(x))

    m = models.load(Net(), example_inputs=torch.randn(2, 16), name="bk")
    with pytest.raises(ExportError, match=r"in layer 'bucket'.*aten\.bucketize"):
        export(m, "snapdragon-865", tmp_path / "bk")
    assert not (tmp_path / "bk").exists()


def test_cli_export_tflite_fp16(tmp_path, capsys):
    from edgellm.cli import main

    out = tmp_path / "cli"
    rc = main(
        [
            "export",
            "minilm",
            "-t",
            "snapdragon-865",
            "-p",
            "fp16",
            "--seq-len",
            "128",  # the conformance run's conversion, reused
            "-o",
            str(out),
            "--json",
        ]
    )
    assert rc == 0
    m = json.loads(capsys.readouterr().out)
    assert m["precision"] == "fp16" and m["recipe"]["tflite"]["file_inputs"]["input_ids"]["shape"] == [1, 128]


def test_missing_litert_names_the_install_command(minilm, tmp_path, monkeypatch):
    import sys

    from edgellm.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "litert_torch", None)  # as if the extra were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgellm\[tflite\]'"):
        export(minilm, "snapdragon-865", tmp_path / "x")
    assert not (tmp_path / "x").exists()
