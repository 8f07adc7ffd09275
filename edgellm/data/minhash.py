"""MinHash signatures, computed for a whole batch of documents at once, and LSH with the band/row split
derived from the similarity threshold.

Tokens (:func:`tokens`): Unicode NFKC, case-folded, combining marks removed (``café`` = ``cafe``), then
runs of word characters; every CJK ideograph, kana or hangul syllable (and Thai, Lao, Khmer, Myanmar
letter) is a token of its own, since those scripts do not separate words with spaces. Punctuation and
whitespace are gone by construction; digits are kept (``v1.2`` and ``v1.3`` differ). So case, width,
accent, whitespace and punctuation edits do not change a document's shingles.

Shingles are word n-grams of those tokens (:func:`shingle_hashes`). Each token is hashed once (CRC-32,
stable across processes), n-gram hashes are rolled from token hashes in numpy, and the signature is
built by one-permutation hashing with optimal densification (:func:`signatures`): one hash per shingle
instead of ``num_perm``, over the whole batch at once. A short document leaves most of its bins empty;
each empty bin takes the value of the first non-empty bin in its own fixed pseudo-random sequence of
bins (Shrivastava, "Optimal densification for fast and accurate minwise hashing", ICML 2017), which
keeps the estimate unbiased with close to the variance of independent permutations. Values are
uint32 (:data:`SIG_DTYPE`, used by the Ray adapter too).

LSH: the signature is cut into ``b`` bands of ``r`` rows (``b * r <= num_perm``), chosen to minimise
the false-positive and false-negative areas around the threshold (the S-curve ``1 - (1 - s^r)^b``). A
candidate pair is confirmed only if its signatures agree on at least ``threshold`` of the rows, the
estimate of their Jaccard similarity. A document with fewer than ``min_tokens`` tokens gets the
skip signature (every bin :data:`EMPTY`): it is indexed as a document of its own and never matches or is matched (two
short fine-tuning examples that differ in one word are different examples; exact dedup still sees them).

Measured (``python benchmarks/data_near_dup.py --sweep``: 580 bases of 20-2,000 words from pydoc prose
and stdlib docstrings, 5,800 positives with at most 10 % of the words edited, 2,900 negatives sharing
at most half their text; one process, medians of 3 rounds, a loaded 2-core machine):

==================================  ========  ====  =====  =========  ======  ======
system                              shingles     t  b x r  precision  recall  docs/s
==================================  ========  ====  =====  =========  ======  ======
edgellm, ngram 2 (recommended)      word-2    0.60   23x5     0.9979  0.9979   4,284
edgellm 0.x (5-grams, rotation)     word-5    0.80  12x10     1.0000  0.6157   4,595
datasketch ``MinHashLSH()``         word-2    0.90   5x25     1.0000  0.5921   1,068
datasketch, same threshold          word-2    0.60   18x7     0.9824  0.9798   1,046
datasketch, same, verified          word-2    0.60   18x7     0.9984  0.9793   1,035
==================================  ========  ====  =====  =========  ======  ======

The recall of 0.x on 20-30-word documents was 0.39-0.42: a one-word edit leaves their 5-gram Jaccard
below 0.8. The precision misses of word 2-grams at 0.6 are the boundary pairs (a document followed by
as much other text, Jaccard about 0.5), 2 % of which pass; at 0.55 12 % do, and at 0.65 / 0.7 the recall
falls to 0.985 / 0.957 (the 10 % edits of short documents). With 256 permutations at 0.6 the figures
are 0.9995 / 0.9991 at about half the speed. ``min_tokens`` 16 keeps records of fewer than 16 tokens that differ
in one word apart (at 10-14 words 73-100 % of such pairs would otherwise merge).

Example:
    >>> sig = signatures(["the cat sat on the mat today", "The cat sat on the mat, today!"], ngram=2)
    >>> bool((sig[0] == sig[1]).all())
    True
    >>> idx = LSHIndex(0.6, 128)
    >>> idx.query_insert(sig[0]) is None, idx.query_insert(sig[1])
    (True, 0)
"""

from __future__ import annotations

import functools
import re
import unicodedata
import zlib

import numpy as np

SIG_DTYPE = np.dtype(np.uint32)  # one signature value; the Ray adapter's band keys use its width
EMPTY = np.iinfo(SIG_DTYPE).max  # every bin of the signature of a document too short to index

_WORD = re.compile(r"\w+", re.UNICODE)
# scripts written without spaces between words: one token per character
_CHAR_SCRIPTS = re.compile(
    "(["
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"  # hangul jamo and syllables
    "\u3040-\u30ff\u31f0-\u31ff"  # hiragana, katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\U00020000-\U0003134f"
    "])"
)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_PROBE = 32  # first pass of the densification: 32 probes per empty bin
_CHUNK = 1 << 22  # booleans per densification gather (rows x num_perm x probes)


@functools.cache
def _marks(plane: int) -> re.Pattern[str]:
    """A character class of the combining marks (categories Mn, Mc, Me) of the BMP (``plane`` 0) or
    above it, built once. The kana voicing marks are kept: ``デ`` and ``テ`` are different sounds.

    Two classes, because one that holds astral characters makes ``re`` test every character slowly.
    """
    points = range(0x10000) if plane == 0 else [*range(0x10000, 0x20000), *range(0xE0000, 0xE0200)]
    marks = [cp for cp in points if unicodedata.category(chr(cp))[0] == "M" and cp not in (0x3099, 0x309A)]
    ranges, start = [], marks[0]
    for prev, cp in zip(marks, [*marks[1:], -1]):
        if cp != prev + 1:
            ranges.append(f"{chr(start)}-{chr(prev)}")
            start = cp
    return re.compile("[" + "".join(ranges) + "]")


def tokens(text: str) -> list[str]:
    """The normalised tokens shingles are made of (see the module docstring).

    Example:
        >>> tokens("Héllo,  WORLD!") == tokens("ＨＥＬＬＯ world") == ["hello", "world"]
        True
        >>> tokens("数据清洗 v1.2")
        ['数', '据', '清', '洗', 'v1', '2']
    """
    if text.isascii():
        return _WORD.findall(text.lower())
    t = unicodedata.normalize("NFKC", text).casefold()
    t = _marks(0).sub("", unicodedata.normalize("NFD", t))
    top = max(t, default="a")
    if top > "\uffff":
        t = _marks(1).sub("", t)
    t = unicodedata.normalize("NFC", t)
    return _WORD.findall(_CHAR_SCRIPTS.sub(r" \1 ", t) if top >= "\u0e00" else t)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit affects every output bit."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _roll(toks: list[str], ngram: int) -> np.ndarray:
    if not toks:
        return np.zeros(0, np.uint64)
    h = np.fromiter((zlib.crc32(t.encode()) for t in toks), dtype=np.uint64, count=len(toks))
    n = min(ngram, len(toks))
    out = np.zeros(len(toks) - n + 1, np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            out = out * _MIX + h[i : len(toks) - n + 1 + i]
    return out


def shingle_hashes(text: str, ngram: int) -> np.ndarray:
    """uint64 hashes of the word n-grams of ``tokens(text)`` (a shorter text is one shingle)."""
    return _roll(tokens(text), ngram)


@functools.cache
def _probes(num_perm: int, seed: int, width: int) -> np.ndarray:
    """``(num_perm, width)`` bins: row ``i`` is empty bin ``i``'s probe sequence (a prefix of every wider one)."""
    i = np.arange(num_perm, dtype=np.uint64)[:, None] << np.uint64(20)
    t = np.arange(width, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        x = _mix(i + t + np.uint64(seed) * _MIX)
    return (x % np.uint64(num_perm)).astype(np.intp)


def _densify(sig: np.ndarray, full: np.ndarray, seed: int) -> None:
    """Fill the empty bins of every row with at least one non-empty bin, in place."""
    k = sig.shape[1]
    rows = np.flatnonzero(~full.all(axis=1) & full.any(axis=1))
    probe, miss_r, miss_b = _probes(k, seed, _PROBE), [], []
    step = max(1, _CHUNK // (k * _PROBE))
    for a in range(0, len(rows), step):
        chunk = rows[a : a + step]
        f = full[chunk]  # (r, k)
        hit = f[:, probe]  # (r, k, probes): is probe t of bin i non-empty?
        t = hit.argmax(axis=-1)  # (r, k): the first non-empty probe
        found = np.take_along_axis(hit, t[..., None], -1)[..., 0]
        vals = np.take_along_axis(sig[chunk], probe[np.arange(k), t], 1)
        block, fill = sig[chunk], ~f & found
        block[fill] = vals[fill]
        sig[chunk] = block
        r, b = np.nonzero(~f & ~found)
        miss_r.append(chunk[r])
        miss_b.append(b)
    if not miss_r or not sum(len(r) for r in miss_r):
        return
    # bins of rows with 1-20 shingles that missed in 32 probes: the same sequence, 4 * k probes long
    r, b = np.concatenate(miss_r), np.concatenate(miss_b)
    probe = _probes(k, seed, 4 * k)
    hit = full[r[:, None], probe[b]]  # (misses, 4k)
    t = hit.argmax(axis=-1)
    found = hit[np.arange(len(r)), t]
    sig[r[found], b[found]] = sig[r[found], probe[b[found], t[found]]]
    for row, i in zip(r[~found], b[~found]):  # then the bins to the right, circularly: it always ends
        nonempty = np.flatnonzero(full[row])
        sig[row, i] = sig[row, nonempty[np.searchsorted(nonempty, i) % len(nonempty)]]


def signatures(
    texts: list[str], num_perm: int = 128, ngram: int = 5, seed: int = 1, min_tokens: int = 0
) -> np.ndarray:
    """``(len(texts), num_perm)`` :data:`SIG_DTYPE` MinHash signatures by one-permutation hashing.

    Each shingle is hashed once; its top bits pick one of ``num_perm`` bins and its low 32 bits are the
    value, the minimum per bin is kept (Li, Owen & Zhang 2012). Empty bins are filled by optimal
    densification (module docstring), so two signatures agree on a bin with probability equal to the
    Jaccard similarity of their shingle sets. A document with no tokens, or fewer than ``min_tokens``,
    gets the skip signature (every bin :data:`EMPTY`), which :class:`LSHIndex` never matches.

    Example:
        >>> s = signatures(["a b c d", "a b c e", "x"], num_perm=64, ngram=1, min_tokens=2)
        >>> s.dtype, s.shape, bool((s[2] == EMPTY).all())
        (dtype('uint32'), (3, 64), True)
    """
    toks = [tokens(t) for t in texts]
    parts = [_roll(t, ngram) if len(t) >= max(1, min_tokens) else np.zeros(0, np.uint64) for t in toks]
    counts = np.array([len(p) for p in parts], dtype=np.int64)
    sig = np.full((len(texts), num_perm), EMPTY, dtype=SIG_DTYPE)
    if counts.sum() == 0:
        return sig
    x = _mix(np.concatenate(parts) ^ np.uint64(seed * 0x2545F4914F6CDD1D & 0xFFFFFFFFFFFFFFFF))
    owner = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
    flat = owner * num_perm + ((x >> np.uint64(32)) % np.uint64(num_perm)).astype(np.int64)
    np.minimum.at(sig.reshape(-1), flat, (x & np.uint64(0xFFFFFFFF)).astype(SIG_DTYPE))
    full = np.zeros(sig.shape, bool)
    full.reshape(-1)[flat] = True
    _densify(sig, full, seed)
    return sig


def is_skip(sig: np.ndarray) -> bool:
    """Whether ``sig`` is the skip signature (every bin :data:`EMPTY`): a document too short to be near-deduplicated."""
    return bool(sig[0] == EMPTY and (sig == EMPTY).all())


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
    """Streaming near-duplicate index: the first document of a cluster is kept, later ones match it.

    Example:
        >>> s = signatures(["one two three four five six", "one two three four five seven"], ngram=1)
        >>> idx = LSHIndex(0.6, 128)
        >>> idx.query(s[0]), idx.query_insert(s[0]), idx.query(s[1]), len(idx.kept)
        (None, None, 0, 1)
    """

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
        self.candidates = 0  # signatures verified by query, over the index's life

    def _keys(self, sig: np.ndarray) -> list[bytes]:
        return [sig[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def query(self, sig: np.ndarray, keys: list[bytes] | None = None) -> int | None:
        """The earliest-found kept document this signature duplicates, or None; nothing is inserted."""
        if is_skip(sig):
            return None
        seen: set[int] = set()
        for table, key in zip(self.tables, keys or self._keys(sig)):
            rep = table.get(key)
            if rep is not None and rep not in seen:
                seen.add(rep)
                self.candidates += 1
                if float(np.mean(self.kept[rep] == sig)) >= self.threshold:
                    return rep
        return None

    def insert(self, sig: np.ndarray, keys: list[bytes] | None = None) -> int:
        """Add ``sig`` as a kept document whatever it matches; returns its representative index.

        A skip signature is kept (so representatives stay numbered by arrival) but not banded.
        """
        rep = len(self.kept)
        self.kept.append(sig)
        if not is_skip(sig):
            for table, key in zip(self.tables, keys or self._keys(sig)):
                table.setdefault(key, rep)
        return rep

    def query_insert(self, sig: np.ndarray) -> int | None:
        """The representative this signature duplicates, or None (then it is inserted as a new one)."""
        keys = self._keys(sig)
        rep = self.query(sig, keys)
        if rep is None:
            self.insert(sig, keys)
        return rep
