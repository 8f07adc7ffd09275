"""GGUF generation artifacts: edgellm's codes as llama.cpp blocks, per-family layouts, the tokenizer, and the
check in llama.cpp itself (the tests that run llama.cpp need the llamacpp extra: make setup-llama)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from edgellm.errors import EdgeLLMError, ExportError  # noqa: E402

needs_llama = pytest.mark.skipif(
    __import__("importlib").util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (make setup-llama builds llama.cpp, about 6 minutes)",
)


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory):
    """A factory: a tiny random-weight decoder of a family, with the bundled tokenizer, saved once."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GPT2Config,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        Qwen3Config,
    )

    from edgellm.models import bundled_path

    tok = AutoTokenizer.from_pretrained(bundled_path("tiny-llama"))
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    base = {
        "vocab_size": len(tok),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        **ids,
    }
    configs = {
        "llama": lambda: LlamaConfig(**base, tie_word_embeddings=False),
        "mistral": lambda: MistralConfig(**base, sliding_window=None),
        "qwen2": lambda: Qwen2Config(**base, tie_word_embeddings=True),
        "qwen3": lambda: Qwen3Config(**base, head_dim=32, tie_word_embeddings=True),
        "gpt2": lambda: GPT2Config(
            vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=256, **ids
        ),
    }
    root = tmp_path_factory.mktemp("gguf-families")
    made: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in made:
            torch.manual_seed(0)
            path = root / kind
            AutoModelForCausalLM.from_config(configs[kind]()).save_pretrained(path)
            tok.save_pretrained(path)
            made[kind] = path
        return made[kind]

    return make


def _spec(adapter, recipe, **opts):
    from edgellm.compress.quant import quantize
    from edgellm.compress.quant.config import config_for

    return quantize(adapter, config_for(recipe, **opts), None)


# ------------------------------------------------------------------------------ blocks, exactly (no llama.cpp)
def test_q4_0_blocks_hold_the_spec_codes_exactly(small_llm):
    """RTN at group 32 with float16 scales: every Q4_0 tensor, decoded by gguf's own dequantizer, equals
    the spec's dequantized weights bit for bit (Llama's q/k rows permuted and back)."""
    from edgellm.export.gguf_file import plan_gguf

    spec = _spec(small_llm, "w4a16-rtn", group_size=32, scale_dtype="float16")
    plan = plan_gguf(small_llm, spec, "int4")
    assert plan.file_type == "q4_0" and not plan.report["requantized"] and not plan.report["scales_rounded"]
    types = {t.name: t.qtype for t in plan.tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_0" and types["blk.0.attn_norm.weight"] == "F32"
    for name, lq in spec.layers.items():
        got = plan.reference_weights[name.removeprefix("lm.") + ".weight"]
        assert np.array_equal(got.numpy(), lq.dequantize().numpy()), name
    # the file's q rows really are permuted (llama.cpp's adjacent rotary pairs), not written as is
    q = next(t for t in plan.tensors if t.name == "blk.0.attn_q.weight")
    raw = gguf.quants.dequantize(q.data, gguf.GGMLQuantizationType.Q4_0)
    assert not np.array_equal(raw, spec.layers["lm.model.layers.0.self_attn.q_proj"].dequantize().numpy())


def test_q8_0_and_q4_1_blocks(small_llm):
    from edgellm.export.gguf_file import plan_gguf

    spec8 = _spec(small_llm, "w8a16-rtn")
    plan = plan_gguf(small_llm, spec8, "int8")
    assert plan.file_type == "q8_0" and len(plan.report["exact"]) == len(spec8.layers)
    for name, lq in spec8.layers.items():
        assert np.array_equal(plan.reference_weights[name[3:] + ".weight"].numpy(), lq.dequantize().numpy())
    spec41 = _spec(small_llm, "w4a16-rtn", group_size=32, scale_dtype="float16", symmetric=False)
    plan41 = plan_gguf(small_llm, spec41, "int4")
    assert plan41.file_type == "q4_1"
    name, lq = next(iter(spec41.layers.items()))
    err = (plan41.reference_weights[name[3:] + ".weight"] - lq.dequantize()).abs().max().item()
    assert 0 < err < 1e-3 * lq.scale.max().item() * 16  # the offset -d*z is stored in float16: reported
    assert name[3:] in plan41.report["scales_rounded"]


def test_other_group_sizes_are_requantized_and_reported_or_refused(small_llm):
    from edgellm.export.gguf_file import plan_gguf

    spec = _spec(small_llm, "w4a16-rtn", group_size=64)
    plan = plan_gguf(small_llm, spec, "int4")
    assert set(plan.report["requantized"]) == {n[3:] for n in spec.layers}
    assert "group size 64" in next(iter(plan.report["requantized"].values()))
    with pytest.raises(ExportError, match="no exact GGUF block form: group size 64.*group_size=32"):
        plan_gguf(small_llm, spec, "int4", exact=True)


def test_written_file_metadata_and_tokenizer(small_llm, tmp_path):
    """What llama.cpp reads: architecture keys, vocabulary with merges and special ids, pre-tokenizer."""
    from edgellm.export.gguf_file import plan_gguf, write_gguf

    plan = plan_gguf(small_llm, None, "fp16")
    info = write_gguf(plan, tmp_path / "m.gguf", name="small")
    r = gguf.GGUFReader(tmp_path / "m.gguf")

    def field(key):
        f = r.fields[key]
        return f.contents()

    cfg = small_llm.config
    assert field("general.architecture") == "llama"
    assert field("llama.block_count") == cfg.num_hidden_layers
    assert field("llama.attention.head_count_kv") == cfg.num_key_value_heads
    assert field("tokenizer.ggml.pre") == "gpt-2" and field("tokenizer.ggml.model") == "gpt2"
    assert len(field("tokenizer.ggml.tokens")) == cfg.vocab_size and field("tokenizer.ggml.merges")
    assert field("tokenizer.ggml.eos_token_id") == small_llm.tokenizer.eos_token_id
    assert info["tensor_types"] == {
        "F16": sum(1 for t in r.tensors if t.tensor_type.name == "F16"),
        "F32": 2 * 2 + 1,
    }
    # a tied head that is not quantized is not written (llama.cpp reuses token_embd); an untied one is
    names = {t.name for t in r.tensors}
    assert ("output.weight" in names) == (not cfg.tie_word_embeddings)


def test_unsupported_family_and_plain_export_are_refused(minilm, small_llm, tmp_path):
    from edgellm.export import export
    from edgellm.export.gguf_file import plan_gguf

    with pytest.raises(ExportError, match="no tensor layout for the 'bert' family.*GGUF takes: gpt2, llama"):
        plan_gguf(minilm, None, "fp32")
    with pytest.raises(ExportError, match="--generate --format gguf"):
        export(small_llm, "snapdragon-8-gen-3", tmp_path / "plain", format="gguf")
    assert not (tmp_path / "plain").exists()
    with pytest.raises(
        EdgeLLMError, match="w8a16-rtn is GGUF's Q8_0 block; the onnx format takes int8-dynamic"
    ):
        from edgellm.pipeline.generate_export import quant_config

        quant_config("int8", "w8a16-rtn", None, (), "onnx")


# ------------------------------------------------------------------------------------------- in llama.cpp
@needs_llama
@pytest.mark.parametrize("precision", ["int4", "int8", "fp16"])
def test_gguf_artifact_generates_in_llama_cpp(small_lm, tmp_path, precision):
    """The export itself checks 64 greedy tokens per prompt in llama.cpp against torch holding the file's
    weights; the artifact then generates through edgellm's Generator like every other one."""
    from edgellm.pipeline.generate_export import export_generate
    from edgellm.runtime.generator import Generator

    out = tmp_path / f"gguf-{precision}"
    m = export_generate(small_lm, out, target="snapdragon-8-gen-3", format="gguf", precision=precision)
    gen = m["generation"]
    assert m["target"] == {
        "name": "snapdragon-8-gen-3",
        "runtime": "llama.cpp",
        "format": "gguf",
        "kind": "phone",
    }
    assert gen["parity"]["equal_up_to_ties"] and gen["parity"]["logits_cosine_min"] > 0.999
    assert gen["gguf"]["tokenizer_equal"] and gen["cache"]["layout"] == "llama.cpp"
    want = {"int4": "Q4_0", "int8": "Q8_0", "fp16": "F16"}[precision]
    assert gen["gguf"]["tensor_types"].get(want, 0) >= 7 and not gen["gguf"]["requantized_layers"]
    res = Generator(out).generate("The with statement", max_new_tokens=8)
    assert len(res.token_ids) == 8 and res.ttft_ms > 0


@needs_llama
@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "mistral", "gpt2"])
def test_gguf_families_in_llama_cpp(family_dir, tmp_path, kind):
    """Each family's layout (qwen2's q/k/v biases, qwen3's q/k norms and head_dim, mistral as llama with
    permuted rotary rows, gpt2's fused Conv1D qkv and learned positions) reproduces the reference."""
    from edgellm.pipeline.generate_export import export_generate

    m = export_generate(
        family_dir(kind), tmp_path / kind, target="x86-server", format="gguf", precision="int4"
    )
    par = m["generation"]["parity"]
    assert par["equal_up_to_ties"] and par["logits_cosine_min"] > 0.999, par


@needs_llama
def test_gguf_tokenizer_mismatch_writes_nothing(small_lm, tmp_path):
    """A pre-tokenizer llama.cpp splits differently by (qwen2's regex on a GPT-2 tokenizer) is caught on the
    fixed texts before anything is kept."""
    from edgellm.pipeline.generate_export import export_generate

    out = tmp_path / "bad-pre"
    with pytest.raises(ExportError, match="llama.cpp tokenizes .* differently"):
        export_generate(
            small_lm,
            out,
            target="x86-server",
            format="gguf",
            precision="fp16",
            gguf={"pre_tokenizer": "qwen2"},
        )
    assert not out.exists()


@needs_llama
def test_gguf_cli_export_bench_generate(small_lm, tmp_path, capsys):
    """The CLI: --format gguf implies --generate; bench times it (llama-bench where built, else the
    bindings); generate streams text."""
    from edgellm.cli import main

    out = tmp_path / "cli-q4"
    args = [
        "export",
        str(small_lm),
        "--target",
        "snapdragon-8-gen-3",
        "--format",
        "gguf",
        "--precision",
        "int4",
    ]
    assert main([*args, "-o", str(out)]) == 0
    capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generation"]["gguf"]["file_type"] == "Q4_0"
    assert main(["bench", str(out), "--prompt", "16", "--new", "8", "--runs", "1", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    row = (rep.get("rows") or rep.get("results"))[0]
    assert row["decode_tok_s"] > 0 and row["prompt"] == 16
    assert main(["generate", str(out), "-p", "def f(x):", "-n", "5", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["token_ids"]) == 5 and d["decode_tok_s"] > 0


def test_full_range_grid_uses_sixteen_levels_and_stays_exact(small_llm):
    """llama.cpp's Q4_0 rule (scale = -max/8: the group's largest weight lands on code 0) gives 16 levels;
    the blocks still hold the codes exactly, and formats whose kernels take no negative scale refuse it."""
    from edgellm.export import export
    from edgellm.export.gguf_file import plan_gguf

    spec = _spec(small_llm, "w4a16-rtn", group_size=32, scale_dtype="float16", full_range=True)
    lq = spec.layers["lm.model.layers.0.mlp.up_proj"]
    assert int(lq.qweight.min()) == 0 and bool((lq.scale < 0).any())  # code 0 used, scales signed
    w = small_llm.submodule("lm.model.layers.0.mlp.up_proj").weight.detach()
    half = _spec(small_llm, "w4a16-rtn", group_size=32, scale_dtype="float16").layers[
        "lm.model.layers.0.mlp.up_proj"
    ]
    err = (lq.dequantize() - w).pow(2).mean().item()
    assert err < (half.dequantize() - w).pow(2).mean().item()  # one more level: less rounding error
    plan = plan_gguf(small_llm, spec, "int4")
    for name, q in spec.layers.items():
        assert np.array_equal(plan.reference_weights[name[3:] + ".weight"].numpy(), q.dequantize().numpy())
    with pytest.raises(ExportError, match="negative scales .* pte format does not take"):
        export(small_llm, "snapdragon-8-gen-3", Path("never-written"), format="pte", quant=spec)
    assert not Path("never-written").exists()


@needs_llama
def test_gguf_for_every_target_that_takes_it(small_lm, tmp_path, capsys):
    """export --generate --target all --format gguf: one checked file per target listing gguf, the others
    reported with the reason, one quantization for all."""
    from edgellm.cli import main

    args = [
        "export",
        str(small_lm),
        "--generate",
        "--target",
        "all",
        "--format",
        "gguf",
        "--precision",
        "int4",
    ]
    assert main([*args, "-o", str(tmp_path), "--json", "--check-tokens", "8"]) == 0
    rows = {r["target"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["nvidia-a100"]["error"] and "does not take format 'gguf'" in rows["nvidia-a100"]["error"]
    done = [t for t, r in rows.items() if r["path"]]
    assert {"x86-server", "snapdragon-8-gen-3", "raspberry-pi-5"} <= set(done)
    for t in done:
        m = json.loads((Path(rows[t]["path"]) / "manifest.json").read_text())
        assert m["target"]["name"] == t and m["generation"]["gguf"]["file_type"] == "Q4_0"


def test_chat_template_travels_and_exact_refuses_from_the_cli(small_lm, tmp_path, capsys):
    """A tokenizer's chat template is written as tokenizer.chat_template; `compress --exact` refuses a
    group size GGUF has no block for, in one line, writing nothing."""
    import shutil

    from edgellm.cli import main
    from edgellm.export.gguf_file import plan_gguf, write_gguf
    from edgellm.models import load

    chat = tmp_path / "chat-lm"
    shutil.copytree(small_lm, chat)
    cfg = json.loads((chat / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    (chat / "tokenizer_config.json").write_text(json.dumps(cfg))
    write_gguf(plan_gguf(load(str(chat)), None, "fp16"), tmp_path / "chat.gguf")
    field = gguf.GGUFReader(tmp_path / "chat.gguf").fields["tokenizer.chat_template"]
    assert field.contents() == cfg["chat_template"]
    out = tmp_path / "exact"
    args = ["compress", str(small_lm), "--generate", "--recipe", "w4a16-rtn", "--group-size", "64"]
    assert main([*args, "--format", "gguf", "--exact", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no exact GGUF block form: group size 64" in err and not out.exists()
