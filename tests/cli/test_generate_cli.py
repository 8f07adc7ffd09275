"""The generation commands end to end: export/compress --generate, edgellm generate (streamed text and
--json), bench --generate (JSON and plot), and one clear line with exit 2 for each bad input."""

import json

import pytest
from conftest import corpus_excerpt

from edgellm.cli import main


def test_generate_streams_text_and_json(gen_artifact, capsys):
    assert main(["generate", str(gen_artifact), "-p", "The with statement", "-n", "12"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("The with statement") and "tokens/s" in out.out + out.err
    assert main(["generate", str(gen_artifact), "-p", "The with statement", "-n", "12", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["token_ids"]) <= 12 and d["ttft_ms"] > 0 and isinstance(d["text"], str)
    assert d["prompt_ids"][0] == 0  # the tokenizer's BOS first


@pytest.mark.parametrize(
    "args,message",
    [
        (["--temperature", "-0.5"], "temperature is -0.5"),
        (["--top-p", "0"], "top_p is 0.0"),
        (["--top-p", "1.5"], "top_p is 1.5"),
        (["--top-k", "-1"], "top_k is -1"),
        (["-p", "word " * 400], "context holds"),
    ],
)
def test_generate_bad_input_is_one_line(gen_artifact, capsys, args, message):
    argv = ["generate", str(gen_artifact)] + (["-p", "x"] if "-p" not in args else []) + args
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_not_a_generation_artifact_says_which_command_makes_one(minilm_artifact, capsys):
    assert main(["generate", str(minilm_artifact.path), "-p", "x"]) == 2
    assert "edgellm export MODEL --generate" in capsys.readouterr().err


def test_export_and_compress_generate_refuse_what_they_cannot_build(tmp_path, capsys):
    assert main(["export", "minilm", "--generate", "-o", str(tmp_path / "m")]) == 2
    assert "supported families: llama, mistral, qwen2, qwen3, gpt2" in capsys.readouterr().err
    assert (
        main(["export", "tiny-llama", "--generate", "--precision", "int8-static", "-o", str(tmp_path / "x")])
        == 2
    )
    assert "edgellm compress MODEL --generate" in capsys.readouterr().err
    argv = ["export", "tiny-llama", "--generate", "--target", "snapdragon-8-gen-3", "--format", "tflite"]
    assert main([*argv, "--precision", "int4", "-o", str(tmp_path / "t")]) == 2
    assert "tflite takes int8" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in ("m", "x", "t"))


def test_compress_generate_gptq_and_bench(small_lm, tmp_path, capsys):
    out = tmp_path / "gptq"
    argv = [
        "compress",
        str(small_lm),
        "--generate",
        "--recipe",
        "w4a16-gptq",
        "--group-size",
        "32",
        "--max-accuracy-drop",
        "ppl+50%",
        "--calib",
        corpus_excerpt(tmp_path / "calib.txt", 0),
        "--eval",
        corpus_excerpt(tmp_path / "eval.txt", 1),
        "--context",
        "64",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "generation artifact" in text and "w4a16-gptq" in text
    m = json.loads((out / "manifest.json").read_text())
    assert m["generation"]["recipe"] == "w4a16-gptq" and m["generation"]["precision"] == "int4"
    rep = json.loads((tmp_path / "gptq.report.json").read_text())
    assert rep["tries"][0]["passed"] and rep["tries"][0]["accuracy"]["perplexity_increase"] < 0.5
    png = tmp_path / "rate.png"
    assert (
        main(
            ["bench", str(out), "--generate", "--prompt", "8,32", "--new", "16", "--plot", str(png), "--json"]
        )
        == 0
    )
    b = json.loads(capsys.readouterr().out)
    assert [r["prompt"] for r in b["rows"]] == [8, 32] and all(r["decode_tok_s"] > 0 for r in b["rows"])
    assert b["size_bytes"] > 0 and b["peak_rss_mb"] > 0 and png.stat().st_size > 1000
    assert main(["bench", str(out), "--generate", "--prompt", "4000"]) == 2
    assert "exceed the artifact's context" in capsys.readouterr().err
