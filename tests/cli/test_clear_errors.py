"""Broken input the CLI used to answer with exit 1 "internal error": each is one line, exit 2, no traceback
(a sequence past the model's positions, a model file of random bytes under a re-hashed manifest, a port
in use, an edited input dtype, a path too long; hub names too long: tests/hub/test_confinement.py)."""

import json
import shutil
import socket

import pytest

from edgellm import models
from edgellm.cli import main
from edgellm.export import export
from edgellm.utils.fs import sha256_file


@pytest.fixture(scope="module")
def decoder_art(decoder_dir, tmp_path_factory):
    """The tiny Llama (256 positions) as an ONNX artifact."""
    return export(models.load(decoder_dir("llama")), "x86-server", tmp_path_factory.mktemp("d") / "llama")


def one_line_exit_2(argv, capsys, *needles):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def rewrite(src, dst, change):
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    change(m, dst)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


BENCH = ["--runs", "1", "--warmup", "0", "--batch", "1"]
SERVE = ["--port", "0", "--grpc-port", "-1"]


def test_bench_seq_past_the_models_positions(decoder_art, capsys):
    one_line_exit_2(["bench", decoder_art.path, "--seq", "8,100000", *BENCH], capsys, "--seq 100000", "256")
    one_line_exit_2(["bench", decoder_art.path, "--seq", "100000", "--estimate"], capsys, "256")
    rc = main(["bench", str(decoder_art.path), "--seq", "256", *BENCH, "--json"])  # the limit itself runs
    assert rc == 0 and json.loads(capsys.readouterr().out)["results"][0]["seq"] == 256


def test_random_bytes_under_a_rehashed_manifest(mlp_art, tmp_path, capsys):
    def garbage(m, d):
        (d / "model.onnx").write_bytes(bytes(range(256)) * 40)
        m["files"]["model.onnx"] = {"sha256": sha256_file(d / "model.onnx"), "bytes": 256 * 40}

    art = rewrite(mlp_art.path, tmp_path / "art", garbage)
    one_line_exit_2(["bench", art, *BENCH], capsys, "cannot load", "model.onnx", "re-export")
    one_line_exit_2(["serve", art, *SERVE], capsys, "cannot load", "model.onnx")


@pytest.mark.parametrize(
    "dtype,needle",
    [("int64", "declares input 'input' as int64"), ("banana", "dtype 'banana'"), ("float16", "as float16")],
)
def test_edited_input_dtype(mlp_art, tmp_path, capsys, dtype, needle):
    art = rewrite(mlp_art.path, tmp_path / "art", lambda m, d: m["inputs"][0].update(dtype=dtype))
    one_line_exit_2(["bench", art, *BENCH], capsys, needle)
    one_line_exit_2(["serve", art, *SERVE], capsys, needle)


@pytest.mark.parametrize("which", ["--port", "--grpc-port"])
def test_serve_on_a_port_in_use(mlp_art, capsys, which):
    pytest.importorskip("aiohttp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        ports = (
            ["--port", port, "--grpc-port", "-1"]
            if which == "--port"
            else ["--port", "0", "--grpc-port", port]
        )
        one_line_exit_2(["serve", mlp_art.path, *ports, "--log-level", "error"], capsys, f":{port}", which)


def test_a_path_too_long(capsys):
    one_line_exit_2(["bench", "a" * 300, *BENCH], capsys, "cannot be read")
