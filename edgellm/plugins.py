"""Plugins: third-party packages extend edgellm through Python entry points, discovered at run time.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."edgellm.cleaning_steps"]
    shout = "my_pkg:Shout"          # a edgellm.data.steps.Step subclass (used as {shout: {...}} in steps)

Groups and what an entry must be:

- ``edgellm.cleaning_steps``: a :class:`edgellm.data.steps.Step` subclass;
- ``edgellm.scores``: a pruning importance ``f(adapter, layout, units, calib) -> {"heads", "ffn",
  "blocks"}`` (see :func:`edgellm.compress.prune.importance.unit_scores`); ``f.needs_data = True`` when it
  needs calibration batches;
- ``edgellm.quant_methods``: a callable ``(**options) -> QuantConfig`` (a compression recipe name);
- ``edgellm.exporters``: an :class:`edgellm.export.Exporter` subclass for a target format;
- ``edgellm.runners``: an :class:`edgellm.runtime.Runner` subclass for a runtime name;
- ``edgellm.metrics``: ``f(reference, candidate) -> float`` on the first output of both runners,
  reported by ``edgellm compress`` under ``accuracy.plugins``.

Discovery imports nothing until a name is asked for (or ``edgellm plugins`` lists them). This module
imports no stage: each stage that owns a group says, with :func:`accepts`, how an object joins its own
registry (``edgellm.runtime.base.RUNNERS``, ``edgellm.export.base.EXPORTERS``...). A plugin that fails to
import, or whose object the stage refuses, is named with its error wherever it is asked for; every other
plugin keeps working.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgellm.errors import EdgeLLMError

GROUPS = (
    "edgellm.cleaning_steps",
    "edgellm.scores",
    "edgellm.quant_methods",
    "edgellm.exporters",
    "edgellm.runners",
    "edgellm.metrics",
)

# group -> how the stage that owns it takes a plugin object into its registry (see :func:`accepts`)
_ACCEPT: dict[str, Callable[[str, Any], None]] = {}


@dataclass
class Plugin:
    group: str
    name: str
    value: str  # "module:attr"
    package: str | None
    status: str = "not loaded"  # "ok" or "failed: ..."
    obj: Any = None
    accepted: bool = False


_found: dict[str, dict[str, Plugin]] | None = None


def accepts(group: str) -> Callable[[Callable[[str, Any], None]], Callable[[str, Any], None]]:
    """Decorator for the stage that owns ``group``: ``fn(name, obj)`` checks a plugin's object (raising
    ``TypeError`` when it is not what the group needs) and adds it to the stage's own registry.

    Example:
        >>> @accepts("edgellm.runners")          # in edgellm/runtime/base.py  # doctest: +SKIP
        ... def _accept(name, obj): RUNNERS.setdefault(name, obj)
    """
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}")

    def deco(fn: Callable[[str, Any], None]) -> Callable[[str, Any], None]:
        _ACCEPT[group] = fn
        for p in (_found or {}).get(group, {}).values():  # imported before the stage was: hand over now
            if p.obj is not None:
                _hand_over(p)
        return fn

    return deco


def discover() -> dict[str, dict[str, Plugin]]:
    """Every declared plugin, by group and name (nothing imported)."""
    global _found
    if _found is None:
        from importlib.metadata import entry_points

        found: dict[str, dict[str, Plugin]] = {g: {} for g in GROUPS}
        for group in GROUPS:
            for ep in entry_points(group=group):
                dist = getattr(ep, "dist", None)
                found[group][ep.name] = Plugin(group, ep.name, ep.value, dist.name if dist else None)
        _found = found
    return _found


def rescan() -> None:
    """Forget what was discovered (after installing a package into the running interpreter)."""
    global _found
    _found = None


def load(group: str, name: str) -> Any | None:
    """The object plugin ``name`` of ``group`` provides, handed to the registry of the stage that owns the
    group; None when no plugin has that name. A plugin that fails to import, or whose object is not what
    the group needs, raises an error naming it and its package."""
    p = discover().get(group, {}).get(name)
    if p is None:
        return None
    if p.obj is None and p.status == "not loaded":
        _import(p)
    if p.obj is not None and not p.accepted:
        _hand_over(p)
    if p.obj is None:
        raise EdgeLLMError(
            f"plugin '{name}' ({group}, package {p.package}) {p.status}",
            f"fix or uninstall {p.package}; every other plugin keeps working",
        )
    return p.obj


def names(group: str) -> list[str]:
    return sorted(discover().get(group, {}))


def _import(p: Plugin) -> None:
    from importlib.metadata import EntryPoint

    try:
        p.obj = EntryPoint(p.name, p.value, p.group).load()
    except Exception as exc:  # a broken plugin is reported, never fatal
        _failed(p, exc)
        return
    p.status = "ok"
    _hand_over(p)


def _hand_over(p: Plugin) -> None:
    accept = _ACCEPT.get(p.group)
    if accept is None:  # the owning stage is not imported yet: it takes the object when it is
        return
    try:
        accept(p.name, p.obj)
    except Exception as exc:
        p.obj = None
        _failed(p, exc)
        return
    p.accepted = True


def _failed(p: Plugin, exc: Exception) -> None:
    p.status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def load_all() -> list[Plugin]:
    """Import every plugin (what ``edgellm plugins`` shows): each with its status. Import the stages'
    registries first to have every object checked by its stage."""
    out = []
    for plugins in discover().values():
        for p in plugins.values():
            if p.status == "not loaded":
                _import(p)
            out.append(p)
    return out


__all__ = ["GROUPS", "Plugin", "accepts", "discover", "load", "load_all", "names", "rescan"]
