"""MinHash signatures, computed for a whole batch of documents at once, and LSH with the band/row split
derived from the similarity threshold.

Shingles are word n-grams of lowercased tokens. Each token is hashed once (CRC-32, stable across
processes), n-gram hashes are rolled from token hashes in numpy, and the signature is built by one-
permutation hashing with densification (:func:`signatures`): one hash per shingle instead of
``num_perm``, over the whole batch at once, which is where per-document MinHash spends its time.

LSH: the signature is cut into ``b`` bands of ``r`` rows (``b * r <= num_perm``), chosen to minimise
the false-positive and false-negative areas around the threshold (the S-curve ``1 - (1 - s^r)^b``). A
candidate pair is confirmed only if its signatures agree on at least ``threshold`` of the rows, the
estimate of their Jaccard similarity.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

_TOKEN = re.compile(r"\w+", re.UNICODE)
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit affects every output bit."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def shingle_hashes(text: str, ngram: int) -> np.ndarray:
    """uint64 hashes of the distinct word n-grams of ``text`` (a short text is one shingle)."""
    toks = _TOKEN.findall(text.lower())
    if not toks:
        return np.zeros(0, np.uint64)
    h = np.fromiter((zlib.crc32(t.encode()) for t in toks), dtype=np.uint64, count=len(toks))
    n = min(ngram, len(toks))
    out = np.zeros(len(toks) - n + 1, np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            out = out * _MIX + h[i : len(toks) - n + 1 + i]
    return out


def signatures(texts: list[str], num_perm: int = 128, ngram: int = 5, seed: int = 1) -> np.ndarray:
    """``(len(texts), num_perm)`` uint64 MinHash signatures by one-permutation hashing.

    Each shingle is hashed once; its top bits pick one of ``num_perm`` bins and its low 32 bits are the
    value, the minimum per bin is kept (Li, Owen & Zhang 2012). Empty bins (short documents) borrow the
    next non-empty bin to their right, circularly, offset by the distance (rotation densification,
    Shrivastava & Li 2014), so two signatures agree on a bin with probability equal to the Jaccard
    similarity, as with ``num_perm`` independent permutations, at the cost of one hash per shingle.
    A document with no tokens gets an all-ones signature.
    """
    parts = [shingle_hashes(t, ngram) for t in texts]
    counts = np.array([len(p) for p in parts], dtype=np.int64)
    empty = np.iinfo(np.uint64).max
    sig = np.full((len(texts), num_perm), empty, dtype=np.uint64)
    if counts.sum() == 0:
        return sig
    x = _mix(np.concatenate(parts) ^ np.uint64(seed * 0x2545F4914F6CDD1D & 0xFFFFFFFFFFFFFFFF))
    owner = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
    bins = ((x >> np.uint64(32)) % np.uint64(num_perm)).astype(np.int64)
    np.minimum.at(sig.reshape(-1), owner * num_perm + bins, x & np.uint64(0xFFFFFFFF))
    holes = (sig == empty) & (counts > 0)[:, None]
    for row in np.flatnonzero(holes.any(axis=1)):
        full = np.flatnonzero(~holes[row])
        idx = np.arange(num_perm)
        k = np.searchsorted(full, idx) % len(full)  # next non-empty bin to the right, circularly
        dist = (full[k] - idx) % num_perm
        sig[row] = sig[row, full[k]] + (dist.astype(np.uint64) << np.uint64(32))
    return sig


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.2) -> tuple[int, int]:
    """``(bands, rows)`` minimising weighted false-positive + false-negative area at ``threshold``.

    Every LSH candidate is verified on its signature before it counts, so a false positive costs one
    comparison while a false negative is a missed duplicate: the default weighs misses 4:1.
    """
    s = np.linspace(0.0, 1.0, 2001)
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        r = num_perm // b
        p = 1.0 - (1.0 - s**r) ** b
        fp = np.trapezoid(np.where(s < threshold, p, 0.0), s)
        fn = np.trapezoid(np.where(s >= threshold, 1.0 - p, 0.0), s)
        err = fp_weight * fp + (1.0 - fp_weight) * fn
        if err < best_err:
            best, best_err = (b, r), err
    return best


class LSHIndex:
    """Streaming near-duplicate index: the first document of a cluster is kept, later ones match it."""

    def __init__(
        self,
        threshold: float,
        num_perm: int,
        bands: int | None = None,
        rows: int | None = None,
        fp_weight: float = 0.2,
    ) -> None:
        if bands is None or rows is None:
            bands, rows = optimal_bands(threshold, num_perm, fp_weight)
        self.threshold, self.bands, self.rows = threshold, bands, rows
        self.tables: list[dict[bytes, int]] = [{} for _ in range(bands)]
        self.kept: list[np.ndarray] = []  # signatures of kept documents, by representative index

    def query_insert(self, sig: np.ndarray) -> int | None:
        """The representative this signature duplicates, or None (then it is inserted as a new one)."""
        keys = [sig[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(self.bands)]
        seen: set[int] = set()
        for table, key in zip(self.tables, keys):
            rep = table.get(key)
            if rep is not None and rep not in seen:
                seen.add(rep)
                if float(np.mean(self.kept[rep] == sig)) >= self.threshold:
                    return rep
        rep = len(self.kept)
        self.kept.append(sig)
        for table, key in zip(self.tables, keys):
            table.setdefault(key, rep)
        return None
