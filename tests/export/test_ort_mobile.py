"""ONNX Runtime mobile (.ort) artifacts for arm64 phones: converted, validated on this host, loadable."""

import pytest

from edgellm.compress.quant import Int4WeightOnly, Int8Dynamic, apply_quant, quantize
from edgellm.errors import ExportError
from edgellm.export import Artifact, Tolerance, export
from edgellm.export.validate import compare
from edgellm.runtime import make_runner


def test_minilm_ort_for_snapdragon(minilm, tmp_path):
    art = export(minilm, "snapdragon-865", tmp_path / "ort", format="ort")
    m = art.manifest
    assert m["target"] == {
        "name": "snapdragon-865",
        "runtime": "onnxruntime-mobile",
        "format": "ort",
        "kind": "phone",
    }
    assert art.model_path.name == "model.ort" and (art.path / "required_operators.config").is_file()
    ops = ";".join(m["recipe"]["ort_format"]["required_operators"])
    assert "EmbedLayerNormalization" in ops and "Attention" in ops
    assert m["parity"]["random"]["sentence_embedding"]["cosine_min"] >= 0.9999
    runner = make_runner(Artifact.load(art.path))
    assert runner.runtime == "onnxruntime-mobile"
    feeds = minilm.example_inputs(batch=3, seq=40, seed=3)
    got = compare(minilm.run(feeds), runner.run(feeds), minilm.outputs, feeds)
    assert got["sentence_embedding"]["cosine_min"] > 0.9999


def test_quantized_ort_artifacts(minilm, small_llm, pydoc_batches, tmp_path):
    spec = quantize(minilm, Int8Dynamic())
    art = export(
        minilm, "snapdragon-865", tmp_path / "i8", quant=spec, format="ort", tolerance=Tolerance.quantized()
    )
    assert art.manifest["precision"] == "int8"
    assert "DynamicQuantizeMatMul" in ";".join(art.manifest["recipe"]["ort_format"]["required_operators"])
    _, evalb = pydoc_batches(small_llm, n_calib=8, n_eval=8)
    spec4 = quantize(small_llm, Int4WeightOnly(group_size=64))
    art4 = export(
        small_llm,
        "snapdragon-8-gen-3",  # lists int4; the Pi 5 and the 865 do not
        tmp_path / "i4",
        quant=spec4,
        format="ort",
        tolerance=Tolerance.quantized(),
    )
    assert "MatMulNBits" in ";".join(art4.manifest["recipe"]["ort_format"]["required_operators"])
    f = evalb.feeds[0]
    got = compare(apply_quant(small_llm, spec4).run(f), make_runner(art4).run(f), small_llm.outputs, f)
    assert got["logits"]["cosine_min"] > 0.9999


def test_format_choice_errors(minilm, tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="does not take format 'onnx'"):
        export(minilm, "snapdragon-865", tmp_path / "x", format="onnx")
    prof = tmp_path / "t"
    prof.mkdir()
    import re

    from edgellm.targets import list_targets

    text = list_targets()["snapdragon-865"].read_text().replace("name: snapdragon-865", "name: npu-only")
    text = re.sub(r"^formats: .*$", "formats: [qnn-context-binary]", text, flags=re.M)
    text = re.sub(r"^format_runtimes:\n(?:  .*\n)+", "", text, flags=re.M)
    (prof / "npu-only.yaml").write_text(text)  # a profile naming only a format edgellm does not write
    monkeypatch.setenv("EDGELLM_TARGETS_PATH", str(prof))
    with pytest.raises(ExportError, match=r"takes formats \['qnn-context-binary'\], none of which"):
        export(minilm, "npu-only", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_export_precision(tmp_path, capsys, small_lm):
    import json

    from edgellm.cli import main

    rc = main(
        [
            "export",
            str(small_lm),
            "--target",
            "snapdragon-865",
            "--precision",
            "int8",
            "--format",
            "ort",
            "-o",
            str(tmp_path / "a"),
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    m = json.loads(out)
    assert m["precision"] == "int8" and m["target"]["format"] == "ort"
    rc = main(
        [
            "export",
            str(small_lm),
            "--target",
            "snapdragon-865",
            "--precision",
            "int4",
            "-o",
            str(tmp_path / "b"),
        ]
    )
    _, err = capsys.readouterr()
    assert rc == 2 and "does not run int4" in err and "fp32, fp16, int8" in err
    assert not (tmp_path / "b").exists()
    rc = main(["export", str(small_lm), "--precision", "int3", "-o", str(tmp_path / "c")])
    _, err = capsys.readouterr()
    assert rc == 2 and "unknown precision 'int3'" in err
