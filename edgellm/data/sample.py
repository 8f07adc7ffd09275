"""Stratified sampling by a field, with target weights and a minimum per class (the long tail stays).

Two streaming passes: the first counts each class; the second keeps, per class, the ``quota`` documents
with the smallest seeded hash of their id (a bottom-k sample: uniform, reproducible, independent of file
order, memory bounded by the sample size).

Quotas: ``weights`` (class -> share, normalised) or, without weights, each class's share of the corpus;
then every class gets at least ``min_per_class`` (or all it has), and the rest of ``n`` is shared by the
weights among classes that still have documents.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Iterable
from typing import Any

from edgellm.errors import EdgeLLMError


def quotas(
    counts: dict[str, int], n: int, weights: dict[str, float] | None = None, min_per_class: int = 0
) -> dict[str, int]:
    """How many documents to take from each class."""
    if n < 1:
        raise EdgeLLMError(f"sample size {n} must be positive", "use e.g. --n 1000")
    if weights:
        unknown = sorted(set(weights) - set(counts))
        if unknown:
            raise EdgeLLMError(
                f"weight for class '{unknown[0]}', which the corpus does not have",
                f"classes: {', '.join(sorted(counts))}",
            )
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise EdgeLLMError("weights must be non-negative and not all zero", "e.g. {en: 0.7, de: 0.3}")
    w = {c: (weights.get(c, 0.0) if weights else counts[c]) for c in counts}
    total_w = sum(w.values()) or 1.0
    q = {c: min(counts[c], min_per_class) for c in counts}
    left = max(0, n - sum(q.values()))
    # share the rest by weight, re-sharing what full classes cannot take
    while left > 0:
        open_ = {c: w[c] for c in counts if q[c] < counts[c] and w[c] > 0}
        if not open_:
            break
        tw = sum(open_.values())
        given = 0
        for c, wc in sorted(open_.items()):
            take = min(counts[c] - q[c], int(left * wc / tw))
            q[c] += take
            given += take
        if given == 0:  # rounding: hand out one at a time by weight
            c = max(open_, key=lambda k: (open_[k], k))
            q[c] += 1
            given = 1
        left -= given
    del total_w
    return q


def _key(seed: int, ident: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{ident}".encode(), digest_size=8).digest(), "big")


def stratified_sample(
    records: Iterable[dict[str, Any]] | Any,
    field: str,
    n: int,
    *,
    weights: dict[str, float] | None = None,
    min_per_class: int = 0,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample ``n`` records stratified by ``field``; ``records`` is re-iterable (a list or a callable).

    Returns the sample (in input order) and a report: counts, quotas and taken per class.
    """
    it = records if callable(records) else (lambda: records)
    counts: Counter = Counter()
    for r in it():
        if field not in r:
            raise EdgeLLMError(
                f"a record has no field '{field}' (it has: {', '.join(r)})", "pick a field every record has"
            )
        counts[str(r[field])] += 1
    if not counts:
        raise EdgeLLMError("the corpus is empty: nothing to sample", "check the input")
    q = quotas(dict(counts), n, weights, min_per_class)
    heaps: dict[str, list[tuple[int, int]]] = {c: [] for c in counts}
    for i, r in enumerate(it()):
        c = str(r[field])
        if q[c] == 0:
            continue
        k = -_key(seed, str(r.get("id", i)))  # max-heap of the smallest keys
        h = heaps[c]
        if len(h) < q[c]:
            heapq.heappush(h, (k, i))
        elif k > h[0][0]:
            heapq.heapreplace(h, (k, i))
    chosen = {i for h in heaps.values() for _, i in h}
    sample = [r for i, r in enumerate(it()) if i in chosen]
    report = {
        "field": field,
        "n": n,
        "classes": {
            c: {"available": counts[c], "quota": q[c], "taken": len(heaps[c])} for c in sorted(counts)
        },
    }
    return sample, report
