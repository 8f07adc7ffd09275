"""The accelerate trainer on real text: it learns, it resumes exactly, 2 DDP processes equal 1 process with
the same global batch (also with the FP16 gradient-compression hook), and the gradient monitor acts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SCRATCH_LLAMA, llama_like_tiny

from edgellm.errors import EdgeLLMError
from edgellm.train import TrainConfig, TrainingStopped, train

pytest.importorskip("accelerate")


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory):
    """2 layers, trained from scratch here."""
    return llama_like_tiny(tmp_path_factory.mktemp("llama") / "small")


def cfg(model, out, **kw):
    base = dict(
        model=str(model),
        output=str(out),
        seq_len=32,
        batch_size=4,
        max_steps=6,
        lr=3e-3,
        warmup_steps=2,
        eval_every=3,
        eval_batches=2,
        save_every=100,
        progress=False,
        seed=1,
    )
    return TrainConfig(**{**base, **kw})


def log(out):
    return [json.loads(x) for x in (Path(out) / "train_log.jsonl").open() if "loss" in x]


def test_training_reduces_loss_on_real_text_and_saves_a_loadable_model(small_llama, tmp_path):
    s = train(cfg(small_llama, tmp_path / "run", max_steps=40, eval_every=20))
    losses = [r["loss"] for r in log(tmp_path / "run")]
    assert len(losses) == 40 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
    evals = [r["eval_ppl"] for r in log(tmp_path / "run") if "eval_ppl" in r]
    assert evals[-1] < evals[0] < 0.5 * 4096  # held-out perplexity falls, far below a uniform guess
    assert s["dataset"] == {"builtin": "pydoc"} and s["tokens_per_s"] > 0
    from edgellm.models import load

    m = load(tmp_path / "run" / "model")  # safetensors + tokenizer: an ordinary model directory
    assert m.task == "causal-lm" and (tmp_path / "run/model/model.safetensors").is_file()


def test_a_resumed_run_reproduces_the_uninterrupted_loss_curve(small_llama, tmp_path):
    train(cfg(small_llama, tmp_path / "a"))
    train(cfg(small_llama, tmp_path / "b", stop_at=3))
    assert [r["step"] for r in log(tmp_path / "b")] == [1, 2, 3]
    s = train(cfg(small_llama, tmp_path / "b", resume=True))
    assert s["resumed_from"] == 3
    a, b = log(tmp_path / "a"), log(tmp_path / "b")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # exact, step for step
    assert a[-1]["eval_loss"] == b[-1]["eval_loss"]


def test_gradient_monitor_warns_skips_and_stops(small_llama, tmp_path):
    s = train(
        cfg(small_llama, tmp_path / "w", max_steps=2, grad={"explode_threshold": 1e-6, "action": "warn"})
    )
    assert len(s["events"]) == 2 and s["events"][0]["kind"] == "explosion"
    from edgellm.models import load

    before = {k: v.clone() for k, v in load(small_llama).module.state_dict().items()}
    train(cfg(small_llama, tmp_path / "s", max_steps=2, grad={"explode_threshold": 1e-6, "action": "skip"}))
    after = load(tmp_path / "s" / "model").module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # every step skipped: weights unchanged
    with pytest.raises(TrainingStopped, match="gradient explosion.*lower lr"):
        train(
            cfg(small_llama, tmp_path / "x", max_steps=5, grad={"explode_threshold": 1e-6, "action": "stop"})
        )
    assert (tmp_path / "x/checkpoints/step-0").is_dir()


def test_bad_config_is_named(tmp_path, small_llama):
    y = tmp_path / "t.yaml"
    y.write_text(f"model: {small_llama}\nmax_step: 3\n")
    with pytest.raises(EdgeLLMError, match="'max_step'"):
        TrainConfig.load(y)
    y.write_text(f"model: {small_llama}\ngrad: {{action: explode}}\n")
    with pytest.raises(EdgeLLMError, match="'grad.action'"):
        TrainConfig.load(y)
    with pytest.raises(EdgeLLMError, match="fewer than one window"):
        train(cfg(small_llama, tmp_path / "o"), dataset_texts=["tiny"])


def _launch(tmp_path, name, small_llama, processes, mode=None, **kw):
    """Train ``cfg(...)`` under ``accelerate launch`` with ``processes`` processes; the loss log."""
    import yaml

    c = cfg(small_llama, tmp_path / name, max_steps=4, eval_every=4, **kw).model_dump()
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(c))
    # on a CPU-only host "--multi_gpu" starts N gloo processes (MULTI_CPU); "--cpu" would start only one
    mode = mode or ["--multi_gpu" if processes > 1 else "--cpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *mode, "--num_processes", str(processes)]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["-m", "edgellm.train", str(tmp_path / f"{name}.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return log(tmp_path / name)


def test_two_ddp_processes_match_one_with_the_same_global_batch(small_llama, tmp_path):
    train(cfg(small_llama, tmp_path / "one", max_steps=4, eval_every=4))  # one process, in this one
    one = log(tmp_path / "one")
    two = _launch(tmp_path, "two", small_llama, 2)
    hook = _launch(tmp_path, "fp16", small_llama, 2, comm_hook="fp16")
    for a, b in zip(one, two):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a, b)
    for a, b in zip(two, hook):
        assert abs(a["loss"] - b["loss"]) < 1e-3, (a, b)  # gradients averaged in fp16: close...
    assert any(a["grad_norm"] != b["grad_norm"] for a, b in zip(two, hook))  # ...but the hook did act
    assert json.loads((tmp_path / "two/train_summary.json").read_text())["processes"] == 2


def test_cli_train(small_llama, tmp_path, capsys):
    from edgellm.cli import main

    y = tmp_path / "t.yaml"
    y.write_text(f"model: {small_llama}\nseq_len: 32\nbatch_size: 2\neval_batches: 1\nprogress: false\n")
    assert main(["train", str(y), "--max-steps", "2", "-o", str(tmp_path / "o")]) == 0
    assert "trained 2 steps" in capsys.readouterr().out and (tmp_path / "o/model/config.json").is_file()
    y.write_text(f"model: {small_llama}\nlearning_rate: 1\n")
    assert main(["train", str(y)]) == 2 and "'learning_rate'" in capsys.readouterr().err


def _kl_to(teacher_dir, student_dir, texts):
    import torch.nn.functional as F

    from edgellm.models import load

    t, s = load(teacher_dir), load(student_dir)
    enc = t.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=32)
    with torch.no_grad():
        a = t.module(enc["input_ids"], enc["attention_mask"]).float()
        b = s.module(enc["input_ids"], enc["attention_mask"]).float()
    return float(F.kl_div(F.log_softmax(b, -1), F.log_softmax(a, -1), log_target=True, reduction="batchmean"))


def test_distillation_pulls_the_student_to_the_teacher(small_llama, tmp_path):
    # a deeper model of the same width: hidden states can be matched layer to layer
    teacher = llama_like_tiny(tmp_path / "teacher", seed=5, num_hidden_layers=4)
    texts = ["The interpreter reads the file.", "A module is a file containing definitions."]
    before = _kl_to(teacher, small_llama, texts)
    common = {"max_steps": 40, "lr": 1e-2, "eval_every": 40}
    train(cfg(small_llama, tmp_path / "ce", **common))  # the control: the same steps on the task loss alone
    train(
        cfg(
            small_llama,
            tmp_path / "st",
            **common,
            distill={"teacher": str(teacher), "alpha": 1.0, "hidden_mse": 0.1},
        )
    )
    distilled, control = (
        _kl_to(teacher, tmp_path / "st" / "model", texts),
        _kl_to(teacher, tmp_path / "ce" / "model", texts),
    )
    assert distilled < before and distilled < 0.5 * control  # it learned the teacher, not just the text
    wide = llama_like_tiny(tmp_path / "wide", hidden_size=96)
    with pytest.raises(EdgeLLMError, match="hidden size .*hidden_mse: 0"):
        train(
            cfg(small_llama, tmp_path / "x", max_steps=1, distill={"teacher": str(wide), "hidden_mse": 1.0})
        )


def test_search_finds_the_better_learning_rate_with_parallel_trials(small_llama, tmp_path):
    pytest.importorskip("optuna")
    from edgellm.train.hpo import search

    space = {"lr": {"type": "categorical", "choices": [1e-7, 5e-3]}}
    r = search(
        cfg(small_llama, tmp_path / "hpo", max_steps=4, eval_every=2), space, n_trials=4, n_jobs=2, seed=0
    )
    assert r["best"]["params"]["lr"] == 5e-3
    assert {t["params"]["lr"] for t in r["trials"]} == {1e-7, 5e-3} and len(r["trials"]) == 4
    assert "lr: 0.005" in (tmp_path / "hpo/best.yaml").read_text() and (tmp_path / "hpo/hpo.md").is_file()
    with pytest.raises(EdgeLLMError, match="search.lrate"):
        search(cfg(small_llama, tmp_path / "bad"), {"lrate": {"type": "float", "low": 1, "high": 2}})


def test_quantization_aware_training_trains_through_the_recipes_grid(small_llama, tmp_path):
    import numpy as np

    from edgellm.compress.quant.primitives import fake_quant_weight
    from edgellm.compress.quant.quantize import quantizable_layers
    from edgellm.data import read_corpus
    from edgellm.data.corpus import split
    from edgellm.models import load
    from edgellm.train.data import Windows, token_stream

    q = train(
        cfg(
            small_llama,
            tmp_path / "qat",
            max_steps=3,
            qat={"recipe": "w4a16-rtn", "options": {"group_size": 32}},
        )
    )
    m = load(small_llama)
    layers = quantizable_layers(m)
    assert q["qat"] == {"recipe": "w4a16-rtn", "layers": len(layers)}
    # step 1's loss is the int4 model's: recompute it by hand with RTN-int4 weights on the same batch
    with torch.no_grad():
        for mod in layers.values():
            mod.weight.copy_(fake_quant_weight(mod.weight, 4, 32, True))
    train_docs, _ = split(read_corpus(None))  # edgellm's fixed split by document id, as the trainer's
    batch = Windows(token_stream(m.tokenizer, [d.text for d in train_docs]), 32, 1).batch(0, 4)
    x = torch.as_tensor(batch[:, :-1])
    with torch.no_grad():
        logits = m.module(x, torch.ones_like(x)).float()
    want = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), torch.as_tensor(batch[:, 1:]).reshape(-1)
    )
    assert abs(log(tmp_path / "qat")[0]["loss"] - float(want)) < 1e-4
    saved = load(tmp_path / "qat" / "model").module.state_dict()
    assert not any(
        "parametrizations" in k for k in saved
    )  # plain float weights: the usual lowering takes them
    assert set(saved) == set(load(small_llama).module.state_dict())
    assert not np.allclose(
        saved["lm.model.layers.0.mlp.up_proj.weight"].numpy(),
        load(small_llama).module.state_dict()["lm.model.layers.0.mlp.up_proj.weight"].numpy(),
    )


def test_a_checkpoint_of_another_architecture_is_refused(small_llama, tmp_path):
    out = tmp_path / "run"
    train(cfg(small_llama, out, max_steps=2, save_every=2, eval_every=2))
    wider = llama_like_tiny(tmp_path / "wider", hidden_size=96)
    with pytest.raises(EdgeLLMError, match="another architecture") as e:
        train(cfg(wider, out, max_steps=4, eval_every=4, resume=True))
    assert "remove" in e.value.hint
    assert (out / "checkpoints" / "step-2").is_dir()  # nothing of the earlier run was lost


SCRATCH = {"architecture": SCRATCH_LLAMA, "tokenizer": {"vocab_size": 400}}


def test_training_from_scratch_is_reproducible_and_saves_the_chosen_dtype(tmp_path):
    from edgellm.models import load

    runs = []
    for name in ("a", "b"):
        c = TrainConfig(
            scratch=SCRATCH,
            output=str(tmp_path / name),
            seq_len=32,
            batch_size=4,
            max_steps=3,
            eval_every=3,
            eval_batches=1,
            save_every=100,
            progress=False,
            save_dtype="float16",
        )
        runs.append(train(c))
    a, b = tmp_path / "a" / "model", tmp_path / "b" / "model"
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    m = load(a)
    assert len(m.tokenizer) == 400 and m.config.vocab_size == 400 and m.config.num_hidden_layers == 2
    assert next(iter(m.module.parameters())).dtype == torch.float32  # edgellm loads fp32 for export
    from safetensors import safe_open

    with safe_open(str(a / "model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    assert runs[0]["final"]["loss"] == runs[1]["final"]["loss"] and runs[0]["unigram_ppl"] > 1
    split = json.loads((tmp_path / "a" / "data_split.json").read_text())
    assert set(split["train"]).isdisjoint(split["eval"]) and len(split["eval"]) > 0
    with pytest.raises(ValueError, match="either model"):
        TrainConfig(model="tiny-llama", scratch=SCRATCH)


def test_fsdp_on_a_cpu_only_host_says_what_to_run_instead(small_llama, tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU: FSDP runs (test_fsdp_matches_one_process)")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(EdgeLLMError, match="FSDP under accelerate needs GPUs") as e:
        train(cfg(small_llama, tmp_path / "f", max_steps=1))
    assert "--multi_gpu" in e.value.hint


@pytest.mark.requires_cuda
def test_fsdp_matches_one_process(small_llama, tmp_path):
    """FSDP (full sharding) over every GPU here follows the single-process loss curve; the saved model is
    the full, gathered one."""

    from edgellm.models import load

    n = torch.cuda.device_count()
    train(
        cfg(small_llama, tmp_path / "one", max_steps=4, eval_every=4, batch_size=4 * n, mixed_precision="no")
    )
    fsdp = ["--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_auto_wrap_policy"]
    fsdp += ["TRANSFORMER_BASED_WRAP", "--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer"]
    fsdp += ["--fsdp_state_dict_type", "FULL_STATE_DICT"]
    _launch(tmp_path, "fsdp", small_llama, n, mode=fsdp, batch_size=4 * n, mixed_precision="no")
    for a, b in zip(log(tmp_path / "one"), log(tmp_path / "fsdp")):
        assert abs(a["loss"] - b["loss"]) < 1e-3, (a, b)
    full = load(tmp_path / "fsdp" / "model")
    assert full.num_parameters == load(small_llama).num_parameters
