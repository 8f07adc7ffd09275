"""Decoders at LLM scale with seeded random weights, built from a config: nothing is downloaded.

Speed and memory work needs models of the size users bring (0.3-3 B parameters) while the project ships
no such weights. :func:`synthesize` writes a Hugging Face model directory (``config.json``,
``model.safetensors``, the bundled tokenizer) shaped like a published model, with the bundled tokenizer's
vocabulary (4,096 tokens) unless ``vocab`` says otherwise. Every tool reads such a directory as it reads
a real checkpoint: edgellm, llama.cpp's converter, onnxruntime-genai's model builder.

Example:
    >>> path = synthesize("qwen2.5-0.5b", "out/qwen-0.5b-shaped")            # doctest: +SKIP
    >>> edgellm.models.load(path).config.num_hidden_layers                     # doctest: +SKIP
    24
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError

# The shapes of published decoders (their config.json, vocabulary aside).
PRESETS: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
    },
    "qwen3-0.6b": {
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
    },
    "smollm2-360m": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
    },
    "llama-3.2-1b": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
    },
    "mistral-7b": {
        "model_type": "mistral",
        "architectures": ["MistralForCausalLM"],
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
    },
    "gpt2": {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
        "n_positions": 1024,
        "tie_word_embeddings": True,
    },
}


def preset_config(preset: str, **overrides: Any) -> dict[str, Any]:
    """The config of ``preset`` with ``overrides`` (e.g. ``num_hidden_layers=2``); unknown presets name
    the known ones."""
    if preset not in PRESETS:
        raise EdgeLLMError(f"unknown model shape '{preset}'", f"use one of: {', '.join(PRESETS)}")
    cfg = dict(PRESETS[preset])
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


def synthesize(
    preset: str,
    output: str | Path,
    *,
    layers: int | None = None,
    vocab: int | None = None,
    seed: int = 0,
    context: int = 2048,
    force: bool = False,
) -> Path:
    """Write a model directory shaped like ``preset`` with random weights drawn from ``seed``.

    Args:
        layers: fewer (or more) decoder layers than the preset.
        vocab: vocabulary size; default the bundled tokenizer's (its files are copied beside the weights).
        context: ``max_position_embeddings`` (GPT-2: ``n_positions``).

    Returns:
        The directory, written atomically (nothing is left behind when building fails).
    """
    import torch
    import transformers

    from edgellm.models.bundled import bundled_path
    from edgellm.utils.fs import atomic_dir

    tok_dir = bundled_path("tiny-llama")
    tok_cfg = json.loads((tok_dir / "config.json").read_text())
    gpt2 = PRESETS.get(preset, {}).get("model_type") == "gpt2"
    extra = {"n_layer" if gpt2 else "num_hidden_layers": layers}
    extra["n_positions" if gpt2 else "max_position_embeddings"] = context
    cfg = preset_config(preset, **extra)
    cfg["vocab_size"] = int(vocab or tok_cfg["vocab_size"])
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        cfg[k] = tok_cfg[k]
    config = transformers.AutoConfig.for_model(**cfg)
    torch.manual_seed(seed)
    with atomic_dir(output, force=force) as tmp:
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.save_pretrained(tmp, safe_serialization=True)
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (tok_dir / f).is_file():
                shutil.copy2(tok_dir / f, tmp / f)
        n = sum(p.numel() for p in model.parameters())
        (tmp / "synthetic.json").write_text(
            json.dumps({"preset": preset, "seed": seed, "parameters": n, "weights": "random"}, indent=2)
            + "\n"
        )
    return Path(output)
