"""The family x stage conformance matrix: every family the README lists through every stage, one test per
cell of the declaration in :mod:`edgellm.models.support` (which the README's support table is rendered from).

Each family is a tiny random-weight model built here (``family_models.py``: hidden 64, 2 layers, a ~300-token
tokenizer of the family's own kind beside it), saved and loaded once for the session. A ``supported`` cell
runs the stage for real, through the public API a user calls, and checks the result against the torch model
with numbers that can fail; a ``refused`` cell checks that the stage stops with edgellm's clear error naming
the family and leaves nothing behind. A ``pending`` cell (being made true elsewhere) is expected to fail
today: strict xfail, so the cell flips when that work lands.

    pytest tests/conformance/test_family_matrix.py              # the default run
    pytest tests/conformance/test_family_matrix.py -m ""        # with the slow cells
    pytest tests/conformance/test_family_matrix.py -k qwen3     # one family
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from family_models import save_family

from edgellm.errors import EdgeLLMError
from edgellm.export.validate import Tolerance, compare, passes
from edgellm.models import support
from edgellm.models.support import REFUSED, STAGE_NAMES

# format stages: (target, options, the SDK they need, its extra, conformance marker)
EXPORTS = {
    "onnx": ("x86-server", {}, "onnxruntime", "onnx", pytest.mark.target_onnx),
    "openvino": ("x86-server", {}, "openvino", "openvino", None),
    "ort": ("snapdragon-865", {}, "onnxruntime", "onnx", pytest.mark.target_ort),
    "tflite": ("snapdragon-865", {"seq_len": 64}, "ai_edge_litert", "tflite", pytest.mark.target_tflite),
    "pte": ("snapdragon-8-gen-3", {}, "executorch", "executorch", pytest.mark.target_pte),
    "tensorrt": ("nvidia-a100", {}, "onnxruntime", "onnx", pytest.mark.target_tensorrt),
}
# The expensive formats run in the default run for a few families, whose paths (an encoder, GPT-2's
# Conv1D, Gemma's scaled embeddings) the rest share; every other cell of theirs is slow. Slow cells run in
# `benchmarks/family_matrix.py` (every cell, with its time) and in `pytest -m ""`; where another default
# test covers one too, it is named.
DEFAULT_RUN = {
    "pte": ("distilbert",),  # test_conformance.py lowers a small Llama to ExecuTorch in the default run
    "tflite": ("distilbert", "gpt2"),  # test_conformance.py runs MiniLM and a small Llama in LiteRT
    "tensorrt": ("gpt2",),  # tests/export/test_tensorrt.py writes a small Llama's Q/DQ ONNX
    "split": (*support.ENCODERS, "gpt2", "gemma"),  # tests/partition/test_split.py splits a small Llama
}
# transformers' XLM-RoBERTa is a copy of its RoBERTa, Mistral without a sliding window is Llama's modules:
# past loading (their config and weights are read as theirs), their cells are the roberta and llama cells
# again
COPIES = {"xlm-roberta": "roberta", "mistral": "llama"}
SLOW = {
    (f, s)
    for f in support.FAMILY_NAMES
    for s in STAGE_NAMES
    if (s in DEFAULT_RUN and f not in DEFAULT_RUN[s]) or (f in COPIES and s != "load")
}
# how the library words each refusal (the error also names the family)
REFUSAL = {s: r"needs a causal LM with a key/value-cache graph" for s in support.GENERATION_STAGES}
# what a pending cell raises while it is pending (none is today)
PENDING_RAISES: dict = {}
CHECK_TOKENS = 8


def _marks(family: str, stage: str) -> list:
    cell = support.cell(family, stage)
    marks = []
    if stage in EXPORTS and EXPORTS[stage][4] is not None:
        marks.append(EXPORTS[stage][4])
    if stage == "gguf":
        marks.append(pytest.mark.target_gguf)
    if (family, stage) in SLOW:
        marks.append(pytest.mark.slow)
    if cell.pending:
        raises = PENDING_RAISES.get(family) or PENDING_RAISES.get((family, stage), EdgeLLMError)
        marks.append(pytest.mark.xfail(strict=True, raises=raises, reason=f"pending: {cell.pending}"))
    return marks


CELLS = [
    pytest.param(f, s, marks=_marks(f, s), id=f"{f}-{s}") for f in support.FAMILY_NAMES for s in STAGE_NAMES
]


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    """``family_dir("qwen3")`` -> the tiny model's directory (with its tokenizer), saved once."""
    root = tmp_path_factory.mktemp("families")
    made = {}

    def make(family):
        if family not in made:
            made[family] = save_family(family, root / f"tiny-{family}")
        return made[family]

    return make


@pytest.fixture(scope="session")
def family_model(family_dir):
    """``family_model("qwen3")`` -> the loaded adapter, shared by every cell (stages must not change it).
    A family that does not load raises in the calling test, so a pending family's cells xfail."""
    from edgellm.models import load

    loaded = {}

    def get(family):
        if family not in loaded:
            loaded[family] = load(family_dir(family))
        return loaded[family]

    return get


def _need(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"the '{module}' SDK is not installed: pip install 'edgellm[{extra}]'")


def _out(m, feeds):
    return m.run(feeds)[m.outputs[0].name]


def _cosine(m, ref, got, feeds) -> float:
    name = m.outputs[0].name
    return compare({name: ref}, {name: got}, m.outputs[:1], feeds)[name]["cosine_min"]


@pytest.mark.parametrize("family,stage", CELLS)
def test_cell(family, stage, family_dir, family_model, tmp_path):
    cell = support.cell(family, stage)
    m = family_model(family)
    assert m.family == family and support.kind(family) == ("decoder" if m.task == "causal-lm" else "encoder")
    out = tmp_path / "out"
    if cell.status == REFUSED:
        assert stage in REFUSAL, f"say how the library words the refusal of '{stage}' in REFUSAL"
        with pytest.raises(EdgeLLMError, match=REFUSAL[stage]) as exc:
            RUN[stage](m, family_dir(family), out)
        assert f"'{family}'" in str(exc.value), f"the refusal does not name the family: {exc.value}"
        assert not out.exists(), "a refused stage left something behind"
        return
    RUN[stage](m, family_dir(family), out)


# ------------------------------------------------------------------------------------------------ the stages
def run_load(m, path, out):
    """The adapter's output is what transformers computes from the same directory: the sentence
    embedding (mean over unmasked tokens, normalised) of an encoder, the logits of a decoder."""
    import transformers

    assert [b.name for b in m.blocks] == ["embeddings", "layers.0", "layers.1", "head"]
    feeds = m.example_inputs(batch=3, seq=12, seed=1)  # rows padded differently
    t = {k: torch.as_tensor(v) for k, v in feeds.items()}
    with torch.no_grad():
        if m.task == "causal-lm":
            ref = transformers.AutoModelForCausalLM.from_pretrained(path).eval()(**t).logits.numpy()
        else:
            hidden = transformers.AutoModel.from_pretrained(path).eval()(**t).last_hidden_state
            mask = t["attention_mask"].unsqueeze(-1).float()
            ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    got = _out(m, feeds)
    keep = feeds["attention_mask"].astype(bool) if m.task == "causal-lm" else slice(None)
    np.testing.assert_allclose(got[keep], ref[keep], atol=1e-5)


def _export_stage(fmt):
    def run(m, path, out):
        from edgellm.export import Artifact, export, parity_reference
        from edgellm.export.validate import check_parity
        from edgellm.runtime import make_runner

        target, opts, sdk, extra, _ = EXPORTS[fmt]
        _need(sdk, extra)
        if fmt == "tflite":
            _need("litert_torch", extra)
        art = export(m, target, out, format=fmt, select_runtime=False, **opts)
        man = Artifact.load(art.path).manifest
        assert man["target"]["format"] == fmt and man["precision"] == "fp32" and man["parity"]["passed"]
        # recomputed here, through edgellm.runtime, on inputs of another seed (TensorRT's Q/DQ ONNX in ONNX
        # Runtime, as its exporter validates it: the engine is built where TensorRT and a GPU are)
        runner = make_runner(Artifact.load(art.path), "onnxruntime" if fmt == "tensorrt" else None)
        par = check_parity(parity_reference(m, fmt), runner, seed=11)
        assert passes(par["fixed"], Tolerance()) and passes(par["random"], Tolerance()), par

    return run


def _quant_stage(make_config, floor):
    def run(m, path, out):
        from edgellm.compress.quant import quantize
        from edgellm.export import Artifact, export, parity_reference
        from edgellm.runtime import make_runner

        spec = quantize(m, make_config())
        art = export(m, "x86-server", out, quant=spec, tolerance=Tolerance.quantized(), select_runtime=False)
        assert Artifact.load(art.path).manifest["parity"]["passed"]
        feeds = m.example_inputs(batch=2, seq=16, seed=5)
        got = make_runner(Artifact.load(art.path)).run(feeds)[m.outputs[0].name]
        # the artifact computes what the fake-quantized torch model does, and that stays near fp32
        fake = _out(parity_reference(m, "onnx", quant=spec), feeds)
        assert _cosine(m, fake, got, feeds) >= 0.999
        assert _cosine(m, _out(m, feeds), got, feeds) >= floor

    return run


def _int8():
    from edgellm.compress.quant import Int8Dynamic

    return Int8Dynamic()


def _int4():
    from edgellm.compress.quant import Int4WeightOnly

    return Int4WeightOnly(group_size=32)


def _rows(mod):
    """``mod``'s weight as ``[out, in]`` (a Hugging Face ``Conv1D`` stores ``[in, out]``) and its bias."""
    from transformers.pytorch_utils import Conv1D

    return (mod.weight.T if isinstance(mod, Conv1D) else mod.weight), mod.bias


def zero_units(m, units, channels):
    """Zero every weight of some attention units (a head; a KV group and its query heads under GQA) and of
    some FFN channels in every layer: what they add to the residual stream is then exactly 0."""
    from edgellm.compress.prune.layout import geometry, get_module, head_units, layers_of, layout_of

    lay = layout_of(m)
    h, kv, d, width = geometry(m)
    rows_of = head_units(h, kv, d)
    fused = lay.q == lay.k == lay.v  # one module's rows: the query heads, then the key, then the value heads
    gate_up = getattr(lay, "gate_up", False)  # one FFN input module: the gate rows, then the up rows
    with torch.no_grad():
        for layer in layers_of(m):
            for u in units:
                q_rows, kv_rows = rows_of[u]
                k_rows = [h * d + r for r in kv_rows] if fused else kv_rows
                v_rows = [(h + kv) * d + r for r in kv_rows] if fused else kv_rows
                for name, rows in ((lay.q, q_rows), (lay.k, k_rows), (lay.v, v_rows)):
                    w, b = _rows(get_module(layer, name))
                    w[rows] = 0
                    if b is not None:
                        b[rows] = 0
                _rows(get_module(layer, lay.o))[0][:, q_rows] = 0
            ffn_rows = list(channels) + ([width + c for c in channels] if gate_up else [])
            for name in lay.ffn_in:
                w, b = _rows(get_module(layer, name))
                w[ffn_rows] = 0
                if b is not None:
                    b[ffn_rows] = 0
            _rows(get_module(layer, lay.ffn_out))[0][:, list(channels)] = 0


def run_prune(m, path, out):
    """Half the attention units and a quarter of the FFN channels are zeroed first, so they carry nothing:
    the l2 score must pick exactly those, and the smaller model must compute what the zeroed one did."""
    from edgellm.compress.prune import PruneConfig, prune_model
    from edgellm.compress.prune.layout import geometry, get_module, layers_of, layout_of
    from edgellm.models import load

    fresh = load(path)  # the shared model stays as it is
    h, kv, d, width = geometry(fresh)  # kv == h without grouped-query attention
    units, channels = list(range(1, kv, 2)), range(1, width, 4)
    zero_units(fresh, units, channels)
    feeds = fresh.example_inputs(batch=3, seq=12, seed=3)
    ref = _out(fresh, feeds)
    pruned, rec = prune_model(fresh, PruneConfig(heads=0.5, ffn=0.25, score="l2"), out)
    assert rec.heads and all(sorted(v) == units for v in rec.heads.values()), rec.heads
    assert rec.params_after < rec.params_before and pruned.num_parameters == rec.params_after
    # the kept widths, read from the weights (a config may keep the unpruned head count: BERT's pruned_heads)
    lay, first = layout_of(pruned), layers_of(pruned)[0]
    qkv_rows = sum(_rows(get_module(first, n))[0].shape[0] for n in dict.fromkeys((lay.q, lay.k, lay.v)))
    h_kept, kv_kept = h - len(units) * (h // kv), kv - len(units)
    assert qkv_rows == (h_kept + 2 * kv_kept) * d
    assert _rows(get_module(first, lay.ffn_out))[0].shape[1] == width - len(channels)
    got = _out(pruned, feeds)
    assert _cosine(fresh, ref, got, feeds) > 0.99999 and np.abs(got - ref).max() < 1e-4


def run_split(m, path, out):
    """Plan every cut for a phone and a server, then export the cut after the embeddings and one layer: the
    chain (LiteRT phone half -> fp16 -> ONNX Runtime server half) against the unsplit model, again here on
    inputs of another seed."""
    from edgellm.partition import Network, plan
    from edgellm.partition.split_export import SplitArtifacts, export_split, run_chain
    from edgellm.runtime import make_runner

    _need("ai_edge_litert", "tflite")
    p = plan(m, "snapdragon-865", "x86-server", Network.named("4g"), seq=32, runs=2)
    assert set(range(1, len(m.blocks) + 1)) <= {c["cut"] for c in p.candidates} and p.best["feasible"]
    s = export_split(m, cut=1, codec="fp16", output=out, seq_len=64)
    assert SplitArtifacts.load(out).link["parity"]["cosine_min"] >= 0.999
    feeds = m.example_inputs(batch=2, seq=20, seed=5)
    got = run_chain(make_runner(s.device), make_runner(s.server), "fp16", s.link["side_inputs"], feeds)
    assert _cosine(m, _out(m, feeds), got[m.outputs[0].name], feeds) >= 0.999


def _prompt(m):
    return m.tokenizer("def f(x):\n    return x", add_special_tokens=False)["input_ids"]


def torch_greedy(m, ids, n):
    """``n`` greedy tokens of the torch model after ``ids`` (no cache, no end-of-sequence stop)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n):
            nxt = m.module.lm(input_ids=x).logits[0, -1].argmax()
            x = torch.cat([x, nxt.view(1, 1)], 1)
    return x[0, len(ids) :].tolist()


def _generated(folder, m):
    from edgellm.runtime.generator import Generator

    ids = _prompt(m)
    got = Generator(folder).generate(ids, max_new_tokens=CHECK_TOKENS, stop_token_ids=()).token_ids
    assert list(got) == torch_greedy(m, ids, CHECK_TOKENS)


def run_split_generate(m, path, out):
    """The decoder cut after one layer into cached halves (ORT-mobile phone, ONNX Runtime server): the
    export checks its greedy tokens, and the pair then generates here what the torch model does."""
    from edgellm.pipeline.generation import export_generation

    info = export_generation(m, 1, out, check_tokens=CHECK_TOKENS)
    assert info["check"]["agreement"] == 1.0
    _generated(out, m)


def run_generate(m, path, out):
    """``edgellm export --generate``: one key/value-cache step graph (ONNX Runtime), its greedy tokens
    checked against Hugging Face generate() by the export and again here on another prompt."""
    from edgellm.pipeline.generate_export import export_generate

    man = export_generate(m, out, check_tokens=CHECK_TOKENS)
    assert man["generation"]["parity"]["greedy_equal"]
    _generated(out, m)


def run_gguf(m, path, out):
    """``--format gguf`` in llama.cpp: the file's greedy tokens and logits against torch holding its weights.
    Without llama.cpp the export stops at running the file (nothing written); the family's tensor layout is
    then checked here: torch with the file's weights, decoded back from it, computes the model's logits."""
    from edgellm.errors import MissingDependencyError
    from edgellm.export.gguf_export import gguf_reference
    from edgellm.export.gguf_file import plan_gguf
    from edgellm.pipeline.generate_export import export_generate

    _need("gguf", "gguf")
    try:
        man = export_generate(
            m, out, target="x86-server", format="gguf", precision="fp16", check_tokens=CHECK_TOKENS
        )
    except MissingDependencyError as exc:
        if "llama-cpp-python" not in str(exc):
            raise
        assert not out.exists()
        lm = gguf_reference(m, plan_gguf(m, None, "fp32"))
        feeds = m.example_inputs(batch=2, seq=10, seed=2)
        with torch.no_grad():
            got = lm(**{k: torch.as_tensor(v) for k, v in feeds.items()}).logits.numpy()
        assert _cosine(m, _out(m, feeds), got, feeds) > 0.99999
        pytest.skip("llama.cpp is not installed (make setup-llama): the GGUF file was planned, not run")
    par = man["generation"]["parity"]
    assert par["equal_up_to_ties"] and par["logits_cosine_min"] > 0.999, par


RUN = {
    "load": run_load,
    **{fmt: _export_stage(fmt) for fmt in EXPORTS},
    "int8": _quant_stage(_int8, 0.99),
    "int4": _quant_stage(_int4, 0.9),  # random weights: Gemma 2/3 reach 0.93
    "prune": run_prune,
    "split": run_split,
    "split-generate": run_split_generate,
    "generate": run_generate,
    "gguf": run_gguf,
}


# ------------------------------------------------------------------------------------------ the declaration
def test_every_stage_has_a_runner_and_every_family_the_loader_knows_is_declared():
    from edgellm.models.families import FAMILIES

    assert set(RUN) == set(STAGE_NAMES)
    undeclared = set(FAMILIES) - set(support.FAMILY_NAMES) - set(support.ALIASES)
    assert not undeclared, f"declare {sorted(undeclared)} in edgellm/models/support.py (SUPPORT)"
    for family in support.FAMILY_NAMES:  # a family the loader lacks is one being added
        assert family in FAMILIES or all(c.pending for c in support.SUPPORT[family].values()), family


def test_a_cell_is_supported_or_refused_with_the_reason():
    assert support.cell("bert", "generate").reason.startswith("decoders only")
    with pytest.raises(ValueError, match="says why"):
        support.Cell(REFUSED)
    with pytest.raises(KeyError, match="unknown stage"):
        support.cell("bert", "fly")


def test_the_readme_support_table_is_the_declaration():
    """README.md's table between the support-table markers is scripts/gen_support_table.py's rendering."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "gen_support_table.py"
    spec = importlib.util.spec_from_file_location("gen_support_table", script)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = gen.README.read_text()
    assert gen.replaced(text, gen.render()) == text, (
        "README.md's support table is stale: run .venv/bin/python scripts/gen_support_table.py"
    )
