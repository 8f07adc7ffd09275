"""The labelled-corpus generator (benchmarks/data_labelled.py) and the per-class scorer
(benchmarks/data_heldout.py): deterministic corpora, tune and held-out sharing no source text, one class
per document, and the scorer's figures on hand-made outputs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

import data_heldout as H
import data_labelled as L
import data_sources as S

from edgellm.data.pii import PiiScanner

CASES = [("docs", "tune"), ("docs", "heldout"), ("short", "tune"), ("short", "heldout"), ("web", "heldout"), ("legal", "heldout")]  # fmt: skip


@pytest.mark.parametrize("domain,split", CASES)
def test_every_document_has_one_class_and_its_truth_holds(domain, split):
    rows, truth = L.generate(120, 3, domain=domain, split=split)
    docs = truth["docs"]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 120 and set(ids) == set(docs)
    assert {d["class"] for d in docs.values()} == set(L.CLASSES)
    lo, hi = L.LENGTHS[domain]
    text = {r["id"]: r["text"] for r in rows}
    clusters: dict[str, list[str]] = {}
    for i, d in docs.items():
        assert d["class"] in L.CLASSES and d["len_words"] == len(text[i].split())
        if d["class"] == "pii":
            assert 1 <= len(d["values"]) <= 3 and all(v in text[i] for _, v in d["values"])
        elif d["class"] == "lookalike":
            assert d["value"] in text[i]
        elif d["class"] == "near":
            clusters.setdefault(d["cluster"], []).append(i)
        elif d["class"] == "noise":
            assert d["family"] in (L.TUNE_NOISE if split == "tune" else L.HELDOUT_NOISE)
        if d["class"] == "clean":
            assert lo <= d["len_words"] <= hi + 5, (d, text[i][:80])
    for members in clusters.values():
        assert 2 <= len(members) <= 5
        orig = [i for i in members if docs[i]["edit"] is None]
        assert len(orig) == 1 and all(text[i] != text[orig[0]] for i in members if i != orig[0])


def test_the_generator_is_deterministic_per_seed():
    a = L.generate(80, 11, domain="web", split="heldout")
    b = L.generate(80, 11, domain="web", split="heldout")
    c = L.generate(80, 12, domain="web", split="heldout")
    assert a == b
    assert [r["text"] for r in a[0]] != [r["text"] for r in c[0]]


@pytest.mark.parametrize("domain", ["docs", "short", "web"])
def test_tune_and_heldout_share_no_source_text(domain):
    assert not set(S.TUNE_MODULES) & set(S.HELDOUT_MODULES)

    def keys(split):
        rows, truth = L.generate(300, 5, domain=domain, split=split)
        out, sources = set(), set()
        for r in rows:
            d = truth["docs"][r["id"]]
            if d["class"] != "noise":
                out |= S.sentence_keys(r["text"])
                sources |= set(d["sources"])
        return out, sources

    (tune, tune_src), (held, held_src) = keys("tune"), keys("heldout")
    assert tune and held and not tune & held
    assert not tune_src & held_src
    tops = {s.split(".")[0] for s in held_src}
    assert tops <= set(S.HELDOUT_MODULES), tops - set(S.HELDOUT_MODULES)


def test_lookalikes_are_not_pii_and_heldout_pii_is_found():
    import random

    sc, rng = PiiScanner(), random.Random(0)
    for split in L.SPLITS:
        for _ in range(300):
            kind, value, sentence = L.lookalike(split, rng)
            assert value in sentence and not sc.find(sentence), (kind, sentence)
    for kind, templates in S.HELDOUT_TEMPLATES.items():
        for _ in range(100):
            v = L._pii_heldout(kind, rng)
            s = rng.choice(templates).format(v)
            assert (kind, v) in {(t, s[a:b]) for a, b, t in sc.find(s)}, s


TRUTH = {
    "docs": {
        "a": {"class": "clean"},
        "b": {"class": "clean"},
        "p": {"class": "pii", "values": [["email", "ana@example.com"], ["ipv4", "10.1.2.3"]]},
        "l": {"class": "lookalike", "kind": "version4", "value": "2.0.0.1"},
        "x": {"class": "near", "cluster": "c1", "edit": None},
        "y": {"class": "near", "cluster": "c1", "edit": "word"},
        "z": {"class": "near", "cluster": "c2", "edit": None},
        "w": {"class": "near", "cluster": "c2", "edit": "upper"},
        "n": {"class": "noise", "family": "spam"},
        "m": {"class": "noise", "family": "base64"},
    }
}
ROWS = [{"id": i, "text": f"text of {i}"} for i in TRUTH["docs"]]


def test_the_scorer_on_hand_made_outputs():
    leaky = {
        "a": "kept",
        "p": "mail ana@example.com at [IPV4]",
        "l": "version 2.0.0.1",
        "x": "",
        "y": "",
        "m": "",
    }
    m = H.score(ROWS, TRUTH, leaky)
    assert m["clean_kept"] == 0.5 and m["clean_pii_lookalike_kept"] == 0.75
    assert m["pii_removed"]["all"] == 0.5 and m["pii_removed"]["by_type"] == {"email": 0.0, "ipv4": 1.0}
    assert m["pii_removed"]["worst_type"] == 0.0 and m["pii_docs_dropped"] == 0
    assert m["clusters_at_one"] == 0.0 and m["clusters"] == {"zero": 1, "one": 0, "more": 1, "total": 2}
    assert m["copies_caught_by_edit"] == {"word": 0.0}  # c2 lost both: no pair to judge
    assert m["noise_removed"] == 0.5 and m["noise_removed_by_family"] == {"base64": 0.0, "spam": 1.0}
    assert m["lookalikes_intact"] == 1.0

    good = {"a": "", "b": "", "p": "mail [EMAIL] at [IPV4]", "l": "version [IPV4]", "x": "", "w": ""}
    m = H.score(ROWS, TRUTH, good)
    assert m["clean_kept"] == 1.0 and m["pii_removed"]["all"] == 1.0 and m["noise_removed"] == 1.0
    assert m["clusters_at_one"] == 1.0 and m["copies_caught_by_edit"] == {"upper": 1.0, "word": 1.0}
    assert m["lookalikes_intact"] == 0.0  # the version was masked
    assert H.score(ROWS, TRUTH, {"a": ""})["pii_docs_dropped"] == 1


def test_why_dropped_replays_the_steps():
    why = H.why_dropped(
        ["far too short", "the cat and the dog sat with that rat\n" * 10, "A fine sentence here."],
        ["normalize", {"quality": {"preset": "web"}}],  # the spec the run replays is resolved
    )
    assert why == {"quality:too_short": 2, "quality:dup_lines": 1}


def test_a_cleaned_corpus_is_scored_from_its_shards(tmp_path):
    from edgellm.data.clean import CleanConfig, clean

    rows, truth = L.generate(150, 9, domain="short", split="heldout")
    corpus, _ = L.write(rows, truth, tmp_path / "c.jsonl")
    assert L.read(corpus) == (rows, truth)
    clean(corpus, tmp_path / "out", CleanConfig(steps=["normalize", "exact_dedup"], workers=1))
    m = H.score(rows, truth, tmp_path / "out")
    # case and whitespace copies are exact duplicates after normalisation; nothing else is a duplicate
    assert m["copies_caught_by_edit"]["upper"] == 1.0 and m["copies_caught_by_edit"]["whitespace"] == 1.0
    assert m["clean_kept"] == 1.0 and m["noise_removed"] < 0.5


def test_the_perplexity_benchmark_scores_auc_and_refuses_an_unknown_domain(tmp_path, capsys):
    import data_perplexity as P
    import numpy as np

    assert P.auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert P.auc(np.array([1.0]), np.array([1.0])) == 0.5 and P.auc(np.array([0.0]), np.array([1.0])) == 0.0
    rep = P.main(
        ["--domains", "short", "--docs", "120", "--clean", "12", "--output", str(tmp_path / "p.json")]
    )
    d = rep["domains"]["short"]
    aucs = [f["auc"] for f in d["families"].values() if f["auc"] is not None]  # None: none long enough
    assert d["clean_scored"] >= 6 and aucs and all(0 <= a <= 1 for a in aucs)
    assert P.auc(np.array([]), np.array([1.0])) is None
    assert (tmp_path / "p.json").is_file()
    with pytest.raises(SystemExit) as exc:
        P.main(["--domains", "docs,tweets", "--output", str(tmp_path / "q.json")])
    assert exc.value.code == 2 and "unknown domain 'tweets'" in capsys.readouterr().err
