"""Which files under a folder are data: everything but the reports and markers beside it (the bottom of
``edgellm.data``: the store, the corpus readers and the record-batch readers all list folders this way)."""

from __future__ import annotations

from pathlib import Path


def hidden(rel: Path) -> bool:
    """Reports and markers beside the data (``_report/``, ``.edgellm-dataset.json``) are not data."""
    return any(part.startswith(("_", ".")) for part in rel.parts)


def data_files(folder: Path) -> list[Path]:
    """The files under ``folder`` (recursively, sorted) that are not hidden."""
    return sorted(f for f in folder.rglob("*") if f.is_file() and not hidden(f.relative_to(folder)))
