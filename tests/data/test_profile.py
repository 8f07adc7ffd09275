"""The dry run: a preset chosen per corpus from a first pass, the table of what each rule would drop (PII
masked, nothing written), and the choice recorded and shared by the worker processes."""

import json
import random

import pytest

pytest.importorskip("pyarrow")

from test_quality_presets import noise, prose, short_records

from edgellm.data.clean import CleanConfig, clean, dry_run
from edgellm.data.profile import choose_preset, profile, resolve
from edgellm.data.steps import Normalize

NAV = "Home | Products | Blog | About us | Contact | Login"
COOKIE = "We use cookies to improve your experience. See our cookie policy."
FOOTER = "Copyright 2026 Example Ltd. Terms of use. Privacy policy."


def write(path, texts):
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def docs_corpus():
    """Documentation paragraphs of 30-300 words with 8 % generated noise."""
    rng = random.Random(3)
    texts = prose(30, 300)[:400]
    junk = [t for v in noise(seed=2, n=9).values() for t in v]
    for t in junk:
        texts.insert(rng.randrange(len(texts)), t)
    return texts


def web_pages(n=120, seed=4):
    """Pages of 80+ words: a title, a navigation line, prose paragraphs, a cookie banner and a footer."""
    rng = random.Random(seed)
    paras = prose(40, 200)
    pages = []
    for i in range(n):
        body = rng.sample(paras, rng.randint(2, 6))
        pages.append("\n\n".join([f"Example page {i}", NAV, *body, COOKIE, FOOTER]))
    return pages


def test_dry_run_picks_a_preset_per_corpus(tmp_path):
    got = {}
    for name, texts in [("short", short_records()), ("docs", docs_corpus()), ("web", web_pages())]:
        d = dry_run(write(tmp_path / f"{name}.jsonl", texts), CleanConfig(steps=["normalize", "quality"]))
        q = d["quality"]
        got[name] = q["preset"]
        assert q["auto"] and q["profile"]["documents"] == len(texts)
        if name != "web":  # the stricter presets were turned down for the share they drop beyond short
            assert "more than short" in q["why"] and "%" in q["why"]
    assert got == {"short": "short", "docs": "docs", "web": "web"}
    # choose_preset's rule: the strictest within epsilon of the most lenient
    p = profile(docs_corpus(), [Normalize()])
    assert p["excess"]["web"]["share"] > 0.2 and p["excess"]["docs"]["share"] <= 0.02
    assert choose_preset(p, epsilon=1.0)[0] == "web" and choose_preset(p, epsilon=0.0)[0] in ("docs", "short")
    assert (
        p["presets"]["web"]["dropped"] >= p["presets"]["docs"]["dropped"] >= p["presets"]["short"]["dropped"]
    )


def test_dry_run_cli_prints_the_table_and_writes_nothing(tmp_path, capsys):
    from edgellm.cli import main

    texts = ["Contact admin.person@example.org for access.", *docs_corpus()]
    src = write(tmp_path / "c.jsonl", texts)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["data", "clean", str(src), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    assert "| rule | web | docs | short |" in out and "chosen: docs" in out
    for rule in ("too_short", "mean_word_length", "stop_words", "dup_lines", "top_2gram", "dup_10gram"):
        assert f"| {rule} |" in out
    assert "[EMAIL]" in out and "admin.person@example.org" not in out  # examples are PII-masked
    assert main(["data", "clean", str(src), "--dry-run", "--preset", "web", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["quality"]["preset"] == "web" and not d["quality"]["auto"]
    assert main(["data", "clean", str(src)]) == 2
    err = capsys.readouterr().err
    assert "--output" in err and "--dry-run" in err


def test_auto_preset_is_recorded_and_parallel_workers_agree(tmp_path):
    src = write(tmp_path / "c.jsonl", docs_corpus())
    steps = ["normalize", "quality", "exact_dedup"]
    one = clean(src, tmp_path / "a", CleanConfig(steps=steps, workers=1, batch_size=64))
    two = clean(src, tmp_path / "b", CleanConfig(steps=steps, workers=2, batch_size=64))
    read = lambda d: [f.read_bytes() for f in sorted(d.glob("part-*.jsonl"))]  # noqa: E731
    assert read(tmp_path / "a") == read(tmp_path / "b") and one["steps"] == two["steps"]
    assert one["quality"]["preset"] == dry_run(src, CleanConfig(steps=steps))["quality"]["preset"] == "docs"
    assert one["quality"]["auto"] and one["config"]["steps"][1] == {"quality": {"preset": "docs"}}
    junk = len([t for v in noise(seed=2, n=9).values() for t in v])
    assert one["steps"][1]["dropped"] >= junk  # the noise goes, the prose stays
    assert one["documents_out"] >= 0.97 * (one["documents_in"] - junk)
    md = (tmp_path / "a/_report/report.md").read_text()
    assert "Quality preset: docs (chosen by the first pass" in md and "| rule | web | docs | short |" in md
    named = clean(
        src, tmp_path / "w", CleanConfig(steps=["normalize", {"quality": {"preset": "web"}}], workers=1)
    )
    assert named["quality"] == {"preset": "web", "auto": False, "why": "named in the config", "profile": None}
    assert named["documents_out"] < one["documents_out"]
    spec, prof = resolve(["normalize", {"quality": {"min_words": 20}}], docs_corpus())
    assert spec[1] == {"quality": {"min_words": 20, "preset": "docs"}} and prof["chosen"] == "docs"
