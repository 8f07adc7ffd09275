"""Encoder classification fine-tuning: MiniLM learns to tell three pydoc topics apart from single
sentences (held-out accuracy far above the majority class), the saved classifier reloads with its labels,
exports to ONNX Runtime with parity, and quantizes under a label-agreement guard. Plus the labelled data's
bad inputs, and a decoder classifier's export."""

import json
from pathlib import Path

import numpy as np
import pytest

from edgellm.errors import EdgeLLMError
from edgellm.train import TrainConfig, train
from edgellm.train.data import Examples, class_names

pytest.importorskip("accelerate")

TOPICS = ("debugger", "string-methods", "typesmapping")


def labelled(path: Path, topics=TOPICS) -> Path:
    """One JSONL record per sentence of each pydoc topic, labelled by its topic."""
    from edgellm.data.corpus import pydoc_topics, sentences

    docs = {d.id: d for d in pydoc_topics()}
    with path.open("w") as f:
        for t in topics:
            for i, s in enumerate(sentences([docs[t]])):
                f.write(json.dumps({"id": f"{t}:{i}", "text": s, "topic": t}) + "\n")
    return path


def cfg(data, out, **kw):
    base = dict(
        model="minilm",
        task="classification",
        data=str(data),
        label_field="topic",
        output=str(out),
        seq_len=48,
        batch_size=16,
        max_steps=24,
        lr=2e-4,
        warmup_steps=3,
        eval_every=8,
        save_every=100,
        progress=False,
        seed=0,
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("clf")
    data = labelled(root / "topics.jsonl")
    return data, train(cfg(data, root / "run")), root / "run"


def test_minilm_learns_to_classify_held_out_sentences(trained):
    _, s, out = trained
    evals = [json.loads(x) for x in (out / "train_log.jsonl").open() if "eval_accuracy" in x]
    assert [e["step"] for e in evals] == [8, 16, 24]
    assert s["labels"] == sorted(TOPICS) and s["final"]["eval_examples"] > 30
    # a model that learnt nothing scores the majority class; this one is far above it
    assert s["final"]["eval_accuracy"] > s["majority_accuracy"] + 0.3
    assert s["final"]["eval_macro_f1"] > 0.7
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert s["dataset"]["sha256"] and s["tokens_per_s"] > 0


def test_the_saved_classifier_reloads_exports_and_quantizes(trained, tmp_path):
    from edgellm.export import export
    from edgellm.models import load
    from edgellm.pipeline.compress_search import compress
    from edgellm.runtime import make_runner

    data, _, out = trained
    m = load(out / "model")  # the task and labels come from the saved config
    assert m.task == "classification" and [o.shape for o in m.outputs] == [["batch", 3]]
    assert list(m.config.id2label.values()) == sorted(TOPICS)
    assert not (out / "model" / "modules.json").exists()  # not mistaken for a sentence-embedding model
    art = export(m, "x86-server", tmp_path / "art")
    assert art.manifest["parity"]["passed"]
    # ONNX Runtime predicts the same labels as torch on real held-out text
    texts = [json.loads(x)["text"] for x in data.open()][::25]
    enc = m.tokenizer(texts, padding=True, truncation=True, max_length=48, return_tensors="np")
    feeds = {s.name: np.asarray(enc[s.name], np.int64) for s in m.inputs}
    want = m.run(feeds)["logits"].argmax(-1)
    got = make_runner(art).run(feeds)["logits"].argmax(-1)
    assert (want == got).all() and len(set(want.tolist())) == 3
    r = compress(
        m, "int8-dynamic", output=tmp_path / "int8", max_accuracy_drop="top1>=0.8", runs=2, progress=False
    )
    acc = r.artifact.manifest["evaluation"]["accuracy"]
    assert acc["metric"] == "classification" and acc["top1_agreement"] >= 0.8


def test_a_saved_classifier_keeps_its_head_and_label_order(trained, tmp_path):
    """Fine-tuning a classifier again on data with a subset of its classes keeps its head (no new random
    one), so it starts where it stopped."""
    data, s, out = trained
    sub = tmp_path / "sub.jsonl"
    sub.write_text("".join(x for x in data.open() if '"typesmapping"' not in x))
    s2 = train(
        cfg(sub, tmp_path / "again", model=str(out / "model"), task=None, max_steps=1, eval_every=1, lr=1e-9)
    )
    assert s2["labels"] == s["labels"]
    assert s2["final"]["eval_accuracy"] > s2["majority_accuracy"] + 0.2  # already trained at step 1


def test_labelled_batches_are_a_pure_function_of_the_step(minilm):
    from edgellm.data.corpus import Document

    docs = [Document(str(i), "word " * (i % 7 + 1), "ab"[i % 2]) for i in range(20)]
    names = [s.name for s in minilm.inputs]
    a = Examples(minilm.tokenizer, docs, {"a": 0, "b": 1}, 16, 3, names, "training")
    b = Examples(minilm.tokenizer, docs, {"a": 0, "b": 1}, 16, 3, names, "training")
    for step in (0, 4, 9):  # 9 crosses into the next epoch
        x, y = a.batch(step, 4), b.batch(step, 4)
        assert all((x[k] == y[k]).all() for k in x)
        assert x["attention_mask"].any(0).all()  # no all-padding column kept
    seen = np.concatenate([a.batch(s, 4)["labels"] for s in range(5)])  # one epoch: every example once
    assert sorted(np.concatenate([a.rows(s, 4) for s in range(5)]).tolist()) == list(range(20))
    assert seen.sum() == 10
    assert class_names(["10", "9", "2"]) == ["2", "9", "10"] and class_names(["b", "a"]) == ["a", "b"]


def test_bad_labelled_data_is_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a sentence with a label", "topic": "x"}\n{"text": "no label here"}\n')
    with pytest.raises(EdgeLLMError, match=r"bad.jsonl:2 has no label under 'topic'"):
        train(cfg(bad, tmp_path / "o1"))
    txt = tmp_path / "plain.txt"
    txt.write_text("some text\n\nmore text\n")
    with pytest.raises(EdgeLLMError, match="plain text: it has no 'topic' labels"):
        train(cfg(txt, tmp_path / "o2"))
    with pytest.raises(EdgeLLMError, match="bundled corpus has no labels"):
        train(cfg("pydoc", tmp_path / "o3"))
    one = labelled(tmp_path / "one.jsonl", topics=("debugger",))
    with pytest.raises(EdgeLLMError, match="at least two distinct"):
        train(cfg(one, tmp_path / "o4"))
    data = labelled(tmp_path / "two.jsonl", topics=("debugger", "typesmapping"))
    with pytest.raises(
        EdgeLLMError, match=r"labels \['typesmapping'\] that are not among the model's classes"
    ):
        train(cfg(data, tmp_path / "o5", labels=["debugger", "other"]))


def test_a_decoder_classifier_exports_with_parity(small_lm, tmp_path):
    """A Llama-family decoder with a classification head: it classifies from the last real token, also
    when rows are padded, and ONNX Runtime agrees."""
    from edgellm.export import export
    from edgellm.models import load

    m = load(small_lm, labels=["no", "yes"])
    assert m.task == "classification" and m.config.pad_token_id is not None
    f = m.fixed_inputs()
    assert f["attention_mask"].min() == 0  # padded rows among the fixed inputs
    art = export(m, "x86-server", tmp_path / "art")
    assert art.manifest["parity"]["passed"]
