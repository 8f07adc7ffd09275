"""Wall time of the demo (``make demo`` = ``edgellm run recipes/demo.yaml``) from scratch, and of the re-run
that finds every stage unchanged and skips it.

    .venv/bin/python benchmarks/demo_wall_time.py                 # the full demo recipe, ~10-15 minutes
    .venv/bin/python benchmarks/demo_wall_time.py -o /tmp/demo    # keep the output there

Each run is a fresh ``edgellm run`` process (imports and model loading included). Prints JSON: the first
run's total and per-stage seconds, the re-run's total, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def once(recipe: Path, out: Path, force: bool) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "edgellm", "run", str(recipe), "-o", str(out)] + (
        ["--force"] if force else []
    )
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"edgellm run failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return wall, json.loads((out / "report.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "demo.yaml")
    ap.add_argument("-o", "--output", type=Path, default=None)
    args = ap.parse_args()
    out = args.output or Path(tempfile.mkdtemp(prefix="edgellm-demo-"))
    first, rep = once(args.recipe, out, force=True)
    again, rep2 = once(args.recipe, out, force=False)
    result = {
        "recipe": str(args.recipe),
        "output": str(out),
        "first_run_s": round(first, 1),
        "stages_s": {s["stage"]: s["seconds"] for s in rep["stages"]},
        "rerun_s": round(again, 1),
        "rerun_skipped": sorted(s["stage"] for s in rep2["stages"] if s["status"] == "skipped"),
        "rerun_ran": sorted(s["stage"] for s in rep2["stages"] if s["status"] == "ran"),
        "rerun_over_first": round(again / first, 3),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
