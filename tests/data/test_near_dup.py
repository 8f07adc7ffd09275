"""Near-duplicates with small edits: the token normalisation, optimal densification on short documents,
one-word edits of 20-30-word documents found through ``clean``, the query-only LSH path, and short texts
left to exact dedup (``min_tokens``)."""

import json
import random

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from edgellm.data.clean import CleanConfig, clean  # noqa: E402
from edgellm.data.minhash import (  # noqa: E402
    EMPTY,
    SIG_DTYPE,
    LSHIndex,
    is_skip,
    optimal_bands,
    shingle_hashes,
    signatures,
    tokens,
)

# NearDedup's defaults: the settings benchmarks/data_near_dup.py --sweep chose (word 2-grams, 0.6, 16 tokens)
NEAR: dict = {}
MIN_TOKENS = 16


def test_near_dedup_defaults_are_the_benchmarked_settings():
    from edgellm.data.steps import NearDedup

    d = NearDedup()
    assert (d.ngram, d.threshold, d.min_tokens, d.num_perm) == (2, 0.6, MIN_TOKENS, 128)


def sentence_pool(seed: int) -> list[str]:
    from edgellm.data import pydoc_topics, sentences

    pool = [s for s in sentences(pydoc_topics(), min_words=6) if "..." not in s and len(s) < 300]
    pool = list(dict.fromkeys(pool))  # a few sentences occur in two topics
    random.Random(seed).shuffle(pool)
    return pool


def documents(pool: list[str], n: int, lo: int, hi: int, rng: random.Random) -> list[str]:
    """``n`` documents of ``lo..hi`` words, each from sentences no other document uses."""
    out, it = [], iter(pool)
    for _ in range(n):
        words: list[str] = []
        want = rng.randint(lo, hi)
        while len(words) < want:
            words += next(it).split()
        out.append(" ".join(words[:want]))
    return out


def one_edit(text: str, rng: random.Random) -> str:
    w = text.split()
    i, op = rng.randrange(len(w)), rng.random()
    if op < 0.4:
        w[i] = rng.choice(["altered", "changed", "other", "novel"])
    elif op < 0.7:
        w.insert(i, rng.choice(["really", "also", "then"]))
    else:
        del w[i]
    return " ".join(w)


def test_tokens_fold_case_width_accents_punctuation_and_whitespace():
    assert (
        tokens("Héllo,  WORLD!") == tokens("hello world") == tokens("ＨＥＬＬＯ\nworld") == ["hello", "world"]
    )
    assert tokens("Straße Café") == tokens("STRASSE cafe")
    assert tokens("数据清洗") == ["数", "据", "清", "洗"]  # CJK: one token per character
    assert tokens("データ 처리") == ["デ", "ー", "タ", "처", "리"]
    assert tokens("v1.2 release") != tokens("v1.3 release") and "2" in tokens("v1.2")  # digits kept
    assert tokens("") == [] and tokens(" ,;!? ") == []
    # shingles do not see these edits at all
    a, b = "The café opened, at last.", "the  CAFE opened at last"
    assert set(shingle_hashes(a, 2).tolist()) == set(shingle_hashes(b, 2).tolist())


def test_one_word_edits_of_short_documents_are_found(tmp_path):
    rng = random.Random(1)
    docs = documents(sentence_pool(1), 400, 20, 30, rng)
    bases, unrelated = docs[:200], docs[200:]
    rows = [{"id": f"b{i}", "text": t} for i, t in enumerate(bases)]
    rows += [{"id": f"e{i}", "text": one_edit(t, rng)} for i, t in enumerate(bases)]
    rows += [{"id": f"u{i}", "text": t} for i, t in enumerate(unrelated)]
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = ["normalize", "exact_dedup", {"near_dedup": NEAR}]
    clean(src, tmp_path / "out", CleanConfig(steps=spec, workers=1, batch_size=256))
    kept = {json.loads(x)["id"] for f in (tmp_path / "out").glob("part-*.jsonl") for x in f.open()}
    recall = sum(f"e{i}" not in kept for i in range(200)) / 200
    assert recall >= 0.98, recall  # word 5-grams at 0.8 (edgellm 0.x) find 26-62 % of these
    assert all(f"b{i}" in kept and f"u{i}" in kept for i in range(200))  # no base, no unrelated one dropped


def test_densified_signatures_are_unbiased_with_low_variance_on_short_documents():
    rng = random.Random(2)
    base = documents(sentence_pool(2), 500, 20, 20, rng)
    edited = [one_edit(t, rng) for t in base]
    sa, sb = signatures(base, 128, 5), signatures(edited, 128, 5)
    true = np.array(
        [
            len(set(x) & set(y)) / len(set(x) | set(y))
            for x, y in (
                (shingle_hashes(a, 5).tolist(), shingle_hashes(b, 5).tolist()) for a, b in zip(base, edited)
            )
        ]
    )
    err = (sa == sb).mean(axis=1) - true
    # rotation densification (edgellm 0.x) has sd 0.10 here: 16 shingles leave most of 128 bins empty
    assert abs(err.mean()) <= 0.01 and err.std() <= 0.055, (err.mean(), err.std())
    one = signatures(["lonely"], 64, 2)[0]  # one shingle: every bin holds its value
    assert len(set(one.tolist())) == 1 and not is_skip(one)


def test_lsh_query_does_not_insert_and_bands_follow_the_threshold():
    text = " ".join(documents(sentence_pool(3), 1, 60, 60, random.Random(3)))
    sig = signatures(
        [text, text.replace(" the ", " a ", 1), "something else entirely, with its own words"], 128, 2
    )
    assert sig.dtype == SIG_DTYPE == np.uint32 and sig.shape == (3, 128)
    idx = LSHIndex(0.6, 128)
    assert (idx.bands, idx.rows) == optimal_bands(0.6, 128)
    assert idx.query(sig[0]) is None and not idx.kept  # a query leaves the index empty
    assert idx.query_insert(sig[0]) is None and len(idx.kept) == 1
    assert idx.query(sig[1]) == 0 and idx.query(sig[2]) is None and len(idx.kept) == 1
    assert idx.insert(sig[1]) == 1 and idx.query_insert(sig[1]) == 0  # the earliest kept copy wins
    b_hi, r_hi = optimal_bands(0.9, 128)
    b_lo, r_lo = optimal_bands(0.5, 128)
    assert r_hi > r_lo and b_hi < b_lo and b_hi * r_hi <= 128 and b_lo * r_lo <= 128


def test_short_texts_are_only_exact_deduplicated():
    a = "Translate to German: I like to eat fresh red apples every day."  # 12 tokens
    b = "Translate to German: I like to eat fresh red pears every day."
    long_a = " ".join(documents(sentence_pool(4), 1, 24, 24, random.Random(4)))
    long_b = one_edit(long_a, random.Random(5))
    sig = signatures([a, b, a, long_a, long_b], 128, 2, min_tokens=MIN_TOKENS)
    assert [is_skip(s) for s in sig] == [True, True, True, False, False]
    assert (sig[0] == EMPTY).all()
    idx = LSHIndex(0.6, 128)
    got = [idx.query_insert(s) for s in sig]
    # the short ones never match, not even an exact copy (exact_dedup's job); numbering stays by arrival
    assert got == [None, None, None, None, 3] and len(idx.kept) == 4
    without = signatures([a, b], 128, 2)  # without min_tokens the two examples are near-duplicates
    idx = LSHIndex(0.6, 128)
    assert [idx.query_insert(s) for s in without] == [None, 0]
