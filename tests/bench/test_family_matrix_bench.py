"""benchmarks/family_matrix.py reads pytest's JUnit XML per cell (the full matrix run itself is the benchmark)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edgellm.models import support

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "family_matrix.py"
_spec = importlib.util.spec_from_file_location("family_matrix", _PATH)
FM = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(FM)


def test_cells_are_read_from_junit_xml_with_outcome_time_and_reason(tmp_path):
    xml = tmp_path / "m.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="t" name="test_cell[gemma3_text-onnx]" time="8.5"/>'
        '<testcase classname="t" name="test_cell[llama-gguf]" time="1.25">'
        '<skipped message="llama.cpp is not installed (make setup-llama)"/></testcase>'
        '<testcase classname="t" name="test_cell[gpt2-prune]" time="0.5"><failure message="assert 0.9 &gt; 0.99&#10;more"/>'
        "</testcase>"
        '<testcase classname="t" name="test_the_readme_support_table_is_the_declaration" time="0.1"/>'
        "</testsuite></testsuites>"
    )
    got = FM.cells(xml)
    assert got == {
        "gemma3_text-onnx": {"outcome": "passed", "seconds": 8.5, "message": ""},
        "llama-gguf": {
            "outcome": "skipped",
            "seconds": 1.25,
            "message": "llama.cpp is not installed (make setup-llama)",
        },
        "gpt2-prune": {"outcome": "failed", "seconds": 0.5, "message": "assert 0.9 > 0.99"},
    }
    # a family whose name holds another's ("gemma3_text" vs "gemma") and a stage with a dash
    assert FM._split("gemma3_text-onnx", support) == ("gemma3_text", "onnx")
    assert FM._split("qwen2-split-generate", support) == ("qwen2", "split-generate")


def test_an_unknown_family_or_stage_is_named_with_the_choices(capsys):
    assert FM.main(["--families", "llama,bloom"]) == 2
    assert "unknown family bloom: choose from bert," in capsys.readouterr().err
    assert FM.main(["--stages", "fly"]) == 2
    assert "unknown stage fly" in capsys.readouterr().err
