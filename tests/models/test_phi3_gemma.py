"""Phi-3 and Gemma-style decoders: Phi-3's fused ``qkv_proj`` / ``gate_up_proj``, rotary on part of each
head and untied embeddings; Gemma's ``(1 + w)`` RMSNorm, embeddings scaled by ``sqrt(hidden)`` and tied
to the LM head (Gemma 2: logit soft-capping, sliding-window layers; Gemma 3: query/key norms, its own
local rotary). They load, export to ONNX Runtime (fp32, INT8, INT4) with parity, cut in two, and the
stages without a graph for them (key/value-cache generation, GGUF) refuse them by name."""

import numpy as np
import pytest

from edgellm.errors import EdgeLLMError
from edgellm.models import load
from edgellm.partition.cut import split_model

NEW = ["phi3", "gemma", "gemma2", "gemma3_text"]


@pytest.mark.parametrize("kind", NEW)
def test_loads_as_a_causal_lm_with_its_layout(decoder_dir, kind):
    m = load(decoder_dir(kind))
    assert m.task == "causal-lm" and m.family == kind
    assert [b.name for b in m.blocks] == ["embeddings", "layers.0", "layers.1", "head"]
    lm = m.module.lm
    tied = lm.lm_head.weight.data_ptr() == lm.model.embed_tokens.weight.data_ptr()
    assert tied == (kind != "phi3")  # Phi-3 keeps its own LM head; Gemma ties it to the embeddings
    if kind == "phi3":
        attn, mlp = lm.model.layers[0].self_attn, lm.model.layers[0].mlp
        assert attn.qkv_proj.out_features == (4 + 2 * 2) * 16 and mlp.gate_up_proj.out_features == 2 * 128
        assert lm.model.rotary_emb.inv_freq.numel() * 2 == 8  # rotary on half of each 16-wide head
    feeds = m.example_inputs(batch=2, seq=12, seed=1)
    out = m.run(feeds)["logits"]
    assert out.shape == (2, 12, 320) and np.isfinite(out).all()


# ONNX export at fp32 / INT8 / INT4 of each: tests/conformance/test_family_matrix.py


@pytest.mark.parametrize("kind", NEW)
def test_every_cut_reproduces_the_model(decoder_dir, kind):
    """Gemma and Gemma 2 scale ``inputs_embeds`` by sqrt(hidden) inside the model: the server half divides
    it out first (the device half applied it), else every cut before the last layer is wrong."""
    m = load(decoder_dir(kind))
    feeds = m.example_inputs(batch=3, seq=12, seed=3)
    ref = m.run(feeds)["logits"]
    for cut in range(1, len(m.blocks)):
        h = split_model(m, cut)
        act = h.device.run({s.name: feeds[s.name] for s in h.device.inputs})["hidden"]
        got = h.server.run({"hidden": act, "attention_mask": feeds["attention_mask"]})["logits"]
        assert np.abs(got - ref).max() < 1e-5, (kind, cut)


@pytest.mark.parametrize("kind", ["phi3", "gemma"])
def test_stages_without_a_graph_for_them_refuse_them_by_name(decoder_dir, kind, tmp_path, capsys):
    from edgellm.cli import main
    from edgellm.export.decoder_graph import build_decoder_graph
    from edgellm.export.gguf_file import check_family
    from edgellm.models.decoder_step import cache_halves, whole_step
    from edgellm.models.static_cache import static_decoder

    m = load(decoder_dir(kind))
    for refuse in (whole_step, lambda a: cache_halves(a, 1)):
        with pytest.raises(
            EdgeLLMError, match=f"key/value-cache graph; .* is '{kind}'.*supported families: llama"
        ):
            refuse(m)
    with pytest.raises(EdgeLLMError, match=f"no generation graph for '{kind}'"):
        build_decoder_graph(m, None, context=32)
    with pytest.raises(EdgeLLMError, match=f"static key/value-cache program takes .* is '{kind}'"):
        static_decoder(m, 32)
    with pytest.raises(EdgeLLMError, match=f"GGUF export has no tensor layout for the '{kind}' family"):
        check_family(m)
    rc = main(["export", str(decoder_dir(kind)), "--generate", "-o", str(tmp_path / "gen")])
    err = capsys.readouterr().err
    assert rc == 2 and f"'{kind}'" in err and "supported families" in err and "Traceback" not in err, err
    assert not (tmp_path / "gen").exists()
