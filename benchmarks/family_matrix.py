"""The whole family x stage matrix, slow cells included: every cell's outcome and time, as JSON.

The default test run (``make test``) runs the matrix's cheap cells and one family per stage for the
expensive formats; this runs every cell (``pytest tests/conformance/test_family_matrix.py -m ""``) in a
separate process, reads its JUnit XML and prints, per cell, ``passed`` / ``failed`` / ``skipped`` (with
the reason) and seconds, the totals per stage and family, and whether every cell did what
``edgellm/models/support.py`` declares (a refused cell passes when the stage refused by name).

    python benchmarks/family_matrix.py [--families llama,gpt2] [--stages onnx,prune] [--output FILE]

Exit status 1 when a cell failed, 2 for an unknown family or stage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATRIX = "tests/conformance/test_family_matrix.py"


def cells(xml: Path) -> dict[str, dict]:
    """``{"family-stage": {"outcome", "seconds", "message"}}`` from pytest's JUnit XML."""
    out = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("name", "")
        if not name.startswith("test_cell["):
            continue
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (el.get("message") or "").splitlines()[0][:300] if el.get("message") else ""
        out[name[len("test_cell[") : -1]] = {
            "outcome": outcome,
            "seconds": round(float(case.get("time", 0)), 2),
            "message": message,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", help="comma-separated families (default: all)")
    ap.add_argument("--stages", help="comma-separated stages (default: all)")
    ap.add_argument("--output", default="edgellm-out/family_matrix.json")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from edgellm.models import support

    fams = args.families.split(",") if args.families else list(support.FAMILY_NAMES)
    stages = args.stages.split(",") if args.stages else list(support.STAGE_NAMES)
    for what, given, known in (
        ("family", fams, support.FAMILY_NAMES),
        ("stage", stages, support.STAGE_NAMES),
    ):
        unknown = [x for x in given if x not in known]
        if unknown:
            print(f"unknown {what} {', '.join(unknown)}: choose from {', '.join(known)}", file=sys.stderr)
            return 2
    ids = [f"{f}-{s}" for f in fams for s in stages]
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "matrix.xml"
        picked = [f"{MATRIX}::test_cell[{i}]" for i in ids] if args.families or args.stages else [MATRIX]
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "", *picked]
        cmd.append(f"--junitxml={xml}")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if not xml.exists():
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            return 2
        got = cells(xml)
    by_stage: dict[str, float] = defaultdict(float)
    by_family: dict[str, float] = defaultdict(float)
    for key, c in got.items():
        fam, stage = _split(key, support)
        by_family[fam] += c["seconds"]
        by_stage[stage] += c["seconds"]
    result = {
        "cells": got,
        "counts": {k: sum(c["outcome"] == k for c in got.values()) for k in ("passed", "failed", "skipped")},
        "seconds": {
            "wall": round(wall, 1),
            "by_stage": {k: round(v, 1) for k, v in sorted(by_stage.items(), key=lambda kv: -kv[1])},
            "by_family": {k: round(v, 1) for k, v in sorted(by_family.items(), key=lambda kv: -kv[1])},
        },
        "declared": {k: support.cell(*_split(k, support)).status for k in got},
        "command": " ".join(cmd[1:-1]),
    }
    text = json.dumps(result, indent=2)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 1 if result["counts"]["failed"] else 0


def _split(key: str, support) -> tuple[str, str]:
    fam = next(f for f in sorted(support.FAMILY_NAMES, key=len, reverse=True) if key.startswith(f + "-"))
    return fam, key[len(fam) + 1 :]


if __name__ == "__main__":
    sys.exit(main())
