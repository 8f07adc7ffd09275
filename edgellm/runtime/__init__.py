"""Runtimes: one :class:`Runner` interface over torch, ONNX Runtime, OpenVINO, LiteRT (TFLite), TensorRT
and ExecuTorch.

Example:
    >>> from edgellm.runtime import make_runner
    >>> r = make_runner(artifact, intra_op_threads=2)   # doctest: +SKIP
    >>> r.run(feeds)                                     # doctest: +SKIP
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any

from edgellm import plugins
from edgellm.errors import EdgeLLMError
from edgellm.runtime.base import RUNNERS, Runner, register_runner


@functools.cache
def discover_runners() -> dict[str, Any]:
    """Import every runner module of this package (``*_runner.py``) once; each registers its runtimes
    with ``@register_runner``, so a new runner is one file. Their SDKs are imported when a runner is made.
    Built-in runners are registered before any plugin is asked, so a plugin never shadows one."""
    for info in pkgutil.iter_modules(__path__):
        if info.name.endswith("_runner"):
            importlib.import_module(f"{__name__}.{info.name}")
    return RUNNERS


def make_runner(model: Any, runtime: str | None = None, **options: Any) -> Runner:
    """A runner for ``model``: a :class:`~edgellm.models.ModelAdapter` (torch) or an artifact/file.

    Args:
        model: model adapter, :class:`~edgellm.export.Artifact`, or path to a model file.
        runtime: runner name; default: ``torch`` for adapters, the artifact's runtime otherwise.
        **options: passed to the runner (thread counts, session options).
    """
    manifest = getattr(model, "manifest", None) if not _is_adapter(model) else None
    if runtime is None:
        if _is_adapter(model):
            runtime = "torch"
        elif manifest is not None:
            runtime, recorded = preferred_runtime(manifest)
            options = {**recorded, **options}
        else:
            runtime = "onnxruntime"
    if manifest is not None:
        check_validated(manifest, runtime, options)
    discover_runners()
    if runtime not in RUNNERS:
        plugins.load("edgellm.runners", runtime)  # a plugin package may provide it
    if runtime not in RUNNERS:
        raise EdgeLLMError(f"unknown runtime '{runtime}'", f"available: {', '.join(sorted(RUNNERS))}")
    return RUNNERS[runtime](model, **options)


# Runtimes that run another format's file with kernels of their own (OpenVINO reads ONNX): an artifact
# must have passed parity in them (manifest ``runtimes``, written by ``export(..., runtimes=...)``).
VALIDATED_SEPARATELY = {"openvino"}


def sdk_installed(runtime: str) -> bool:
    """Whether the SDK a runtime's runner imports is installed here (nothing is imported)."""
    import importlib.util

    mod = {"onnxruntime-mobile": "onnxruntime", "litert": "ai_edge_litert"}.get(runtime, runtime)
    return importlib.util.find_spec(mod) is not None


def recorded_candidates(manifest: dict[str, Any], runtime: str) -> list[dict[str, Any]]:
    """The manifest's validation records of ``runtime`` (``runtimes.candidates``), best first: the
    preferred one, then the fastest measured."""
    section = manifest.get("runtimes") or {}
    cands = [c for c in section.get("candidates", []) if c.get("runtime") == runtime]
    pref = section.get("preferred") or {}

    def rank(c: dict[str, Any]) -> tuple[bool, float]:
        preferred = pref.get("runtime") == runtime and c.get("options") == pref.get("options")
        return (not preferred, (c.get("latency") or {}).get("p50_ms", float("inf")))

    return sorted(cands, key=rank)


def preferred_runtime(manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(runtime, options)`` an artifact runs in by default: the one ``edgellm export`` measured fastest
    among those that met parity (when its SDK is installed here), else its format's own runtime."""
    pref = (manifest.get("runtimes") or {}).get("preferred") or {}
    runtime = pref.get("runtime")
    if runtime and sdk_installed(runtime):
        return runtime, {k: v for k, v in (pref.get("options") or {}).items() if v is not None}
    return manifest["target"]["runtime"], {}


def check_validated(manifest: dict[str, Any], runtime: str, options: dict[str, Any]) -> None:
    """Refuse to run an artifact in a runtime of :data:`VALIDATED_SEPARATELY` that it did not pass parity
    in (at the asked precision, if one was asked)."""
    if runtime not in VALIDATED_SEPARATELY:
        return
    cands = recorded_candidates(manifest, runtime)
    passed = [c for c in cands if c.get("passed")]
    asked = options.get("precision")
    if asked not in (None, "auto"):
        failed = [c for c in cands if c.get("options", {}).get("precision") == asked and not c.get("passed")]
        if failed:
            raise EdgeLLMError(
                f"this artifact failed validation in {runtime} at {asked}: {failed[0].get('error', 'parity')}",
                f"run it at another precision ({', '.join(c['options'].get('precision', '?') for c in passed) or 'none passed'})"
                f" or in {manifest['target']['runtime']}",
            )
    if not passed and manifest["target"]["runtime"] != runtime:
        why = "; ".join(c.get("error", "failed") for c in cands) or "it was never validated there"
        raise EdgeLLMError(
            f"this artifact has not passed parity in {runtime} ({why})",
            f"run it in {manifest['target']['runtime']}, or re-export it with --runtimes {runtime} "
            "(export validates it in that runtime and records the result)",
        )


def _is_adapter(model: Any) -> bool:
    """A :class:`~edgellm.models.ModelAdapter` (checked without importing torch when it is not one: a
    runtime that runs an artifact never needs torch)."""
    import sys

    mod = sys.modules.get("edgellm.models.adapter")
    return mod is not None and isinstance(model, mod.ModelAdapter)


__all__ = [
    "RUNNERS",
    "Runner",
    "check_validated",
    "discover_runners",
    "make_runner",
    "preferred_runtime",
    "recorded_candidates",
    "register_runner",
    "sdk_installed",
]
