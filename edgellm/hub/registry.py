"""The hub's versions and tags: a push adds the next version of a name (its files as objects, its
lineage, who pushed it from where), tags name versions, pulls and checkouts verify every file, and gc
drops old untagged versions and the objects nothing references.

Layout (see ``edgellm.hub``): ``objects/`` (``edgellm.hub.objects``), ``entries/NAME/VERSION.json``,
``tags/NAME.json`` (tag -> version), ``checkouts/NAME/VERSION/`` and the ``.lock`` file under which
versions are allocated.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.hub.lineage import gather_lineage
from edgellm.hub.objects import (
    ObjectCorrupt,
    ObjectMissing,
    ObjectStore,
    UnsafeEntry,
    check_files,
    write_atomic,
)
from edgellm.hub.refs import check_name, check_tag, default_root, parse_ref, slug, unslug


def _write_json(path: Path, obj: Any, **kw: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, **kw) + "\n").encode())


class Hub:
    """A hub directory (see ``edgellm.hub``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.objects = ObjectStore(self.root / "objects")

    # -- paths ------------------------------------------------------------------------------------
    def _entries(self, name: str) -> Path:
        return self.root / "entries" / slug(name)

    def _entry_file(self, name: str, version: int) -> Path:
        return self._entries(name) / f"{version}.json"

    def _tags_file(self, name: str) -> Path:
        return self.root / "tags" / (slug(name) + ".json")

    def _checkout(self, name: str, version: int) -> Path:
        return self.root / "checkouts" / slug(name) / str(version)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- reading ----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        base = self.root / "entries"
        return sorted(unslug(p.name) for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def versions(self, name: str) -> list[int]:
        d = self._entries(name)
        return sorted(int(p.stem) for p in d.glob("*.json") if p.stem.isdigit()) if d.is_dir() else []

    def tags(self, name: str) -> dict[str, int]:
        f = self._tags_file(name)
        tags = _load_json(f, f"the tags of '{name}'") if f.is_file() else {}
        if not isinstance(tags, dict) or not all(
            isinstance(t, str) and type(v) is int and v > 0 for t, v in tags.items()
        ):
            raise EdgeLLMError(
                f"the hub's tag file {f} is malformed (it must map tag -> version number)",
                "fix or delete it, then tag again: edgellm hub tag NAME@VERSION TAG",
            )
        return tags

    def _read(self, name: str, version: int) -> dict[str, Any]:
        """The entry ``name@version``, checked before anything uses it: its name and version are the ones
        asked for and every file it lists stays inside the folder it is pulled into."""
        f = self._entry_file(name, version)
        e = _load_json(f, f"hub entry {name}@{version}")
        problem = None
        if not isinstance(e, dict) or not isinstance(e.get("files"), dict) or not e["files"]:
            problem = "it has no table of files"
        elif e.get("name") != name or e.get("version") != version:
            problem = f"it says it is {e.get('name')!r}@{e.get('version')!r}"
        else:
            try:
                check_files(
                    {rel: m.get("sha256") if isinstance(m, dict) else None for rel, m in e["files"].items()}
                )
            except UnsafeEntry as exc:
                problem = f"file {exc.rel!r}: {exc.problem}"
            else:
                sizes = [m.get("bytes") for m in e["files"].values()]
                if not all(type(b) is int and b >= 0 for b in sizes):
                    problem = "a file's size is not a non-negative integer"
        if problem:
            raise EdgeLLMError(
                f"hub entry {name}@{version} ({f}) is malformed or unsafe: {problem}; refused, nothing written",
                "push the model again from its source; never edit entries by hand",
            )
        return e

    def entry(self, ref: str) -> dict[str, Any]:
        """The entry a reference names (its JSON record)."""
        name, sel = parse_ref(ref)
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise EdgeLLMError(f"the hub at {self.root} has no model '{name}'", f"names there: {known}")
        if sel is None:
            version = versions[-1]
        elif sel.isdigit():
            version = int(sel)
            if version not in versions:
                raise EdgeLLMError(
                    f"'{name}' has no version {version} in the hub",
                    f"versions: {', '.join(map(str, versions))}",
                )
        else:
            tags = self.tags(name)
            if sel not in tags:
                raise EdgeLLMError(
                    f"'{name}' has no tag '{sel}'",
                    f"tags: {', '.join(sorted(tags)) or 'none'}; or give a version",
                )
            version = tags[sel]
        return self._read(name, version)

    def list(self) -> list[dict[str, Any]]:
        rows = []
        for name in self.names():
            versions = self.versions(name)
            latest = self._read(name, versions[-1])
            rows.append(
                {
                    "name": name,
                    "versions": versions,
                    "latest": versions[-1],
                    "tags": self.tags(name),
                    "kind": latest["kind"],
                    "bytes": latest["bytes"],
                    "created": latest["created"],
                }
            )
        return rows

    # -- writing ----------------------------------------------------------------------------------
    def push(
        self,
        path: str | Path,
        name: str,
        *,
        tags: list[str] | None = None,
        lineage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Add the directory ``path`` (an artifact or a model directory) as the next version of ``name``;
        a push whose files equal the latest version's returns that version (and adds the tags)."""
        src = Path(path)
        check_name(name)
        for t in tags or []:
            check_tag(t)
        if not src.is_dir():
            raise EdgeLLMError(f"'{path}' is not a directory", "push an artifact or a model directory")
        rels = [
            f.relative_to(src).as_posix()
            for f in sorted(p for p in src.rglob("*") if p.is_file())
            if not any(part.startswith(".") for part in f.relative_to(src).parts)
        ]
        if not rels:
            raise EdgeLLMError(f"'{path}' holds no files", "push an artifact or a model directory")
        files = {  # objects first: an entry never points at a missing object
            rel: {"sha256": self.objects.put_file(src / rel), "bytes": (src / rel).stat().st_size}
            for rel in rels
        }
        with self._lock():
            versions = self.versions(name)
            if versions:
                last = self._read(name, versions[-1])
                if last["files"] == files:
                    self._tag(name, versions[-1], tags or [])
                    return last
            version = (versions[-1] if versions else 0) + 1
            entry = {
                "name": name,
                "version": version,
                "ref": f"{name}@{version}",
                "kind": "artifact" if (src / "manifest.json").is_file() else "model",
                "files": files,
                "bytes": sum(m["bytes"] for m in files.values()),
                "lineage": {**gather_lineage(src), **(lineage or {})},
                "pushed_from": str(src.resolve()),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            _write_json(self._entry_file(name, version), entry, default=str)
            self._tag(name, version, tags or [])
        return entry

    def _tag(self, name: str, version: int, tags: list[str]) -> None:
        if not tags:
            return
        current = self.tags(name)
        current.update({t: version for t in tags})
        _write_json(self._tags_file(name), current, sort_keys=True)

    def tag(self, ref: str, tag: str) -> dict[str, Any]:
        """Point ``tag`` of the entry's name at the entry's version (moving it if it pointed elsewhere)."""
        check_tag(tag)
        e = self.entry(ref)
        with self._lock():
            self._tag(e["name"], e["version"], [tag])
        return e

    def pull(self, ref: str, dest: str | Path, *, force: bool = False) -> Path:
        """Copy an entry's files to ``dest``, each verified against its sha256 (a mismatch is refused and
        nothing is left at ``dest``)."""
        from edgellm.utils.fs import atomic_dir

        e = self.entry(ref)
        with atomic_dir(dest, force=force) as tmp:
            try:
                self.objects.checkout({rel: m["sha256"] for rel, m in e["files"].items()}, tmp)
            except ObjectMissing as exc:
                raise EdgeLLMError(
                    f"hub entry {e['ref']}: file '{exc.rel}' is missing from the store ({exc.path})",
                    "push the model again, or restore the hub directory",
                ) from None
            except ObjectCorrupt as exc:
                raise EdgeLLMError(
                    f"hub entry {e['ref']}: file '{exc.rel}' does not match its hash (sha256 {exc.got[:12]}..., "
                    f"recorded {exc.digest[:12]}...): the store was changed; refused",
                    "push the model again from its source, then run edgellm hub gc",
                ) from None
        return Path(dest)

    def resolve(self, ref: str) -> Path:
        """A verified checkout of the entry under ``HUB/checkouts`` (made once, re-verified on use)."""
        from edgellm.utils.fs import sha256_file

        e = self.entry(ref)
        dest = self._checkout(e["name"], e["version"])
        if dest.is_dir() and all(
            (dest / rel).is_file() and (dest / rel).stat().st_size == m["bytes"]
            for rel, m in e["files"].items()
        ):
            bad = [rel for rel, m in e["files"].items() if sha256_file(dest / rel) != m["sha256"]]
            if not bad:
                return dest
        return self.pull(ref, dest, force=True)

    def gc(self, *, keep_last: int | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Drop versions beyond the ``keep_last`` newest of each name (tagged ones stay), their checkouts,
        then every object no entry references."""
        removed_entries = []
        with self._lock():
            for name in self.names():
                versions = self.versions(name)
                tagged = set(self.tags(name).values())
                drop = [v for v in versions[: -keep_last or None] if v not in tagged] if keep_last else []
                for v in drop:
                    removed_entries.append(f"{name}@{v}")
                    if not dry_run:
                        self._entry_file(name, v).unlink()
                        shutil.rmtree(self._checkout(name, v), ignore_errors=True)
            live = set()
            for name in self.names():
                for v in self.versions(name):
                    if f"{name}@{v}" not in removed_entries:
                        live |= {m["sha256"] for m in self._read(name, v)["files"].values()}
            count, freed = self.objects.gc(live, dry_run=dry_run)
        return {"removed_entries": removed_entries, "removed_objects": count, "freed_bytes": freed}


def _load_json(f: Path, what: str) -> Any:
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise EdgeLLMError(
            f"{what} ({f}) cannot be read: {exc}", "restore the hub directory, or push the model again"
        ) from None


def resolve_path(spec: str | Path, hub: str | Path | None = None) -> Path:
    """``spec`` as a directory: an existing path as is, else a hub reference checked out (verified)."""
    p = Path(spec)
    try:
        exists = p.exists()
    except OSError as exc:  # a name too long for the file system
        raise EdgeLLMError(
            f"'{str(spec)[:60]}...' ({len(str(spec))} characters) is neither a directory nor a hub reference: "
            f"{exc.strerror}",
            "give a shorter path, or NAME[@VERSION|@TAG]",
        ) from None
    if exists:
        return p
    if "/" in str(spec) or str(spec).startswith("."):  # meant as a path
        raise EdgeLLMError(
            f"directory '{spec}' does not exist",
            "check the path (or give a hub reference: NAME[@VERSION|@TAG])",
        )
    try:
        name, _ = parse_ref(str(spec))
    except EdgeLLMError:
        raise EdgeLLMError(
            f"'{spec}' is neither a directory nor a hub reference", "give a path, or NAME[@VERSION|@TAG]"
        ) from None
    h = Hub(hub)
    if name not in h.names():
        raise EdgeLLMError(
            f"'{spec}' is neither a directory nor a model in the hub at {h.root}",
            "check the path, or push it: edgellm hub push DIR --name NAME",
        )
    return h.resolve(str(spec))
