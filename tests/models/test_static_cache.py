"""The static key/value-cache decoder (edgellm.models.static_cache) in torch: the same logits as the Hugging
Face model for every Llama family, in chunks and one token at a time; refusals in one line."""

import pytest
import torch

from edgellm import models
from edgellm.errors import EdgeLLMError
from edgellm.models.static_cache import StaticCacheDecoder, static_decoder

SHAPE = dict(
    vocab_size=320,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=6,  # GQA 6:2 (three query heads per key/value head), as tiny-llama
    num_key_value_heads=2,
    max_position_embeddings=256,
)


def _lm(kind: str, **extra):
    import transformers as tf

    cfg = {
        "llama": tf.LlamaConfig,
        "mistral": tf.MistralConfig,
        "qwen2": tf.Qwen2Config,
        "qwen3": tf.Qwen3Config,
    }[kind](**{**SHAPE, **extra})
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize(
    "kind,extra",
    [
        ("llama", {}),
        ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64,
                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0}}),
        ("mistral", {"sliding_window": None}),
        ("qwen2", {}),  # biases on the q/k/v projections
        ("qwen3", {"head_dim": 16}),  # RMSNorm over each query/key head; head_dim != hidden / heads
    ],
    ids=["llama", "llama3-rope", "mistral", "qwen2", "qwen3"],
)  # fmt: skip
def test_same_logits_as_hugging_face(kind, extra):
    lm = _lm(kind, **extra)
    dec = StaticCacheDecoder(lm, context=40, max_chunk=8)
    ids = torch.randint(0, 320, (1, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = lm(input_ids=ids).logits[0]
        for _ in range(2):  # a second sequence over what the first left in the buffers: nothing leaks
            got = [dec(ids[:, :13], torch.tensor([0]))[0, -1]]  # prefill: 13 positions in one call
            got += [dec(ids[:, j : j + 1], torch.tensor([j]))[0, -1] for j in range(13, 30)]
            err = max(float((ref[12 + k] - g).abs().max()) for k, g in enumerate(got))
            assert err < 1e-4 * float(ref.abs().max()), (kind, err)
    # the QuantSpec's layer names resolve to the decoder's own nn.Linear objects
    assert dec.get_submodule("layers.1.self_attn.q_proj") is lm.model.layers[1].self_attn.q_proj


def test_refusals_name_the_fix(decoder_dir):
    gpt2 = models.load(str(decoder_dir("gpt2")))
    with pytest.raises(EdgeLLMError, match="takes llama, mistral, qwen2, qwen3.*'gpt2'"):
        static_decoder(gpt2, 32)
    with pytest.raises(EdgeLLMError, match="sliding window of 16 positions.*--context 16 or less"):
        StaticCacheDecoder(_lm("mistral", sliding_window=16), context=32)
    with pytest.raises(EdgeLLMError, match="outside 2..256"):
        StaticCacheDecoder(_lm("llama"), context=300)
