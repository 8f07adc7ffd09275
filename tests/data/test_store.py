"""The versioned dataset store: commits, log, diff, tags, checkout, verify; atomic under a kill; the
dataset version flows into calibration records."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from edgellm.data.store import Store, dataset_version
from edgellm.errors import EdgeLLMError


def shards(d, n, start=0, text="doc"):
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (d / f"part-{i:05d}.jsonl").write_text(
            "".join(
                json.dumps({"id": f"{start}-{i}-{j}", "text": f"{text} {i} {j} " * 5}) + "\n"
                for j in range(20)
            )
        )
    return d


def test_commit_log_tag_diff_checkout_verify(tmp_path):
    s = Store(tmp_path / "store", create=True)
    c1 = s.commit(shards(tmp_path / "v1", 2), "first")
    (tmp_path / "v1" / "part-00001.jsonl").write_text('{"id": "x", "text": "changed"}\n')
    shards(tmp_path / "v1", 1, start=9)  # part-00000 rewritten with other content
    (tmp_path / "v1" / "part-00002.jsonl").write_text('{"id": "y", "text": "new"}\n')
    c2 = s.commit(tmp_path / "v1", "second")
    assert c2["parent"] == c1["id"] and s.head() == c2["id"]
    assert [c["message"] for c in s.log()] == ["second", "first"]
    s.tag("v1", c1["id"][:8])
    assert s.resolve("v1") == c1["id"]
    d = s.diff("v1", "HEAD")
    assert d["added"] == ["part-00002.jsonl"] and set(d["changed"]) == {
        "part-00000.jsonl",
        "part-00001.jsonl",
    }
    out = tmp_path / "co"
    s.checkout("v1", out)
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["part-00000.jsonl", "part-00001.jsonl"]
    assert json.loads((out / ".edgellm-dataset.json").read_text())["commit"] == c1["id"]
    assert dataset_version(out)["commit"] == c1["id"]
    assert dataset_version(f"{tmp_path / 'store'}@v1")["commit"] == c1["id"]
    assert s.verify() == []
    # identical content is stored once
    assert (
        len(list((tmp_path / "store/objects").rglob("*"))) - len(list((tmp_path / "store/objects").glob("*")))
        == 5
    )
    with pytest.raises(EdgeLLMError, match="does not exist.*tag"):
        s.resolve("v9")
    # corruption is found and named
    obj = s.object_path(c1["files"]["part-00001.jsonl"]["sha256"])
    obj.write_text("tampered")
    problems = s.verify()
    assert len(problems) == 1 and "corrupt" in problems[0]
    with pytest.raises(EdgeLLMError, match="missing or corrupt"):
        s.checkout("v1", tmp_path / "co2")
    assert not (tmp_path / "co2").exists()


KILLER = """
import sys
from pathlib import Path
from edgellm.data.store import Store
s = Store(sys.argv[1], create=True)
print("go", flush=True)
s.commit(sys.argv[2], "big")
"""


def test_a_commit_killed_midway_leaves_the_store_valid(tmp_path):
    s = Store(tmp_path / "store", create=True)
    first = s.commit(shards(tmp_path / "small", 1), "committed before")
    big = tmp_path / "big"
    big.mkdir()
    blob = os.urandom(1 << 20)
    for i in range(120):  # 120 MB of distinct files: the commit takes a while
        (big / f"part-{i:05d}.bin").write_bytes(blob + i.to_bytes(4, "little"))
    p = subprocess.Popen(
        [sys.executable, "-c", KILLER, str(tmp_path / "store"), str(big)], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout.readline().strip() == "go"
    objects = tmp_path / "store/objects"
    before = sum(1 for _ in objects.rglob("*"))
    deadline = time.monotonic() + 60
    while sum(1 for _ in objects.rglob("*")) < before + 20 and time.monotonic() < deadline:
        time.sleep(0.005)  # kill once the commit is under way: some objects written, most not
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    s = Store(tmp_path / "store")
    problems = s.verify()  # no dangling ref, no corrupt object; at most the temporary file of the kill
    assert all("temporary file" in p for p in problems) and len(problems) == len(s.leftovers()[:1])
    s.gc()
    assert s.verify() == [] and s.leftovers() == []
    assert s.head() == first["id"]  # the half-done commit never became HEAD
    assert s.read_commit("HEAD")["message"] == "committed before"
    s.checkout("HEAD", tmp_path / "again")  # the committed version is whole
    assert len(Store(tmp_path / "store").log()) == 1


# stops a commit half-way through writing its third object (and, with "commit", through writing the
# commit record), says so, and waits for the SIGKILL
PAUSER = """
import os, sys, time
from pathlib import Path
import edgellm.hub.objects as objects
from edgellm.data.store import Store

s = Store(sys.argv[1], create=True)
calls, copy, atomic = [0], objects.shutil.copyfile, objects.os.replace
def half_copy(src, dst):
    calls[0] += 1
    if calls[0] == 3:
        Path(dst).write_bytes(Path(src).read_bytes()[:1000])
        print("mid-object", flush=True)
        time.sleep(60)
    return copy(src, dst)
def half_replace(tmp, dst):
    if str(dst).endswith(".json") and sys.argv[3] == "commit":
        print("mid-commit", flush=True)
        time.sleep(60)
    return atomic(tmp, dst)
objects.shutil.copyfile = half_copy if sys.argv[3] == "object" else copy
objects.os.replace = half_replace
s.commit(sys.argv[2], "killed")
"""


@pytest.mark.parametrize("where", ["object", "commit"])
def test_temporary_files_of_a_killed_commit_are_reported_and_cleaned(tmp_path, capsys, where):
    from edgellm.cli import main

    root = tmp_path / "store"
    s = Store(root, create=True)
    kept = [s.commit(shards(tmp_path / "a", 2), "one"), s.commit(shards(tmp_path / "b", 2, text="b"), "two")]
    s.tag("v1", kept[0]["id"])
    p = subprocess.Popen(
        [sys.executable, "-c", PAUSER, str(root), str(shards(tmp_path / "c", 4, text="c")), where],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().strip() == f"mid-{where}"
    # while the commit runs, its temporary files are in use: not reported, and gc refuses to run
    assert s.leftovers() == []
    with pytest.raises(EdgeLLMError, match="busy"):
        s.gc()
    p.send_signal(signal.SIGKILL)
    p.wait()
    left = s.leftovers()
    if where == "object":
        assert [x.name.startswith(".obj.") and x.parent.parent.name == "objects" for x in left] == [True]
    else:
        assert len(left) == 1 and left[0].parent.name == "commits" and left[0].name.startswith(".")
    assert s.head() == kept[1]["id"]
    # data verify names them and fails; the hint says how to clean
    assert main(["data", "verify", "--store", str(root)]) == 2
    err = capsys.readouterr().err
    assert "1 temporary file(s) left by an interrupted write" in err and "--fix" in err
    # gc --dry-run says so and removes nothing; the unreferenced objects of the killed commit count too
    assert main(["data", "gc", "--dry-run", "--store", str(root)]) == 0
    out = capsys.readouterr().out
    unreferenced = 2 if where == "object" else 4  # objects the killed commit had finished
    assert f"would remove 1 temporary file(s) and {unreferenced} unreferenced object(s)" in out
    assert s.leftovers() == left
    assert main(["data", "verify", "--fix", "--store", str(root)]) == 0
    out = capsys.readouterr().out
    assert "removed 1 temporary file(s)" in out and "every version verified" in out
    assert s.leftovers() == [] and s.verify() == []
    assert not [x for x in (root / "objects").rglob(".obj.*")]
    # every committed version is whole; what nothing referenced is gone
    referenced = {m["sha256"] for c in kept for m in c["files"].values()}
    stored = {x.parent.name + x.name for x in (root / "objects").rglob("*") if x.is_file()}
    assert stored == referenced
    for c in kept:
        co = s.checkout(c["id"], tmp_path / f"co-{c['id'][:8]}")
        assert co["id"] == c["id"]
    assert [c["message"] for c in s.log()] == ["two", "one"] and s.resolve("v1") == kept[0]["id"]
    assert main(["data", "gc", "--store", str(root)]) == 0
    assert "removed 0 temporary file(s) and 0 unreferenced object(s)" in capsys.readouterr().out


def test_gc_refuses_when_a_commit_is_unreadable(tmp_path):
    s = Store(tmp_path / "store", create=True)
    c = s.commit(shards(tmp_path / "a", 1), "one")
    (tmp_path / "store" / "commits" / f"{c['id']}.json").write_text("{not json")
    with pytest.raises(EdgeLLMError, match="cannot be read"):
        s.gc()
    assert s.objects.has(c["files"]["part-00000.jsonl"]["sha256"])  # nothing was removed


def test_dataset_version_is_recorded_by_calibration(tmp_path):
    from edgellm.compress.calibration import Batches

    s = Store(tmp_path / "store", create=True)
    c = s.commit(shards(tmp_path / "d", 1), "calib")
    s.tag("calib-v1")
    src = f"{tmp_path / 'store'}@calib-v1"
    from edgellm.data import read_corpus

    docs = read_corpus(src)
    assert len(docs) == 20 and docs[0].text.startswith("doc 0 0")
    d = Batches([], f"{src}:calibration", 1, 1).describe()
    assert d["dataset_version"]["commit"] == c["id"] and d["dataset_version"]["ref"] == "calib-v1"
    with pytest.raises(EdgeLLMError, match="does not exist"):
        read_corpus(f"{tmp_path / 'store'}@nope")


def test_cli_data_store_round_trip(tmp_path, capsys):
    from edgellm.cli import main

    store = str(tmp_path / "st")
    src = shards(tmp_path / "v", 2)
    assert main(["data", "commit", str(src), "-m", "one", "--store", store]) == 0
    assert main(["data", "tag", "v1", "--store", store]) == 0
    assert main(["data", "log", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "one" in out and "[v1]" in out
    assert main(["data", "checkout", "v1", "-o", str(tmp_path / "co"), "--store", store]) == 0
    assert main(["data", "verify", "--store", store]) == 0
    assert main(["data", "diff", "v1", "HEAD", "--store", store]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 2)[-1] or "{}") is not None
    assert main(["data", "checkout", "v7", "-o", str(tmp_path / "x"), "--store", store]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_artifact_calibrated_on_a_dataset_version_carries_it(tmp_path, small_llm):
    pytest.importorskip("onnxruntime")
    from edgellm.data import pydoc_topics
    from edgellm.pipeline.export_many import export_at

    d = tmp_path / "calib"
    d.mkdir()
    (d / "part-00000.jsonl").write_text(
        "".join(json.dumps({"id": x.id, "text": x.text}) + "\n" for x in pydoc_topics()[:60])
    )
    s = Store(tmp_path / "store", create=True)
    c = s.commit(d, "calibration text")
    s.tag("calib-v1")
    art = export_at(
        small_llm,
        "x86-server",
        tmp_path / "art",
        precision="int8-static",
        calib=f"{tmp_path / 'store'}@calib-v1",
    )
    version = art.manifest["calibration_dataset"]["dataset_version"]
    assert version["commit"] == c["id"] and version["ref"] == "calib-v1"
