"""Quality of the data front end on a labelled corpus (``data_corpus.py``), and near-dedup speed against
``datasketch``'s MinHashLSH at the same threshold and number of permutations, in one run.

    .venv/bin/python benchmarks/data_quality.py --docs 5000

Reports (JSON):
- PII per structured type: recall over the inserted values, precision over everything detected (the
  look-alikes are in the corpus to be left alone);
- near-duplicates: precision, recall and F1 of the documents dropped as near copies, against the injected
  copies (``normalize`` -> ``exact_dedup`` -> ``near_dedup``);
- noise: recall and precision of the documents ``quality`` + ``language`` drop, against the injected noise;
- near-dedup speed: edgellm's signatures + LSH vs datasketch MinHash + MinHashLSH on the same shingles
  (word 5-grams), same threshold and permutations, with each one's recall of the injected copies;
  timings interleaved over ``--rounds`` rounds, medians.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


THRESHOLD = 0.7  # word 5-gram Jaccard; 2 % of words edited gives about 0.82


def prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def pii_scores(rows, truth) -> dict:
    from edgellm.data.pii import BUILTIN, PiiScanner

    sc = PiiScanner()
    out = {}
    counts = {t: [0, 0, 0] for t in BUILTIN}
    for r in rows:
        found = {(t, r["text"][s:e]) for s, e, t in sc.find(r["text"])}
        want = set(truth["pii"].get(r["id"], []))
        for t, _ in found & want:
            counts[t][0] += 1
        for t, _ in found - want:
            counts[t][1] += 1
        for t, _ in want - found:
            counts[t][2] += 1
    for t, (tp, fp, fn) in counts.items():
        out[t] = prf(tp, fp, fn)
    return out


def pipeline_scores(path: Path, truth, workers: int) -> dict:
    from edgellm.data.clean import CleanConfig, clean

    with tempfile.TemporaryDirectory() as d:
        rep = clean(
            path,
            Path(d) / "dedup",
            CleanConfig(
                steps=["normalize", "exact_dedup", {"near_dedup": {"threshold": THRESHOLD}}], workers=workers
            ),
        )
        clusters = [json.loads(x) for x in (Path(d) / "dedup/_report/clusters.jsonl").open()]
        # scored over the prose documents: the generated noise repeats itself and is removed by the filters
        dropped = {i for c in clusters for i in c["duplicates"]} - truth["noise"]
        near = set(truth["near"])
        dedup = prf(len(dropped & near), len(dropped - near), len(near - dropped))
        rep2 = clean(
            path, Path(d) / "noise", CleanConfig(steps=["normalize", "quality", "language"], workers=workers)
        )
        kept = {json.loads(x)["id"] for f in (Path(d) / "noise").glob("part-*.jsonl") for x in f.open()}
    all_ids = {json.loads(x)["id"] for x in path.open()}
    gone = all_ids - kept
    noise = truth["noise"]
    return {
        "near_duplicates": dedup,
        "noise": prf(len(gone & noise), len(gone - noise), len(noise - gone)),
        "noise_drop_reasons": {s["step"]: s["reasons"] for s in rep2["steps"] if s["dropped"]},
        "throughput_docs_per_s": {
            "dedup": rep["throughput"]["docs_per_s"],
            "filters": rep2["throughput"]["docs_per_s"],
        },
    }


def shingles(text: str, n: int = 5) -> list[bytes]:
    t = re.findall(r"\w+", text.lower())
    if len(t) <= n:
        return [" ".join(t).encode()]
    return [" ".join(t[i : i + n]).encode() for i in range(len(t) - n + 1)]


def speed(rows, truth, threshold: float, num_perm: int, rounds: int) -> dict:
    from datasketch import MinHash, MinHashLSH

    from edgellm.data.minhash import LSHIndex, signatures

    rows = [r for r in rows if r["id"] not in truth["noise"]]
    texts = [r["text"] for r in rows]
    ids = [r["id"] for r in rows]
    near = set(truth["near"])

    def ours():
        sig = signatures(texts, num_perm, 5)
        idx = LSHIndex(threshold, num_perm)
        return {ids[i] for i in range(len(texts)) if idx.query_insert(sig[i]) is not None}

    def theirs():
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        dups = set()
        for i, t in enumerate(texts):
            m = MinHash(num_perm=num_perm)
            m.update_batch(shingles(t))
            if lsh.query(m):
                dups.add(ids[i])
            else:
                lsh.insert(ids[i], m)
        return dups

    times = {"edgellm": [], "datasketch": []}
    found = {}
    for _ in range(rounds):
        for name, fn in (("edgellm", ours), ("datasketch", theirs)):
            t0 = time.perf_counter()
            found[name] = fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "docs": len(texts),
        "threshold": threshold,
        "num_perm": num_perm,
        "seconds": {k: round(v, 3) for k, v in med.items()},
        "speedup": round(med["datasketch"] / med["edgellm"], 2),
        "recall": {k: round(len(v & near) / max(1, len(near)), 4) for k, v in found.items()},
        "precision": {k: round(len(v & near) / max(1, len(v)), 4) for k, v in found.items()},
        "note": "datasketch hashes each shingle with SHA-1 and applies num_perm permutations per document; "
        "edgellm hashes each shingle once (one-permutation hashing) over the whole batch",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--output", default="edgellm-out/data_quality.json")
    a = ap.parse_args(argv)
    from data_corpus import generate, write

    rows, truth = generate(a.docs, a.seed)
    path = write(rows, Path(tempfile.mkdtemp()) / "labelled.jsonl")
    report = {
        "docs": len(rows),
        "labels": {
            "pii_docs": len(truth["pii"]),
            "near": len(truth["near"]),
            "noise": len(truth["noise"]),
            "lookalike_docs": len(truth["lookalike"]),
        },
        "pii": pii_scores(rows, truth),
        **pipeline_scores(path, truth, a.workers),
        "near_dedup_speed": speed(rows, truth, THRESHOLD, 128, a.rounds),
    }
    goals = {
        "pii": all(v["recall"] >= 0.99 and v["precision"] >= 0.97 for v in report["pii"].values()),
        "near_f1": report["near_duplicates"]["f1"] >= 0.9,
        "noise": report["noise"]["recall"] >= 0.95 and report["noise"]["precision"] >= 0.9,
        "speedup_2x": report["near_dedup_speed"]["speedup"] >= 2.0,
    }
    report["goals_met"] = goals
    from edgellm.bench.report import write_json

    write_json(report, a.output)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
