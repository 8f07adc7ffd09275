"""How well a language model's perplexity (the ``perplexity`` cleaning step) tells noise from clean text, per
domain and noise family, on the held-out labelled corpora of ``data_labelled.py``.

Per domain: the clean documents' perplexity quantiles (5/50/95 %), and per noise family the AUC (the chance
that a noise document scores above a clean one: 1.0 separates them, 0.5 is a coin) and the share of it a
threshold at the clean documents' 97th percentile would drop (what ``max_perplexity`` set there removes
while keeping 97 % of clean text).

    python benchmarks/data_perplexity.py [--model bundled|HF_CAUSAL_LM_DIR] [--docs 3000] [--clean 300]
        [--domains docs,short,web,legal] [--seed 101] [--output edgellm-out/data_perplexity.json]

JSON to stdout and ``--output``, a table to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data_labelled


def auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """P(pos > neg) + P(pos == neg) / 2 over every pair (None when either side is empty)."""
    if not len(pos) or not len(neg):
        return None
    gt = (pos[:, None] > neg[None]).mean()
    eq = (pos[:, None] == neg[None]).mean()
    return round(float(gt + 0.5 * eq), 3)


def score_domain(domain: str, model: str, docs: int, n_clean: int, seed: int) -> dict:
    from edgellm.data.perplexity import perplexities

    rows, truth = data_labelled.generate(docs, seed, domain=domain, split="heldout")
    label = {r["id"]: truth["docs"][r["id"]] for r in rows}
    clean = [r["text"] for r in rows if label[r["id"]]["class"] == "clean"][:n_clean]
    noise = [(label[r["id"]]["family"], r["text"]) for r in rows if label[r["id"]]["class"] == "noise"]
    t0 = time.perf_counter()
    got = perplexities(clean + [t for _, t in noise], model)
    seconds = time.perf_counter() - t0
    ppl = np.array([np.nan if p is None else p for p in got], float)
    c = ppl[: len(clean)]
    c = c[~np.isnan(c)]
    cut = float(np.percentile(c, 97)) if len(c) else None
    out = {
        "clean_scored": len(c),
        "clean_quantiles": [round(float(np.percentile(c, q)), 1) for q in (5, 50, 95)] if len(c) else None,
        "threshold_at_clean_p97": None if cut is None else round(cut, 1),
        "docs_per_s": round(len(got) / seconds, 1),
        "families": {},
    }
    for fam in sorted({f for f, _ in noise}):
        idx = [len(clean) + k for k, (f, _) in enumerate(noise) if f == fam]
        v = ppl[idx]
        v = v[~np.isnan(v)]
        out["families"][fam] = {
            "scored": len(v),
            "of": len(idx),
            "auc": auc(v, c),
            "dropped_at_p97": round(float((v > cut).mean()), 3) if len(v) and cut is not None else None,
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled", help="'bundled' (tiny-llama) or a causal-LM folder")
    ap.add_argument("--docs", type=int, default=3000, help="documents generated per domain (10 %% noise)")
    ap.add_argument("--clean", type=int, default=300, help="clean documents scored per domain")
    ap.add_argument("--domains", default=",".join(data_labelled.DOMAINS))
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--output", default="edgellm-out/data_perplexity.json")
    a = ap.parse_args(argv)
    from edgellm.data.perplexity import model_folder

    domains = a.domains.split(",")
    for d in domains:  # before any work
        if d not in data_labelled.DOMAINS:
            ap.error(f"unknown domain '{d}' (domains: {', '.join(data_labelled.DOMAINS)})")
    rep = {"model": str(model_folder(a.model)), "split": "heldout", "seed": a.seed, "domains": {}}
    for d in domains:
        r = rep["domains"][d] = score_domain(d, a.model, a.docs, a.clean, a.seed)
        fams = ", ".join(
            f"{f} {v['auc']}/{v['dropped_at_p97']} (n={v['scored']})" for f, v in r["families"].items()
        )
        print(
            f"{d:6} clean ppl {r['clean_quantiles']} (n={r['clean_scored']})  AUC/dropped@p97: {fams}",
            file=sys.stderr,
        )
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(rep, indent=1))
    print(json.dumps(rep, indent=1))
    return rep


if __name__ == "__main__":
    main()
