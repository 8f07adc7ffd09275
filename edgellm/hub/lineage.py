"""Lineage: what a pushed directory says about where it came from (an artifact's manifest sections, a
model directory's lineage / pruning / training files, its architecture)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

LINEAGE_FILES = ("lineage.json", "pruning.json", "train_summary.json", "generation.json", "split.json")


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
