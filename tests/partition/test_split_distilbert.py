"""DistilBERT cut in two: its embeddings module takes ``(input_ids, input_embeds)`` positionally (BERT's by
keyword), so the server half must hand the activation to the argument of that name. Every cut in torch,
then the CLI's split export (a LiteRT phone half, an ONNX Runtime server half) chained against the whole
model."""

import json

import numpy as np
import pytest

from edgellm.export.validate import compare
from edgellm.models import load
from edgellm.partition.cut import split_model


def _cosine(model, ref, got, feeds):
    spec = model.outputs[0]
    return compare({spec.name: ref}, {spec.name: got}, [spec], feeds)[spec.name]


def test_every_cut_of_distilbert_reproduces_the_model(tiny_dir):
    m = load(tiny_dir("distilbert"))
    assert m.family == "distilbert" and [s.name for s in m.inputs] == ["input_ids", "attention_mask"]
    feeds = m.example_inputs(batch=3, seq=14, seed=2)  # rows padded by 0, 3 and 6 tokens
    ref = m.run(feeds)["sentence_embedding"]
    for cut in range(1, len(m.blocks)):
        h = split_model(m, cut)
        assert [s.name for s in h.server.inputs] == ["hidden", "attention_mask"]
        act = h.device.run({s.name: feeds[s.name] for s in h.device.inputs})["hidden"]
        assert act.shape == (3, 14, 64)
        got = h.server.run({"hidden": act, "attention_mask": feeds["attention_mask"]})["sentence_embedding"]
        assert np.abs(got - ref).max() < 1e-6, cut


def test_distilbert_split_export_cut1_fp16_chains_to_the_whole_model(tiny_dir, tmp_path, capsys):
    pytest.importorskip("ai_edge_litert")
    from edgellm.cli import main
    from edgellm.partition.split_export import SplitArtifacts, run_chain
    from edgellm.runtime import make_runner

    src = tiny_dir("distilbert")
    out = tmp_path / "split"
    argv = ["split", "export", str(src), "--cut", "1", "--codec", "fp16", "--seq-len", "64", "-o", str(out)]
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    link = json.loads(capsys.readouterr().out)
    assert link["cut"] == 1 and link["after_block"] == "embeddings" and link["codec"] == "fp16"
    assert link["server_model"].endswith("-server-cut1") and link["side_inputs"] == ["attention_mask"]
    assert link["parity"]["cosine_min"] >= link["parity"]["min_cosine_required"] == 0.999
    s = SplitArtifacts.load(out)
    assert s.device.manifest["target"]["runtime"] == "litert"
    assert s.server.manifest["target"]["runtime"] == "onnxruntime" and s.server.manifest["parity"]["passed"]
    # the two artifacts chained here (phone half -> fp16 on the wire -> server half) against torch
    m = load(src)
    dev, srv = make_runner(s.device), make_runner(s.server)
    for feeds in (m.fixed_inputs(), m.example_inputs(batch=2, seq=20, seed=5)):
        got = run_chain(dev, srv, "fp16", s.link["side_inputs"], feeds)["sentence_embedding"]
        par = _cosine(m, m.run(feeds)["sentence_embedding"], got, feeds)
        assert par["cosine_min"] > 0.999 and par["max_abs"] < 5e-3, par
