"""Structured pruning of transformers: heads (GQA groups kept whole), FFN channels and blocks are removed
physically; the result is an ordinary model directory that loads, exports and runs in ONNX Runtime."""

import json
import re

import numpy as np
import pytest
import torch

from edgellm.compress.prune.transformer import PruneConfig, geometry, prune, prune_model
from edgellm.errors import EdgeLLMError
from edgellm.models import load


def logits(adapter, feeds):
    return adapter.run(feeds)[adapter.outputs[0].name]


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


def _zero_unit(adapter, layer, kv_group, channels):
    """Zero every weight of one KV group and of some FFN channels: their contribution is exactly 0."""
    lm = adapter.module.lm
    attn, mlp = lm.model.layers[layer].self_attn, lm.model.layers[layer].mlp
    d, g = 32, 2
    with torch.no_grad():
        q = slice(kv_group * g * d, (kv_group + 1) * g * d)
        k = slice(kv_group * d, (kv_group + 1) * d)
        attn.q_proj.weight[q] = 0
        attn.k_proj.weight[k] = 0
        attn.v_proj.weight[k] = 0
        attn.o_proj.weight[:, q] = 0
        mlp.gate_proj.weight[channels] = 0
        mlp.up_proj.weight[channels] = 0
        mlp.down_proj.weight[:, channels] = 0


@pytest.mark.parametrize("score", ["l1", "l2", "wanda", "taylor"])
def test_a_structure_of_zero_importance_is_removed_and_outputs_do_not_change(
    small_lm, tmp_path, pydoc_batches, score
):
    base = load(small_lm)
    chans = list(range(0, 256, 4))  # 64 channels = the 25 % to remove
    for layer in (0, 1):
        _zero_unit(base, layer, kv_group=1, channels=chans)
    calib = pydoc_batches(base, 8, 8)[0].feeds
    f = base.example_inputs(batch=2, seq=10, seed=3)
    ref = logits(base, f)
    pruned, rec = prune_model(base, PruneConfig(heads=0.5, ffn=0.25, score=score), tmp_path / score, calib)
    assert rec.heads == {0: [1], 1: [1]}
    assert np.allclose(logits(pruned, f), ref, atol=1e-4), score


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


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"heads": 1.0}, "outside (0, 1)"),
        ({"ffn": -0.1}, "outside (0, 1)"),
        ({}, "nothing to prune"),
        ({"heads": 0.2, "score": "fisher"}, "unknown importance score"),
    ],
)
def test_bad_ratios_and_scores(kw, needle):
    with pytest.raises(EdgeLLMError, match=re.escape(needle)):
        PruneConfig(**kw)


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


def test_recovery_distils_the_unpruned_model_into_the_pruned_one(small_lm, tmp_path):
    pytest.importorskip("accelerate")
    from edgellm.compress.prune.recover import recover

    pruned, _ = prune_model(small_lm, PruneConfig(heads=0.5, ffn=0.5), tmp_path / "p")
    out, summary = recover(
        tmp_path / "p", small_lm, tmp_path / "r", steps=4, batch_size=4, seq_len=32, lr=1e-3
    )
    assert summary["steps"] == 4 and np.isfinite(summary["final"]["loss"])
    recovered = load(out)
    assert geometry(recovered) == geometry(pruned)  # the same smaller architecture, new weights
    assert (out / "pruning.json").is_file()
    f = pruned.example_inputs(batch=1, seq=8, seed=0)
    assert not np.allclose(logits(recovered, f), logits(pruned, f))


def test_cli_prune_reports_against_the_unpruned_model(small_lm, tmp_path, capsys):
    from edgellm.cli import main

    out = tmp_path / "p"
    argv = [
        "compress",
        str(small_lm),
        "--prune",
        "heads=0.5,ffn=0.5",
        "--runs",
        "2",
        "-o",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["params"]["ratio"] < 0.95 and rep["flops"]["ratio"] < 0.95
    assert rep["onnx_size_mb"]["pruned"] < rep["onnx_size_mb"]["unpruned"]
    assert (
        set(rep["latency"]["p50_ms"]) == {"unpruned", "pruned"}
        and rep["quality"]["pruned"]["metric"] == "perplexity"
    )
    assert load(out).config.intermediate_size == 128 and (tmp_path / "p.report.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "p.report.json"]  # no temp folders left
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err  # nothing replaced without --force
    for bad, needle in (
        ("heads=lots", "heads=lots: not a number"),
        ("width=0.5", "'width=0.5' is not KEY=RATIO"),
        ("heads=1.5", "outside (0, 1)"),
        ("channels=0.5", "channels is the ratio for plain torch modules"),
    ):
        rc = main(["compress", str(small_lm), "--prune", bad, "-o", str(tmp_path / "bad")])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and "Traceback" not in err, err
    rc = main(
        ["compress", "resnet18", "--prune", "channels=0.5", "--recover-steps", "5", "-o", str(tmp_path / "r")]
    )
    assert rc == 2 and "plain torch module" in capsys.readouterr().err
