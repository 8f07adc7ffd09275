"""The cleaning pipeline on real text (CPython's pydoc topics) with injected duplicates, PII and noise;
readers, writers, bad input, parallel workers equal to one process."""

import json
import random

import pytest

pa = pytest.importorskip("pyarrow")

from edgellm.data.clean import CleanConfig, clean  # noqa: E402
from edgellm.data.io import CorpusReader  # noqa: E402
from edgellm.data.minhash import LSHIndex, optimal_bands, signatures  # noqa: E402
from edgellm.data.steps import Normalize, Quality, parse_steps  # noqa: E402
from edgellm.errors import EdgeLLMError  # noqa: E402


def prose():
    from pydoc_data.topics import topics

    return [(k, v) for k, v in sorted(topics.items()) if len(v.split()) > 150]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Real documents, exact copies, near copies (a few words changed), PII, noise, one bad line."""
    rng = random.Random(0)
    docs = prose()[:60]
    rows, truth = [], {"exact": set(), "near": set(), "noise": set()}
    for i, (k, v) in enumerate(docs):
        text = v
        if i % 7 == 0:
            text += "\nContact: ops.team@example.com or +44 20 7946 0958."
        rows.append({"id": k, "text": text, "topic": "even" if i % 2 == 0 else "odd"})
        if i % 5 == 0:
            rows.append({"id": k + "#copy", "text": "  " + text.replace("\n", "\n\n") + "  ", "topic": "x"})
            truth["exact"].add(k + "#copy")
        if i % 6 == 1:
            w = text.split()
            for j in rng.sample(range(len(w)), max(1, len(w) // 50)):
                w[j] = "edited"
            rows.append({"id": k + "#near", "text": " ".join(w), "topic": "x"})
            truth["near"].add(k + "#near")
    for j in range(10):
        noise = " ".join(rng.choice(["#", "$$", "%%", "@@", "~~", "12", "&&"]) for _ in range(120))
        rows.append({"id": f"noise{j}", "text": noise, "topic": "x"})
        truth["noise"].add(f"noise{j}")
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write('{"id": "broken", "text": \n')  # malformed
    return path, rows, truth


# pydoc topics are technical prose with code: looser word-length and repetition limits keep every original
LOOSE = {
    "preset": "web",
    "min_words": 50,
    "max_mean_word_length": 20,
    "min_alpha_words": 0.6,
    "max_dup_lines": 1.0,
    "max_dup_line_chars": 1.0,
    "max_top_ngram_share": {},
    "max_dup_ngram_share": {},
}


def steps():
    return [
        "normalize",
        {"quality": LOOSE},
        "language",
        "pii",
        "exact_dedup",
        {"near_dedup": {"threshold": 0.7}},
    ]


def test_clean_removes_duplicates_noise_and_pii(corpus, tmp_path):
    path, rows, truth = corpus
    r = clean(path, tmp_path / "out", CleanConfig(steps=steps(), workers=1, batch_size=16))
    kept = [json.loads(line) for f in sorted((tmp_path / "out").glob("part-*.jsonl")) for line in f.open()]
    ids = {d["id"] for d in kept}
    assert not ids & truth["exact"] and not ids & truth["near"] and not ids & truth["noise"]
    originals = {r["id"] for r in rows if "#" not in r["id"] and not r["id"].startswith("noise")}
    assert ids == originals  # every original survives
    assert all("ops.team@" not in d["text"] and "7946 0958" not in d["text"] for d in kept)
    assert r["pii"]["email"] >= 9 and r["pii"]["phone"] >= 9
    assert r["malformed_lines"]["count"] == 1 and r["malformed_lines"]["first"][0]["line"] == len(rows) + 1
    assert r["duplicates"]["exact"] == len(truth["exact"]) and r["duplicates"]["near"] == len(truth["near"])
    assert r["documents_in"] == len(rows) and r["documents_out"] == len(kept)
    by = {s["step"]: s for s in r["steps"]}
    assert by["quality"]["dropped"] == 10 and sum(s["dropped"] for s in r["steps"]) == len(rows) - len(kept)
    clusters = [json.loads(x) for x in (tmp_path / "out/_report/clusters.jsonl").open()]
    assert {d for c in clusters for d in c["duplicates"]} == truth["near"]
    assert all(c["keep"] + "#near" in c["duplicates"] for c in clusters)
    md = (tmp_path / "out/_report/report.md").read_text()
    assert "| near_dedup |" in md and "ops.team" not in md  # PII never reaches the report
    assert all(d["topic"] for d in kept)  # other fields pass through


def test_parallel_workers_give_the_same_result(corpus, tmp_path):
    path, _, _ = corpus
    one = clean(path, tmp_path / "a", CleanConfig(steps=steps(), workers=1, batch_size=8))
    two = clean(path, tmp_path / "b", CleanConfig(steps=steps(), workers=2, batch_size=8))
    read = lambda d: [line for f in sorted(d.glob("part-*.jsonl")) for line in f.open()]  # noqa: E731
    assert read(tmp_path / "a") == read(tmp_path / "b")
    assert one["steps"] == two["steps"] and two["throughput"]["workers"] == 2


def test_a_dedup_sees_documents_a_later_step_drops(tmp_path):
    """Order semantics: dedup runs before the filter, so the copy of a dropped original is dropped too."""
    src = tmp_path / "c.jsonl"
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa " * 3
    src.write_text(
        json.dumps({"id": "a", "text": text + " lorem ipsum"})
        + "\n"
        + json.dumps({"id": "b", "text": text + " lorem ipsum"})
        + "\n"
    )
    r = clean(
        src,
        tmp_path / "o",
        CleanConfig(
            steps=["exact_dedup", {"quality": {"preset": "web", "min_words": 1, "min_stop_words": 0}}],
            workers=1,
        ),
    )
    assert r["documents_out"] == 0 and r["steps"][0]["dropped"] == 1 and r["steps"][1]["dropped"] == 1


def test_readers_stream_jsonl_parquet_text_and_shards(tmp_path):
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    pq.write_table(
        pa.table({"body": [f"doc {i}" for i in range(5)], "label": list("aabbb")}), tmp_path / "in/a.parquet"
    )
    (tmp_path / "in/b.txt").write_text("first paragraph\nstill first\n\nsecond\n")
    (tmp_path / "in/c.jsonl").write_text("\n".join(json.dumps({"body": f"j{i}"}) for i in range(7)) + "\n")
    r = CorpusReader(tmp_path / "in", text_field="body", batch_size=3)
    batches = list(r.batches())
    assert max(b.num_rows for b in batches) <= 3 and r.documents == 14
    texts = [t for b in batches for t in b.column("text").to_pylist()]
    assert "first paragraph\nstill first" in texts and "doc 4" in texts and "j6" in texts
    out = clean(
        tmp_path / "in",
        tmp_path / "out",
        CleanConfig(text_field="body", steps=["normalize"], shard_size=4, format="parquet", workers=1),
    )
    assert (
        len(out["shards"]) == 4
        and sum(pq.read_table(tmp_path / "out" / s).num_rows for s in out["shards"]) == 14
    )


def test_bad_input_is_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n{"text": "fine"}\n')
    with pytest.raises(EdgeLLMError, match=r"bad.jsonl:2 is malformed.*--on-error skip"):
        list(CorpusReader(bad, on_error="stop").batches())
    assert sum(b.num_rows for b in CorpusReader(bad).batches()) == 2
    (tmp_path / "nofield.jsonl").write_text('{"content": "x"}\n')
    with pytest.raises(EdgeLLMError, match="no field 'text' \\(it has: content\\).*--text-field"):
        list(CorpusReader(tmp_path / "nofield.jsonl").batches())
    (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(EdgeLLMError, match="latin.txt:1 is not valid utf-8.*--encoding"):
        list(CorpusReader(tmp_path / "latin.txt").batches())
    assert (
        next(iter(CorpusReader(tmp_path / "latin.txt", encoding="latin-1").batches()))
        .column("text")[0]
        .as_py()
        == "café au lait"
    )
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(EdgeLLMError, match="has no documents"):
        list(CorpusReader(tmp_path / "empty.jsonl").batches())
    with pytest.raises(EdgeLLMError, match="unknown step 'dedupe'"):
        parse_steps(["dedupe"])
    with pytest.raises(EdgeLLMError, match=r"steps\[0\].quality: 'min_wordz'"):
        parse_steps([{"quality": {"min_wordz": 3}}])
    out = tmp_path / "never"
    with pytest.raises(EdgeLLMError):
        clean(tmp_path / "empty.jsonl", out, CleanConfig(workers=1))
    assert not out.exists()  # nothing half-written


def test_config_file_errors_name_the_key(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("steps: [normalize]\nbatch_sise: 3\n")
    with pytest.raises(EdgeLLMError, match="'batch_sise'"):
        CleanConfig.load(y)
    y.write_text("steps: [{pii: {action: hash, salt_env: NO_SUCH_VAR_X}}]\n")
    cfg = CleanConfig.load(y)
    with pytest.raises(EdgeLLMError, match="NO_SUCH_VAR_X"):
        clean(tmp_path, tmp_path / "o", cfg)


def test_normalize_and_quality_rules():
    texts, *_ = Normalize().run(["ｆｕｌｌ\u200bwidth  and\ttabs\r\n\r\n\r\n\r\nnext\x07line"])
    assert texts == ["fullwidth and tabs\n\nnextline"]  # NFKC, zero-width and control chars gone
    q = Quality(preset="web", min_words=5)
    assert q.reason("the quick brown foxes and the sleepy dogs rested with their owners") is None
    assert q.reason("lorem ipsum dolor sit amet and the rest of it") == "boilerplate"
    assert q.reason("a b") == "too_short"
    assert q.reason("#" * 20 + " the and of to be with " * 2) in (
        "symbol_ratio",
        "non_alphabetic",
        "mean_word_length",
    )
    assert q.reason(("spam spam eggs " * 40) + " the and") is not None


def test_minhash_estimates_jaccard_and_bands_follow_the_threshold():
    import numpy as np

    base = " ".join(f"w{i}" for i in range(400))
    edited = base.replace("w10 ", "x ").replace("w200 ", "y ")
    other = " ".join(f"v{i}" for i in range(400))
    s = signatures([base, edited, other], num_perm=256, ngram=5)
    assert s.dtype == np.uint32 and s.shape == (3, 256)
    assert np.mean(s[0] == s[1]) > 0.9 and np.mean(s[0] == s[2]) < 0.05
    b_hi, r_hi = optimal_bands(0.9, 128)
    _b_lo, r_lo = optimal_bands(0.5, 128)
    assert r_hi > r_lo and b_hi * r_hi <= 128  # a higher threshold needs more rows per band
    idx = LSHIndex(0.8, 256)
    assert idx.query_insert(s[0]) is None and idx.query_insert(s[1]) == 0 and idx.query_insert(s[2]) is None
