"""Content-addressed objects: every file once, named by its sha256, under both the model hub and the
dataset store.

Layout::

    ROOT/ab/cdef...        the object whose sha256 is abcdef...

An object is written to a temporary file beside its final name, fsynced, checked against its digest and
renamed, so a reader never sees half an object and a killed writer leaves at most a stray temporary file
(which ``gc`` removes). A checkout copies objects out and verifies every copy against its digest.

Example:
    >>> objects = ObjectStore("hub/objects")                   # doctest: +SKIP
    >>> digest = objects.put_file("model.onnx")                # doctest: +SKIP
    >>> objects.checkout({"model.onnx": digest}, Path("out"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from edgellm.errors import EdgeLLMError
from edgellm.utils.fs import sha256_file
from edgellm.utils.paths import inside, prefix_clash, relpath_problem

DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


class ObjectMissing(EdgeLLMError):
    """An object a checkout needs is not in the store."""

    def __init__(self, rel: str, digest: str, path: Path) -> None:
        super().__init__(f"object {digest[:12]} of '{rel}' is missing ({path})")
        self.rel, self.digest, self.path = rel, digest, path


class UnsafeEntry(EdgeLLMError):
    """A record (hub entry, data commit) names a file outside its folder, or an object by a bad digest."""

    def __init__(self, rel: object, problem: str) -> None:
        super().__init__(
            f"file {rel!r}: {problem}; refused before anything was written",
            "the record was edited or comes from an untrusted copy: restore it, or push/commit again",
        )
        self.rel, self.problem = rel, problem


class ObjectCorrupt(EdgeLLMError):
    """An object's content no longer hashes to its name: the store was changed."""

    def __init__(self, rel: str, digest: str, got: str) -> None:
        super().__init__(f"object {digest[:12]} of '{rel}' does not match its hash (sha256 {got[:12]}...)")
        self.rel, self.digest, self.got = rel, digest, got


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a unique temporary file beside it, fsynced, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ObjectStore:
    """The objects under ``root`` (``HUB/objects``, ``STORE/objects``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def verify(self, digest: str) -> bool:
        """The object is there and its content hashes to ``digest``."""
        p = self.path(digest)
        return p.is_file() and sha256_file(p) == digest

    def put_file(self, src: str | Path) -> str:
        """Store the file ``src`` (once: an object already there is kept) and return its digest."""
        src = Path(src)
        digest = sha256_file(src)
        self._install(digest, lambda tmp: shutil.copyfile(src, tmp), src)
        return digest

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self._install(digest, lambda tmp: Path(tmp).write_bytes(data), None)
        return digest

    def _install(self, digest: str, write: Callable[[str], object], src: Path | None) -> None:
        dst = self.path(digest)
        if dst.exists():
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".obj.", dir=dst.parent)
        os.close(fd)
        try:
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            if sha256_file(tmp) != digest:  # the source changed while it was copied
                raise EdgeLLMError(
                    f"{src} changed while it was stored", "commit or push a folder nothing writes to"
                )
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def checkout(self, files: Mapping[str, str], into: Path) -> None:
        """Copy each object of ``files`` (relative path -> digest) to ``into / path``, verifying every
        copy; raises ``UnsafeEntry`` (before anything is written: a path that leaves ``into``, a bad
        digest), ``ObjectMissing`` / ``ObjectCorrupt``. ``into`` is meant to be a temporary directory
        (``utils.fs.atomic_dir``) so that a refused checkout leaves nothing behind."""
        check_files(files)
        for rel, digest in files.items():
            obj = self.path(digest)
            if not obj.is_file():
                raise ObjectMissing(rel, digest, obj)
            target = into / rel
            if not inside(into, target.parent):  # belt and braces: check_files already refused it
                raise UnsafeEntry(rel, "it leaves the folder it is checked out into")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(obj, target)
            got = sha256_file(target)
            if got != digest:
                raise ObjectCorrupt(rel, digest, got)

    def temporaries(self) -> list[Path]:
        """The temporary files a killed writer left (``ab/.obj.*``): never objects, safe to remove once no
        writer runs (``gc`` removes them)."""
        return sorted(p for p in self.root.glob("*/.obj.*") if p.is_file()) if self.root.is_dir() else []

    def gc(self, keep: set[str], *, dry_run: bool = False) -> tuple[int, int]:
        """Remove every file under the store that is not an object of ``keep`` (unreferenced objects and
        stray temporary files); returns (files removed, bytes freed)."""
        count, freed = 0, 0
        for obj in self.root.rglob("*") if self.root.is_dir() else []:
            if obj.is_file() and obj.parent.name + obj.name not in keep:
                freed += obj.stat().st_size
                count += 1
                if not dry_run:
                    obj.unlink()
        return count, freed


def check_files(files: object) -> None:
    """Refuse (``UnsafeEntry``) a file table (relative path -> sha256) that could write outside its folder:
    a path that is absolute, climbs with ``..``, holds a NUL, a backslash or an empty component, is both a
    file and a folder of another; or a digest that is not 64 lowercase hex digits."""
    if not isinstance(files, Mapping):
        raise UnsafeEntry("*", "the file table is not a mapping of path -> sha256")
    for rel, digest in files.items():
        problem = relpath_problem(rel)
        if problem:
            raise UnsafeEntry(rel, problem)
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise UnsafeEntry(rel, f"its sha256 {str(digest)[:80]!r} is not 64 hex digits")
    clash = prefix_clash(list(files))
    if clash:
        raise UnsafeEntry(clash, "it is both a file and a folder of another file")


__all__ = ["ObjectCorrupt", "ObjectMissing", "ObjectStore", "UnsafeEntry", "check_files", "write_atomic"]
