"""`edgellm export --target all`: every target a recipe names, one row each; per-target failures are
rows with the reason, not a crash."""

import json

import pytest

from edgellm.cli import main


@pytest.fixture
def recipe(tmp_path, small_lm):
    p = tmp_path / "r.yaml"
    p.write_text(f"model: {small_lm}\ntargets: [x86-server, snapdragon-865, nvidia-a100]\n")
    return p


def test_target_all_exports_each_named_target(recipe, tmp_path, capsys):
    pytest.importorskip("litert_torch", reason="pip install 'edgellm[tflite]'")
    out = tmp_path / "all"
    rc = main(
        ["export", "--recipe", str(recipe), "--target", "all", "-o", str(out), "--seq-len", "32", "--json"]
    )
    assert rc == 0
    rows = {r["target"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"x86-server", "snapdragon-865", "nvidia-a100"}
    assert [rows[t]["format"] for t in ("x86-server", "snapdragon-865", "nvidia-a100")] == [
        "onnx",
        "tflite",
        "tensorrt",
    ]
    for r in rows.values():
        assert r["error"] is None and (out / f"small-lm-{r['target']}-fp32" / "manifest.json").is_file()
        assert r["parity"]["random"]["logits"]["cosine_min"] > 0.9999


def test_target_all_reports_targets_that_cannot_take_the_precision(recipe, tmp_path, capsys):
    out = tmp_path / "int4"
    rc = main(["export", "--recipe", str(recipe), "--target", "all", "-p", "int4", "-o", str(out), "--json"])
    assert rc == 0  # one target could, so the run succeeds and says which could not
    rows = {r["target"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["x86-server"]["error"] is None and rows["x86-server"]["precision"] == "int4"
    assert "does not run int4" in rows["snapdragon-865"]["error"]
    assert rows["nvidia-a100"]["error"] is None and rows["nvidia-a100"]["format"] == "tensorrt"  # INT4 WoQ
    assert not (out / "small-lm-snapdragon-865-int4").exists()


def test_unknown_target_and_precision_fail_before_any_work(tmp_path, capsys):
    assert main(["export", "tiny-llama", "-t", "pixel-99", "-o", str(tmp_path / "x")]) == 2
    assert "known targets" in capsys.readouterr().err
    assert main(["export", "tiny-llama", "-p", "int3", "-o", str(tmp_path / "y")]) == 2
    assert "int8-static" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
