"""Structured pruning of transformers: heads (GQA groups kept whole), FFN channels and blocks are removed
physically; the result is an ordinary model directory that loads, exports and runs in ONNX Runtime."""

import json

import numpy as np
import pytest
from prune_models import logits

from edgellm.compress.prune import PruneConfig, prune, prune_model
from edgellm.compress.prune.layout import geometry
from edgellm.errors import EdgeLLMError
from edgellm.models import load


def test_gqa_groups_are_pruned_whole_and_the_model_exports(small_lm, tmp_path):
    from edgellm.export import export
    from edgellm.runtime import make_runner

    before = load(small_lm)
    h, kv, d, width = geometry(before)
    assert (h, kv, d, width) == (4, 2, 32, 256)
    pruned, rec = prune_model(small_lm, PruneConfig(heads=0.5, ffn=0.25, score="l2"), tmp_path / "p")
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    # one KV group of two: its key/value head and both query heads that read it
    assert cfg["num_attention_heads"] == 2 and cfg["num_key_value_heads"] == 1 and cfg["head_dim"] == 32
    assert cfg["intermediate_size"] == 192
    assert geometry(pruned) == (2, 1, 32, 192)
    assert rec.params_after < rec.params_before and pruned.num_parameters == rec.params_after
    assert len(rec.heads[0]) == 1 and rec.ffn[1] == 64
    assert json.loads((tmp_path / "p" / "pruning.json").read_text())["removed_heads"] == {
        str(k): v for k, v in rec.heads.items()
    }
    f = pruned.example_inputs(batch=2, seq=12, seed=1)
    assert logits(pruned, f).shape == logits(before, f).shape
    art = export(pruned, "x86-server", tmp_path / "onnx")
    assert art.manifest["pruning"]["removed_heads"] == {str(k): v for k, v in rec.heads.items()}
    got = make_runner(art).run(f)["logits"]
    assert np.allclose(got, logits(pruned, f), atol=1e-3)


def test_a_pruned_transformer_runs_in_tflite(tmp_path):
    """GQA heads (4 KV groups -> 2) and FFN channels removed, then exported for the phone's TFLite with
    parity (ONNX Runtime is checked above; ORT-mobile for pruned plain modules in test_prune_graph). (A model left with a single KV head does not convert to TFLite within
    parity — with or without pruning; the exporter's parity check refuses it.)"""
    from conftest import llama_like_tiny

    from edgellm.export import export

    src = llama_like_tiny(tmp_path / "m", num_attention_heads=8, num_key_value_heads=4, head_dim=16)
    pruned, rec = prune_model(src, PruneConfig(heads=0.5, ffn=0.25, score="l2"), tmp_path / "p")
    assert pruned.config.num_key_value_heads == 2
    art = export(pruned, "snapdragon-865", tmp_path / "tfl", format="tflite", seq_len=32)
    assert (
        art.manifest["parity"]["passed"]
        and art.manifest["pruning"]["params_ratio"] == rec.to_dict()["params_ratio"]
    )


def test_minilm_heads_and_ffn(minilm, tmp_path):
    from edgellm.export import export
    from edgellm.runtime import make_runner

    pruned, rec = prune_model(
        minilm, PruneConfig(heads=0.25, ffn=0.5, score="l2", multiple_of=16), tmp_path / "m"
    )
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert {int(k): len(v) for k, v in cfg["pruned_heads"].items()} == {i: 3 for i in range(6)}  # 12 -> 9
    assert cfg["intermediate_size"] == 768
    assert 0.6 < rec.params_after / rec.params_before < 0.9  # the 30522 x 384 embedding stays
    f = minilm.example_inputs(batch=2, seq=16, seed=0)
    a, b = minilm.run(f)["sentence_embedding"], pruned.run(f)["sentence_embedding"]
    assert a.shape == b.shape
    assert (tmp_path / "m" / "modules.json").exists()  # still a sentence-transformers model
    art = export(pruned, "x86-server", tmp_path / "onnx")
    assert np.allclose(make_runner(art).run(f)["sentence_embedding"], b, atol=1e-4)


def test_global_head_ratio_prunes_bert_layers_unevenly_and_is_refused_where_configs_cannot_hold_it(
    minilm, small_lm, tmp_path
):
    pruned, rec = prune_model(minilm, PruneConfig(heads=0.25, scope="global"), tmp_path / "g")
    per_layer = {int(k): len(v) for k, v in rec.to_dict()["removed_heads"].items()}
    assert sum(per_layer.values()) == 18 and len(set(per_layer.values())) > 1  # 25 % of 72, not 3 each
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    assert {int(k): len(v) for k, v in cfg["pruned_heads"].items()} == {
        k: v for k, v in per_layer.items() if v
    }
    f = minilm.example_inputs(batch=2, seq=16, seed=0)
    assert pruned.run(f)["sentence_embedding"].shape == (2, 384)
    with pytest.raises(EdgeLLMError, match="global ratios give layers different widths.*use scope: layer"):
        prune(load(small_lm), PruneConfig(heads=0.5, scope="global"))
    with pytest.raises(EdgeLLMError, match="channels is the ratio for plain torch modules"):
        prune(load(small_lm), PruneConfig(channels=0.5))


def test_blocks_and_multiple_of(small_lm, tmp_path):
    pruned, rec = prune_model(small_lm, PruneConfig(blocks=0.5, ffn=0.3, multiple_of=16), tmp_path / "b")
    assert pruned.config.num_hidden_layers == 1 and len(rec.removed_blocks) == 1
    assert geometry(pruned)[3] == 192  # 256 * 0.7 = 179.2 -> 180 kept -> rounded up to 192
    assert [b.name for b in pruned.blocks if b.name.startswith("layers.")] == ["layers.0"]
    f = pruned.example_inputs(batch=1, seq=8, seed=0)
    assert np.isfinite(logits(pruned, f)).all()


def test_errors_name_what_is_wrong(small_lm, tmp_path):
    from conftest import llama_like_tiny

    with pytest.raises(EdgeLLMError, match="needs calibration data"):
        prune(load(small_lm), PruneConfig(heads=0.5, score="wanda"))
    one_group = llama_like_tiny(
        tmp_path / "one", hidden_size=64, num_attention_heads=2, num_key_value_heads=1
    )
    with pytest.raises(EdgeLLMError, match="would remove every head"):
        prune(load(one_group), PruneConfig(heads=0.5))
    with pytest.raises(EdgeLLMError, match="removes no KV group"):
        prune(load(small_lm), PruneConfig(heads=0.2))
