"""One conformance suite for every target format: export -> validate parity -> load through runtime/ ->
short benchmark, over models (MiniLM, tiny-llama, a plain MLP) and precisions (fp32, int8).

Select a format with its marker, e.g. ``pytest -m target_ort``. A format whose exporter or SDK is not
available here is skipped with the reason and the install hint, never reported as passed.
"""

import importlib.util

import pytest
import torch

from edgellm import models
from edgellm.bench import benchmark
from edgellm.compress.quant import Int8Dynamic, apply_quant, quantize
from edgellm.export import EXPORTERS, Artifact, Tolerance, export
from edgellm.export.base import _load_exporters
from edgellm.export.validate import check_parity, passes
from edgellm.runtime import make_runner

FORMATS = [
    pytest.param("onnx", "x86-server", "onnxruntime", marks=pytest.mark.target_onnx, id="onnx"),
    pytest.param("ort", "snapdragon-865", "onnxruntime", marks=pytest.mark.target_ort, id="ort"),
    pytest.param("tflite", "snapdragon-865", "ai_edge_litert", marks=pytest.mark.target_tflite, id="tflite"),
    pytest.param(
        "tensorrt",
        "nvidia-a100",
        "tensorrt",
        marks=[pytest.mark.target_tensorrt, pytest.mark.requires_tensorrt],
        id="tensorrt",
    ),
]
EXTRA = {"onnx": "onnx", "ort": "onnx", "tflite": "tflite", "tensorrt": "tensorrt"}


@pytest.fixture(scope="module")
def mlp_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    return models.load(net, example_inputs=torch.randn(2, 32), name="mlp")


@pytest.fixture(scope="module")
def conformance_models(minilm, tiny_llama, mlp_model):
    return {"minilm": minilm, "tiny-llama": tiny_llama, "mlp": mlp_model}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("model_name", ["minilm", "tiny-llama", "mlp"])
@pytest.mark.parametrize("fmt,target,sdk", FORMATS)
def test_target_conformance(fmt, target, sdk, model_name, precision, conformance_models, tmp_path):
    _load_exporters()
    if fmt not in EXPORTERS:
        pytest.skip(
            f"edgellm has no '{fmt}' exporter yet (issue 4); install hint once it exists: "
            f"pip install 'edgellm[{EXTRA[fmt]}]'"
        )
    if importlib.util.find_spec(sdk) is None:
        pytest.skip(f"the '{sdk}' SDK is not installed: pip install 'edgellm[{EXTRA[fmt]}]'")
    model = conformance_models[model_name]
    spec = quantize(model, Int8Dynamic()) if precision == "int8" else None
    tol = Tolerance.quantized() if spec is not None else Tolerance()
    art = export(model, target, tmp_path / "art", format=fmt, quant=spec, tolerance=tol)
    # the artifact is what it says it is
    m = Artifact.load(art.path).manifest
    assert m["target"]["format"] == fmt and m["precision"] == precision and m["parity"]["passed"]
    # parity, recomputed here through runtime/ against the right reference
    runner = make_runner(Artifact.load(art.path))
    reference = apply_quant(model, spec) if spec is not None else model
    parity = check_parity(reference, runner, seed=11)
    assert passes(parity["fixed"], tol) and passes(parity["random"], tol), parity
    # a short benchmark through the same harness as `edgellm bench`
    rep = benchmark(
        {fmt: runner},
        lambda b, s: model.example_inputs(batch=b, seq=s, padded=False),
        batches=[1],
        seqs=[16],
        runs=3,
        warmup=1,
        progress=False,
        pause_s=0,
    )
    assert rep.results[0].p50_ms > 0 and rep.results[0].runs == 3
