"""One conformance suite for every target format: export -> validate parity -> load through runtime/ ->
short benchmark, over models (MiniLM, a small Llama, a plain MLP) and the precisions each format writes
(fp32; fp16; int8 with dynamic activations; int8 with static, calibrated activations).

Select a format with its marker, e.g. ``pytest -m target_tflite``. A format whose SDK is not
available here is skipped with the reason and the install hint, never reported as passed.
"""

import importlib.util

import pytest
import torch

from edgellm import models
from edgellm.bench import benchmark
from edgellm.compress.quant import Int4WeightOnly, Int8Dynamic, Int8Static, quantize
from edgellm.export import EXPORTERS, Artifact, Tolerance, export, parity_reference
from edgellm.export.base import _load_exporters
from edgellm.export.validate import check_parity, passes
from edgellm.runtime import make_runner

FORMATS = [
    pytest.param("onnx", "x86-server", "onnxruntime", marks=pytest.mark.target_onnx, id="onnx"),
    pytest.param("ort", "snapdragon-865", "onnxruntime", marks=pytest.mark.target_ort, id="ort"),
    pytest.param("tflite", "snapdragon-865", "ai_edge_litert", marks=pytest.mark.target_tflite, id="tflite"),
    pytest.param("pte", "snapdragon-8-gen-3", "executorch", marks=pytest.mark.target_pte, id="pte"),
    pytest.param(
        "tensorrt",
        "nvidia-a100",
        "tensorrt",
        marks=[pytest.mark.target_tensorrt, pytest.mark.requires_tensorrt],
        id="tensorrt",
    ),
]
EXTRA = {"onnx": "onnx", "ort": "onnx", "tflite": "tflite", "tensorrt": "tensorrt", "pte": "executorch"}
# what each format writes; static INT8 is what the phone's int8 kernels and TensorRT's explicit Q/DQ take
WRITES = {
    "onnx": ("fp32", "int8", "int8-static"),
    "ort": ("fp32", "int8", "int8-static"),
    "tflite": ("fp32", "fp16", "int8", "int8-static"),
    "tensorrt": ("fp32", "fp16", "int8-static", "int4"),
    "pte": ("fp32", "fp16", "int8", "int4"),  # XNNPACK: int8 / 8da4w with int8 activations per token
}
# (format, model) -> the precisions run for that model (the rest: the MLP covers them; lowering a Llama to
# XNNPACK takes ~25 s per precision)
ONLY = {("pte", "llama"): ("fp32", "int4")}
# Slow rows that benchmarks/bench_targets_minilm.py runs for MiniLM (and pytest -m slow): ExecuTorch lowers
# MiniLM in 40-60 s per precision, full-integer TFLite calibrates and converts it in ~50 s; the small Llama
# and the MLP cover those formats' mechanics in the default run
SLOW = {("pte", "minilm", None), ("tflite", "minilm", "int8-static")}
# The small Llama's fp32 program: the default run lowers its layers to XNNPACK in fp32 for generation
# (test_generation_conformance[pte-generate-fp32]), and benchmarks/family_matrix.py's llama-pte cell
# exports this whole-model program with its parity check
SLOW |= {("pte", "llama", "fp32")}


def _slow(fmt, model, precision):
    return (fmt, model, None) in SLOW or (fmt, model, precision) in SLOW


def static_config(fmt, model_name):
    # TensorRT takes symmetric int8 activations. MiniLM's FFN output layers write outliers of ~100 into the
    # residual stream: a full-integer graph (int8 outputs, TFLite) keeps them in fp32 and smooths the
    # activation outliers of the rest with SmoothQuant (README: full-integer INT8)
    if fmt == "tflite" and model_name == "minilm":
        return Int8Static(keep=("*output.dense",), smoothquant_alpha=0.5)
    return Int8Static(symmetric_activations=fmt == "tensorrt")


@pytest.fixture(scope="module")
def mlp_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    return models.load(net, example_inputs=torch.randn(2, 32), name="mlp")


@pytest.fixture(scope="module")
def conformance_models(minilm, small_lm, mlp_model):
    # the decoder: a 128-wide, 2-layer Llama (GQA) with the bundled tokenizer; the bundled tiny-llama's
    # own artifacts are checked in tests/compress, tests/export and benchmarks/bench_int4_tiny_llama.py
    return {"minilm": minilm, "llama": models.load(small_lm), "mlp": mlp_model}


CASES = [
    pytest.param(
        *f.values,
        model,
        precision,
        marks=[*f.marks, *([pytest.mark.slow] if _slow(f.id, model, precision) else [])],
        id=f"{f.id}-{model}-{precision}",
    )
    for f in FORMATS
    for model in ("minilm", "llama", "mlp")
    for precision in WRITES[f.id]
    if precision in ONLY.get((f.id, model), (precision,))
]


def _export_case(fmt, target, model, model_name, precision, pydoc_batches, out):
    spec = None
    if precision == "int8":
        spec = quantize(model, Int8Dynamic())
    elif precision == "int4":  # weight-only, symmetric (what TensorRT takes), groups of 32
        spec = quantize(model, Int4WeightOnly(group_size=32))
    elif precision == "int8-static":
        calib = (
            pydoc_batches(model, 16, 8)[0].feeds if model.tokenizer is not None else [model.fixed_inputs()]
        )
        spec = quantize(model, static_config(fmt, model_name), calib)
    fp = "fp16" if precision == "fp16" else None
    tol = Tolerance.quantized() if spec is not None else Tolerance()
    if fmt == "pte" and precision == "fp16":  # ExecuTorch computes in float16 (LiteRT dequantizes to fp32)
        tol = Tolerance(max_abs=None, min_cosine=0.999)
    # the plain fp32 ONNX export is traced once per model for the run (conftest: EDGELLM_EXPORT_CACHE)
    art = export(model, target, out, format=fmt, quant=spec, precision=fp, tolerance=tol)
    reference = parity_reference(model, fmt, quant=spec, precision=fp)
    _BUILT[(fmt, model_name, precision)] = (art, reference, tol)
    return art, tol, reference


# (format, model, precision) -> (artifact, its parity reference, tolerance): the arm64 cases below check
# the artifacts the x86 cases exported, on emulated arm64 kernels, instead of exporting them again
_BUILT: dict = {}


@pytest.mark.parametrize("fmt,target,sdk,model_name,precision", CASES)
def test_target_conformance(
    fmt, target, sdk, model_name, precision, conformance_models, pydoc_batches, tmp_path
):
    _load_exporters()
    assert fmt in EXPORTERS
    if importlib.util.find_spec(sdk) is None:
        pytest.skip(f"the '{sdk}' SDK is not installed: pip install 'edgellm[{EXTRA[fmt]}]'")
    model = conformance_models[model_name]
    art, tol, reference = _export_case(
        fmt, target, model, model_name, precision, pydoc_batches, tmp_path / "art"
    )
    # the artifact is what it says it is
    m = Artifact.load(art.path).manifest
    assert (
        m["target"]["format"] == fmt and m["precision"] == precision.split("-")[0] and m["parity"]["passed"]
    )
    if fmt == "tensorrt":  # the engine is built where TensorRT and a GPU are (this test only runs there)
        from edgellm.export.tensorrt import build_engine

        build_engine(art.path)
    # parity, recomputed here through runtime/ against the reference the exporter names
    runner = make_runner(Artifact.load(art.path))
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


# The phone formats on emulated arm64 kernels (qemu-user, the target's CPU: cortex-a76 for the
# Snapdragon 865): the quantized files, whose kernels differ most between ISAs (XNNPACK's and TFLite's
# hybrid INT8, MLAS's arm64 integer GEMMs), for MiniLM and the small Llama. fp32/fp16 agree to ~1e-7 on
# both ISAs (benchmarks/arm64_parity.py covers every phone artifact of the demo)
ARM64_CASES = [
    pytest.param(
        fmt,
        "snapdragon-865",
        sdk,
        model,
        "int8",
        marks=[pytest.mark.arm64, mark],
        id=f"arm64-{fmt}-{model}-int8",
    )
    for fmt, sdk, mark in (
        ("tflite", "ai_edge_litert", pytest.mark.target_tflite),
        ("ort", "onnxruntime", pytest.mark.target_ort),
    )
    for model in ("minilm", "llama")
]


@pytest.mark.parametrize("fmt,target,sdk,model_name,precision", ARM64_CASES)
def test_arm64_conformance(
    fmt, target, sdk, model_name, precision, conformance_models, pydoc_batches, arm64_host, tmp_path
):
    """The x86 case's artifact, run on arm64 kernels: parity with the same reference, and for MiniLM the
    cosine against fp32 a phone gets (>= 0.99), on XNNPACK and on TFLite's builtin kernels."""
    from edgellm.export.arm64 import artifact_arm64_parity

    model = conformance_models[model_name]
    key = (fmt, model_name, precision)
    if key not in _BUILT:  # run alone: export it here
        _export_case(fmt, target, model, model_name, precision, pydoc_batches, tmp_path / "art")
    art, reference, tol = _BUILT[key]
    sec = artifact_arm64_parity(art, model, reference=reference, tolerance=tol)
    assert sec["passed"], sec
    assert sec["cpu"] == "cortex-a76" and sec["kernels"] == ("xnnpack" if fmt == "tflite" else "mlas")
    cos = min(v["cosine_min"] for v in sec["vs_fp32"]["fixed"].values())
    assert cos >= (0.99 if model_name == "minilm" else 0.9), sec["vs_fp32"]
    if fmt == "tflite":  # a hybrid INT8 file computes the same on both kernels (asymmetric per-row inputs)
        builtin = min(v["cosine_min"] for v in sec["builtin_kernels"]["vs_fp32"]["fixed"].values())
        assert abs(builtin - cos) < 2e-3, (builtin, cos)


# The formats that hold a decoder for generation only (GGUF) or that the suite also runs as a step program
GEN_FORMATS = [
    pytest.param("gguf", "snapdragon-8-gen-3", "llama_cpp", marks=pytest.mark.target_gguf, id="gguf"),
    pytest.param("pte", "snapdragon-8-gen-3", "executorch", marks=pytest.mark.target_pte, id="pte"),
]
# pte at fp32 here: its INT4 (8da4w) static program is tests/export/test_executorch.py's (-m slow) and
# benchmarks/bench_targets_llm.py's pte-8da4w row; the 8da4w Llama program is the pte-llama-int4 row above
GEN_WRITES = {"gguf": ("fp32", "fp16", "int8", "int4"), "pte": ("fp32",)}
GEN_EXTRA = {"gguf": "llamacpp (make setup-llama)", "pte": "executorch"}
GEN_CASES = [
    pytest.param(*f.values, precision, marks=f.marks, id=f"{f.id}-generate-{precision}")
    for f in GEN_FORMATS
    for precision in GEN_WRITES[f.id]
]


@pytest.mark.parametrize("fmt,target,sdk,precision", GEN_CASES)
def test_generation_conformance(fmt, target, sdk, precision, small_lm, tmp_path, request):
    """export --generate -> greedy tokens checked in the format's own runtime -> Generator -> token rate."""
    from edgellm.bench.generation import bench_generate
    from edgellm.pipeline.generate_export import export_generate
    from edgellm.runtime.generator import Generator

    if importlib.util.find_spec(sdk) is None:
        pytest.skip(f"the '{sdk}' package is not installed: the {GEN_EXTRA[fmt]} extra")
    if (fmt, precision) == ("pte", "fp32"):  # the same export as tests/export/test_executorch.py's: once
        out, m = request.getfixturevalue("pte_gen_fp32")
    else:
        out = tmp_path / "gen"
        opts = {"group_size": 32} if fmt == "pte" and precision == "int4" else {}
        m = export_generate(
            small_lm, out, target=target, format=fmt, precision=precision, context=64, check_tokens=16, **opts
        )
    assert m["target"]["format"] == fmt and m["generation"]["precision"] == precision
    par = m["generation"]["parity"]
    assert par["equal_up_to_ties"] and par["logits_cosine_min"] > 0.99, par
    done = Generator(out).generate([1, 5, 9], max_new_tokens=4, stop_token_ids=())
    assert len(done.token_ids) == 4 and done.stop_reason == "length"
    row = bench_generate(out, prompts=[8], new=4)["rows"][0]
    assert row["decode_tok_s"] > 0 and row["ttft_ms"] > 0
