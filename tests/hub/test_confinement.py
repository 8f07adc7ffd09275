"""Hub entries are confined: an entry (or a data commit's file table) whose paths leave the destination is
refused before anything is written, with a valid object hash or a wrong one, by ``pull``, by the checkout
behind ``serve NAME@V`` and by the CLI; nothing is left outside the destination nor in it."""

import hashlib
import json

import pytest

from edgellm.cli import main
from edgellm.errors import EdgeLLMError
from edgellm.hub import Hub, ObjectStore, resolve_path
from edgellm.hub.objects import UnsafeEntry

HOSTILE = {
    "dotdot": "../../x",
    "dotdot-inner": "sub/../../../x",
    "absolute": "/ABS/x",  # ABS is replaced by a folder of the test's own
    "nul": "model\x00.onnx",
    "backslash": "..\\..\\x",
    "drive": "C:/x",
    "empty-part": "a//b",
    "dot": "./a",
}


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture()
def world(tmp_path):
    """A hub with one honest entry ``m@1`` and a sandbox: every escape would land inside ``tmp_path``."""
    hub = Hub(tmp_path / "hub")
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"weights" * 100)
    (src / "config.json").write_text("{}")
    hub.push(src, "m")
    (tmp_path / "abs").mkdir()
    (tmp_path / "deep" / "er").mkdir(parents=True)
    return hub, tmp_path


def plant(hub, rel, *, good_hash=True, version=2):
    """Write entry ``m@version`` by hand, as a hostile hub would hold: one file at ``rel``."""
    e = json.loads((hub.root / "entries" / "m" / "1.json").read_text())
    digest = e["files"]["model.onnx"]["sha256"] if good_hash else hashlib.sha256(b"other").hexdigest()
    e.update(version=version, ref=f"m@{version}")
    e["files"] = {"config.json": e["files"]["config.json"], rel: {"sha256": digest, "bytes": 700}}
    (hub.root / "entries" / "m" / f"{version}.json").write_text(json.dumps(e))


@pytest.mark.parametrize("good_hash", [True, False], ids=["valid-hash", "wrong-hash"])
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_pull_and_checkout_refuse_paths_that_leave(world, kind, good_hash):
    hub, root = world
    rel = HOSTILE[kind].replace("/ABS", str(root / "abs"))
    plant(hub, rel, good_hash=good_hash)
    before = files_under(root)
    dest = root / "deep" / "er" / "out"
    with pytest.raises(EdgeLLMError, match="malformed or unsafe") as exc:
        hub.pull("m@2", dest)
    assert "refused" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(EdgeLLMError, match="malformed or unsafe"):
        resolve_path("m@2", hub.root)  # the checkout behind serve NAME@V
    assert files_under(root) == before  # nothing outside, no destination, no temporary folder
    assert not dest.exists() and not (hub.root / "checkouts" / "m" / "2").exists()
    # the honest version still pulls
    assert sorted(p.name for p in hub.pull("m@1", dest).iterdir()) == ["config.json", "model.onnx"]


def test_cli_pull_and_serve_exit_2_with_one_line(world, capsys, monkeypatch):
    hub, root = world
    monkeypatch.setenv("EDGELLM_HUB", str(hub.root))
    plant(hub, "../../escaped")
    before = files_under(root)
    rc = main(["hub", "pull", "m@2", "-o", str(root / "deep" / "out"), "--hub", str(hub.root)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and len(err.splitlines()) == 1 and "'../../escaped'" in err
    for argv in (["hub", "show", "m@2"], ["serve", "m@2", "--port", "0", "--grpc-port", "-1"]):
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "unsafe" in err and len(err.splitlines()) == 1, err
    assert files_under(root) == before


def test_an_entry_that_names_another_entry_or_has_bad_sizes_is_refused(world):
    hub, _ = world
    e = json.loads((hub.root / "entries" / "m" / "1.json").read_text())
    (hub.root / "entries" / "m" / "2.json").write_text(json.dumps({**e, "name": "../../x", "version": 2}))
    with pytest.raises(EdgeLLMError, match="says it is '../../x'@2"):
        hub.entry("m@2")
    bad = {**e, "version": 3, "files": {"model.onnx": {**e["files"]["model.onnx"], "bytes": "7"}}}
    (hub.root / "entries" / "m" / "3.json").write_text(json.dumps(bad))
    with pytest.raises(EdgeLLMError, match="size is not a non-negative integer"):
        hub.entry("m@3")
    (hub.root / "tags" / "m.json").parent.mkdir(exist_ok=True)
    (hub.root / "tags" / "m.json").write_text(json.dumps({"prod": "../../1"}))
    with pytest.raises(EdgeLLMError, match="tag file .* is malformed"):
        hub.entry("m@prod")
    (hub.root / "entries" / "m" / "notes.json").write_text("{}")  # not a version: ignored
    assert hub.versions("m") == [1, 2, 3]


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_object_checkout_refuses_before_writing(tmp_path, kind):
    """The object store's checkout (the hub's and the data store's) checks every path first."""
    store = ObjectStore(tmp_path / "objects")
    good = store.put_bytes(b"fine")
    into = tmp_path / "a" / "b" / "into"
    into.mkdir(parents=True)
    rel = HOSTILE[kind].replace("/ABS", str(tmp_path / "abs"))
    with pytest.raises(UnsafeEntry):
        store.checkout({"first.txt": good, rel: good}, into)
    assert files_under(into) == [] and files_under(tmp_path / "a") == ["b", "b/into"]
    with pytest.raises(UnsafeEntry, match="not 64 hex digits"):
        store.checkout({"ok.txt": "../../../etc/passwd"}, into)
    with pytest.raises(UnsafeEntry, match="both a file and a folder"):
        store.checkout({"a": good, "a/b": good}, into)
    assert files_under(into) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["hub", "push", ".", "--name", "n" * 300],
        ["hub", "show", "n" * 300 + "@1"],
        ["hub", "pull", "n" * 300, "-o", "out"],
        ["hub", "show", "n@" + "t" * 300],
        ["hub", "push", ".", "--name", "n", "--tag", "t" * 300],
        ["serve", "n" * 300],
    ],
    ids=["push-name", "show-name", "pull-name", "show-tag", "push-tag", "serve-ref"],
)
def test_long_names_exit_2_with_one_line(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EDGELLM_HUB", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "characters" in err or "too long" in err, err
