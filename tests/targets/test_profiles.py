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


REQUIRED = [
    "x86-server",
    "snapdragon-865",
    "snapdragon-8-gen-3",
    "raspberry-pi-5",
    "jetson-orin-nano",
    "nvidia-a100",
    "nvidia-h100",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_required_profiles_are_complete(name):
    t = load_target(name)
    assert t.name == name and t.runtimes and t.formats and t.sources
    assert set(t.peak_compute_tops) <= set(t.precisions) and "fp32" in t.peak_compute_tops
    assert t.memory_bandwidth_gbs > 0 and t.memory_budget_mb > 0


def test_profile_figures_are_consistent():
    """Faster precisions have higher peaks; phones have less bandwidth than data-centre GPUs."""
    for name in REQUIRED:
        peaks = load_target(name).peak_compute_tops
        if "int8" in peaks:
            assert peaks["int8"] >= peaks["fp32"]
        if "fp16" in peaks:
            assert peaks["fp16"] >= peaks["fp32"]
    assert (
        load_target("snapdragon-865").memory_bandwidth_gbs < load_target("nvidia-a100").memory_bandwidth_gbs
    )
    assert (
        load_target("nvidia-h100").peak_compute_tops["fp16"]
        > load_target("nvidia-a100").peak_compute_tops["fp16"]
    )


def test_targets_show_cli(capsys):
    from edgellm.cli import main

    assert main(["targets", "show", "snapdragon-865"]) == 0
    out = capsys.readouterr().out
    assert "Cortex-A77" in out and "LPDDR5" in out and "peak int8" in out
