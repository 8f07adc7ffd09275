"""ExecuTorch (.pte, XNNPACK delegate) artifacts: fp32, fp16, INT8 and 8da4w from a QuantSpec, validated in
``executorch.runtime``; the manifest's delegated / non-delegated operators; decoders as static key/value-cache
programs for generation (the slot graph for GPT-2); and one clear error for what XNNPACK cannot take. Everything runs for real."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgellm import models
from edgellm.compress.quant import Int4WeightOnly, Int8Dynamic, Int8Static, quantize
from edgellm.errors import ExportError
from edgellm.export import Artifact, export
from edgellm.runtime import make_runner

pytest.importorskip("executorch", reason="pip install 'edgellm[executorch]'")

PHONE = "snapdragon-8-gen-3"


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """A phone target that lists the pte format (the profile itself, once it lists pte)."""
    from edgellm.targets import load_target

    tgt = load_target(PHONE)
    if "pte" in tgt.formats:
        yield PHONE
        return
    folder = tmp_path_factory.mktemp("targets")
    text = (Path(__file__).parents[2] / "targets" / f"{PHONE}.yaml").read_text()
    text = text.replace(f"name: {PHONE}", "name: phone-pte").replace("formats: [", "formats: [pte, ")
    (folder / "phone-pte.yaml").write_text(text.replace("runtimes: [", "runtimes: [executorch, "))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGELLM_TARGETS_PATH", str(folder))
        yield "phone-pte"


def _mlp(inputs: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(inputs, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    return models.load(net, example_inputs=torch.randn(4, inputs), name="mlp")


@pytest.fixture(scope="module")
def minilm_pte(minilm, target, tmp_path_factory):
    return export(minilm, target, tmp_path_factory.mktemp("pte") / "minilm", format="pte", seq_len=32)


@pytest.mark.slow  # ~40 s of XNNPACK lowering; bench_targets_minilm.py --formats pte has the MiniLM rows
def test_minilm_fp32_parity_and_delegation_report(minilm, minilm_pte):
    m = minilm_pte.manifest
    assert m["target"]["runtime"] == "executorch" and m["target"]["format"] == "pte"
    assert (minilm_pte.path / "model.pte").is_file()
    assert m["parity"]["random"]["sentence_embedding"]["cosine_min"] > 0.9999
    et = m["recipe"]["executorch"]
    assert et["delegated"]["aten_linear_default"] == 36  # every linear runs in XNNPACK
    # XNNPACK has no gather: the embedding lookups fall out of the delegate, and the manifest says so
    assert et["not_delegated"]["aten_embedding_default"] == 3
    assert "aten_embedding_default" in et["not_delegated_summary"]
    # the norms were rewritten into delegated ops: none is left outside XNNPACK
    assert et["norms_rewritten"] == 13 and "aten_native_layer_norm_default" not in et["not_delegated"]


@pytest.mark.slow  # shares the MiniLM program above
def test_runner_pads_loops_and_refuses_longer_inputs(minilm, minilm_pte):
    runner = make_runner(Artifact.load(minilm_pte.path), num_threads=1)
    assert type(runner).__name__ == "ExecuTorchRunner" and runner.num_threads == 1
    feeds = minilm.example_inputs(batch=3, seq=20, seed=5)
    out = runner.run(feeds)["sentence_embedding"]
    np.testing.assert_allclose(out, minilm.run(feeds)["sentence_embedding"], atol=1e-4)
    with pytest.raises(Exception, match="at most 32"):
        runner.run(minilm.example_inputs(batch=1, seq=33))


@pytest.mark.slow  # ~60 s of XNNPACK lowering; benchmarks/bench_targets_minilm.py has the MiniLM pte rows
def test_minilm_int8_dynamic(minilm, target, minilm_pte, tmp_path):
    spec = quantize(minilm, Int8Dynamic())
    art = export(minilm, target, tmp_path / "int8", quant=spec, format="pte", seq_len=32)
    m = art.manifest
    assert m["precision"] == "int8" and m["recipe"]["executorch"]["mode"] == "8da8w"
    assert m["parity"]["vs_fp32"]["random"]["sentence_embedding"]["cosine_min"] > 0.98
    # the linears' weights are int8 (the embeddings stay float32: XNNPACK does not run the lookups)
    assert art.size_bytes < minilm_pte.size_bytes - 0.7 * spec.weight_bytes()["fp32"]


def test_cnn_fp32_all_delegated(target, tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, 10),
    )
    cnn = models.load(net, example_inputs=torch.randn(2, 3, 16, 16), name="cnn")
    art = export(cnn, target, tmp_path / "cnn", format="pte")
    et = art.manifest["recipe"]["executorch"]
    assert et["delegated"]["aten_convolution_default"] == 1 and et["partitions"] == 1
    assert et["not_delegated"] == {} and et["not_delegated_summary"] is None
    out = make_runner(art).run(cnn.example_inputs(batch=3, seq=0, seed=3))["output"]
    assert out.shape == (3, 10)


def test_fp16_program(target, tmp_path):
    mlp = _mlp()
    art = export(mlp, target, tmp_path / "fp16", format="pte", precision="fp16")
    m = art.manifest
    assert m["precision"] == "fp16" and m["parity"]["reference"] == "torch with fp16-rounded weights"
    assert m["parity"]["vs_fp32"]["random"]["output"]["cosine_min"] > 0.999
    assert "aten_linear_default" in m["recipe"]["executorch"]["delegated"]
    fp32 = export(mlp, target, tmp_path / "fp32", format="pte")
    assert (art.path / "model.pte").stat().st_size < 0.7 * (fp32.path / "model.pte").stat().st_size


def _per_token_int8(x: torch.Tensor) -> torch.Tensor:
    """What XNNPACK's dynamic quantization does to an activation row: asymmetric int8 per token."""
    lo = x.amin(-1, keepdim=True).clamp(max=0)
    hi = x.amax(-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / 255).clamp(min=1e-12)
    zp = torch.round(-128 - lo / scale).clamp(-128, 127)
    return (torch.clamp(torch.round(x / scale) + zp, -128, 127) - zp) * scale


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_8da4w_runs_the_specs_own_codes(target, tmp_path, method):
    mlp = _mlp()
    calib = [mlp.example_inputs(batch=32, seq=0, seed=s) for s in range(2)]
    spec = quantize(mlp, Int4WeightOnly(method=method, group_size=32), calib if method == "gptq" else None)
    art = export(mlp, target, tmp_path / method, quant=spec, format="pte")
    m = art.manifest
    assert m["precision"] == "int4" and m["recipe"]["executorch"]["mode"] == "8da4w"
    assert "groups of 32" in m["recipe"]["quantization"]["weights"]
    # the program computes exactly: per-token int8 activations x the spec's dequantized codes
    x = torch.as_tensor(mlp.example_inputs(batch=4, seq=0, seed=7)["input"])
    net = mlp.module
    w0, w1 = spec.layers["0"].dequantize(), spec.layers["2"].dequantize()
    with torch.no_grad():
        h = torch.nn.functional.relu(torch.nn.functional.linear(_per_token_int8(x), w0, net[0].bias))
        want = torch.nn.functional.linear(_per_token_int8(h), w1, net[2].bias).numpy()
    got = make_runner(art).run({"input": x.numpy()})["output"]
    assert np.abs(got - want).max() < 1e-2 * np.abs(want).max()  # XNNPACK rounds its own scales
    # and not the float weights (nor codes re-quantized elsewhere): those are far further away
    with torch.no_grad():
        h32 = torch.nn.functional.relu(net[0](_per_token_int8(x)))
        float_w = torch.nn.functional.linear(_per_token_int8(h32), net[2].weight, net[2].bias).numpy()
    assert np.abs(got - want).max() < 0.2 * np.abs(got - float_w).max()


def test_bad_inputs_one_clear_error(target, tmp_path):
    mlp = _mlp()
    with pytest.raises(ExportError, match="does not write 'bf16'"):
        from edgellm.export.executorch_pte import ExecuTorchExporter

        ExecuTorchExporter(precision="bf16")
    asym = quantize(mlp, Int4WeightOnly(group_size=32, symmetric=False))
    with pytest.raises(ExportError, match="asymmetric int4.*symmetric=True"):
        export(mlp, target, tmp_path / "asym", quant=asym, format="pte")
    small = quantize(mlp, Int4WeightOnly(group_size=16))
    with pytest.raises(ExportError, match="multiples of 32"):
        export(mlp, target, tmp_path / "g16", quant=small, format="pte")
    static = quantize(mlp, Int8Static(), [mlp.example_inputs(batch=32, seq=0, seed=s) for s in range(2)])
    with pytest.raises(ExportError, match="static int8 activations"):
        export(mlp, target, tmp_path / "static", quant=static, format="pte")
    assert not any((tmp_path / n).exists() for n in ("asym", "g16", "static"))  # nothing written


def _generate(model, target, out, precision, **kw):
    from edgellm.pipeline.generate_export import export_generate

    return export_generate(
        model, out, target=target, format="pte", precision=precision, context=48, check_tokens=12, **kw
    )


# what may run outside XNNPACK in the static-cache program: the lookups (token embedding, rotary tables), the
# in-place cache writes, the position mask (once per call) and the last position's slice
STATIC_OUTSIDE = {
    "aten_embedding_default", "aten_index_put_default", "aten_arange_start_step", "aten_add_tensor",
    "aten_div_tensor_mode", "aten_le_tensor", "aten_where_self", "aten_full_default",
    "aten_unsqueeze_copy_default", "aten_slice_copy_tensor",
}  # fmt: skip


def _check_static_delegation(m, mode):
    """Every linear is one XNNPACK GEMM; GQA needs no expand (no repeat_kv); nothing else falls out."""
    gen, et = m["generation"], m["recipe"]["executorch"]
    assert m["target"]["runtime"] == "executorch" and gen["cache"]["layout"] == "static"
    assert gen["variant"] == "static" and gen["rejected_variants"] == []
    layers = gen["layers"]
    assert et["mode"] == mode and et["delegated"]["aten_linear_default"] >= 7 * layers + 1
    assert "aten_expand_copy_default" not in et["not_delegated"], et["not_delegated"]
    assert set(et["not_delegated"]) <= STATIC_OUTSIDE, et["not_delegated"]
    assert et["not_delegated"]["aten_index_put_default"] == 2 * layers  # one write per cache, in place
    assert et["partitions"] <= layers + 2  # cut only at the cache writes (and the last position's slice)


# ~50 s of 8da4w lowering: benchmarks/bench_targets_llm.py exports and runs the pte-8da4w generation
# artifact; the default run keeps the 8da4w Llama program (tests/conformance pte-llama-int4), the spec's
# exact codes in XNNPACK (test_8da4w_runs_the_specs_own_codes) and the static program's delegation (fp32)
@pytest.mark.slow
def test_small_decoder_generation_int4(small_llm, target, tmp_path):
    from edgellm.runtime.generator import Generator

    m = _generate(small_llm, target, tmp_path / "gen", "int4", group_size=32)
    _check_static_delegation(m, "8da4w")
    gen = m["generation"]
    assert gen["parity"]["equal_up_to_ties"] and gen["parity"]["logits_cosine_min"] > 0.99
    done = Generator(tmp_path / "gen").generate([1, 5, 9], max_new_tokens=4, stop_token_ids=())
    assert len(done.token_ids) == 4 and done.stop_reason == "length"


@pytest.fixture(scope="module")
def static_fp32(pte_gen_fp32):
    """small-lm's fp32 static-cache program, 48 positions (conftest: lowered once, also for tests/conformance)."""
    return pte_gen_fp32


def test_static_fp32_prefill_in_one_call_and_context_full(small_llm, static_fp32):
    from edgellm.errors import EdgeLLMError
    from edgellm.runtime.engines import open_engine
    from edgellm.runtime.executorch_generation import StaticCacheEngine

    out, m = static_fp32
    gen = m["generation"]
    _check_static_delegation(m, "fp32")
    assert gen["cache"]["layout"] == "static" and gen["parity"]["greedy_equal"]
    assert m["inputs"][0]["name"] == "tokens" and gen["cache"]["max_new_per_call"] == 48
    eng = open_engine(out, threads=1)
    assert isinstance(eng, StaticCacheEngine) and eng.context == 48
    ids = np.random.default_rng(3).integers(3, 4000, size=40).tolist()
    with torch.no_grad():
        ref = small_llm.module.lm(input_ids=torch.tensor([ids])).logits[0].numpy()
    calls = []
    execute = eng.method.execute
    eng.method.execute = lambda args: calls.append(args[0].shape[1]) or execute(args)
    x = eng.step(ids[:30])  # the whole prompt in one call of the program
    assert calls == [30] and eng.length == 30
    np.testing.assert_allclose(x, ref[29], atol=1e-4 * np.abs(ref).max())
    for j in range(30, 40):  # then decode, one position per call
        x = eng.step([ids[j]])
        np.testing.assert_allclose(x, ref[j], atol=1e-4 * np.abs(ref).max())
    assert calls[1:] == [1] * 10
    with pytest.raises(EdgeLLMError, match="need 49 positions but the artifact's cache holds 48"):
        eng.step(ids[:9])
    eng.reset()  # a new sequence: what the last one left in the buffers is masked, never read
    np.testing.assert_allclose(eng.step(ids[:5]), ref[4], atol=1e-4 * np.abs(ref).max())


def test_gpt2_falls_back_to_the_slot_graph(decoder_dir, target, tmp_path):
    m = _generate(models.load(str(decoder_dir("gpt2"))), target, tmp_path / "gpt2", "fp32")
    gen = m["generation"]
    assert gen["cache"]["layout"] == "slots" and gen["parity"]["greedy_equal"]
    assert gen["rejected_variants"][0]["variant"] == "static"
    assert "'gpt2'" in gen["rejected_variants"][0]["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_tiny_llama_generation_artifact(tiny_llama, target, tmp_path, precision):
    m = _generate(
        tiny_llama,
        target,
        tmp_path / precision,
        precision,
        **({"group_size": 32} if precision == "int4" else {}),
    )
    parity = m["generation"]["parity"]
    assert parity["greedy_equal"] if precision == "fp32" else parity["equal_up_to_ties"]
    shutil.rmtree(tmp_path / precision)
