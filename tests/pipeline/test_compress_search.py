"""`compress`: tries, fallbacks, guards, reports; the CLI; bad input that leaves nothing behind."""

import json
import shutil

import pytest
import yaml
from conftest import corpus_excerpt

from edgellm.cli import main
from edgellm.compress.guard import parse_guard
from edgellm.compress.quant import Int4WeightOnly, Int8Dynamic, Int8Static, SmoothQuant
from edgellm.errors import EdgeLLMError
from edgellm.export import Artifact
from edgellm.pipeline.compress_search import GuardError, compress, fallbacks


def test_guard_parsing():
    assert parse_guard("cosine>=0.99", "embedding").check({"cosine_mean": 0.995})[0]
    assert not parse_guard("cosine>=0.99", "embedding").check({"cosine_mean": 0.98})[0]
    g = parse_guard("ppl+3%", "causal-lm")
    assert g.value == pytest.approx(0.03) and g.check({"perplexity_increase": 0.02})[0]
    assert parse_guard("0.01", "causal-lm").metric == "perplexity_increase"
    assert parse_guard("0.01", "embedding").value == pytest.approx(0.99)
    with pytest.raises(EdgeLLMError, match="not understood"):
        parse_guard("better please", "embedding")


def test_fallback_order():
    labels = [label for label, _ in fallbacks(Int8Static(per_channel=False), max_keep=4)]
    assert labels == [
        "per-channel weights",
        "SmoothQuant alpha 0.5",
        "1 most sensitive layer(s) kept fp32",
        "2 most sensitive layer(s) kept fp32",
        "4 most sensitive layer(s) kept fp32",
    ]
    assert isinstance(fallbacks(Int8Static())[0][1], SmoothQuant)
    assert [c.auto_keep for _, c in fallbacks(Int4WeightOnly(), max_keep=2)] == [1, 2]
    assert all(c.per_channel for _, c in fallbacks(Int8Dynamic(per_channel=False)))


def test_compress_tiny_llama_int4_meets_guard(tiny_llama, tmp_path):
    out = tmp_path / "tl-int4"
    res = compress(
        tiny_llama,
        Int4WeightOnly(method="gptq", group_size=128),
        output=out,
        max_accuracy_drop="ppl+5%",
        runs=3,
        eval_sequences=16,
        calib_sequences=16,
        progress=False,
    )
    assert res.artifact.path == out and res.artifact.manifest["precision"] == "int4"
    ev = res.artifact.manifest["evaluation"]
    assert ev["accuracy"]["perplexity_increase"] <= 0.05 and ev["speed"]["p50_ms"] > 0
    rep = json.loads(res.report_path.read_text())
    assert rep["passed"] and rep["chosen"] == "w4a16-gptq" and rep["tries"][0]["ok"]
    assert rep["tries"][0]["weight_bytes_ratio"] <= 0.2
    assert rep["fp32"]["p50_ms"] > 0 and "w4a16-gptq" in rep["speed"]
    Artifact.load(out)  # manifest edits kept every file hash valid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tl-int4", "tl-int4.report.json"]


def test_guard_that_cannot_be_met_fails_with_report(small_lm, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(GuardError, match="no try met the accuracy guard") as exc:
        compress(
            str(small_lm),
            Int4WeightOnly(method="rtn", group_size=128),
            output=out,
            max_accuracy_drop="top1>=0.9999",
            runs=2,
            eval_sequences=8,
            max_keep=1,
            progress=False,
        )
    assert exc.value.exit_code == 3
    assert not out.exists()
    rep = json.loads((tmp_path / "never.report.json").read_text())
    assert not rep["passed"] and rep["artifact"] is None
    assert [t["try"] for t in rep["tries"]] == ["requested", "1 most sensitive layer(s) kept fp32"]
    assert all(not t["ok"] and t["accuracy"]["top1_agreement"] < 0.9999 for t in rep["tries"])
    assert len(rep["tries"][1]["kept_fp32"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["never.report.json"]  # no temp dirs


def test_calibration_data_too_small(tiny_llama, tmp_path):
    f = tmp_path / "small.txt"
    f.write_text("Only a few words here.\n\nAnd here.")
    with pytest.raises(EdgeLLMError, match="too small"):
        compress(
            tiny_llama, Int4WeightOnly(method="gptq"), output=tmp_path / "o", calib=str(f), eval_data=str(f)
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EdgeLLMError, match="no .txt or .jsonl"):
        compress(tiny_llama, "int8-static", output=tmp_path / "o", calib=str(empty))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "small.txt"]


def test_tokenizer_mismatch(tiny_llama, tmp_path):
    from conftest import save_llama

    save_llama(tmp_path / "m", vocab_size=512, num_hidden_layers=1)
    tiny_llama.tokenizer.save_pretrained(tmp_path / "m")  # 4096-token tokenizer, 512-token model
    with pytest.raises(EdgeLLMError, match="tokenizer mismatch"):
        compress(str(tmp_path / "m"), "w4a16-rtn", output=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_cli_compress_and_errors(tmp_path, capsys, small_lm):
    out = tmp_path / "q"
    rc = main(
        [
            "compress",
            str(small_lm),
            "--recipe",
            "w4a16-rtn",
            "-g",
            "64",
            "-o",
            str(out),
            "--runs",
            "2",
            "--json",
        ]
    )
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    rep = json.loads(stdout)
    assert rep["chosen"] == "w4a16-rtn" and rep["tries"][0]["config"]["group_size"] == 64
    # an existing output without --force
    rc = main(["compress", str(small_lm), "-o", str(out)])
    _, err = capsys.readouterr()
    assert rc == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    # unknown recipe key in YAML
    bad = tmp_path / "r.yaml"
    bad.write_text(
        yaml.safe_dump({"model": str(small_lm), "quantization": {"recipe": "w4a16-rtn"}, "guard": 1})
    )
    rc = main(["compress", "--recipe", str(bad)])
    _, err = capsys.readouterr()
    assert rc == 2 and "'guard'" in err and "Extra inputs" in err
    bad.write_text(
        yaml.safe_dump(
            {"model": str(small_lm), "quantization": {"recipe": "w4a16-rtn", "options": {"grup_size": 64}}}
        )
    )
    rc = main(["compress", "--recipe", str(bad)])
    _, err = capsys.readouterr()
    assert rc == 2 and "grup_size" in err
    rc = main(["compress", str(small_lm), "--recipe", "w4a16-rtn", "-g", "48", "-o", str(tmp_path / "x")])
    _, err = capsys.readouterr()
    assert rc == 2 and "power of two" in err
    rc = main(["compress", str(small_lm), "--recipe", "int9", "-o", str(tmp_path / "x")])
    _, err = capsys.readouterr()
    assert rc == 2 and "unknown recipe 'int9'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q", "q.report.json", "r.yaml"]


def test_cli_guard_failure_exits_3(tmp_path, capsys, small_lm):
    rc = main(
        [
            "compress",
            str(small_lm),
            "--recipe",
            "w4a16-rtn",
            "--max-accuracy-drop",
            "top1>=0.99999",
            "-o",
            str(tmp_path / "q"),
            "--runs",
            "1",
            "--max-keep",
            "1",
        ]
    )
    _, err = capsys.readouterr()
    err = err.strip()
    assert (
        rc == 3
        and len(err.splitlines()) == 1
        and err.startswith("error: no try met the accuracy guard")
        and "report is at" in err
    )
    assert (tmp_path / "q.report.json").exists() and not (tmp_path / "q").exists()


def test_recipe_yaml_runs(tmp_path, capsys, small_lm):
    r = tmp_path / "recipe.yaml"
    r.write_text(
        yaml.safe_dump(
            {
                "model": str(small_lm),
                "output": str(tmp_path / "out"),
                "quantization": {"recipe": "w4a16-awq", "options": {"group_size": 128, "keep": ["lm_head"]}},
                # AWQ's scales and the guard from excerpts of the bundled corpus (~16 windows each)
                "data": {
                    "calib": corpus_excerpt(tmp_path / "calib.txt", 0),
                    "eval": corpus_excerpt(tmp_path / "eval.txt", 1),
                },
                "max_accuracy_drop": "ppl+10%",
            }
        )
    )
    rc = main(["compress", "--recipe", str(r), "--runs", "1", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["chosen"] == "w4a16-awq" and "lm.lm_head" in rep["tries"][0]["kept_fp32"]
    shutil.rmtree(tmp_path / "out")


def test_precision_auto_picks_fastest_passing(tmp_path, capsys, small_lm):
    # --calib/--eval: excerpts of the bundled corpus (~16 windows each instead of 64 and 49) keep the
    # three candidates' calibration and guard evaluation short; the choice is made the same way
    rc = main(
        [
            "compress",
            str(small_lm),
            "--precision",
            "auto",
            "--calib",
            corpus_excerpt(tmp_path / "calib.txt", 0),
            "--eval",
            corpus_excerpt(tmp_path / "eval.txt", 1),
            "--max-accuracy-drop",
            "ppl+5%",
            "-o",
            str(tmp_path / "auto"),
            "--runs",
            "3",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["requested"] == "auto"
    assert {t["recipe"] for t in rep["tries"]} == {"int8-dynamic", "w4a16-awq", "w4a16-gptq"}
    passing = {n: v["p50_ms"] for n, v in rep["speed"].items()}
    assert rep["chosen"] == min(passing, key=passing.get)
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert manifest["recipe"]["quantization"]["recipe"] == rep["chosen"]


def test_cli_lists_every_recipe():
    from edgellm.cli.compress import RECIPE_NAMES
    from edgellm.compress.quant import RECIPES

    assert RECIPE_NAMES.split(" | ") == [*RECIPES, "auto"]
