"""Target profiles: devices and servers described as data in ``targets/*.yaml``.

Exporters, the cost model and the benchmark read them; adding a target needs no code. Profiles are
user-written YAML, so they are validated with pydantic and unknown keys are errors.

Example:
    >>> from edgellm.targets import load_target
    >>> load_target("x86-server").runtimes          # doctest: +SKIP
    ['onnxruntime']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgellm.errors import TargetError

PRECISIONS = ("fp32", "fp16", "bf16", "fp8", "int8", "int4")
Precision = Literal["fp32", "fp16", "bf16", "fp8", "int8", "int4"]


class Target(BaseModel):
    """One device or server. Figures are per chip as published; ``sources`` says where each comes from."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["server", "phone", "sbc", "gpu"]
    description: str
    runtimes: list[str] = Field(min_length=1)
    formats: list[str] = Field(min_length=1)
    precisions: list[Precision] = Field(min_length=1)
    peak_compute_tops: dict[Precision, float]
    memory_bandwidth_gbs: float = Field(gt=0)
    memory_budget_mb: float = Field(gt=0)
    hardware: dict[str, Any] = Field(default_factory=dict)
    sources: list[str] = Field(min_length=1)
    # format -> the runtimes that run it, its own runtime first (default: the profile's first runtime);
    # ``edgellm export`` validates an artifact in each and records the fastest that meets parity
    format_runtimes: dict[str, list[str]] = Field(default_factory=dict)
    # runtime -> inference precisions to try where the host has them (OpenVINO: f32, bf16, f16)
    runtime_precisions: dict[str, list[str]] = Field(default_factory=dict)

    def runtimes_for(self, fmt: str) -> list[str]:
        """The runtimes that run format ``fmt`` on this target, its own first."""
        return list(self.format_runtimes.get(fmt) or self.runtimes[:1])

    @model_validator(mode="after")
    def _check(self) -> Target:
        extra = set(self.peak_compute_tops) - set(self.precisions)
        if extra:
            raise ValueError(f"peak_compute_tops names precisions not in 'precisions': {sorted(extra)}")
        if any(v <= 0 for v in self.peak_compute_tops.values()):
            raise ValueError("peak_compute_tops values must be > 0")
        unknown = set(self.format_runtimes) - set(self.formats)
        if unknown:
            raise ValueError(f"format_runtimes names formats not in 'formats': {sorted(unknown)}")
        listed = {r for rs in self.format_runtimes.values() for r in rs} | set(self.runtime_precisions)
        if listed - set(self.runtimes):
            raise ValueError(
                f"format_runtimes/runtime_precisions name runtimes not in 'runtimes': {sorted(listed - set(self.runtimes))}"
            )
        return self


def search_path() -> list[Path]:
    """Folders searched for ``NAME.yaml``: ``$EDGELLM_TARGETS_PATH``, the source tree, the installed copy."""
    dirs = [Path(p) for p in os.environ.get("EDGELLM_TARGETS_PATH", "").split(os.pathsep) if p]
    pkg = Path(__file__).resolve().parent.parent  # edgellm/: the YAML lies in ../targets or _targets
    dirs += [pkg.parent / "targets", pkg / "_targets"]
    return [d for d in dirs if d.is_dir()]


def list_targets() -> dict[str, Path]:
    """Every known target name and the file that defines it (first on the search path wins)."""
    found: dict[str, Path] = {}
    for d in search_path():
        for f in sorted(d.glob("*.yaml")):
            found.setdefault(f.stem, f)
    return found


def load_target(name_or_path: str | Path | Target) -> Target:
    """Load and validate a target profile by name (``x86-server``) or YAML path (a loaded
    :class:`Target` is returned as it is)."""
    import yaml

    if isinstance(name_or_path, Target):
        return name_or_path

    p = Path(name_or_path)
    path = p if p.suffix in (".yaml", ".yml") and p.exists() else list_targets().get(str(name_or_path))
    if path is None:
        known = ", ".join(list_targets()) or "none found"
        raise TargetError(f"unknown target '{name_or_path}'", f"known targets: {known}; or give a YAML path")
    try:
        data = yaml.safe_load(path.read_text())
        return Target.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        first = str(exc).splitlines()
        detail = "; ".join(line.strip() for line in first[1:3]) if len(first) > 1 else first[0]
        raise TargetError(f"target file {path} is invalid: {detail}", "fix the field named above") from exc
