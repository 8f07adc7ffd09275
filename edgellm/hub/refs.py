"""Hub names, tags and references: ``NAME``, ``NAME@VERSION``, ``NAME@TAG`` (a name may carry a variant:
``minilm:int8@3``), and where the hub directory is by default."""

from __future__ import annotations

import os
import re
from pathlib import Path

from edgellm.errors import EdgeLLMError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9][A-Za-z0-9._-]*)?$")
TAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*$")
MAX_NAME = 128  # characters of a name (with its variant): it becomes a file name under the hub
MAX_TAG = 64


def default_root() -> Path:
    return Path(os.environ.get("EDGELLM_HUB") or Path.home() / ".edgellm" / "hub")


def slug(name: str) -> str:
    """A hub name as a file name (the variant's colon is not portable)."""
    return name.replace(":", "__")


def unslug(file_name: str) -> str:
    return file_name.replace("__", ":")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME[@VERSION|@TAG]`` -> (name, selector or None)."""
    name, _, sel = ref.partition("@")
    if len(name) > MAX_NAME or len(sel) > MAX_TAG:
        raise EdgeLLMError(
            f"hub reference '{ref[:60]}...' ({len(ref)} characters) is too long",
            f"a name has at most {MAX_NAME} characters, a tag or version at most {MAX_TAG}",
        )
    if not NAME_RE.match(name) or (sel and not (sel.isdigit() or TAG_RE.match(sel))):
        raise EdgeLLMError(
            f"'{ref}' is not a hub reference",
            "write NAME, NAME@VERSION or NAME@TAG (a name may carry a variant: minilm:int8@3)",
        )
    return name, sel or None


def check_name(name: str) -> None:
    if len(name) > MAX_NAME:
        raise EdgeLLMError(f"hub name '{name[:60]}...' has {len(name)} characters", f"use at most {MAX_NAME}")
    if not NAME_RE.match(name):
        raise EdgeLLMError(
            f"'{name}' is not a hub name", "use letters, digits, . _ - and one optional ':variant'"
        )


def check_tag(tag: str) -> None:
    if len(tag) > MAX_TAG:
        raise EdgeLLMError(f"tag '{tag[:60]}...' has {len(tag)} characters", f"use at most {MAX_TAG}")
    if not TAG_RE.match(tag) or tag.isdigit():
        raise EdgeLLMError(f"'{tag}' is not a tag", "a tag starts with a letter: prod, staging, int8")
