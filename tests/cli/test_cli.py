"""The `edgellm` command: --help everywhere, real runs, and one-line errors with exit code 2."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgellm.cli import main

COMMANDS = [["info"], ["targets", "list"], ["targets", "show"], ["export"], ["bench"], ["demo"]]


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc, err, *needles):
    assert rc == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_help_has_an_example(cmd, capsys):
    rc, out, _ = run([*cmd, "--help"], capsys)
    assert rc == 0 and "Example" in out and "edgellm" in out


def test_info_json(capsys):
    rc, out, _ = run(["info", "--json"], capsys)
    d = json.loads(out)
    assert rc == 0 and d["packages"]["onnxruntime"] and d["packages"]["torch"].startswith("2.13")
    assert d["cpu"]["logical_cores"] >= 1 and isinstance(d["cpu"]["features"], list)
    assert isinstance(d["gpus"], list)
    from edgellm.runtime.arm64 import find_root

    arm = d["arm64"]  # the same answer the exporters get, with the reason when there is no root
    assert arm["available"] == (find_root()[0] is not None)
    assert arm.get("qemu") if arm["available"] else "arm64" in arm["reason"] or "root" in arm["reason"]


def test_targets_list_and_show(capsys):
    rc, out, _ = run(["targets", "list", "--json"], capsys)
    assert rc == 0 and "x86-server" in json.loads(out)
    rc, out, _ = run(["targets", "show", "x86-server", "--json"], capsys)
    assert rc == 0 and json.loads(out)["memory_bandwidth_gbs"] > 0


def test_export_and_bench_a_decoder(decoder_dir, tmp_path, capsys):
    out = tmp_path / "llama"
    rc, stdout, err = run(["export", decoder_dir("llama"), "-o", out, "--json"], capsys)
    assert rc == 0, err
    manifest = json.loads(stdout)
    assert manifest["task"] == "causal-lm" and (out / "manifest.json").exists()
    rep = tmp_path / "rep.json"
    rc, stdout, err = run(
        ["bench", out, "--batch", "1,2", "--seq", "8", "--runs", "3", "--warmup", "1", "-o", rep, "--json"],
        capsys,
    )
    assert rc == 0, err
    d = json.loads(stdout)
    assert json.loads(rep.read_text()) == d
    names = [c["name"] for c in manifest.get("runtimes", {}).get("candidates", []) if c["passed"]]
    for name in names or ["onnxruntime"]:  # every runtime the export validated the artifact in
        assert [(r["batch"], r["seq"]) for r in d["results"] if r["name"] == name] == [(1, 8), (2, 8)]
    assert len(d["results"]) == 2 * max(1, len(names))


# -- bad input: one clear line, exit 2, nothing half-written ----------------------------------------
def test_missing_path(capsys):
    rc, _, err = run(["export", "/no/such/model"], capsys)
    assert_user_error(rc, err, "/no/such/model", "bundled")


def test_directory_that_is_not_a_model(tmp_path, capsys):
    rc, _, err = run(["export", tmp_path], capsys)
    assert_user_error(rc, err, "no config.json")


def test_unsupported_architecture(tmp_path, capsys):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "whisper", "architectures": ["WhisperModel"]})
    )
    (tmp_path / "model.safetensors").write_bytes(b"")
    rc, _, err = run(["export", tmp_path], capsys)
    assert_user_error(rc, err, "'whisper'", "WhisperModel", "supported model types")


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["bench", ".", "--batch", "abc"], "--batch"),
        (["bench", ".", "--runs", "0"], "--runs"),
        (["export", "minilm", "--opset", "99"], "--opset"),
        (["export", "minilm", "--target", "no-such-target"], "no-such-target"),
        (["demo", "--seq", "1,x"], "--seq"),
    ],
)
def test_wrong_flag_values(argv, needle, capsys):
    rc, _, err = run(argv, capsys)
    assert_user_error(rc, err, needle)


def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _, err = run(["export", "minilm", "-o", out], capsys)
    assert_user_error(rc, err, "already exists", "--force")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_corrupted_artifact(minilm_artifact, tmp_path, capsys):
    copy = tmp_path / "art"
    shutil.copytree(minilm_artifact.path, copy)
    with open(copy / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    rc, _, err = run(["bench", copy, "--runs", "1"], capsys)
    assert_user_error(rc, err, "model.onnx", "sha256")
    rc, _, err = run(["bench", tmp_path / "nothing-here"], capsys)
    assert_user_error(rc, err, "does not exist")


def test_real_process_prints_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("edgellm")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "edgellm"]
    p = subprocess.run([*cmd, "export", str(tmp_path / "missing")], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr
    assert p.stdout == ""
