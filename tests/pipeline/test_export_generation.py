"""Generation export across stages: a decoder cut into cached step graphs, both halves exported, the
chain's greedy tokens checked in their runtimes before anything is written; what cannot be exported is
refused with the way out."""

import json

import pytest

from edgellm.errors import EdgeLLMError
from edgellm.pipeline.generation import export_generation


def test_the_export_writes_both_halves_and_the_check(gen_dir):
    info = json.loads((gen_dir / "generation.json").read_text())
    assert info["layers_on_device"] == 2 and info["codec"] == "fp16"
    assert info["check"] == {"tokens": 16, "agreement": 1.0, "codec": "fp16", "reference": "unsplit model"}
    for role in ("device", "server"):
        man = json.loads((gen_dir / role / "manifest.json").read_text())
        assert man["generation"]["role"] == role and man["generation"]["plan_id"] == info["plan_id"]
    assert (gen_dir / "tokenizer").is_dir()


def test_what_cannot_carry_a_generation_cache_is_refused(tiny_llama, tmp_path):
    with pytest.raises(EdgeLLMError, match="codec 'int4'"):
        export_generation(tiny_llama, 2, tmp_path / "a", codec="int4")
    with pytest.raises(EdgeLLMError, match="device format 'gguf'"):
        export_generation(tiny_llama, 2, tmp_path / "b", device_format="gguf")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
