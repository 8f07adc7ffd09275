"""The hub's versions and tags: content-addressed pushes with lineage, verified pulls (a changed file is
refused), garbage collection, and hub references where directories are taken (load, serve)."""

import json
import shutil
import threading

import numpy as np
import pytest

from edgellm.errors import EdgeLLMError
from edgellm.hub import Hub, resolve_path


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGELLM_HUB", str(tmp_path / "hub"))
    return Hub()


def test_push_versions_tags_and_lineage(hub, minilm_artifact, tmp_path):
    e1 = hub.push(minilm_artifact.path, "minilm:fp32", tags=["staging"])
    assert e1["ref"] == "minilm:fp32@1" and e1["kind"] == "artifact"
    lin = e1["lineage"]
    assert lin["parity"]["passed"] and lin["target"]["name"] == "x86-server" and lin["source_model"]
    again = hub.push(minilm_artifact.path, "minilm:fp32", tags=["prod"])  # same files: same version
    assert again["version"] == 1 and hub.tags("minilm:fp32") == {"prod": 1, "staging": 1}
    changed = tmp_path / "changed"
    shutil.copytree(minilm_artifact.path, changed)
    (changed / "notes.txt").write_text("retrained\n")
    e2 = hub.push(changed, "minilm:fp32")
    assert e2["version"] == 2 and hub.entry("minilm:fp32")["version"] == 2
    assert hub.entry("minilm:fp32@prod")["version"] == 1 and hub.entry("minilm:fp32@1") == json.loads(
        (hub.root / "entries" / "minilm__fp32" / "1.json").read_text()
    )
    objects = [p for p in (hub.root / "objects").rglob("*") if p.is_file()]
    assert len(objects) == len(e1["files"]) + 1  # v2 shares every file of v1 but the new one
    assert [r["name"] for r in hub.list()] == ["minilm:fp32"] and hub.list()[0]["versions"] == [1, 2]


def test_pull_verifies_every_file_and_refuses_a_changed_one(hub, minilm_artifact, tmp_path):
    e = hub.push(minilm_artifact.path, "m")
    out = hub.pull("m@1", tmp_path / "out")
    from edgellm.export import Artifact

    assert Artifact.load(out).manifest["parity"]["passed"]  # the artifact's own hashes hold too
    rel, meta = next((r, m) for r, m in e["files"].items() if r.endswith(".onnx"))
    obj = hub.root / "objects" / meta["sha256"][:2] / meta["sha256"][2:]
    data = bytearray(obj.read_bytes())
    data[100] ^= 0xFF
    obj.write_bytes(bytes(data))
    with pytest.raises(EdgeLLMError, match=f"file '{rel}' does not match its hash"):
        hub.pull("m", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # nothing half-written
    with pytest.raises(EdgeLLMError, match="does not match its hash"):
        resolve_path("m@1")


def test_gc_keeps_tagged_and_recent_versions(hub, tmp_path):
    for i in range(3):
        d = tmp_path / f"v{i}"
        d.mkdir()
        (d / "w.bin").write_bytes(bytes([i]) * 1000)
        (d / "config.json").write_text("{}")
        hub.push(d, "toy", tags=["first"] if i == 0 else None)
    dry = hub.gc(keep_last=1, dry_run=True)
    assert dry["removed_entries"] == ["toy@2"] and (hub.root / "entries" / "toy" / "2.json").exists()
    r = hub.gc(keep_last=1)
    assert r["removed_entries"] == ["toy@2"] and r["removed_objects"] == 1 and hub.versions("toy") == [1, 3]
    assert hub.gc()["removed_objects"] == 0


def test_hub_references_work_where_directories_do(hub, small_lm, tmp_path):
    from edgellm.models import load
    from edgellm.serve import ModelConfig, serve_in_background

    hub.push(small_lm, "small-lm", tags=["prod"])
    m = load("small-lm@prod")  # checked out and verified, then an ordinary model directory
    assert m.task == "causal-lm" and m.name == "small-lm"
    from edgellm.export import export

    art = export(m, "x86-server", tmp_path / "art")
    hub.push(art.path, "small-lm:onnx")
    with serve_in_background([ModelConfig(resolve_path("small-lm:onnx"))]) as srv:
        assert "small-lm" in next(iter(srv.models))
    with pytest.raises(EdgeLLMError, match="neither a directory nor a model in the hub"):
        resolve_path("nothing-here@1")


def test_bad_references_and_names_are_named(hub, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("x")
    hub.push(d, "toy")
    for ref, needle in (
        ("toy@9", "no version 9"),
        ("toy@prod", "no tag 'prod'"),
        ("other", "has no model 'other'"),
        ("bad ref!", "not a hub reference"),
    ):
        with pytest.raises(EdgeLLMError, match=needle):
            hub.entry(ref)
    with pytest.raises(EdgeLLMError, match="not a hub name"):
        hub.push(d, "Bad Name")
    with pytest.raises(EdgeLLMError, match="not a tag"):
        hub.tag("toy@1", "7")
    with pytest.raises(EdgeLLMError, match="holds no files"):
        (tmp_path / "empty").mkdir()
        hub.push(tmp_path / "empty", "toy")


def test_concurrent_pushes_get_distinct_versions(hub, tmp_path):
    dirs = []
    for i in range(4):
        d = tmp_path / f"p{i}"
        d.mkdir()
        (d / "w.bin").write_bytes(np.random.default_rng(i).bytes(50_000))
        dirs.append(d)
    got = []
    threads = [
        threading.Thread(target=lambda d=d: got.append(hub.push(d, "shared")["version"])) for d in dirs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [1, 2, 3, 4] and hub.versions("shared") == [1, 2, 3, 4]


def test_cli_hub(tmp_path, capsys, small_lm):
    from edgellm.cli import main

    h = ["--hub", str(tmp_path / "h")]
    assert main(["hub", "push", str(small_lm), "--name", "tiny", "--tag", "prod", *h]) == 0
    assert "tiny@1" in capsys.readouterr().out
    assert main(["hub", "list", "--json", *h]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "tiny" and rows[0]["tags"] == {"prod": 1}
    assert main(["hub", "show", "tiny@prod", *h]) == 0
    assert json.loads(capsys.readouterr().out)["lineage"]["model_type"] == "llama"
    assert main(["hub", "pull", "tiny@1", "-o", str(tmp_path / "pulled"), *h]) == 0
    assert (tmp_path / "pulled" / "config.json").is_file()
    capsys.readouterr()
    assert main(["hub", "tag", "tiny@1", "stable", *h]) == 0
    assert main(["hub", "gc", "--keep-last", "1", *h]) == 0
    capsys.readouterr()
    assert main(["hub", "show", "tiny@9", *h]) == 2
    assert "no version 9" in capsys.readouterr().err
