"""Plugins: third-party packages extend edgellm through Python entry points, discovered at run time.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."edgellm.cleaning_steps"]
    shout = "my_pkg:Shout"          # a edgellm.data.steps.Step subclass (used as {shout: {...}} in steps)

Groups and what an entry must be:

- ``edgellm.cleaning_steps``: a :class:`edgellm.data.steps.Step` subclass;
- ``edgellm.scores``: a pruning importance ``f(adapter, layout, units, calib) -> {"heads", "ffn",
  "blocks"}`` (see :func:`edgellm.compress.prune.scores.unit_scores`); ``f.needs_data = True`` when it
  needs calibration batches;
- ``edgellm.quant_methods``: a callable ``(**options) -> QuantConfig`` (a compression recipe name);
- ``edgellm.exporters``: an :class:`edgellm.export.Exporter` subclass for a target format;
- ``edgellm.runners``: an :class:`edgellm.runtime.Runner` subclass for a runtime name;
- ``edgellm.metrics``: ``f(reference, candidate) -> float`` on the first output of both runners,
  reported by ``edgellm compress`` under ``accuracy.plugins``.

Discovery imports nothing until a name is asked for (or ``edgellm plugins`` lists them). A plugin that
fails to import is named with its error wherever it is asked for; every other plugin keeps working.
"""

from __future__ import annotations

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
SCORES: dict[str, Any] = {}
METRICS: dict[str, Any] = {}


@dataclass
class Plugin:
    group: str
    name: str
    value: str  # "module:attr"
    package: str | None
    status: str = "not loaded"  # "ok" or "failed: ..."
    obj: Any = None


_found: dict[str, dict[str, Plugin]] | None = None


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
    """The object plugin ``name`` of ``group`` provides, registered where edgellm looks it up; None when no
    plugin has that name. A plugin that fails to import raises an error naming it and its package."""
    p = discover().get(group, {}).get(name)
    if p is None:
        return None
    if p.obj is None and p.status == "not loaded":
        _import(p)
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
        obj = EntryPoint(p.name, p.value, p.group).load()
        _register(p.group, p.name, obj)
    except Exception as exc:  # a broken plugin is reported, never fatal
        p.status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return
    p.obj, p.status = obj, "ok"


def _register(group: str, name: str, obj: Any) -> None:
    if group == "edgellm.cleaning_steps":
        from edgellm.data.steps import STEPS, Step

        if not (isinstance(obj, type) and issubclass(obj, Step)):
            raise TypeError(f"{obj!r} is not a edgellm.data.steps.Step subclass")
        STEPS.setdefault(name, obj)
    elif group == "edgellm.scores":
        if not callable(obj):
            raise TypeError(f"{obj!r} is not callable")
        SCORES[name] = obj
    elif group == "edgellm.quant_methods":
        from edgellm.compress.quant.config import RECIPES

        if not callable(obj):
            raise TypeError(f"{obj!r} is not callable")
        RECIPES.setdefault(name, obj)
    elif group == "edgellm.exporters":
        from edgellm.export.base import EXPORTERS, Exporter

        if not (isinstance(obj, type) and issubclass(obj, Exporter)):
            raise TypeError(f"{obj!r} is not an edgellm.export.Exporter subclass")
        obj.format = getattr(obj, "format", None) or name
        EXPORTERS.setdefault(name, obj)
    elif group == "edgellm.runners":
        from edgellm.runtime.base import RUNNERS

        if not isinstance(obj, type):
            raise TypeError(f"{obj!r} is not a runner class")
        obj.runtime = getattr(obj, "runtime", None) or name
        RUNNERS.setdefault(name, obj)
    elif group == "edgellm.metrics":
        if not callable(obj):
            raise TypeError(f"{obj!r} is not callable")
        METRICS[name] = obj


def load_all() -> list[Plugin]:
    """Import every plugin (what ``edgellm plugins`` shows): each with its status."""
    out = []
    for plugins in discover().values():
        for p in plugins.values():
            if p.status == "not loaded":
                _import(p)
            out.append(p)
    return out


__all__ = ["GROUPS", "Plugin", "discover", "load", "load_all", "names", "rescan"]
