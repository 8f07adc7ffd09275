"""Which Hugging Face architectures edgellm knows, and where their blocks live.

A family names the module paths of the embeddings, the list of transformer blocks and the final norm,
relative to the *base* model (``BertModel``, ``LlamaForCausalLM``...). Adding an architecture whose
layout matches one of these is one line in ``FAMILIES``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """Layout of one architecture family.

    Args:
        kind: ``"encoder"`` (bidirectional, embedding task) or ``"decoder"`` (causal LM).
        embeddings: dotted paths of the embedding modules, in order.
        layers: dotted path of the ``nn.ModuleList`` of transformer blocks.
        final: dotted paths of modules after the last block (final norm, LM head).
        ort_model_type: ``model_type`` for ONNX Runtime's transformer optimizer, or None to skip fusion.
        scales_embeds: the base model multiplies its input embeddings by ``sqrt(hidden_size)`` inside its
            ``forward``, also when given ``inputs_embeds`` (Gemma, Gemma 2; Gemma 3 scales in its
            embedding module instead).
    """

    kind: str
    embeddings: tuple[str, ...]
    layers: str
    final: tuple[str, ...] = ()
    ort_model_type: str | None = None
    scales_embeds: bool = False


_BERT = Family("encoder", ("embeddings",), "encoder.layer", (), "bert")
_LLAMA = Family("decoder", ("model.embed_tokens",), "model.layers", ("model.norm", "lm_head"), "gpt2")
_GEMMA = Family(
    "decoder", ("model.embed_tokens",), "model.layers", ("model.norm", "lm_head"), "gpt2", scales_embeds=True
)

FAMILIES: dict[str, Family] = {
    # BERT-style encoders
    "bert": _BERT,
    "roberta": _BERT,
    "xlm-roberta": _BERT,
    "camembert": _BERT,
    "electra": _BERT,
    "distilbert": Family("encoder", ("embeddings",), "transformer.layer", (), "bert"),
    # Decoder LMs: Llama family (GQA via num_key_value_heads), Qwen2, GPT-2
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    # Phi-3 (fused qkv_proj and gate_up_proj, partial rotary, untied embeddings); Gemma ((1 + w) RMSNorm,
    # embeddings scaled by sqrt(hidden), tied embeddings; Gemma 2 adds logit soft-capping and sliding
    # windows, Gemma 3 query/key norms): the same module layout as Llama
    "phi3": _LLAMA,
    "gemma": _GEMMA,
    "gemma2": _GEMMA,
    "gemma3_text": _LLAMA,
    "gpt2": Family(
        "decoder",
        ("transformer.wte", "transformer.wpe"),
        "transformer.h",
        ("transformer.ln_f", "lm_head"),
        "gpt2",
    ),
}


def supported_types() -> str:
    """Comma-separated list of supported ``model_type`` values, for error messages."""
    return ", ".join(sorted(FAMILIES))
