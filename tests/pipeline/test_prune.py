"""Prune + recovery as one workflow: distillation from the unpruned model through the trainer, and
``edgellm compress --prune`` reporting parameters, FLOPs, size, latency and quality against the unpruned
model."""

import json

import numpy as np
import pytest

from edgellm.compress.prune import PruneConfig, prune_model
from edgellm.compress.prune.layout import geometry
from edgellm.models import load


def logits(adapter, feeds):
    return adapter.run(feeds)[adapter.outputs[0].name]


def test_recovery_distils_the_unpruned_model_into_the_pruned_one(small_lm, tmp_path):
    pytest.importorskip("accelerate")
    from edgellm.pipeline.prune import recover

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
