"""What a recipe stage's key is made of: content hashes of its inputs, so an unchanged stage is skipped."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.utils.fs import sha256_files


def digest(obj: Any) -> str:
    """SHA-256 of ``obj`` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def source_fingerprint(source: str) -> str:
    """The content hash of a corpus source: its files' bytes, a dataset version's commit, or pydoc's text."""
    from edgellm.data.corpus import DEFAULT_CORPUS
    from edgellm.data.store import parse_version, version_files

    if source in (DEFAULT_CORPUS, "pydoc"):
        from edgellm.data import read_corpus

        return digest([[d.id, d.text] for d in read_corpus(None)])
    if parse_version(source) is not None:
        return version_files(source)[1]["commit"]  # type: ignore[index]
    p = Path(source)
    if not p.exists():
        raise EdgeLLMError(f"data source '{source}' does not exist", "give a file, a folder or STORE@REF")
    files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
    return sha256_files(files, p if p.is_dir() else p.parent)
