"""Generation artifacts (export/compress --generate): every format generates the reference's greedy tokens,
quantized ones the fake-quantized model's, the manifest records the cache and the parity, and a failing
check writes nothing."""

import json

import numpy as np
import onnx
import pytest

from edgellm.errors import EdgeLLMError, ParityError
from edgellm.pipeline import generate_export as ge
from edgellm.pipeline.generate_export import export_generate, prompt_ids, reference_tokens
from edgellm.runtime.generator import Generator


@pytest.fixture()
def fp32_art(gen_artifact):
    return gen_artifact


def test_fp32_artifact_generates_hugging_faces_tokens(small_llm, fp32_art):
    """The manifest holds the cache layout, context and parity; the Generator, opened afresh, reproduces
    Hugging Face generate() for 64 greedy tokens on a prompt the export did not check."""
    m = json.loads((fp32_art / "manifest.json").read_text())
    g = m["generation"]
    assert g["kind"] == "decoder" and g["cache"]["layout"] in ("shared", "concat")
    assert g["context"] == small_llm.config.max_position_embeddings
    assert g["parity"]["greedy_equal"] and g["parity"]["tokens"] == 32 and g["parity"]["agreement"] == 1.0
    assert g["weights"]["embeddings"]["tied_to_lm_head"] is False
    prompt = small_llm.tokenizer("Quantization maps floating-point weights", add_special_tokens=False)[
        "input_ids"
    ]
    want = reference_tokens(small_llm.module.lm, [prompt], 64)[0]
    got = Generator(fp32_art).generate(prompt, max_new_tokens=64, stop_token_ids=()).token_ids
    assert got == want


@pytest.mark.parametrize(
    "target,fmt,precision,layout",
    [
        ("x86-server", "onnx", "int4", None),
        ("snapdragon-865", "ort", "int8", "concat"),
        ("snapdragon-865", "tflite", "int8", "slots"),
        ("nvidia-a100", "tensorrt", "int4", "concat"),
    ],
)
def test_quantized_artifacts_generate_the_fake_quantized_tokens(
    small_llm, tmp_path, target, fmt, precision, layout
):
    out = tmp_path / fmt
    m = export_generate(
        small_llm, out, target=target, format=fmt, precision=precision, check_tokens=24, context=64
    )
    g = m["generation"]
    p = g["parity"]
    assert g["precision"] == precision and g["recipe"] in ("w4a16-rtn", "int8-dynamic")
    assert p["reference"].startswith("torch fake-quantized")
    assert p["greedy_equal"] or p["equal_up_to_ties"]
    assert 0 < p["vs_fp32"]["agreement"] <= 1 and p["vs_fp32"]["logits_cosine_min"] > 0.9
    if layout:
        assert g["cache"]["layout"] == layout
    assert g["context"] == 64
    if fmt in ("onnx", "tensorrt"):
        graph = onnx.load(str(out / m["model_file"]), load_external_data=False).graph
        ops = {n.op_type for n in graph.node}
        assert (
            ("MatMulNBits" in ops)
            if fmt == "onnx"
            else ("DequantizeLinear" in ops and not any(n.domain == "com.microsoft" for n in graph.node))
        )
    gen = Generator(out)
    c = gen.generate(prompt_ids(small_llm)[0], max_new_tokens=8, stop_token_ids=())
    assert len(c.token_ids) == 8 and c.ttft_ms > 0 and c.decode_tok_s > 0


def test_gpt2_learned_positions_generate_like_hugging_face(decoder_dir, tmp_path):
    """GPT-2 (positions are learned embeddings, no tokenizer: seeded prompt ids) through the step graph."""
    from edgellm.models import load

    m = export_generate(load(decoder_dir("gpt2")), tmp_path / "gpt2", check_tokens=32, fused=False)
    assert m["generation"]["family"] == "gpt2" and m["generation"]["parity"]["greedy_equal"]


def test_a_failing_check_writes_nothing(small_llm, tmp_path, monkeypatch):
    """The reference's tokens shifted by one: no variant passes, the error says so, no folder is left."""
    real = ge.reference_tokens
    monkeypatch.setattr(
        ge, "reference_tokens", lambda lm, p, n: [[(t + 1) % 300 for t in r] for r in real(lm, p, n)]
    )
    out = tmp_path / "bad"
    with pytest.raises(ParityError, match="greedy"):
        export_generate(small_llm, out, check_tokens=8)
    assert not out.exists() and not any(tmp_path.iterdir())


def test_unsupported_family_and_non_generation_artifact_are_named(minilm, minilm_artifact, tmp_path):
    with pytest.raises(EdgeLLMError, match="supported families: llama, mistral, qwen2, qwen3, gpt2"):
        export_generate(minilm, tmp_path / "x")
    with pytest.raises(EdgeLLMError, match="not a generation artifact.*edgellm export MODEL --generate"):
        Generator(minilm_artifact.path)


def test_prompt_longer_than_the_context_and_full_cache(small_llm, tmp_path):
    out = tmp_path / "c16"
    export_generate(small_llm, out, context=16, check_tokens=4)
    gen = Generator(out)
    with pytest.raises(EdgeLLMError, match="context holds 16"):
        gen.generate(list(range(3, 20)))
    c = gen.generate(list(range(3, 13)), max_new_tokens=50, stop_token_ids=())
    assert len(c.prompt_ids) + len(c.token_ids) == 16  # stops at the end of the cache, not with an error


def test_sampling_options(fp32_art, small_llm):
    gen = Generator(fp32_art)
    prompt = prompt_ids(small_llm)[0]
    greedy = gen.generate(prompt, max_new_tokens=16, stop_token_ids=()).token_ids
    assert (
        gen.generate(prompt, max_new_tokens=16, temperature=1.0, top_k=1, stop_token_ids=()).token_ids
        == greedy
    )
    a = gen.generate(prompt, max_new_tokens=16, temperature=1.5, seed=3, stop_token_ids=()).token_ids
    b = gen.generate(prompt, max_new_tokens=16, temperature=1.5, seed=3, stop_token_ids=()).token_ids
    c = gen.generate(prompt, max_new_tokens=16, temperature=1.5, seed=4, stop_token_ids=()).token_ids
    assert a == b and a != c
    tiny_p = gen.generate(prompt, max_new_tokens=16, temperature=1.5, top_p=1e-6, stop_token_ids=()).token_ids
    assert tiny_p == greedy  # the nucleus of a tiny top_p is the most likely token alone
    rep = gen.generate(prompt, max_new_tokens=16, repetition_penalty=5.0, stop_token_ids=()).token_ids
    assert len(set(rep)) >= len(set(greedy))
    for bad in ({"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"top_k": -2}, {"max_new_tokens": 0}):
        with pytest.raises(EdgeLLMError, match=next(iter(bad))):
            gen.generate(prompt, **bad)


def test_streaming_and_stop_strings(fp32_art):
    gen = Generator(fp32_art)
    toks = list(gen.stream("The with statement", max_new_tokens=24, stop_token_ids=()))
    full = gen.last
    assert "".join(t.text for t in toks) == full.text and [t.id for t in toks] == full.token_ids
    assert full.ttft_ms > 0 and all(t.ms >= 0 for t in toks)
    stop = full.text[5:8]
    cut = gen.generate("The with statement", max_new_tokens=24, stop=(stop,), stop_token_ids=())
    assert cut.stop_reason == "stop_string" and stop not in cut.text and full.text.startswith(cut.text)
    assert len(cut.text) == full.text.find(stop)


def test_split_pair_generates_through_the_generator(gen_dir, tiny_llama):
    prompt = tiny_llama.tokenizer("The with statement is used", add_special_tokens=False)["input_ids"]
    want = reference_tokens(tiny_llama.module.lm, [prompt], 16)[0]
    got = Generator(gen_dir).generate(prompt, max_new_tokens=16, stop_token_ids=()).token_ids
    assert got == want


def test_keep_lm_head_costs_are_reported(small_llm, tmp_path):
    q = export_generate(small_llm, tmp_path / "q", precision="int4", check_tokens=8)["generation"]["weights"]
    k = export_generate(small_llm, tmp_path / "k", precision="int4", keep=("lm_head",), check_tokens=8)
    kw = k["generation"]["weights"]
    assert q["lm_head"]["precision"] == "int4" and kw["lm_head"]["precision"] == "fp32"
    assert kw["lm_head"]["bytes"] == kw["lm_head"]["fp32_bytes"] > q["lm_head"]["bytes"] * 4
    assert np.isclose(q["embeddings"]["bytes"], kw["embeddings"]["bytes"])


def test_a_target_given_as_a_yaml_path_reaches_the_step_graph_export(small_lm, tmp_path):
    """A profile file that is not on the search path (a YAML path) is used by every lowering."""
    from edgellm.pipeline.generate_export import export_generate
    from edgellm.targets import list_targets

    y = tmp_path / "my-phone.yaml"
    y.write_text(
        list_targets()["snapdragon-865"].read_text().replace("name: snapdragon-865", "name: my-phone")
    )
    m = export_generate(
        small_lm, tmp_path / "out", target=str(y), format="ort", precision="fp32", check_tokens=8
    )
    assert m["target"]["name"] == "my-phone" and m["generation"]["parity"]["greedy_equal"]
