"""Versioned datasets: a content-addressed store of shards, with commits, tags and verification.

Layout::

    STORE/objects/ab/cdef...        every file once, named by its sha256 (edgellm.hub.objects)
    STORE/commits/<id>.json         parent, message, time, files {path: sha256, bytes}, config, stats
    STORE/refs/HEAD                 the current commit id
    STORE/refs/tags/<name>          a named commit

A commit's id is the sha256 of its canonical JSON. Every write goes to a temporary file that is fsynced
and renamed: objects first, then the commit, then HEAD. A process killed at any point leaves the store
valid (at worst an unreferenced object or commit, and the temporary file it was writing) and never loses
a committed version. ``verify`` reports the temporary files such a kill left; ``gc`` removes them and the
objects no commit references. A commit holds ``STORE/.lock`` (an ``flock``, released by the kernel when
its process dies, even under ``kill -9``), so ``gc`` never removes the objects of a commit in progress.

A dataset version is written ``STORE@REF`` (REF: a tag, a commit id or its prefix, or HEAD); calibration,
training and evaluation record the commit they read, so artifacts' manifests carry it.

Example:
    >>> c = commit("data/store", "edgellm-out/clean", "pydoc, cleaned")     # doctest: +SKIP
    >>> tag("data/store", "v1", c["id"]); checkout("data/store", "v1", "work/v1")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgellm.data.files import hidden
from edgellm.errors import EdgeLLMError
from edgellm.hub.objects import ObjectCorrupt, ObjectMissing, ObjectStore, write_atomic

MARKER = ".edgellm-dataset.json"


class Store:
    def __init__(self, root: str | Path, *, create: bool = False) -> None:
        self.root = Path(root)
        self.objects = ObjectStore(self.root / "objects")
        if create:
            for d in ("objects", "commits", "refs/tags"):
                (self.root / d).mkdir(parents=True, exist_ok=True)
        elif not (self.root / "commits").is_dir():
            raise EdgeLLMError(
                f"'{root}' is not a dataset store",
                "create one with: edgellm data commit DIR --store STORE -m MSG",
            )

    # -- objects and refs ---------------------------------------------------------------------------
    def object_path(self, sha: str) -> Path:
        return self.objects.path(sha)

    def put(self, path: Path) -> str:
        return self.objects.put_file(path)

    @contextlib.contextmanager
    def _lock(self, *, wait: bool = True) -> Iterator[bool]:
        """Hold ``STORE/.lock``: yields True, or False when ``wait`` is off and a writer holds it (and
        True, without a lock, where the store is read-only: no one writes there)."""
        try:
            fh = open(self.root / ".lock", "a+")  # noqa: SIM115 - closed below
        except OSError:
            yield True
            return
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def tags(self) -> dict[str, str]:
        """Tag name -> commit id (the temporary files of an interrupted tag write are not tags)."""
        d = self.root / "refs" / "tags"
        return {p.name: p.read_text().strip() for p in sorted(d.glob("[!.]*")) if p.is_file()}

    def head(self) -> str | None:
        p = self.root / "refs" / "HEAD"
        return p.read_text().strip() or None if p.is_file() else None

    def resolve(self, ref: str = "HEAD") -> str:
        """A commit id from HEAD, a tag, or a (prefix of a) commit id."""
        if ref == "HEAD":
            h = self.head()
            if h is None:
                raise EdgeLLMError(f"store '{self.root}' has no commits yet", "commit a dataset first")
            return h
        t = self.root / "refs" / "tags" / ref
        if t.is_file():
            return t.read_text().strip()
        hits = [p.stem for p in (self.root / "commits").glob(f"{ref}*.json")] if len(ref) >= 4 else []
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise EdgeLLMError(f"'{ref}' matches {len(hits)} commits", "give more characters of the id")
        tags = sorted(self.tags())
        raise EdgeLLMError(
            f"dataset version '{ref}' does not exist in '{self.root}'",
            f"use a commit id (edgellm data log) or a tag ({', '.join(tags) or 'none yet'})",
        )

    def read_commit(self, ref: str = "HEAD") -> dict[str, Any]:
        cid = self.resolve(ref)
        p = self.root / "commits" / f"{cid}.json"
        if not p.is_file():
            raise EdgeLLMError(f"commit {cid} is missing from '{self.root}'", "run edgellm data verify")
        return json.loads(p.read_text())

    # -- verbs ----------------------------------------------------------------------------------------
    def commit(
        self,
        src: str | Path,
        message: str,
        *,
        config: Any = None,
        stats: Any = None,
        parent: str | None = "HEAD",
    ) -> dict[str, Any]:
        src = Path(src)
        if not src.is_dir():
            raise EdgeLLMError(f"'{src}' is not a folder", "commit the folder edgellm data clean wrote")
        files = sorted(f for f in src.rglob("*") if f.is_file() and f.name != MARKER)
        if not files:
            raise EdgeLLMError(f"'{src}' holds no files", "commit a folder with the dataset's shards")
        report = src / "_report" / "report.json"
        if config is None and stats is None and report.is_file():
            rep = json.loads(report.read_text())
            config = rep.get("config")
            stats = {k: rep.get(k) for k in ("documents_in", "documents_out", "duplicates", "pii", "steps")}
        with self._lock():  # gc waits for this commit; two commits take turns
            table = {}
            for f in files:
                table[str(f.relative_to(src))] = {"sha256": self.put(f), "bytes": f.stat().st_size}
            par = self.head() if parent == "HEAD" else parent
            body = {
                "parent": par,
                "message": message,
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "files": table,
                "config": config,
                "stats": stats,
            }
            cid = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            body = {"id": cid, **body}
            write_atomic(self.root / "commits" / f"{cid}.json", json.dumps(body, indent=2).encode())
            write_atomic(self.root / "refs" / "HEAD", cid.encode())
        return body

    def log(self, ref: str = "HEAD") -> list[dict[str, Any]]:
        out, cid = [], self.resolve(ref) if self.head() or ref != "HEAD" else None
        while cid:
            c = self.read_commit(cid)
            out.append(c)
            cid = c.get("parent")
        return out

    def tag(self, name: str, ref: str = "HEAD") -> str:
        if not name or "/" in name or name.startswith(".") or name == "HEAD":
            raise EdgeLLMError(f"'{name}' is not a valid tag name", "use letters, digits, '-', '_' and '.'")
        cid = self.resolve(ref)
        write_atomic(self.root / "refs" / "tags" / name, cid.encode())
        return cid

    def diff(self, a: str, b: str) -> dict[str, Any]:
        ca, cb = self.read_commit(a), self.read_commit(b)
        fa, fb = ca["files"], cb["files"]
        stats_a, stats_b = ca.get("stats") or {}, cb.get("stats") or {}
        return {
            "from": ca["id"],
            "to": cb["id"],
            "added": sorted(set(fb) - set(fa)),
            "removed": sorted(set(fa) - set(fb)),
            "changed": sorted(k for k in set(fa) & set(fb) if fa[k]["sha256"] != fb[k]["sha256"]),
            "documents": [stats_a.get("documents_out"), stats_b.get("documents_out")],
            "config_changed": ca.get("config") != cb.get("config"),
        }

    def checkout(self, ref: str, dest: str | Path, *, force: bool = False) -> dict[str, Any]:
        from edgellm.utils.fs import atomic_dir

        c = self.read_commit(ref)
        with atomic_dir(dest, force=force) as tmp:
            try:
                self.objects.checkout({rel: m["sha256"] for rel, m in c["files"].items()}, tmp)
            except (ObjectMissing, ObjectCorrupt) as exc:
                raise EdgeLLMError(
                    f"object {exc.digest[:12]} of '{exc.rel}' is missing or corrupt",
                    "run edgellm data verify",
                ) from None
            (tmp / MARKER).write_text(
                json.dumps({"store": str(self.root.resolve()), "commit": c["id"]}) + "\n"
            )
        return c

    def verify(self) -> list[str]:
        """Problems found (empty: the store is valid): refs to missing commits, missing/corrupt objects,
        and (as one entry) the temporary files interrupted writes left (``gc`` removes those)."""
        problems = []
        commits = {p.stem for p in (self.root / "commits").glob("[!.]*.json")}
        refs = {"refs/HEAD": self.head(), **{f"refs/tags/{t}": c for t, c in self.tags().items()}}
        for r, cid in refs.items():
            if cid is not None and cid not in commits:
                problems.append(f"{r} points to a missing commit")
        checked: set[str] = set()
        for cid in sorted(commits):
            try:
                c = json.loads((self.root / "commits" / f"{cid}.json").read_text())
            except ValueError:
                problems.append(f"commit {cid} is not valid JSON")
                continue
            if c.get("parent") and c["parent"] not in commits:
                problems.append(f"commit {cid[:12]} has a missing parent {c['parent'][:12]}")
            for rel, meta in c["files"].items():
                sha = meta["sha256"]
                if sha in checked:
                    continue
                if not self.objects.has(sha):
                    problems.append(f"object {sha[:12]} ({rel}, commit {cid[:12]}) is missing")
                elif not self.objects.verify(sha):
                    problems.append(f"object {sha[:12]} ({rel}, commit {cid[:12]}) is corrupt")
                else:
                    checked.add(sha)
        left = self.leftovers()
        if left:
            names = ", ".join(str(p.relative_to(self.root)) for p in left[:3])
            problems.append(
                f"{len(left)} temporary file(s) left by an interrupted write "
                f"({names}{', ...' if len(left) > 3 else ''})"
            )
        return problems

    def leftovers(self) -> list[Path]:
        """The temporary files interrupted writes left: objects' (``objects/ab/.obj.*``), commits' and refs'
        (``.NAME.*`` beside them). Empty while a commit runs (its temporary files are in use)."""
        with self._lock(wait=False) as free:
            return self.objects.temporaries() + self._written_temporaries() if free else []

    def _written_temporaries(self) -> list[Path]:
        """``write_atomic``'s temporary files beside commits and refs (no commit or tag starts with '.')."""
        found: list[Path] = []
        for d in (self.root / "commits", self.root / "refs", self.root / "refs" / "tags"):
            found += sorted(p for p in d.glob(".*") if p.is_file())
        return found

    def gc(self, *, dry_run: bool = False) -> dict[str, int]:
        """Remove the temporary files interrupted writes left and the objects no commit references
        (every commit is kept, tagged or not); returns the counts and the bytes freed.

        Raises EdgeLLMError while a commit runs, or when a commit cannot be read (its objects would be
        taken for garbage).
        """
        with self._lock(wait=False) as free:
            if not free:
                raise EdgeLLMError(
                    f"store '{self.root}' is busy: a commit is in progress",
                    "run gc again once it has finished",
                )
            keep: set[str] = set()
            for p in sorted((self.root / "commits").glob("[!.]*.json")):
                try:
                    keep.update(m["sha256"] for m in json.loads(p.read_text())["files"].values())
                except (ValueError, KeyError, TypeError, AttributeError):
                    raise EdgeLLMError(
                        f"commit {p.stem[:12]} cannot be read, so gc cannot tell which objects it needs",
                        "restore commits/ from a backup (nothing was removed)",
                    ) from None
            temps = self.objects.temporaries()
            count, freed = self.objects.gc(keep, dry_run=dry_run)
            others = self._written_temporaries()
            for p in others:
                freed += p.stat().st_size
                if not dry_run:
                    p.unlink()
        return {
            "temporary": len(temps) + len(others),
            "unreferenced": count - len(temps),
            "removed": count + len(others),
            "bytes": freed,
        }


def parse_version(source: str) -> tuple[Path, str] | None:
    """``STORE@REF`` -> (store, ref), when STORE is a dataset store; else None."""
    if "@" not in source:
        return None
    root, _, ref = source.rpartition("@")
    if root and (Path(root) / "commits").is_dir():
        return Path(root), ref or "HEAD"
    return None


def dataset_version(source: str | Path | None) -> dict[str, Any] | None:
    """The dataset version a corpus source stands for: ``STORE@REF`` or a checked-out folder."""
    if source is None:
        return None
    parsed = parse_version(str(source))
    if parsed is not None:
        store, ref = parsed
        return {"store": str(store.resolve()), "commit": Store(store).resolve(ref), "ref": ref}
    marker = Path(source) / MARKER
    if marker.is_file():
        return json.loads(marker.read_text())
    return None


def version_files(source: str) -> tuple[list[Path], dict[str, Any]] | None:
    """For ``STORE@REF``: the object files of that commit (with their original suffixes) and the version."""
    parsed = parse_version(source)
    if parsed is None:
        return None
    store = Store(parsed[0])
    c = store.read_commit(parsed[1])
    files = []
    for rel, meta in sorted(c["files"].items()):
        if rel.endswith((".jsonl", ".txt")) and not hidden(Path(rel)):
            files.append((store.object_path(meta["sha256"]), Path(rel).suffix))
    return [f for f, _ in files], {"store": str(store.root.resolve()), "commit": c["id"], "ref": parsed[1]}
