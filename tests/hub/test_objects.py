"""The content-addressed object store under the hub and the dataset store: one object per content,
checkouts verify every copy (a changed object is refused), gc keeps what is referenced."""

import hashlib

import pytest

from edgellm.hub.objects import ObjectCorrupt, ObjectMissing, ObjectStore, write_atomic


def test_same_content_same_digest_stored_once(tmp_path):
    objects = ObjectStore(tmp_path / "objects")
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"weights" * 100)
    b.write_bytes(b"weights" * 100)
    da, db = objects.put_file(a), objects.put_file(b)
    assert da == db == hashlib.sha256(b"weights" * 100).hexdigest() == objects.put_bytes(b"weights" * 100)
    assert objects.path(da) == tmp_path / "objects" / da[:2] / da[2:]  # today's layout: ab/cdef...
    assert [p for p in (tmp_path / "objects").rglob("*") if p.is_file()] == [objects.path(da)]
    assert objects.has(da) and objects.verify(da) and not objects.has("0" * 64)


def test_a_changed_object_is_refused_on_checkout(tmp_path):
    objects = ObjectStore(tmp_path / "objects")
    good, bad = objects.put_bytes(b"good"), objects.put_bytes(b"bad")
    objects.checkout({"x/good.txt": good}, tmp_path / "out")
    assert (tmp_path / "out" / "x" / "good.txt").read_bytes() == b"good"
    objects.path(bad).write_bytes(b"tampered")
    assert not objects.verify(bad)
    with pytest.raises(ObjectCorrupt, match="does not match its hash") as exc:
        objects.checkout({"bad.txt": bad}, tmp_path / "out2")
    assert exc.value.rel == "bad.txt" and exc.value.got == hashlib.sha256(b"tampered").hexdigest()
    with pytest.raises(ObjectMissing, match="missing"):
        objects.checkout({"none.txt": "f" * 64}, tmp_path / "out3")


def test_gc_keeps_referenced_and_drops_unreferenced(tmp_path):
    objects = ObjectStore(tmp_path / "objects")
    keep, drop = objects.put_bytes(b"keep"), objects.put_bytes(b"drop" * 10)
    stray = objects.path(keep).parent / ".obj.killed"  # a writer killed midway
    stray.write_bytes(b"x")
    assert objects.gc({keep}, dry_run=True) == (2, 41) and objects.has(drop)
    assert objects.gc({keep}) == (2, 41)
    assert objects.verify(keep) and not objects.has(drop) and not stray.exists()
    assert objects.gc({keep}) == (0, 0)
    assert ObjectStore(tmp_path / "nowhere").gc(set()) == (0, 0)


def test_write_atomic_replaces_whole_files(tmp_path):
    p = tmp_path / "refs" / "HEAD"
    write_atomic(p, b"one")
    write_atomic(p, b"two")
    assert p.read_bytes() == b"two" and [q.name for q in p.parent.iterdir()] == ["HEAD"]
