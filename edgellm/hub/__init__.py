"""The model hub: a local, content-addressed registry of models and artifacts with their lineage.

Layout of a hub directory (``--hub DIR``, else ``$EDGELLM_HUB``, else ``~/.edgellm/hub``; a shared
directory serves a team):

- ``objects/ab/cdef...``: every file once, named by its sha256;
- ``entries/NAME/VERSION.json``: one entry per push: its files (path -> sha256, bytes), the lineage
  gathered from what it is (an artifact's manifest: dataset, recipe, source model, compression record,
  parity, benchmark figures; a model directory's ``lineage.json`` / ``pruning.json`` /
  ``train_summary.json``), who pushed it from where, and when;
- ``tags/NAME.json``: tag -> version.

References: ``NAME`` (the latest version), ``NAME@3`` (version 3), ``NAME@prod`` (a tag). A name may
carry a variant after a colon: ``minilm:int8@3``. Versions are allocated under a lock file, files are
written to a temporary name and renamed, so two team members pushing at once never collide. ``pull``
verifies every file's sha256 and refuses an entry whose files do not match; ``resolve`` makes a verified
checkout that ``serve``, ``split`` and ``load`` take wherever they take a directory.

Example:
    >>> hub = Hub("/shared/edgellm-hub")                                  # doctest: +SKIP
    >>> e = hub.push("edgellm-out/minilm-int8", "minilm:int8", tags=["staging"])   # doctest: +SKIP
    >>> hub.resolve("minilm:int8@staging")                                # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.utils.fs import atomic_write_text, sha256_file

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9][A-Za-z0-9._-]*)?$")
TAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*$")
LINEAGE_FILES = ("lineage.json", "pruning.json", "train_summary.json", "generation.json", "split.json")


def _slug(name: str) -> str:
    """A hub name as a file name (the variant's colon is not portable)."""
    return name.replace(":", "__")


def default_root() -> Path:
    return Path(os.environ.get("EDGELLM_HUB") or Path.home() / ".edgellm" / "hub")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME[@VERSION|@TAG]`` -> (name, selector or None)."""
    name, _, sel = ref.partition("@")
    if not NAME_RE.match(name) or (sel and not (sel.isdigit() or TAG_RE.match(sel))):
        raise EdgeLLMError(
            f"'{ref}' is not a hub reference",
            "write NAME, NAME@VERSION or NAME@TAG (a name may carry a variant: minilm:int8@3)",
        )
    return name, sel or None


class Hub:
    """A hub directory (see the module docstring)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    # -- paths ------------------------------------------------------------------------------------
    def _obj(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / digest[2:]

    def _entries(self, name: str) -> Path:
        return self.root / "entries" / _slug(name)

    def _tags_file(self, name: str) -> Path:
        return self.root / "tags" / (_slug(name) + ".json")

    def _checkout(self, name: str, version: int) -> Path:
        return self.root / "checkouts" / _slug(name) / str(version)

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
        return (
            sorted(p.name.replace("__", ":") for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        )

    def versions(self, name: str) -> list[int]:
        d = self._entries(name)
        return sorted(int(p.stem) for p in d.glob("*.json")) if d.is_dir() else []

    def tags(self, name: str) -> dict[str, int]:
        f = self._tags_file(name)
        return json.loads(f.read_text()) if f.is_file() else {}

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
        return json.loads((self._entries(name) / f"{version}.json").read_text())

    def list(self) -> list[dict[str, Any]]:
        rows = []
        for name in self.names():
            versions = self.versions(name)
            latest = json.loads((self._entries(name) / f"{versions[-1]}.json").read_text())
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
        if not NAME_RE.match(name):
            raise EdgeLLMError(
                f"'{name}' is not a hub name", "use letters, digits, . _ - and one optional ':variant'"
            )
        for t in tags or []:
            if not TAG_RE.match(t) or t.isdigit():
                raise EdgeLLMError(f"'{t}' is not a tag", "a tag starts with a letter: prod, staging, int8")
        if not src.is_dir():
            raise EdgeLLMError(f"'{path}' is not a directory", "push an artifact or a model directory")
        files = {}
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            rel = f.relative_to(src).as_posix()
            if any(part.startswith(".") for part in Path(rel).parts):
                continue
            files[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        if not files:
            raise EdgeLLMError(f"'{path}' holds no files", "push an artifact or a model directory")
        for rel, meta in files.items():  # blobs first: an entry never points at a missing object
            obj = self._obj(meta["sha256"])
            if not obj.exists():
                obj.parent.mkdir(parents=True, exist_ok=True)
                tmp = obj.with_name(f".{obj.name}.{os.getpid()}.tmp")
                shutil.copyfile(src / rel, tmp)
                tmp.replace(obj)
        with self._lock():
            versions = self.versions(name)
            if versions:
                last = json.loads((self._entries(name) / f"{versions[-1]}.json").read_text())
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
            self._entries(name).mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                self._entries(name) / f"{version}.json", json.dumps(entry, indent=2, default=str) + "\n"
            )
            self._tag(name, version, tags or [])
        return entry

    def _tag(self, name: str, version: int, tags: list[str]) -> None:
        if not tags:
            return
        current = self.tags(name)
        current.update({t: version for t in tags})
        self._tags_file(name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self._tags_file(name), json.dumps(current, indent=2, sort_keys=True) + "\n")

    def tag(self, ref: str, tag: str) -> dict[str, Any]:
        """Point ``tag`` of the entry's name at the entry's version (moving it if it pointed elsewhere)."""
        if not TAG_RE.match(tag) or tag.isdigit():
            raise EdgeLLMError(f"'{tag}' is not a tag", "a tag starts with a letter: prod, staging, int8")
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
            for rel, meta in e["files"].items():
                obj = self._obj(meta["sha256"])
                if not obj.is_file():
                    raise EdgeLLMError(
                        f"hub entry {e['ref']}: file '{rel}' is missing from the store ({obj})",
                        "push the model again, or restore the hub directory",
                    )
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(obj, target)
                got = sha256_file(target)
                if got != meta["sha256"]:
                    raise EdgeLLMError(
                        f"hub entry {e['ref']}: file '{rel}' does not match its hash (sha256 {got[:12]}..., "
                        f"recorded {meta['sha256'][:12]}...): the store was changed; refused",
                        "push the model again from its source, then run edgellm hub gc",
                    )
        return Path(dest)

    def resolve(self, ref: str) -> Path:
        """A verified checkout of the entry under ``HUB/checkouts`` (made once, re-verified on use)."""
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
                        (self._entries(name) / f"{v}.json").unlink()
                        shutil.rmtree(self._checkout(name, v), ignore_errors=True)
            live = set()
            for name in self.names():
                for v in self.versions(name):
                    if f"{name}@{v}" in removed_entries:
                        continue
                    e = json.loads((self._entries(name) / f"{v}.json").read_text())
                    live |= {m["sha256"] for m in e["files"].values()}
            freed, count = 0, 0
            base = self.root / "objects"
            for obj in base.rglob("*") if base.is_dir() else []:
                if obj.is_file() and obj.parent.name + obj.name not in live:
                    freed += obj.stat().st_size
                    count += 1
                    if not dry_run:
                        obj.unlink()
        return {"removed_entries": removed_entries, "removed_objects": count, "freed_bytes": freed}


def gather_lineage(src: Path) -> dict[str, Any]:
    """What a directory says about where it came from: an artifact's manifest sections, a model
    directory's lineage / pruning / training files."""
    out: dict[str, Any] = {}
    man = src / "manifest.json"
    if man.is_file():
        m = json.loads(man.read_text())
        out["target"] = m.get("target")
        out["source_model"] = m.get("model") or m.get("source")
        for key in ("lineage", "pruning", "compression", "evaluation", "generation", "split"):
            if key in m:
                out[key] = m[key]
        if "parity" in m:
            p = m["parity"]
            out["parity"] = {
                "passed": p.get("passed"),
                "tolerance": p.get("tolerance"),
                "reference": p.get("reference"),
            }
        q = (m.get("recipe") or {}).get("quantization")
        if q:
            out["quantization"] = {k: q.get(k) for k in ("recipe", "config", "kept_fp32") if k in q}
    for f in LINEAGE_FILES:
        if (src / f).is_file():
            with contextlib.suppress(ValueError):
                out[f.removesuffix(".json")] = json.loads((src / f).read_text())
    cfg = src / "config.json"
    if cfg.is_file():
        with contextlib.suppress(ValueError):
            c = json.loads(cfg.read_text())
            out["model_type"] = c.get("model_type")
            out["architectures"] = c.get("architectures")
    return out


def resolve_path(spec: str | Path, hub: str | Path | None = None) -> Path:
    """``spec`` as a directory: an existing path as is, else a hub reference checked out (verified)."""
    p = Path(spec)
    if p.exists():
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


__all__ = ["Hub", "gather_lineage", "parse_ref", "resolve_path"]
