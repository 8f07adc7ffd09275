"""Structured pruning of DistilBERT (``q_lin/k_lin/v_lin/out_lin``, ``ffn.lin1/lin2``), GPT-2 (the fused
``c_attn`` Conv1D: query, key and value in one, weights stored ``[in, out]``), Phi-3 (fused ``qkv_proj``
under GQA and ``gate_up_proj``) and Gemma 1-3 (the Llama layout), besides the Llama and BERT families:
the pruned model runs, has the expected parameters and heads, its config.json reloads in transformers,
removing units of exactly zero contribution leaves its output unchanged, and ``edgellm compress --prune``
exports it with parity."""

import json

import numpy as np
import pytest
import torch
import transformers

from edgellm.compress.prune import PruneConfig, prune, prune_model, save_pruned
from edgellm.compress.prune.layout import geometry, hf_model, layers_of
from edgellm.errors import EdgeLLMError
from edgellm.models import load

E, D = 64, 16  # hidden size and head size of the tiny models (conftest.tiny_config)
REMOVED_PER_HEAD = 4 * D * E + 3 * D  # query/key/value rows (+ biases) and the output projection's inputs
REMOVED_PER_CHANNEL = 2 * E + 1  # the FFN's first projection row (+ bias) and its second's input


def _out(adapter, feeds):
    return adapter.run(feeds)[adapter.outputs[0].name]


def _hf_out(path, kind, feeds):
    """The saved directory run by transformers alone (no edgellm): last hidden state or logits."""
    auto = transformers.AutoModel if kind == "distilbert" else transformers.AutoModelForCausalLM
    hf = auto.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        out = hf(**{k: torch.as_tensor(v) for k, v in feeds.items()})
    return (out.last_hidden_state if kind == "distilbert" else out.logits).numpy()


@pytest.mark.parametrize("kind", ["distilbert", "gpt2"])
@pytest.mark.parametrize("heads", [0.25, 0.5])
def test_pruned_model_has_the_expected_heads_and_parameters_and_reloads(tiny_dir, tmp_path, kind, heads):
    base = load(tiny_dir(kind))
    width = 128 if kind == "distilbert" else 256  # DistilBERT's hidden_dim; GPT-2's 4 x n_embd
    assert geometry(base) == (4, 4, D, width)
    old_qkv = (
        [layer.attn.c_attn.weight.detach().clone() for layer in layers_of(base)] if kind == "gpt2" else []
    )
    pruned, rec = prune(base, PruneConfig(heads=heads, ffn=0.25))
    r, c = int(4 * heads), width // 4
    assert {i: len(v) for i, v in rec.heads.items()} == {0: r, 1: r} and rec.ffn == {0: c, 1: c}
    removed = 2 * (r * REMOVED_PER_HEAD + c * REMOVED_PER_CHANNEL)
    assert rec.params_before - rec.params_after == removed == base.num_parameters - pruned.num_parameters
    for i, layer in enumerate(layers_of(pruned)):  # the attention modules' own bookkeeping
        if kind == "gpt2":
            attn = layer.attn
            assert attn.num_heads == 4 - r and attn.split_size == (4 - r) * D and attn.head_dim == D
            assert tuple(attn.c_attn.weight.shape) == (E, 3 * (4 - r) * D)
            # the kept heads' columns, in each of the query, key and value thirds
            keep = [j * D + x for j in range(4) if j not in rec.heads[i] for x in range(D)]
            assert torch.equal(attn.c_attn.weight, old_qkv[i][:, [t * E + x for t in range(3) for x in keep]])
            assert tuple(attn.c_proj.weight.shape) == ((4 - r) * D, E)
        else:
            attn = layer.attention
            assert attn.n_heads == 4 - r and attn.dim == (4 - r) * D == attn.q_lin.out_features
            assert layer.ffn.lin1.out_features == layer.ffn.lin2.in_features == width - c
    feeds = base.example_inputs(batch=2, seq=11, seed=4)
    out = _out(pruned, feeds)
    assert out.shape == _out(base, feeds).shape and np.isfinite(out).all()
    # saved, its config.json says what was removed, and transformers alone rebuilds the same model
    save_pruned(pruned, rec, tmp_path / "p")
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    assert {int(k): sorted(v) for k, v in cfg["pruned_heads"].items()} == rec.heads
    assert cfg["hidden_dim" if kind == "distilbert" else "n_inner"] == width - c
    assert transformers.AutoConfig.from_pretrained(tmp_path / "p").model_type == kind
    with torch.no_grad():
        ours = hf_model(pruned)(**{k: torch.as_tensor(v) for k, v in feeds.items()})
    ours = ours.last_hidden_state if kind == "distilbert" else ours.logits
    assert np.abs(_hf_out(tmp_path / "p", kind, feeds) - ours.numpy()).max() < 1e-5
    again = load(tmp_path / "p")
    assert geometry(again) == (4 - r, 4 - r, D, width - c) and again.num_parameters == rec.params_after
    assert np.abs(_out(again, feeds) - out).max() < 1e-5


def _zero(kind, layer, heads, channels, width):
    """Zero every weight of some heads (Phi-3, Gemma: KV groups of 4:2 GQA) and FFN channels of one layer,
    by the family's own module names: their contribution is exactly 0."""
    with torch.no_grad():
        for j in heads:
            own = slice(j * D, (j + 1) * D)  # head j's rows (MHA), key/value head j's (GQA)
            grp = slice(2 * j * D, 2 * (j + 1) * D)  # GQA: the two query heads that read key/value head j
            if kind == "gpt2":  # Conv1D [in, out]: columns are outputs
                for third in range(3):
                    layer.attn.c_attn.weight[:, third * E + j * D : third * E + (j + 1) * D] = 0
                layer.attn.c_proj.weight[own] = 0
            elif kind == "distilbert":
                a = layer.attention
                for lin in (a.q_lin, a.k_lin, a.v_lin):
                    lin.weight[own] = 0
                a.out_lin.weight[:, own] = 0
            elif kind == "phi3":  # qkv_proj rows: 4 query heads, 2 key heads, 2 value heads
                a = layer.self_attn
                a.qkv_proj.weight[grp] = 0
                a.qkv_proj.weight[4 * D + j * D : 4 * D + (j + 1) * D] = 0
                a.qkv_proj.weight[6 * D + j * D : 6 * D + (j + 1) * D] = 0
                a.o_proj.weight[:, grp] = 0
            else:
                a = layer.self_attn
                a.q_proj.weight[grp] = 0
                a.k_proj.weight[own] = 0
                a.v_proj.weight[own] = 0
                a.o_proj.weight[:, grp] = 0
        if kind == "gpt2":
            layer.mlp.c_fc.weight[:, channels] = 0
            layer.mlp.c_proj.weight[channels] = 0
        elif kind == "distilbert":
            layer.ffn.lin1.weight[channels] = 0
            layer.ffn.lin2.weight[:, channels] = 0
        elif kind == "phi3":  # gate_up_proj rows: gate, then up
            layer.mlp.gate_up_proj.weight[channels] = 0
            layer.mlp.gate_up_proj.weight[[width + c for c in channels]] = 0
            layer.mlp.down_proj.weight[:, channels] = 0
        else:
            layer.mlp.gate_proj.weight[channels] = 0
            layer.mlp.up_proj.weight[channels] = 0
            layer.mlp.down_proj.weight[:, channels] = 0


@pytest.mark.parametrize(
    "kind,heads,zeroed",
    [
        ("distilbert", 0.25, {0: [1], 1: [3]}),
        ("distilbert", 0.5, {0: [0, 2], 1: [1, 3]}),
        ("gpt2", 0.25, {0: [2], 1: [0]}),
        ("gpt2", 0.5, {0: [1, 3], 1: [0, 2]}),
        ("phi3", 0.5, {0: [1], 1: [0]}),  # KV groups of 4:2 GQA
        ("gemma", 0.5, {0: [0], 1: [1]}),
        ("gemma2", 0.5, {0: [1], 1: [1]}),
        ("gemma3_text", 0.5, {0: [0], 1: [0]}),
    ],
)
def test_pruning_units_of_zero_contribution_leaves_the_output_unchanged(
    tiny_dir, tmp_path, kind, heads, zeroed
):
    base = load(tiny_dir(kind))
    h, kv, _, width = geometry(base)
    chans = {i: list(range(i, width, 4)) for i in zeroed}  # a quarter of the channels
    for i, layer in enumerate(layers_of(base)):
        _zero(kind, layer, zeroed[i], chans[i], width)
    feeds = base.example_inputs(batch=3, seq=12, seed=6)
    ref = _out(base, feeds)
    pruned, rec = prune_model(base, PruneConfig(heads=heads, ffn=0.25, score="l2"), tmp_path / "p")
    assert rec.heads == zeroed and rec.ffn == {0: width // 4, 1: width // 4}
    gone = len(zeroed[0])  # heads (KV groups under GQA, each with h // kv query heads) per layer
    assert geometry(pruned) == (h - gone * (h // kv), kv - gone, D, width - width // 4)
    assert pruned.num_parameters == rec.params_after < rec.params_before
    assert np.abs(_out(pruned, feeds) - ref).max() < 1e-5  # the reloaded directory computes the same


@pytest.mark.parametrize("kind", ["distilbert", "gpt2"])
def test_cli_prune_exports_both_models_with_parity(tiny_dir, tmp_path, capsys, kind):
    from edgellm.cli import main

    out = tmp_path / "p"
    argv = ["compress", str(tiny_dir(kind)), "--prune", "heads=0.25,ffn=0.25", "--runs", "1", "-o", str(out)]
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    rep = json.loads(capsys.readouterr().out)
    for which in ("unpruned", "pruned"):  # the ONNX Runtime export of each, checked against its torch model
        par = rep["onnx_parity"][which]
        assert par["passed"] and par["cosine_min"] > 0.9999 and par["max_abs"] < 1e-3, par
    width = 128 if kind == "distilbert" else 256
    removed = 2 * (REMOVED_PER_HEAD + width // 4 * REMOVED_PER_CHANNEL)
    assert rep["params"]["unpruned"] - rep["params"]["pruned"] == removed and rep["flops"]["ratio"] < 1
    metric = rep["quality"]["pruned"]["metric"]
    assert metric == ("perplexity" if kind == "gpt2" else "embedding")
    cfg = transformers.AutoConfig.from_pretrained(out)
    assert {len(v) for v in cfg.pruned_heads.values()} == {1} and (out / "pruning.json").is_file()
    assert geometry(load(out)) == (3, 3, D, width - width // 4)


def test_gpt2_heads_and_blocks_renumber_the_pruned_heads_and_generate(tiny_dir, tmp_path):
    from edgellm.models.decoder_step import whole_step

    base = load(tiny_dir("gpt2"))
    pruned, rec = prune_model(base, PruneConfig(heads=0.5, blocks=0.5), tmp_path / "p")
    (kept,) = {0, 1} - set(rec.removed_blocks)
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    assert cfg["n_layer"] == 1 and cfg["pruned_heads"] == {"0": rec.heads[kept]}  # layer `kept` is now 0
    # the key/value-cache step graph sizes its caches by the heads left (the config keeps n_head 4)
    step, dims = whole_step(pruned)
    assert (dims.kv_heads, dims.head_dim) == (2, D)
    feeds = pruned.example_inputs(batch=2, seq=9, seed=2, padded=False)
    ids, mask = torch.as_tensor(feeds["input_ids"]), torch.as_tensor(feeds["attention_mask"])
    past = [torch.zeros(2, dims.kv_heads, 0, dims.head_dim)] * 2
    with torch.no_grad():
        logits, *present = step(ids, mask, torch.arange(9).expand(2, 9), *past)
    assert present[0].shape == (2, 2, 9, D)
    assert np.abs(logits.numpy() - _out(pruned, feeds)).max() < 1e-5


def test_uneven_heads_are_refused_where_one_head_count_is_needed(tiny_dir, tmp_path):
    """Ranked across layers, GPT-2's heads can leave its layers unequal (config.pruned_heads holds it):
    the model runs and exports, while a key/value cache shape and a GGUF file, which hold one head count,
    refuse it; pruning heads again is refused (Hugging Face counts heads from the unpruned model)."""
    from edgellm.export.gguf_file import check_family
    from edgellm.models.decoder_step import whole_step

    base = load(tiny_dir("gpt2"))
    _zero("gpt2", layers_of(base)[0], [0, 3], [], 256)  # the two least important heads, both in layer 0
    pruned, rec = prune_model(base, PruneConfig(heads=0.25, scope="global"), tmp_path / "g")
    assert rec.heads == {0: [0, 3]}
    assert [layer.attn.num_heads for layer in layers_of(pruned)] == [2, 4]
    assert np.isfinite(_out(pruned, pruned.example_inputs(batch=1, seq=5))).all()
    with pytest.raises(EdgeLLMError, match=r"different numbers of heads \(\[2, 4\].*scope layer"):
        whole_step(pruned)
    with pytest.raises(EdgeLLMError, match="GGUF export cannot write .*pruned per layer"):
        check_family(pruned)
    with pytest.raises(EdgeLLMError, match="already has pruned heads.*prune heads once"):
        prune(pruned, PruneConfig(heads=0.25))
    again, _ = prune(pruned, PruneConfig(ffn=0.25))  # FFN channels of a head-pruned model still go
    assert geometry(again)[3] == 192
