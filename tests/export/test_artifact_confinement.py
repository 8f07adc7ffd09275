"""An artifact's check cannot be bypassed: every file a runtime opens lies inside the artifact and is listed
in the manifest with its hash. A manifest that drops the model file from ``files``, names a model file
outside its folder, or lists a link that leaves it is refused by ``Artifact.load``, and ``edgellm bench``
and ``edgellm serve`` exit 2 with one line."""

import json
import os
import shutil

import pytest

from edgellm.cli import main
from edgellm.errors import ArtifactError
from edgellm.export import Artifact
from edgellm.utils.fs import sha256_file


def edit(src, dst, change):
    """A copy of the artifact ``src`` at ``dst`` whose manifest ``change(manifest, dst)`` rewrote."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    change(m, dst)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def unlisted_and_flipped(m, d):
    del m["files"]["model.onnx"]
    m["files"]["notes.txt"] = {"sha256": "0" * 64, "bytes": 0}
    flip(d / "model.onnx")


def outside_listed(m, d):
    """model_file ../other/model.onnx, listed with its true hash: the folder's check would pass."""
    other = d.parent / "other"
    other.mkdir(exist_ok=True)
    shutil.copy(d / "model.onnx", other / "model.onnx")
    m["model_file"] = "../other/model.onnx"
    m["files"]["../other/model.onnx"] = {"sha256": sha256_file(other / "model.onnx"), "bytes": 1}


def etc_passwd(m, d):
    m["model_file"] = "/etc/passwd"
    m["files"]["/etc/passwd"] = {
        "sha256": sha256_file("/etc/passwd"),
        "bytes": os.path.getsize("/etc/passwd"),
    }


def etc_passwd_unlisted(m, d):
    m["model_file"] = "/etc/passwd"


def link_out(m, d):
    """model.onnx a link to a file outside the artifact, its hash rewritten to match."""
    target = d.parent / "elsewhere.onnx"
    shutil.copy(d / "model.onnx", target)
    flip(target)
    (d / "model.onnx").unlink()
    (d / "model.onnx").symlink_to(target)
    m["files"]["model.onnx"] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}


def nul_in_path(m, d):
    m["files"]["model.onnx\x00.txt"] = m["files"]["model.onnx"]


CASES = {
    "unlisted-and-flipped": (unlisted_and_flipped, "not among the files it lists"),
    "model-file-outside": (outside_listed, "climbs out of its folder"),
    "etc-passwd-listed": (etc_passwd, "is absolute"),
    "etc-passwd": (etc_passwd_unlisted, "is absolute"),
    "link-out": (link_out, "outside"),
    "nul": (nul_in_path, "NUL"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_load_bench_and_serve_refuse(mlp_art, tmp_path, case, capsys):
    change, needle = CASES[case]
    art = edit(mlp_art.path, tmp_path / "art", change)
    with pytest.raises(ArtifactError, match=needle):
        Artifact.load(art)
    with pytest.raises(ArtifactError, match=needle):  # the paths are checked even without hashing
        Artifact.load(art, verify=False)
    for argv in (
        ["bench", art, "--runs", "1", "--warmup", "0", "--batch", "1"],
        ["serve", art, "--port", "0", "--grpc-port", "-1"],
    ):
        rc = main([str(a) for a in argv])
        err = capsys.readouterr().err.strip()
        assert rc == 2, err
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
        assert needle in err, err


def test_an_intact_copy_still_loads(mlp_art, tmp_path, capsys):
    art = edit(mlp_art.path, tmp_path / "art", lambda m, d: None)
    assert Artifact.load(art).model_path == art / "model.onnx"
    assert main(["bench", str(art), "--runs", "1", "--warmup", "0", "--batch", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["runs"] == 1


def external(location_in_model="model.onnx.data", listed=True):
    """Move the weights to an external data file (ONNX Runtime opens it by the name the model holds)."""

    def change(m, d):
        import onnx

        model = onnx.load(d / "model.onnx")
        onnx.save_model(
            model, d / "model.onnx", save_as_external_data=True, location="model.onnx.data", size_threshold=0
        )
        if location_in_model != "model.onnx.data":
            model = onnx.load(d / "model.onnx", load_external_data=False)
            for t in model.graph.initializer:
                for e in t.external_data:
                    if e.key == "location":
                        e.value = location_in_model
            onnx.save_model(model, d / "model.onnx")
        for rel in ("model.onnx", "model.onnx.data") if listed else ("model.onnx",):
            m["files"][rel] = {"sha256": sha256_file(d / rel), "bytes": (d / rel).stat().st_size}

    return change


def test_external_data_must_be_listed(mlp_art, tmp_path, capsys):
    ok = edit(mlp_art.path, tmp_path / "ok", external())
    assert Artifact.load(ok) and main(["bench", str(ok), "--runs", "1", "--warmup", "0", "--batch", "1"]) == 0
    capsys.readouterr()
    unlisted = edit(mlp_art.path, tmp_path / "unlisted", external(listed=False))
    flip(unlisted / "model.onnx.data")
    with pytest.raises(ArtifactError, match="'model.onnx.data', which is not a file the manifest lists"):
        Artifact.load(unlisted)
    out = edit(mlp_art.path, tmp_path / "out", external("../elsewhere.data"))
    with pytest.raises(ArtifactError, match="climbs out of its folder"):
        Artifact.load(out)
    rc = main(["serve", str(unlisted), "--port", "0", "--grpc-port", "-1"])
    assert rc == 2 and "not a file the manifest lists" in capsys.readouterr().err


def test_a_folder_read_whole_holds_only_listed_files(mlp_art, tmp_path):
    def with_tokenizer(m, d):
        (d / "tokenizer").mkdir()
        (d / "tokenizer" / "vocab.txt").write_text("a\nb\n")
        m["files"]["tokenizer/vocab.txt"] = {"sha256": sha256_file(d / "tokenizer" / "vocab.txt"), "bytes": 4}

    art = edit(mlp_art.path, tmp_path / "art", with_tokenizer)
    assert Artifact.load(art)
    (art / "tokenizer" / "tokenizer.json").write_text("{}")  # swapped in beside the listed files
    with pytest.raises(ArtifactError, match="'tokenizer/tokenizer.json' is not listed"):
        Artifact.load(art)
