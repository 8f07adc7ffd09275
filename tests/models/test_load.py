"""Model intake: bundled MiniLM, HF directories of the supported families, plain modules, bad input."""

import json

import numpy as np
import pytest
import torch

from edgellm import models
from edgellm.errors import ModelLoadError, UnsupportedArchitectureError
from edgellm.models.adapter import FIXED_TEXTS


def test_minilm_matches_sentence_transformers(minilm):
    """Our mean-pooling head reproduces sentence-transformers' own encode() of the same checkpoint."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm.source["path"], device="cpu")
    ref = st.encode(list(FIXED_TEXTS), convert_to_numpy=True)
    got = minilm.run(minilm.fixed_inputs())["sentence_embedding"]
    assert got.shape == (len(FIXED_TEXTS), 384)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # Normalize module honoured


def test_minilm_blocks_and_specs(minilm):
    assert minilm.task == "embedding" and minilm.family == "bert"
    assert [b.name for b in minilm.blocks] == ["embeddings", *[f"layers.{i}" for i in range(6)], "head"]
    assert [s.name for s in minilm.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert minilm.inputs[0].shape == ["batch", "sequence"]
    # each block resolves to real modules; transformer blocks hold parameters
    for b in minilm.blocks:
        mods = minilm.block_modules(b)
        assert mods
    assert sum(p.numel() for p in minilm.block_modules("layers.0")[0].parameters()) > 1e6
    assert 22e6 < minilm.num_parameters < 23.5e6
    assert len(minilm.source["sha256"]) == 64


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
def test_decoders_load_with_logits_head(decoder_dir, kind):
    m = models.load(decoder_dir(kind))
    assert m.task == "causal-lm" and m.family == kind
    assert [b.kind for b in m.blocks] == ["embeddings", "block", "block", "head"]
    feeds = m.example_inputs(batch=2, seq=9)
    out = m.run(feeds)["logits"]
    assert out.shape == (2, 9, 320)
    # the head block is the final norm followed by the LM head (a Linear to the vocabulary)
    head = m.block_modules("head")
    assert isinstance(head[-1], torch.nn.Linear) and head[-1].out_features == 320


def test_llama_gqa_is_kept(decoder_dir):
    m = models.load(decoder_dir("llama"))
    assert m.config.num_key_value_heads == 2 and m.config.num_attention_heads == 4
    k_proj = m.block_modules("layers.0")[0].self_attn.k_proj
    assert k_proj.out_features == 2 * (64 // 4)  # 2 KV heads of dim 16


def test_plain_module(mlp):
    m = models.load(mlp, example_inputs=torch.randn(3, 16))
    assert m.task == "custom" and [s.name for s in m.inputs] == ["input"]
    assert m.inputs[0].shape == ["batch", 16] and m.outputs[0].shape == ["batch", 4]
    assert [b.name for b in m.blocks] == ["0", "1", "2"]
    x = m.example_inputs(batch=5)
    np.testing.assert_allclose(
        m.run(x)["output"], mlp(torch.as_tensor(x["input"])).detach().numpy(), atol=1e-6
    )


def test_plain_module_needs_example(mlp):
    with pytest.raises(ModelLoadError, match="example_inputs"):
        models.load(mlp)


def test_missing_path():
    with pytest.raises(ModelLoadError, match="neither a bundled model nor an existing path"):
        models.load("/no/such/model")


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        models.load(tmp_path)


def test_config_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="no weights"):
        models.load(tmp_path)


def test_unsupported_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5Model"]}))
    with pytest.raises(UnsupportedArchitectureError, match=r"'t5' \(T5Model\).*supported model types: bert"):
        models.load(tmp_path)


def test_encoder_has_no_causal_head(minilm):
    with pytest.raises(ModelLoadError, match="no causal-LM head"):
        models.load("minilm", task="causal-lm")
