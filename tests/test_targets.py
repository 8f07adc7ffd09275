import pytest

from edgellm.errors import TargetError
from edgellm.targets import list_targets, load_target


def test_x86_server_profile_has_the_design_fields():
    t = load_target("x86-server")
    assert "onnxruntime" in t.runtimes and "onnx" in t.formats
    assert t.peak_compute_tops["fp32"] > 0 and t.memory_bandwidth_gbs > 0 and t.memory_budget_mb > 0
    assert t.sources
    assert "x86-server" in list_targets()


def test_unknown_key_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (list_targets()["x86-server"]).read_text() + "\nmemory_bandwith_gbs: 10\n"  # typo'd key
    bad.write_text(text)
    with pytest.raises(TargetError, match="memory_bandwith_gbs"):
        load_target(bad)


def test_unknown_target_names_the_known_ones():
    with pytest.raises(TargetError, match="x86-server"):
        load_target("no-such-device")


def test_targets_path_env(tmp_path, monkeypatch):
    (tmp_path / "my-box.yaml").write_text(
        list_targets()["x86-server"].read_text().replace("name: x86-server", "name: my-box")
    )
    monkeypatch.setenv("EDGELLM_TARGETS_PATH", str(tmp_path))
    assert load_target("my-box").name == "my-box"
