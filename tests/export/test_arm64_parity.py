"""Parity on arm64 kernels (issue 24): the emulated arm64 runner, ``parity.arm64`` in export, the modes,
and an arm64 miss refusing a variant like an x86 miss.

Tests marked ``arm64`` run the runtimes under qemu-user in the root ``scripts/arm64_root.sh`` builds
(``make test`` builds it first where it can: root, Debian's mirror); the others run everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgellm import models
from edgellm.errors import EdgeLLMError, ExportError, ParityError
from edgellm.export import Tolerance, export
from edgellm.export.arm64 import resolve_mode
from edgellm.export.base import EXPORTERS, _load_exporters, lower_validated
from edgellm.runtime import make_runner
from edgellm.runtime.arm64 import Arm64Host, Arm64Runner, _fake_cpu_files, find_root, is_arm64, qemu_cpu
from edgellm.targets import load_target


@pytest.fixture(scope="module")
def small_mlp():
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    return models.load(net, example_inputs=torch.randn(2, 16), name="mlp16")


@pytest.fixture()
def no_root(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGELLM_ARM64_ROOT", str(tmp_path / "no-root"))


def test_each_target_emulates_the_cpu_its_isa_names():
    assert qemu_cpu(load_target("snapdragon-865")) == "cortex-a76"  # Armv8.2 + dotprod + fp16
    assert qemu_cpu(load_target("snapdragon-8-gen-3")) == "max,sme=off"  # Armv9 with SVE2/i8mm, no SME
    assert is_arm64(load_target("raspberry-pi-5")) and is_arm64(load_target("snapdragon-865"))
    assert not is_arm64(load_target("x86-server")) and not is_arm64(load_target("nvidia-a100"))


def test_a_missing_root_says_how_to_build_it(no_root):
    host, why = find_root()
    assert host is None and "scripts/arm64_root.sh" in why


def test_modes_come_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("EDGELLM_ARM64", "require")
    assert resolve_mode(None) == "require" and resolve_mode("OFF") == "off"
    with pytest.raises(ExportError, match="unknown arm64 mode 'sometimes'"):
        resolve_mode("sometimes")


def test_the_root_gets_cpu_files_for_this_hosts_cores_of_the_emulated_model(tmp_path):
    host = Arm64Host(tmp_path)
    _fake_cpu_files(host, 3)
    info = (tmp_path / "proc" / "cpuinfo").read_text()
    assert info.count("processor\t:") == 3 and "CPU part\t: 0xd0b" in info and "asimddp" in info
    assert (tmp_path / "sys/devices/system/cpu/possible").read_text() == "0-2\n"
    _fake_cpu_files(host.with_cpu("max,sme=off"), 1)
    assert (tmp_path / "sys/devices/system/cpu/present").read_text() == "0\n"
    assert "i8mm" in (tmp_path / "proc" / "cpuinfo").read_text()
    with pytest.raises(EdgeLLMError, match="unknown emulated CPU"):
        host.with_cpu("cortex-x4")


def test_require_without_a_root_refuses_before_any_work(small_mlp, no_root, tmp_path):
    with pytest.raises(ExportError, match="arm64_root.sh"):
        export(small_mlp, "snapdragon-865", tmp_path / "art", format="ort", arm64="require")
    assert not (tmp_path / "art").exists()
    with pytest.raises(ExportError, match="cannot validate pte files on arm64"):
        export(small_mlp, "snapdragon-8-gen-3", tmp_path / "pte", format="pte", arm64="require")


def test_auto_without_a_root_records_why_and_exports(small_mlp, no_root, tmp_path):
    art = export(small_mlp, "snapdragon-865", tmp_path / "art", format="ort", arm64="auto")
    assert "scripts/arm64_root.sh" in art.manifest["parity"]["arm64"]["skipped"]
    server = export(small_mlp, "x86-server", tmp_path / "x86", arm64="auto")
    assert "arm64" not in server.manifest["parity"]  # not an arm64 target: nothing to say


def _miss(fields, runner, reference):
    return {
        "passed": False,
        "cpu": "cortex-a76",
        "fixed": {"y": {"max_abs": 0.5, "cosine_min": 0.9}},
        "random": {"y": {"max_abs": 0.5, "cosine_min": 0.9}},
    }


def test_an_arm64_miss_refuses_the_variant_like_an_x86_miss(small_mlp, tmp_path):
    _load_exporters()
    tgt = load_target("snapdragon-865")
    with pytest.raises(
        ParityError,
        match=r"disagrees .* on arm64 kernels \(qemu-user, cortex-a76\): fixed .*; on this host's kernels it passes",
    ):
        lower_validated(EXPORTERS["ort"](), small_mlp, tgt, tmp_path, Tolerance(), also=_miss)

    # an exporter with two variants (as the server exporter's fused, then plain): a miss on the first
    # falls back to the second, and the first's rejection is recorded
    class TwoTries(EXPORTERS["onnx"]):
        def variants(self, model):
            return ["plain", "plain"]

    calls = []

    def second_passes(fields, runner, reference):
        calls.append(fields["recipe"]["fusion"])
        return _miss(fields, runner, reference) if len(calls) == 1 else {"passed": True, "cpu": "cortex-a76"}

    (tmp_path / "b").mkdir()
    fields = lower_validated(TwoTries(), small_mlp, tgt, tmp_path / "b", Tolerance(), also=second_passes)
    assert len(calls) == 2 and fields["parity"]["arm64"]["passed"] is True
    assert "on arm64 kernels" in fields["recipe"]["fusion"]["rejected"][0]["reason"]


@pytest.mark.arm64
@pytest.mark.target_tflite
def test_a_tflite_file_runs_on_xnnpack_on_emulated_arm64(small_mlp, arm64_host, tmp_path):
    art = export(small_mlp, "snapdragon-865", tmp_path / "art", format="tflite", arm64="require")
    sec = art.manifest["parity"]["arm64"]
    assert sec["passed"] and sec["cpu"] == "cortex-a76" and sec["runtime"] == "litert"
    assert sec["kernels"] == "xnnpack"  # the fake cpuinfo lets XNNPACK initialise (0 delegate nodes without)
    assert next(iter(sec["fixed"].values()))["cosine_min"] > 0.9999
    feeds = small_mlp.fixed_inputs()
    x86 = make_runner(art).run(feeds)
    with Arm64Runner("litert", art.path, arm64_host) as arm:  # the artifact directory: hashes checked there
        got = arm.run(feeds)
        stage = arm._stage
        assert stage.is_dir() and arm.describe()["arch"] == "arm64"
        with pytest.raises(EdgeLLMError, match="not latencies"):
            arm.time(feeds, 3)
    assert not stage.exists()  # the model copy and the sources are gone with the runner
    for name, y in x86.items():
        np.testing.assert_allclose(got[name], y, rtol=1e-5, atol=1e-5)


@pytest.mark.arm64
@pytest.mark.target_ort
def test_an_int8_ort_file_on_an_armv9_phone_records_its_cpu_and_fp32_figures(small_mlp, arm64_host, tmp_path):
    from edgellm.compress.quant import Int8Dynamic, quantize

    spec = quantize(small_mlp, Int8Dynamic())
    art = export(small_mlp, "snapdragon-8-gen-3", tmp_path / "art", format="ort", quant=spec, arm64="require")
    sec = art.manifest["parity"]["arm64"]
    assert sec["passed"] and sec["cpu"] == "max,sme=off" and sec["runtime"] == "onnxruntime-mobile"
    assert sec["runtime_version"] and sec["emulator"].startswith("qemu-user")
    vs = next(iter(sec["vs_fp32"]["fixed"].values()))
    assert 0.99 < vs["cosine_min"] <= 1.0 and vs["max_abs"] > 0  # int8 is not fp32, and close to it


def test_the_report_shows_the_arm64_cosine_beside_the_x86_one():
    from edgellm.pipeline.report import TARGET_COLUMNS, arm64_notes, target_cells
    from edgellm.pipeline.target_matrix import _arm64_cells

    keys = [k for k, _ in TARGET_COLUMNS]
    at = keys.index("cosine_vs_fp32_arm64")
    assert keys[at - 1] == "cosine_vs_fp32"
    checked = {
        "cpu": "cortex-a76",
        "passed": True,
        "fixed": {"y": {"max_abs": 0.01, "cosine_min": 0.9991}},  # vs its (fake-quantized) reference
        "vs_fp32": {"fixed": {"y": {"max_abs": 0.02, "cosine_min": 0.99731}}},
    }
    row = {"target": "snapdragon-865", "format": "tflite", "precision": "int8", "cosine_vs_fp32": 0.99752}
    row |= _arm64_cells(checked)
    cells = target_cells(row)
    assert cells[at] == "0.99731" and cells[at - 1] == "0.99752"
    skipped = {"target": "snapdragon-865", "format": "ort", "precision": "fp32"}
    skipped |= _arm64_cells({"skipped": "no arm64 root at /x: build it with sudo scripts/arm64_root.sh"})
    assert target_cells(skipped)[at] == "not checked"
    server = {"target": "x86-server", "format": "onnx", "precision": "fp32"} | _arm64_cells(None)
    assert target_cells(server)[at] == "-"
    failed = dict(server, error="parity failed on arm64 kernels")
    assert target_cells(failed)[keys.index("size_mb")].startswith("failed: parity failed")
    assert len(target_cells(failed)) == len(keys)
    notes = arm64_notes([row, skipped, server])
    assert any("no arm64 root at /x" in n for n in notes) and any("cortex-a76" in n for n in notes)


def test_a_root_that_cannot_run_the_file_is_reported_not_fatal_in_auto(small_mlp, tmp_path, monkeypatch):
    import json
    import os

    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    broken = tmp_path / "broken-root"
    (broken / "usr" / "bin").mkdir(parents=True)
    (broken / "usr" / "bin" / "qemu-aarch64-static").write_bytes(b"")  # not an emulator
    (broken / ".edgellm-arm64.json").write_text(json.dumps({"suite": "bookworm", "qemu": "0"}))
    monkeypatch.setenv("EDGELLM_ARM64_ROOT", str(broken))
    art = export(small_mlp, "snapdragon-865", tmp_path / "auto", format="ort", arm64="auto")
    assert art.manifest["parity"]["arm64"]["skipped"].startswith("could not run on emulated arm64")
    with pytest.raises(ExportError, match="could not be run on emulated arm64"):
        export(small_mlp, "snapdragon-865", tmp_path / "req", format="ort", arm64="require")
    assert not (tmp_path / "req").exists()
    assert not list((broken / "tmp").iterdir())  # the scratch copies are gone
