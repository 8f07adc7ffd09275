"""Throughput and peak memory of the full cleaning pipeline on a generated corpus (default 100 k docs).

    .venv/bin/python benchmarks/data_clean_throughput.py --docs 100000 --workers 1,2

Every configuration runs in its own process (so its peak memory is its own: the main process plus its
workers), one after the other on the same file. Also runs a corpus a fifth of the size with the largest
worker count, to show that memory stays flat as the corpus grows (the dedup state is the only part that
grows with it). Prints JSON: documents/s, documents/s per core, peak RSS per configuration.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CHILD = """
import json, resource, sys
from edgellm.data.clean import CleanConfig, clean
if __name__ == "__main__":
    src, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    r = clean(src, out, CleanConfig(workers=workers), force=True)
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"report": {k: r[k] for k in ("documents_in", "documents_out", "duplicates", "pii", "throughput")},
                      "steps": [(s["step"], s["dropped"]) for s in r["steps"]],
                      "peak_rss_mb": {"main": round(self_kb / 1024, 1), "largest_worker": round(kids_kb / 1024, 1)}}))
"""


def run(src: Path, out: Path, workers: int) -> dict:
    script = out.parent / "child.py"
    script.write_text(CHILD)
    p = subprocess.run(
        [sys.executable, str(script), str(src), str(out), str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--output", default="edgellm-out/data_clean_throughput.json")
    a = ap.parse_args(argv)
    from data_corpus import generate, write

    tmp = Path(tempfile.mkdtemp(prefix="edgellm-throughput-"))
    rows, _ = generate(a.docs, 0)
    big = write(rows, tmp / "big.jsonl")
    small = write(rows[: a.docs // 5], tmp / "small.jsonl")
    size_mb = big.stat().st_size / 2**20
    del rows
    results = {}
    counts = [int(w) for w in a.workers.split(",")]
    for w in counts:
        print(f"workers={w} on {a.docs} documents ({size_mb:.0f} MB)", file=sys.stderr, flush=True)
        results[f"workers={w}"] = run(big, tmp / f"out{w}", w)
    w = max(counts)
    results[f"workers={w}, docs={a.docs // 5}"] = run(small, tmp / "out-small", w)
    summary = {
        k: {
            "docs_per_s": v["report"]["throughput"]["docs_per_s"],
            "docs_per_s_per_core": v["report"]["throughput"]["docs_per_s_per_core"],
            "peak_rss_mb": v["peak_rss_mb"],
        }
        for k, v in results.items()
    }
    report = {"docs": a.docs, "corpus_mb": round(size_mb, 1), "runs": results, "summary": summary}
    from edgellm.bench.report import write_json

    write_json(report, a.output)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
