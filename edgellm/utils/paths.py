"""Paths read from files someone else wrote (a hub entry, an artifact's manifest): each must name a file
inside its folder, so that a hostile record can neither write nor read outside it.

Example:
    >>> check_relpath("tokenizer/vocab.txt")
    'tokenizer/vocab.txt'
    >>> check_relpath("../../etc/passwd")   # doctest: +SKIP
    ValueError: it climbs out of its folder with '..'
"""

from __future__ import annotations

import re
from pathlib import Path

MAX_PATH = 1024  # characters of a relative path
MAX_PART = 255  # bytes of one component (the usual file-system limit)
_DRIVE = re.compile(r"^[A-Za-z]:")


def relpath_problem(rel: object) -> str | None:
    """Why ``rel`` is not a safe relative POSIX path (None: it is safe).

    Safe: a non-empty string of ``/``-separated components, none empty, ``.`` or ``..``; not absolute, no
    drive letter, no backslash, no NUL or other control character, within the length limits."""
    if not isinstance(rel, str) or not rel:
        return "it is not a non-empty string"
    if len(rel) > MAX_PATH:
        return f"it is longer than {MAX_PATH} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return "it holds a NUL or another control character"
    if "\\" in rel:
        return "it holds a backslash"
    if rel.startswith("/") or _DRIVE.match(rel):
        return "it is absolute"
    parts = rel.split("/")
    if ".." in parts:
        return "it climbs out of its folder with '..'"
    if any(p in ("", ".") for p in parts):
        return "it has an empty or '.' component"
    if any(len(p.encode("utf-8", "surrogatepass")) > MAX_PART for p in parts):
        return f"a component is longer than {MAX_PART} bytes"
    return None


def check_relpath(rel: object) -> str:
    """``rel`` if :func:`relpath_problem` finds nothing, else ``ValueError`` with the problem."""
    problem = relpath_problem(rel)
    if problem:
        raise ValueError(problem)
    return rel  # type: ignore[return-value]


def inside(root: Path, path: Path) -> bool:
    """``path`` (symbolic links followed) lies inside ``root``."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a loop of links, a name too long
        return False


def prefix_clash(rels: list[str]) -> str | None:
    """A path that is also a folder of another path in ``rels`` (``a`` and ``a/b``), or None."""
    names = set(rels)
    for rel in rels:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder in names:
                return folder
    return None
