"""The generation graph (export.decoder_graph) through SharedCacheEngine against Hugging Face greedy decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

import edgellm.models
from edgellm.compress.quant import Int4WeightOnly, Int8Dynamic, QuantLinear, apply_quant, quantize
from edgellm.errors import EdgeLLMError
from edgellm.export.decoder_graph import build_decoder_graph, save_decoder_graph
from edgellm.models.decoder_step import reference_greedy
from edgellm.models.synthetic import synthesize
from edgellm.runtime.ort_generation import SharedCacheEngine

PROMPT = [5, 17, 99, 300, 1000, 42, 7, 8, 211, 3000]
NEW = 32
CONTEXT = 96


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {"tiny-llama": edgellm.models.load("tiny-llama")}
    root = tmp_path_factory.mktemp("synthetic")
    for preset, name in (("qwen2.5-0.5b", "qwen2"), ("qwen3-0.6b", "qwen3"), ("smollm2-360m", "llama")):
        out[name] = edgellm.models.load(str(synthesize(preset, root / name, layers=2)))
    return out


def _engine(adapter, tmp_path, spec=None, **kw) -> SharedCacheEngine:
    model = build_decoder_graph(adapter, spec, context=CONTEXT, **kw)
    path = save_decoder_graph(model, tmp_path / "decoder.onnx")[0]
    return SharedCacheEngine(path, threads=1)


def _greedy(eng: SharedCacheEngine, prompt: list[int], n: int) -> tuple[list[int], np.ndarray]:
    eng.reset()
    logits = eng.step(prompt)
    first = logits.copy()
    toks = []
    for _ in range(n):
        toks.append(int(np.argmax(logits)))
        logits = eng.step([toks[-1]])
    return toks, first


def _hf_last_logits(adapter, prompt: list[int]) -> np.ndarray:
    with torch.inference_mode():
        return adapter.module.lm(torch.tensor([prompt])).logits[0, -1].numpy()


@pytest.mark.parametrize("name", ["tiny-llama", "qwen2", "qwen3", "llama"])
def test_fp32_greedy_equals_hf(models, name, tmp_path):
    adapter = models[name]
    eng = _engine(adapter, tmp_path, pack_qkv=name != "llama")  # llama: separate q/k/v projections
    toks, first = _greedy(eng, PROMPT, NEW)
    assert toks == reference_greedy(adapter, PROMPT, NEW)
    assert np.abs(first - _hf_last_logits(adapter, PROMPT)).max() < 1e-3
    assert eng.length == len(PROMPT) + NEW


def test_chunked_prefill_and_last_logits(models, tmp_path):
    """A prompt fed in two chunks (past > 0, new > 1) gives the logits of one prefill; the last-position
    variant gives the same numbers."""
    adapter = models["qwen2"]
    eng = _engine(adapter, tmp_path, logits="last")
    eng.step(PROMPT[:4])
    two = eng.step(PROMPT[4:]).copy()
    assert np.abs(two - _hf_last_logits(adapter, PROMPT)).max() < 1e-3
    assert eng.session.get_outputs()[0].shape[1] == 1


def test_int4_greedy_equals_fake_quant(models, tmp_path):
    adapter = models["tiny-llama"]
    spec = quantize(adapter, Int4WeightOnly(method="rtn", group_size=32))
    fake = apply_quant(adapter, spec)
    want = reference_greedy(fake, PROMPT, NEW)
    toks, first = _greedy(_engine(adapter, tmp_path, spec, accuracy_level=0), PROMPT, NEW)
    assert toks == want
    assert np.abs(first - _hf_last_logits(fake, PROMPT)).max() < 1e-3
    toks4, _ = _greedy(_engine(adapter, tmp_path, spec, accuracy_level=4), PROMPT, NEW)
    agree = np.mean(np.asarray(toks4) == np.asarray(want))
    print(f"int4 accuracy_level 4 greedy agreement with the fake-quantized model: {agree:.3f}")
    assert agree > 0.2  # int8 activations change some tokens; most stay the same


def test_int8_dynamic_and_keep_lm_head(models, tmp_path):
    adapter = models["qwen3"]
    spec = quantize(adapter, Int8Dynamic())
    model = build_decoder_graph(adapter, spec, context=CONTEXT, int8="dynamic", keep=("lm_head",))
    kinds = {p.key: p.value for p in model.metadata_props}["edgellm.linear_kinds"]
    assert "'fp32': 1" in kinds and "int8 dynamic" in kinds
    eng = SharedCacheEngine(save_decoder_graph(model, tmp_path / "d.onnx")[0], threads=1)
    toks, _ = _greedy(eng, PROMPT, 16)
    want = reference_greedy(apply_quant(adapter, spec), PROMPT, 16)
    assert np.mean(np.asarray(toks) == np.asarray(want)) > 0.5


def test_int8_nbits_is_the_weight_only_model(models, tmp_path):
    """INT8 as MatMulNBits bits=8 (accuracy_level 0) is the spec's weights with fp32 activations."""
    adapter = models["qwen2"]
    spec = quantize(adapter, Int8Dynamic())
    weight_only = apply_quant(adapter, spec)
    for m in weight_only.module.modules():
        if isinstance(m, QuantLinear):
            m.dynamic = False
    toks, first = _greedy(_engine(adapter, tmp_path, spec, int8="nbits", accuracy_level=0), PROMPT, 16)
    assert toks == reference_greedy(weight_only, PROMPT, 16)
    assert np.abs(first - _hf_last_logits(weight_only, PROMPT)).max() < 1e-3


def test_context_overflow_and_bad_family(models, tmp_path):
    eng = _engine(models["tiny-llama"], tmp_path)
    eng.step(list(range(CONTEXT - 1)))
    with pytest.raises(EdgeLLMError, match="exceed the context"):
        eng.step([1, 2])
    eng.reset()
    assert eng.length == 0 and eng.step([3]).shape == (4096,)
    with pytest.raises(EdgeLLMError, match="supported families"):
        build_decoder_graph(edgellm.models.load("minilm"), context=8)


def test_streamed_weights_match_in_memory(models, tmp_path):
    """Weights streamed to a file while building (big models) give the same graph as in-memory ones."""
    adapter = models["qwen3"]
    mem = _engine(adapter, tmp_path / "mem")
    model = build_decoder_graph(adapter, context=CONTEXT, weights_file=tmp_path / "s" / "w.bin")
    assert model.ByteSize() < 200_000  # the weights live in the file, not in the proto
    files = save_decoder_graph(model, tmp_path / "s" / "decoder.onnx")
    assert [f.name for f in files] == ["decoder.onnx", "w.bin"]
    streamed = SharedCacheEngine(files[0], threads=1)
    assert np.array_equal(mem.step(PROMPT), streamed.step(PROMPT))
    with pytest.raises(EdgeLLMError, match="weights file"):
        save_decoder_graph(model, tmp_path / "elsewhere" / "decoder.onnx")
