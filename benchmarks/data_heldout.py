"""The data front end on labelled corpora it was not tuned on: per class, what ``edgellm.data.clean`` removes
and keeps, per domain, split and quality preset (corpora from ``data_labelled.py``).

    python benchmarks/data_heldout.py [--docs 1500] [--split heldout|tune|both] [--domains docs,short,web,legal]
        [--seed 101] [--workers 1] [--quick] [--output edgellm-out/data_heldout.json]

Per class (:func:`score`):

- **PII removed**: a value is removed when it is no longer verbatim in its output document; documents
  dropped whole are counted as ``pii_docs_dropped``, not as removals. Per type; ``worst_type`` the minimum.
- **look-alikes intact**: the value still verbatim, over the look-alike documents kept.
- **clusters at one**: exactly one member of a near-duplicate cluster in the output (0 and >= 2 counted
  too); ``copies_caught_by_edit``: per edit, the copies of which either the copy or its original is kept,
  not both (over the pairs with at least one kept).
- **noise removed**: noise documents absent from the output, also per family.
- **clean kept**: clean documents in the output; ``clean_pii_lookalike_kept`` counts those two classes too.
- ``scored_drops``: why the kept classes' dropped documents went, replayed step by step
  (``quality:too_short``, ``language:low_confidence``, ``dedup`` for the order-dependent steps).

The run cleans each corpus with the default steps. Where the quality step has presets (``preset`` in its
options), it runs the dry run (``edgellm.data.clean.dry_run``, when there is one) and ``clean`` with the
automatic choice, then with each fixed preset; without presets it runs the fixed configs ``default``
(today's Gopher/C4 rules) and ``min_words_20``. Where a ``model_quality`` step is registered, each config
runs with and without it, and the model's own precision and recall of dropping (normalize -> model_quality
over every document, per noise family and domain) are reported. The goals are checked on the held-out
split with the automatic preset (``default`` without presets), model off. ``--quick``: held-out, the
first config only. JSON to stdout and ``--output``, a table to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, get_args

sys.path.insert(0, str(Path(__file__).resolve().parent))

GOALS = {
    "clean_kept": 0.97,
    "noise_removed": 0.97,
    "clusters_at_one": 0.95,
    "lookalikes_intact": 0.99,
    "pii_removed": 1.0,
    "pii_worst_type": 0.99,
}
KEPT_CLASSES = ("clean", "pii", "lookalike")


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def output_texts(output: Any) -> dict[str, str]:
    """``id -> text`` of a cleaned corpus: a folder of ``part-*`` shards, a mapping, or a list of rows."""
    if isinstance(output, dict):
        return dict(output)
    if isinstance(output, list):
        return {r["id"]: r["text"] for r in output}
    out: dict[str, str] = {}
    for f in sorted(Path(output).glob("part-*.jsonl")):
        for line in f.open(encoding="utf-8"):
            r = json.loads(line)
            out[r["id"]] = r["text"]
    for f in sorted(Path(output).glob("part-*.parquet")):
        import pyarrow.parquet as pq

        t = pq.read_table(f, columns=["id", "text"])
        out.update(zip(t.column("id").to_pylist(), t.column("text").to_pylist()))
    return out


def score(rows: list[dict], truth: dict, output: Any) -> dict[str, Any]:
    """The per-class metrics of one cleaning ``output`` (see the module docstring) against ``truth``."""
    out = output_texts(output)
    docs = truth["docs"]
    by_cls: dict[str, list[str]] = {}
    for r in rows:
        by_cls.setdefault(docs[r["id"]]["class"], []).append(r["id"])
    kept = {c: sum(i in out for i in ids) for c, ids in by_cls.items()}
    n = {c: len(ids) for c, ids in by_cls.items()}

    pii_tot: Counter = Counter()
    pii_rem: Counter = Counter()
    for i in by_cls.get("pii", []):
        if i in out:
            for kind, value in docs[i]["values"]:
                pii_tot[kind] += 1
                pii_rem[kind] += value not in out[i]
    by_type = {k: _ratio(pii_rem[k], pii_tot[k]) for k in sorted(pii_tot)}

    look_tot: Counter = Counter()
    look_ok: Counter = Counter()
    for i in by_cls.get("lookalike", []):
        if i in out:
            look_tot[docs[i]["kind"]] += 1
            look_ok[docs[i]["kind"]] += docs[i]["value"] in out[i]

    members: dict[str, list[str]] = {}
    for i in by_cls.get("near", []):
        members.setdefault(docs[i]["cluster"], []).append(i)
    left = Counter(min(2, sum(i in out for i in m)) for m in members.values())
    edit_tot: Counter = Counter()
    edit_ok: Counter = Counter()
    for m in members.values():
        orig = next(i for i in m if docs[i]["edit"] is None)
        for i in m:
            e = docs[i]["edit"]
            if e is not None and (i in out or orig in out):
                edit_tot[e] += 1
                edit_ok[e] += (i in out) != (orig in out)

    fam_tot: Counter = Counter(docs[i]["family"] for i in by_cls.get("noise", []))
    fam_gone: Counter = Counter(docs[i]["family"] for i in by_cls.get("noise", []) if i not in out)
    n_kept = sum(n.get(c, 0) for c in KEPT_CLASSES)
    return {
        "clean_kept": _ratio(kept.get("clean", 0), n.get("clean", 0)),
        "clean_pii_lookalike_kept": _ratio(sum(kept.get(c, 0) for c in KEPT_CLASSES), n_kept),
        "noise_removed": _ratio(sum(fam_gone.values()), sum(fam_tot.values())),
        "noise_removed_by_family": {f: _ratio(fam_gone[f], fam_tot[f]) for f in sorted(fam_tot)},
        "clusters_at_one": _ratio(left[1], len(members)),
        "clusters": {"zero": left[0], "one": left[1], "more": left[2], "total": len(members)},
        "copies_caught_by_edit": {e: _ratio(edit_ok[e], edit_tot[e]) for e in sorted(edit_tot)},
        "lookalikes_intact": _ratio(sum(look_ok.values()), sum(look_tot.values())),
        "lookalikes_by_kind": {k: _ratio(look_ok[k], look_tot[k]) for k in sorted(look_tot)},
        "lookalike_docs_dropped": n.get("lookalike", 0) - kept.get("lookalike", 0),
        "pii_removed": {
            "all": _ratio(sum(pii_rem.values()), sum(pii_tot.values())),
            "worst_type": min((v for v in by_type.values() if v is not None), default=None),
            "by_type": by_type,
        },
        "pii_docs_dropped": n.get("pii", 0) - kept.get("pii", 0),
        "docs": dict(sorted(n.items())),
    }


def why_dropped(texts: list[str], spec: list[Any]) -> Counter:
    """For documents that ``clean`` dropped: the first per-document step (and its reason) that drops each
    one, replayed on its own; ``dedup`` where none does (an exact or near duplicate)."""
    from edgellm.data.steps import parse_steps

    steps = [s for s in parse_steps(spec) if not s.stateful]
    why: Counter = Counter()
    for t in texts:
        reason = "dedup"
        for s in steps:
            new, drop, _, counts = s.run_fields([t], {})
            if drop[0]:
                keys = [
                    k
                    for k in counts
                    if not k.startswith(("scanned:", "unscanned:", "pii_", "boilerplate_lines_removed"))
                ]
                reason = f"{s.kind}:{keys[0]}" if keys else s.kind
                break
            t = new[0]
        why[reason] += 1
    return why


# -- what this edgellm has --------------------------------------------------------------------------------
def features() -> dict[str, Any]:
    """Presets of the quality step, the dry run, and the model quality step, where this edgellm has them."""
    from edgellm.data import clean as clean_mod
    from edgellm.data.steps import STEPS

    field = STEPS["quality"].model_fields.get("preset")
    names = list(get_args(field.annotation)) if field is not None else []
    if field is not None and not names:  # not a Literal: the quality module's table
        import importlib

        names = ["auto", *getattr(importlib.import_module("edgellm.data.quality"), "PRESETS", {})]
    return {
        "presets": [p for p in names if p != "auto"],
        "auto": "auto" in names,
        "dry_run": getattr(clean_mod, "dry_run", None),
        "model_quality": "model_quality" in STEPS,
    }


def configs(feat: dict[str, Any]) -> list[tuple[str, list[Any], bool]]:
    """``(name, steps, auto)``: the default steps with the automatic preset and each fixed one, or today's
    fixed configs when the quality step has no presets."""
    from edgellm.data.clean import DEFAULT_STEPS

    def with_quality(q: dict) -> list[Any]:
        return [{"quality": q} if s == "quality" else s for s in DEFAULT_STEPS]

    if feat["presets"]:
        out = [("auto", with_quality({"preset": "auto"}), True)] if feat["auto"] else []
        return out + [(p, with_quality({"preset": p}), False) for p in feat["presets"]]
    return [("default", list(DEFAULT_STEPS), False), ("min_words_20", with_quality({"min_words": 20}), False)]


def _with_model(steps: list[Any]) -> list[Any]:
    i = next(k for k, s in enumerate(steps) if s == "quality" or (isinstance(s, dict) and "quality" in s))
    return [*steps[: i + 1], "model_quality", *steps[i + 1 :]]


def _chosen(d: dict | None) -> tuple[str | None, str | None]:
    """``(preset, why)`` from a dry run's or a report's dict, wherever it keeps them."""
    if not isinstance(d, dict):
        return None, None
    q = d.get("quality") if isinstance(d.get("quality"), dict) else d
    name = q.get("preset", q.get("chosen"))
    return (name if isinstance(name, str) else None), q.get("why")


def _resolved(steps: list[Any], preset: str | None) -> list[Any]:
    if preset is None:
        return steps
    return [
        {"quality": {**s["quality"], "preset": preset}} if isinstance(s, dict) and "quality" in s else s
        for s in steps
    ]


# -- the run ----------------------------------------------------------------------------------------------
def run_one(rows, truth, corpus: Path, work: Path, name: str, steps, auto: bool, feat, workers: int) -> dict:
    from edgellm.data.clean import CleanConfig, clean

    cfg = CleanConfig(steps=steps, workers=workers)
    preset: dict[str, Any] = {"chosen": None if feat["presets"] else name, "auto": auto, "why": None}
    if auto and feat["dry_run"] is not None:
        try:
            preset["chosen"], preset["why"] = _chosen(feat["dry_run"](corpus, cfg))
        except Exception as exc:  # recorded, the run goes on
            preset["dry_run_error"] = f"{type(exc).__name__}: {exc}"
    elif feat["presets"] and not auto:
        preset["chosen"] = name
    t0 = time.perf_counter()
    report = clean(corpus, work, cfg, force=True)
    seconds = time.perf_counter() - t0
    used, why = _chosen(report)
    if auto and used is not None:
        preset["why"] = preset["why"] or why
        if preset["chosen"] not in (None, used):
            preset["dry_run_chose"] = preset["chosen"]
        preset["chosen"] = used
    out = output_texts(work)
    lost = [r["text"] for r in rows if r["id"] not in out and truth["docs"][r["id"]]["class"] in KEPT_CLASSES]
    return {
        "metrics": score(rows, truth, out),
        "preset": preset,
        "drops_by_rule": {s["step"]: s["reasons"] for s in report["steps"] if s["dropped"] or s["reasons"]},
        "scored_drops": dict(
            why_dropped(lost, _resolved(steps, preset["chosen"] if auto else None)).most_common()
        ),
        "seconds": round(seconds, 2),
    }


def _pr(c: Counter) -> dict[str, float | None]:
    """Precision and recall of dropping, from counts of ``(is noise, dropped)``."""
    tp, fp, fn = c[(True, True)], c[(False, True)], c[(True, False)]
    return {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)}


def model_scores(corpora: list[tuple[str, str, list[dict], dict]]) -> dict[str, Any]:
    """Precision and recall of the model step's drops on its own (normalize -> model_quality, every
    document of the held-out corpora; noise is the positive class), per noise family and per domain, with
    the share of the clean, PII and look-alike documents it keeps."""
    import pyarrow as pa

    from edgellm.data.clean import run_steps
    from edgellm.data.steps import ALIVE, parse_steps

    steps = parse_steps(["normalize", "model_quality"])
    tot: Counter = Counter()
    fam: dict[str, list[int]] = {}
    dom: dict[str, Counter] = {}
    for split, domain, rows, truth in corpora:
        if split != "heldout":
            continue
        batch = pa.RecordBatch.from_pydict({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
        out, _, _ = run_steps(batch, steps)
        c = dom.setdefault(domain, Counter())
        for r, x in zip(rows, out.column("_drop_at").to_pylist()):
            info, d = truth["docs"][r["id"]], int(x) != ALIVE
            bad = info["class"] == "noise"
            tot[(bad, d)] += 1
            c[(bad, d)] += 1
            if bad:
                fam.setdefault(info["family"], [0, 0])[0] += d
                fam[info["family"]][1] += 1
            elif info["class"] in KEPT_CLASSES:
                c["kept"] += not d
                c["scored"] += 1
    return {
        **_pr(tot),
        "by_family": {f: _ratio(a, b) for f, (a, b) in sorted(fam.items())},
        "by_domain": {
            d: {**_pr(c), "clean_kept": _ratio(c["kept"], c["scored"])} for d, c in sorted(dom.items())
        },
        "threshold": getattr(steps[1], "threshold", None),
    }


def goals(runs: list[dict], first: str) -> tuple[dict, dict]:
    """``(goals_met, per domain)`` on the held-out runs of config ``first``, model off. A figure that
    cannot be measured (no look-alike document kept, say) does not meet its goal."""
    per: dict[str, dict[str, bool | None]] = {}
    for r in runs:
        if r["split"] != "heldout" or r["config"] != first or r["model_quality"]:
            continue
        m = r["metrics"]
        got = {
            "clean_kept": m["clean_kept"],
            "noise_removed": m["noise_removed"],
            "clusters_at_one": m["clusters_at_one"],
            "lookalikes_intact": m["lookalikes_intact"],
            "pii_removed": m["pii_removed"]["all"],
            "pii_worst_type": m["pii_removed"]["worst_type"],
        }
        per[r["domain"]] = {k: None if v is None else v >= GOALS[k] for k, v in got.items()}
    met = {k: all(d[k] is True for d in per.values()) if per else None for k in GOALS}  # None: not measurable
    return met, per


def table(runs: list[dict]) -> str:
    head = f"{'split':8}{'domain':7}{'config':13}{'model':6}{'clean':>7}{'+pii/la':>8}{'noise':>7}{'clus@1':>7}{' 0/1/2+':>12}{'looka':>7}{'pii':>7}{'worst':>7}{'piiDrop':>8}  top clean drops"
    lines = [head, "-" * len(head)]
    for r in runs:
        m = r["metrics"]
        c = m["clusters"]
        f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        drops = ", ".join(f"{k} {v}" for k, v in list(r["scored_drops"].items())[:3])
        cfg = r["config"] + (
            f"->{r['preset']['chosen']}" if r["preset"]["auto"] and r["preset"]["chosen"] else ""
        )
        lines.append(
            f"{r['split']:8}{r['domain']:7}{cfg:13}{'on' if r['model_quality'] else 'off':6}{f(m['clean_kept']):>7}"
            f"{f(m['clean_pii_lookalike_kept']):>8}{f(m['noise_removed']):>7}{f(m['clusters_at_one']):>7}"
            f"{c['zero']:>4}/{c['one']}/{c['more']:<4}{f(m['lookalikes_intact']):>7}{f(m['pii_removed']['all']):>7}"
            f"{f(m['pii_removed']['worst_type']):>7}{m['pii_docs_dropped']:>8}  {drops}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import data_labelled

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1500)
    ap.add_argument("--split", choices=["heldout", "tune", "both"], default="both")
    ap.add_argument("--domains", default=",".join(data_labelled.DOMAINS))
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="held-out split, the first config only, model off")
    ap.add_argument("--output", default="edgellm-out/data_heldout.json")
    ap.add_argument("--corpus", help="score this saved corpus (x.jsonl beside x.truth.json) instead")
    a = ap.parse_args(argv)
    feat = features()
    cfgs = configs(feat)[:1] if a.quick else configs(feat)
    splits = (
        ["heldout"]
        if a.quick or a.split == "heldout"
        else ["tune"]
        if a.split == "tune"
        else ["tune", "heldout"]
    )
    models = [False] + ([True] if feat["model_quality"] and not a.quick else [])
    runs, corpora = [], []
    if a.corpus:
        rows, truth = data_labelled.read(a.corpus)
        meta = truth.get("meta", {})
        plan = [(meta.get("split", "heldout"), meta.get("domain", "given"), rows, truth)]
    else:
        plan = [
            (split, domain, *data_labelled.generate(a.docs, a.seed, domain=domain, split=split))
            for split in splits
            for domain in a.domains.split(",")
            if not (domain == "legal" and split == "tune")
        ]
    with tempfile.TemporaryDirectory() as tmp:
        for split, domain, rows, truth in plan:
            corpus = Path(a.corpus) if a.corpus else Path(tmp) / f"{split}-{domain}.jsonl"
            if not a.corpus:
                data_labelled.write(rows, truth, corpus)
            corpora.append((split, domain, rows, truth))
            for name, steps, auto in cfgs:
                for model in models:
                    res = run_one(
                        rows, truth, corpus, Path(tmp) / "out", name,
                        _with_model(steps) if model else steps, auto, feat, a.workers,
                    )  # fmt: skip
                    runs.append({"split": split, "domain": domain, "docs": len(rows), "config": name,
                                 "model_quality": model, **res})  # fmt: skip
                    print(table(runs[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    met, per = goals(runs, cfgs[0][0])
    result = {
        "runs": runs,
        "model_quality": model_scores(corpora) if feat["model_quality"] else None,
        "goals": GOALS,
        "goals_checked_on": {"split": "heldout", "config": cfgs[0][0], "model_quality": False},
        "goals_met": met,
        "goals_by_domain": per,
        "features": {k: (v if k != "dry_run" else v is not None) for k, v in feat.items()},
        "settings": {"docs": a.docs, "seed": a.seed, "workers": a.workers, "quick": a.quick},
    }
    print(table(runs), file=sys.stderr)
    print(f"goals met ({cfgs[0][0]}, held-out): {met}", file=sys.stderr)
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
