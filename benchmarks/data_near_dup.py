"""Near-duplicates with small edits: precision, recall and speed of edgellm's MinHash LSH against
datasketch's MinHashLSH, on generated pairs at controlled edit sizes and lengths, in one run.

    .venv/bin/python benchmarks/data_near_dup.py [--quick] [--sweep] [--rounds 3] [--seed 0]

What counts as a near-duplicate (the positives): a copy of a base document with at most 10 % of its words
edited (at least one: substituted, inserted or deleted), or with case, whitespace, punctuation or a one-
character typo changed. The negatives share at most half of their text with a base, or are a template of
it with 30 % of the words replaced by other content words: an unrelated document of the same length and
source; the first 30 % or 50 % of a base continued with other text; a base followed by as much other
text (half of it is the base: Jaccard about 0.5, the boundary of the definition); the template.

Bases are cut to exactly 20, 30, 50, 100, 300, 1000 and 2000 words from two sources: the pydoc topics'
prose sentences and the docstring paragraphs of stdlib modules (100 bases per length, 50 at 1000 and 30
at 2000 words; ``--quick`` halves this). Every base is inserted into the index, then every positive and
negative is queried without insertion. TP: a positive matched to its own base. FP: a negative matched to
anything, or a positive matched only to another base. FN: a positive not matched.

Systems: ``edgellm`` (the recommended near_dedup settings, :data:`CHOSEN`); ``edgellm-0.x`` (word
5-grams at 0.8 with rotation densification and the lowercase-only tokens: the behaviour before issue 25);
``datasketch-defaults`` (``MinHashLSH()``: 0.9, 128 permutations); ``datasketch-same-threshold``;
``datasketch-same-threshold-verified`` (a candidate counts only if ``MinHash.jaccard >= threshold``, as
edgellm verifies its candidates). datasketch is fed the same normalised shingles as edgellm (bytes).
Speed: documents/s over hashing + insert + query, one process, one thread, medians over ``--rounds``
interleaved rounds; the datasketch variants with the same permutations share one timed hashing pass.

``--sweep`` also scores edgellm over word {2, 3, 5}-grams x thresholds 0.40..0.80 x {128, 256}
permutations, and applies the rule: the highest recall at pair precision >= 0.995 with the positives'
5th-percentile Jaccard at least 2 signature standard deviations above the threshold; ties go to fewer
permutations, then the higher threshold.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

# the sweep's rule picks word 2-grams at 0.6 with 256 permutations (P 0.9995, R 0.9991); 128 also meets
# its conditions (P 0.9979, R 0.9979, 3.8 sd margin) at about twice the speed and half the memory
CHOSEN = {"ngram": 2, "threshold": 0.6, "num_perm": 128}
CHOSEN_MIN_TOKENS = 16
LEGACY = {"ngram": 5, "threshold": 0.8, "num_perm": 128}
DATASKETCH_DEFAULT_THRESHOLD = 0.9  # MinHashLSH()'s default (datasketch 2.0.0)
LENGTHS = {20: 100, 30: 100, 50: 100, 100: 100, 300: 100, 1000: 50, 2000: 30}
EDITS = ("1w", "2w", "1%", "2%", "5%", "10%", "case", "space", "punct", "typo")
NEGATIVES = ("unrelated", "share30", "share50", "append", "template")
MODULES = (  # noqa: SIM905 (a list of 80 names reads better as words)
    "abc argparse array ast asyncio base64 bisect calendar codecs collections configparser contextlib copy csv "
    "dataclasses datetime decimal difflib doctest email enum fnmatch fractions functools gettext glob gzip hashlib "
    "heapq hmac html imaplib inspect io ipaddress itertools json logging lzma mailbox mimetypes multiprocessing "
    "operator optparse os pathlib pickle pprint queue random re sched secrets selectors shelve shlex shutil "
    "smtplib socket sqlite3 ssl statistics string struct subprocess tarfile tempfile textwrap threading timeit "
    "tokenize traceback typing unittest urllib.parse uuid warnings weakref zipfile"
).split()
STOP = set(
    "a an the and or but if of to in on at by for with from as is are was were be been it its this that these "  # noqa: SIM905
    "those not no can will may must which who what when where how than then there their they you your we our".split()
)


def docstring_paragraphs() -> list[str]:
    """Prose paragraphs (>= 8 words, mostly letters) of the docstrings of :data:`MODULES` and their members."""
    out, seen = [], set()
    for name in MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        objs = [mod] + [getattr(mod, k, None) for k in sorted(vars(mod)) if not k.startswith("_")]
        for obj in objs:
            doc = inspect.getdoc(obj) if obj is not None else None
            for para in (doc or "").split("\n\n"):
                flat = " ".join(para.split())
                words = flat.split()
                if len(words) < 8 or flat in seen or ">>>" in flat:
                    continue
                if sum(w.isalpha() for w in words) / len(words) < 0.7:
                    continue
                seen.add(flat)
                out.append(flat)
    return out


class Source:
    """Documents of exactly ``n`` words, drawn from a shuffled pool without replacement (cycled)."""

    def __init__(self, name: str, pieces: list[str], rng: random.Random) -> None:
        self.name, self.pieces, self.rng, self.pos = name, list(dict.fromkeys(pieces)), rng, 0
        rng.shuffle(self.pieces)
        self.vocab = sorted({w for p in pieces for w in p.split() if w.isalpha() and w.lower() not in STOP})

    def words(self, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            if self.pos == len(self.pieces):
                self.rng.shuffle(self.pieces)
                self.pos = 0
            out += self.pieces[self.pos].split()
            self.pos += 1
        return out[:n]


def edit(words: list[str], k: int, vocab: list[str], rng: random.Random) -> list[str]:
    """``k`` word edits at distinct positions, each a substitution, insertion or deletion."""
    w = list(words)
    for i in sorted(rng.sample(range(len(w)), k), reverse=True):
        op = rng.random()
        if op < 0.4:
            w[i] = rng.choice([v for v in (rng.choice(vocab) for _ in range(3)) if v != w[i]] or ["zebra"])
        elif op < 0.7:
            w.insert(i, rng.choice(vocab))
        else:
            del w[i]
    return w


def positive(words: list[str], family: str, vocab: list[str], rng: random.Random) -> str:
    n = len(words)
    if family in ("1w", "2w"):
        return " ".join(edit(words, int(family[0]), vocab, rng))
    if family.endswith("%"):
        return " ".join(edit(words, max(1, round(n * int(family[:-1]) / 100)), vocab, rng))
    w = list(words)
    if family == "case":
        i = rng.randrange(n)
        w[i] = w[i].upper()
        return " ".join(w)
    if family == "space":
        out = []
        for j, x in enumerate(w):
            out.append(x)
            out.append("\n" if j % 11 == 5 else "  " if j % 7 == 3 else " ")
        return "".join(out[:-1])
    if family == "punct":
        w = [x.rstrip(".,;:") for x in w]
        for i in rng.sample(range(n), max(1, n // 10)):
            w[i] += rng.choice([",", ";", " -", "."])
        return " ".join(w)
    if family == "typo":
        cand = [i for i, x in enumerate(w) if len(x) >= 4 and x.isalpha()] or [0]
        i = rng.choice(cand)
        j = rng.randrange(len(w[i]))
        w[i] = w[i][:j] + rng.choice([c for c in "etaoinsrh" if c != w[i][j : j + 1].lower()]) + w[i][j + 1 :]
        return " ".join(w)
    raise ValueError(family)


def negative(words: list[str], family: str, src: Source, rng: random.Random) -> str:
    n = len(words)
    if family == "unrelated":
        return " ".join(src.words(n))
    if family == "append":  # the base and as much other text: half of it is the base, J about 0.5
        return " ".join(words + src.words(n))
    if family.startswith("share"):
        keep = round(n * int(family[5:]) / 100)
        return " ".join(words[:keep] + src.words(n - keep))
    content = [i for i, x in enumerate(words) if x.lower().strip(".,;:()") not in STOP]
    k = max(1, round(0.3 * n))
    idx = rng.sample(content, min(k, len(content)))
    idx += rng.sample([i for i in range(n) if i not in set(idx)], k - len(idx))
    w = list(words)
    for i in idx:
        w[i] = rng.choice(src.vocab)
    return " ".join(w)


def build(seed: int, quick: bool) -> dict:
    """Bases, and the query pairs ``(text, base index or -1, length, label)``, reproducible from ``seed``."""
    from data_corpus import sentences

    from edgellm.data.minhash import shingle_hashes

    rng = random.Random(seed)
    sources = [Source("pydoc", sentences(), rng), Source("docstrings", docstring_paragraphs(), rng)]
    bases, base_len, queries = [], [], []
    for length, count in LENGTHS.items():
        count = count // 2 if quick else count
        group: list[set[int]] = []
        for j in range(count):
            src = sources[j % 2]
            while True:  # no two bases alike (docstrings repeat themselves across classes)
                words = src.words(length)
                sh = set(shingle_hashes(" ".join(words), 2).tolist())
                if all(len(sh & g) / len(sh | g) < 0.2 for g in group):
                    break
            group.append(sh)
            b = len(bases)
            bases.append(" ".join(words))
            base_len.append(length)
            for fam in EDITS:
                queries.append((positive(words, fam, src.vocab, rng), b, length, fam))
            for fam in NEGATIVES:
                queries.append((negative(words, fam, src, rng), -1, length, fam))
    return {"bases": bases, "base_len": base_len, "queries": queries}


def legacy_signatures(texts: list[str], num_perm: int, ngram: int, seed: int = 1) -> np.ndarray:
    """edgellm 0.x: lowercase ``\\w+`` tokens, one-permutation hashing with rotation densification."""
    import zlib

    from edgellm.data.minhash import _MIX, _mix

    parts = []
    for t in texts:
        toks = re.findall(r"\w+", t.lower())
        h = np.fromiter((zlib.crc32(x.encode()) for x in toks), np.uint64, len(toks))
        n = min(ngram, len(toks))
        out = np.zeros(max(0, len(toks) - n + 1), np.uint64)
        with np.errstate(over="ignore"):
            for i in range(n):
                out = out * _MIX + h[i : len(toks) - n + 1 + i]
        parts.append(out)
    counts = np.array([len(p) for p in parts], np.int64)
    empty = np.iinfo(np.uint64).max
    sig = np.full((len(texts), num_perm), empty, np.uint64)
    x = _mix(np.concatenate(parts) ^ np.uint64(seed * 0x2545F4914F6CDD1D & 0xFFFFFFFFFFFFFFFF))
    owner = np.repeat(np.arange(len(texts)), counts)
    bins = ((x >> np.uint64(32)) % np.uint64(num_perm)).astype(np.int64)
    np.minimum.at(sig.reshape(-1), owner * num_perm + bins, x & np.uint64(0xFFFFFFFF))
    holes = (sig == empty) & (counts > 0)[:, None]
    for row in np.flatnonzero(holes.any(axis=1)):
        full = np.flatnonzero(~holes[row])
        idx = np.arange(num_perm)
        k = np.searchsorted(full, idx) % len(full)
        sig[row] = sig[row, full[k]] + (((full[k] - idx) % num_perm).astype(np.uint64) << np.uint64(32))
    return sig


def shingle_bytes(text: str, n: int) -> list[bytes]:
    from edgellm.data.minhash import tokens

    t = tokens(text)
    if len(t) <= n:
        return [" ".join(t).encode()]
    return [" ".join(t[i : i + n]).encode() for i in range(len(t) - n + 1)]


def score(data: dict, matched: list[set[int]], candidates: float) -> dict:
    """Precision/recall over the queries from each query's set of matched bases."""
    tp = fp = fn = 0
    by_len: dict[str, list[int]] = {}
    by_edit: dict[str, list[int]] = {}
    for (_, base, length, label), got in zip(data["queries"], matched):
        if base < 0:
            fp += bool(got)
            by_edit.setdefault(label, [0, 0])[0] += bool(got)  # negatives: share matched
            by_edit[label][1] += 1
            continue
        hit = base in got
        tp += hit
        fn += not hit
        fp += bool(got) and not hit
        for d, k in ((by_len, str(length)), (by_edit, label)):
            d.setdefault(k, [0, 0])[0] += hit
            d[k][1] += 1
    from data_quality import prf

    neg = {k: round(v[0] / v[1], 4) for k, v in by_edit.items() if k in NEGATIVES}
    return {
        **prf(tp, fp, fn),
        "recall_by_length": {k: round(a / b, 4) for k, (a, b) in by_len.items()},
        "recall_by_edit": {k: round(v[0] / v[1], 4) for k, v in by_edit.items() if k not in NEGATIVES},
        "negatives_matched": neg,
        "candidates_per_query": round(candidates, 3),
    }


def groups(data: dict) -> dict[int, tuple[list[int], list[int]]]:
    """Per length: (base indices, query indices)."""
    out: dict[int, tuple[list[int], list[int]]] = {n: ([], []) for n in LENGTHS}
    for i, n in enumerate(data["base_len"]):
        out[n][0].append(i)
    for i, q in enumerate(data["queries"]):
        out[q[2]][1].append(i)
    return out


def run_edgellm(data: dict, ngram: int, threshold: float, num_perm: int, legacy: bool = False):
    """``(matched sets, candidates per query, seconds per length)``."""
    from edgellm.data.minhash import LSHIndex, signatures

    sign = legacy_signatures if legacy else signatures
    idx = LSHIndex(threshold, num_perm)
    matched: list[set[int]] = [set() for _ in data["queries"]]
    secs = {}
    g = groups(data)
    for n, (bi, _) in g.items():  # every base first, as in the protocol; timed per length
        t0 = time.perf_counter()
        for s in sign([data["bases"][i] for i in bi], num_perm, ngram):
            idx.insert(s)
        secs[n] = time.perf_counter() - t0
    for n, (_, qi) in g.items():
        t0 = time.perf_counter()
        sig = sign([data["queries"][i][0] for i in qi], num_perm, ngram)
        for i, s in zip(qi, sig):
            rep = idx.query(s)
            if rep is not None:
                matched[i].add(rep)
        secs[n] += time.perf_counter() - t0
    return matched, idx.candidates / max(1, len(data["queries"])), secs, idx.bands, idx.rows


def datasketch_hashes(data: dict, ngram: int, num_perm: int):
    """MinHash objects of the bases and queries, and the seconds per length (the shared hashing pass)."""
    from datasketch import MinHash

    secs, bases, queries = {}, {}, {}
    for n, (bi, qi) in groups(data).items():
        t0 = time.perf_counter()
        for d, texts, ids in ((bases, data["bases"], bi), (queries, [q[0] for q in data["queries"]], qi)):
            for i in ids:
                m = MinHash(num_perm=num_perm)
                m.update_batch(shingle_bytes(texts[i], ngram))
                d[i] = m
        secs[n] = time.perf_counter() - t0
    return bases, queries, secs


def run_datasketch(data: dict, hashes, threshold: float | None, num_perm: int, verify: bool):
    from datasketch import MinHashLSH

    bases, queries, hash_secs = hashes
    t = DATASKETCH_DEFAULT_THRESHOLD if threshold is None else threshold
    lsh = MinHashLSH(num_perm=num_perm) if threshold is None else MinHashLSH(threshold, num_perm)
    matched: list[set[int]] = [set() for _ in data["queries"]]
    secs, cands = dict(hash_secs), 0
    g = groups(data)
    for n, (bi, _) in g.items():
        t0 = time.perf_counter()
        for i in bi:
            lsh.insert(i, bases[i], check_duplication=False)
        secs[n] += time.perf_counter() - t0
    for n, (_, qi) in g.items():
        t0 = time.perf_counter()
        for i in qi:
            got = lsh.query(queries[i])
            cands += len(got)
            if verify:
                got = [b for b in got if queries[i].jaccard(bases[b]) >= t]
            matched[i] = set(got)
        secs[n] += time.perf_counter() - t0
    return matched, cands / max(1, len(data["queries"])), secs, lsh.b, lsh.r, t


def speed(data: dict, secs_rounds: list[dict[int, float]]) -> tuple[float, dict[str, float]]:
    g = groups(data)
    docs = {n: len(b) + len(q) for n, (b, q) in g.items()}
    med = {n: statistics.median(r[n] for r in secs_rounds) for n in g}
    total = sum(docs.values()) / sum(med.values())
    parts = {"short_le_50w": [n for n in g if n <= 50], "long_ge_1000w": [n for n in g if n >= 1000]}
    by = {k: round(sum(docs[n] for n in ns) / sum(med[n] for n in ns), 1) for k, ns in parts.items() if ns}
    by.update({str(n): round(docs[n] / med[n], 1) for n in g})
    return round(total, 1), by


def jaccards(data: dict, ngram: int) -> np.ndarray:
    """Exact shingle Jaccard of every edit positive with its base."""
    from edgellm.data.minhash import shingle_hashes

    out = []
    for text, base, _, _ in data["queries"]:
        if base >= 0:
            a = set(shingle_hashes(data["bases"][base], ngram).tolist())
            b = set(shingle_hashes(text, ngram).tolist())
            out.append(len(a & b) / len(a | b))
    return np.array(out)


def sweep(data: dict) -> tuple[list[dict], dict | None]:
    from edgellm.data.minhash import signatures

    rows = []
    pos = [(q[0], q[1]) for q in data["queries"] if q[1] >= 0]
    for ngram in (2, 3, 5):
        jac = jaccards(data, ngram)
        p5 = float(np.percentile(jac, 5))
        for num_perm in (128, 256):
            est = (
                signatures([t for t, _ in pos], num_perm, ngram)
                == signatures([data["bases"][b] for _, b in pos], num_perm, ngram)
            ).mean(axis=1)
            sd = float(np.std((est - jac)[jac < 1.0]))  # identical shingle sets cannot err
            for threshold in np.round(np.arange(0.40, 0.801, 0.05), 2):
                matched, cands, secs, b, r = run_edgellm(data, ngram, float(threshold), num_perm)
                s = score(data, matched, cands)
                docs = len(data["bases"]) + len(data["queries"])
                rows.append(
                    {
                        "shingles": f"word-{ngram}",
                        "ngram": ngram,
                        "num_perm": num_perm,
                        "threshold": float(threshold),
                        "bands": b,
                        "rows": r,
                        "precision": s["precision"],
                        "recall": s["recall"],
                        "fp": s["fp"],
                        "fn": s["fn"],
                        "negatives_matched": s["negatives_matched"],
                        "positives_jaccard_p5": round(p5, 4),
                        "signature_sd": round(sd, 4),
                        "margin_sd": round((p5 - float(threshold)) / sd, 2),
                        "docs_per_s_one_round": round(docs / sum(secs.values()), 1),
                    }
                )
    ok = [x for x in rows if x["precision"] >= 0.995 and x["margin_sd"] >= 2.0]
    best = max(ok, key=lambda x: (x["recall"], -x["num_perm"], x["threshold"])) if ok else None
    return rows, best


def short_records(seed: int, cfg: dict, min_tokens: int) -> dict:
    """Share of records of 8..24 words merged with a copy that differs in one substituted word, with and
    without ``min_tokens``: in instruction data such a pair is usually two examples, not a copy."""
    from data_corpus import sentences

    from edgellm.data.minhash import LSHIndex, signatures

    rng = random.Random(seed + 1)
    src = Source("pydoc", sentences(), rng)
    out = {}
    for n in (8, 10, 12, 14, 16, 20, 24):
        base = [src.words(n) for _ in range(200)]
        subs = []
        for w in base:
            w = list(w)
            i = rng.randrange(1, n - 1)
            w[i] = rng.choice(src.vocab)
            subs.append(" ".join(w))
        row = {}
        for m in (0, min_tokens):
            sa = signatures([" ".join(w) for w in base], cfg["num_perm"], cfg["ngram"], min_tokens=m)
            sb = signatures(subs, cfg["num_perm"], cfg["ngram"], min_tokens=m)
            hits = 0
            for a, b in zip(sa, sb):
                idx = LSHIndex(cfg["threshold"], cfg["num_perm"])
                idx.insert(a)
                hits += idx.query(b) == 0
            row[f"min_tokens_{m}"] = round(hits / len(base), 3)
        out[str(n)] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="half the bases, one round")
    ap.add_argument("--sweep", action="store_true", help="also score edgellm over the settings grid")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default="edgellm-out/data_near_dup.json")
    a = ap.parse_args(argv)
    rounds = 1 if a.quick else a.rounds
    data = build(a.seed, a.quick)
    cells: dict[str, int] = {}
    for _, _base, length, label in data["queries"]:
        cells[f"{length}/{label}"] = cells.get(f"{length}/{label}", 0) + 1
    npos = sum(q[1] >= 0 for q in data["queries"])
    c, leg = CHOSEN, LEGACY
    specs = {
        "edgellm": ("edgellm", c, False),
        "edgellm-0.x": ("edgellm", leg, True),
        "datasketch-defaults": (
            "datasketch",
            {"ngram": c["ngram"], "threshold": None, "num_perm": 128},
            False,
        ),
        "datasketch-same-threshold": ("datasketch", c, False),
        "datasketch-same-threshold-verified": ("datasketch", c, True),
    }
    secs: dict[str, list] = {k: [] for k in specs}
    results: dict[str, tuple] = {}
    for _ in range(rounds):
        ds_cache: dict[tuple, tuple] = {}
        for name, (kind, cfg, flag) in specs.items():
            if kind == "edgellm":
                m, cand, s, b, r = run_edgellm(data, cfg["ngram"], cfg["threshold"], cfg["num_perm"], flag)
                results[name] = (m, cand, b, r, cfg["threshold"])
            else:
                key = (cfg["ngram"], cfg["num_perm"])
                if key not in ds_cache:
                    ds_cache[key] = datasketch_hashes(data, *key)
                m, cand, s, b, r, t = run_datasketch(
                    data, ds_cache[key], cfg["threshold"], cfg["num_perm"], flag
                )
                results[name] = (m, cand, b, r, t)
            secs[name].append(s)
    systems = {}
    for name, (kind, cfg, flag) in specs.items():
        m, cand, b, r, t = results[name]
        dps, by = speed(data, secs[name])
        systems[name] = {
            "shingles": f"word-{cfg['ngram']}",
            "threshold": t,
            "num_perm": cfg["num_perm"],
            "bands": b,
            "rows": r,
            "verified": kind == "edgellm" or flag,
            **score(data, m, cand),
            "docs_per_s": dps,
            "docs_per_s_by_length": by,
        }
    e, d = systems["edgellm"], systems["datasketch-same-threshold"]
    report = {
        "pairs": {
            "positive": npos,
            "negative": len(data["queries"]) - npos,
            "bases": len(data["bases"]),
            "by_cell": cells,
        },
        "rounds": rounds,
        "systems": systems,
        "goals_met": {
            "recall_ge_datasketch_same_threshold": e["recall"] >= d["recall"],
            "precision_ge_datasketch_same_threshold": e["precision"] >= d["precision"],
            "faster_than_datasketch": e["docs_per_s"]
            > max(v["docs_per_s"] for k, v in systems.items() if k.startswith("datasketch")),
        },
    }
    report["short_records_merged"] = short_records(a.seed, CHOSEN, CHOSEN_MIN_TOKENS)
    if a.sweep:
        report["sweep"], report["sweep_choice"] = sweep(data)
    for name, s in systems.items():
        print(
            f"{name:36s} {s['shingles']} t={s['threshold']:.2f} {s['bands']}x{s['rows']}  P {s['precision']:.4f}  "
            f"R {s['recall']:.4f}  fp {s['fp']:4d}  fn {s['fn']:4d}  {s['docs_per_s']:9.0f} docs/s",
            file=sys.stderr,
        )
        print("    recall by length " + json.dumps(s["recall_by_length"]), file=sys.stderr)
        print("    recall by edit   " + json.dumps(s["recall_by_edit"]), file=sys.stderr)
        print("    negatives matched " + json.dumps(s["negatives_matched"]), file=sys.stderr)
    print(
        "short records merged with a one-word substitute: " + json.dumps(report["short_records_merged"]),
        file=sys.stderr,
    )
    if a.sweep:
        print(f"sweep choice: {json.dumps(report['sweep_choice'])}", file=sys.stderr)
    from edgellm.bench.report import write_json

    write_json(report, a.output)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
