"""The bundled tiny-llama: a real Llama/GQA checkpoint trained by edgellm itself (recipes/tiny-llama.yaml:
the data front end's cleaned text, then the trainer from scratch)."""

import json
import math

import numpy as np

from edgellm.compress.calibration import corpus_parts, make_batches
from edgellm.compress.evaluate import evaluate
from edgellm.data import split
from edgellm.models import bundled_path
from edgellm.runtime import make_runner


def test_checkpoint_shape_and_size(tiny_llama):
    path = bundled_path("tiny-llama")
    assert (path / "model.safetensors").stat().st_size <= 25 * 2**20
    assert 10e6 <= tiny_llama.num_parameters <= 30e6
    cfg = tiny_llama.config
    assert cfg.model_type == "llama" and cfg.num_key_value_heads < cfg.num_attention_heads
    log = [json.loads(line) for line in (path / "train_log.jsonl").read_text().splitlines()]
    log = [r for r in log if "loss" in r]
    assert log[-1]["loss"] < log[0]["loss"] - 3 and log[-1]["step"] == 500
    summary = json.loads((path / "train_summary.json").read_text())
    assert summary["final"]["eval_ppl"] < 0.5 * summary["unigram_ppl"]
    # its lineage: the cleaned dataset version it was trained on, and the recipe that made it
    lineage = json.loads((path / "lineage.json").read_text())
    assert lineage["recipe"]["name"] == "tiny-llama" and len(lineage["dataset"]["commit"]) == 64


def test_held_out_perplexity_beats_unigram(tiny_llama):
    """Measured here, not read from the log: perplexity on the held-out split vs a unigram model."""
    train, held, _, es = corpus_parts(None, None)
    evalb = make_batches(tiny_llama, held, es, max_sequences=64)
    runner = make_runner(tiny_llama)
    acc = evaluate(runner, runner, tiny_llama, evalb.feeds)
    tok = tiny_llama.tokenizer
    counts = np.ones(len(tok))
    for d in train:
        np.add.at(counts, tok(d.text)["input_ids"], 1)
    logp = np.log(counts / counts.sum())
    ids = np.concatenate([f["input_ids"][:, 1:].ravel() for f in evalb.feeds])
    unigram = math.exp(-logp[ids].mean())
    assert acc["perplexity"] < 0.5 * unigram, (acc["perplexity"], unigram)
    # the training run's split is edgellm's split: no evaluation document was trained on
    trained = set(json.loads((bundled_path("tiny-llama") / "data_split.json").read_text())["train"])
    assert trained.isdisjoint({d.id for d in split(held + train)[1]})
