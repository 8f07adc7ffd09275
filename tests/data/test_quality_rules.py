"""The rules beside Gopher/C4 (mojibake, word variety, word order) and exact deduplication's key."""

from __future__ import annotations

import json
import random

import pytest

from edgellm.data.clean import CleanConfig, clean
from edgellm.data.quality import Quality, word_order, word_variety
from edgellm.data.steps import dedup_key

PROSE = (
    "Open the file named by the path and return a stream for it. The mode says whether the stream reads "
    "or writes, and whether it works on text or bytes. If the file does not exist, a new one is created "
    "when the mode allows it; otherwise the call raises an error that names the path."
)


def _mojibake(text: str) -> str:
    return text.encode("utf-8").decode("cp1252", errors="replace")


@pytest.mark.parametrize("preset", ["web", "docs", "short"])
def test_mojibake_is_dropped_and_accented_text_is_kept(preset):
    q = Quality(preset=preset)
    accented = PROSE.replace("file", "fichier café").replace("'", "\u2019") + " Voilà — “déjà vu”."
    assert q.reason(accented) is None
    assert q.reason(_mojibake(accented)) == "mojibake"
    assert Quality(preset=preset, max_mojibake=None).reason(_mojibake(accented)) is None


@pytest.mark.parametrize("preset", ["web", "docs", "short"])
def test_markup_and_ocr_glyphs_are_dropped_prose_about_them_is_kept(preset):
    q = Quality(preset=preset)
    words = PROSE.split()
    soup = " ".join(f'<td class="c{i}"> {w} </td>' for i, w in enumerate(words))
    assert q.reason(soup) == "markup"
    assert q.reason(PROSE + " Wrap it in a <div> element, or use &nbsp; between the words.") is None
    glyph = {"e": "c", "l": "1", "o": "0", "a": "@", "s": "5"}
    ocr = "".join(glyph.get(c, c) if c in glyph and i % 3 == 0 else c for i, c in enumerate(PROSE))
    assert q.reason(ocr) == "glyph_words"
    assert q.reason(PROSE + " It reads utf8 text on x86_64 and arm64 (see the i18n notes).") is None


def test_word_variety_separates_stuffing_from_prose():
    rng = random.Random(0)
    kw = ["cheap", "flights", "hotels", "best", "deals", "london"]
    stuffed = " ".join(rng.choice([*kw, "and", "for"]) for _ in range(120))
    assert word_variety(PROSE.split()) > 0.6
    assert word_variety(stuffed.split()) < 0.2
    q = Quality(preset="docs")
    assert q.reason(PROSE) is None
    assert q.reason(stuffed.capitalize() + ".") == "word_variety"
    # a one-line text that repeats its few content words; one that repeats function words is kept
    assert (
        Quality(preset="short").reason("Cheap cheap book book and cheap london book cheap hotels.")
        == "word_variety"
    )
    assert Quality(preset="short").reason("Return the name of the file and the size of the file.") is None


def test_word_order_catches_shuffled_prose_not_prose():
    words = PROSE.split()
    breaks, chances = word_order(PROSE)
    assert breaks / chances < 0.2, (breaks, chances)
    caught = 0
    for seed in range(20):
        w = list(words)
        random.Random(seed).shuffle(w)
        b, _ = word_order(" ".join(w))
        caught += Quality(preset="docs").reason(" ".join(w)) == "word_order"
        assert b > 0
    assert caught >= 18
    # a heading on its own line, a colon before an opener, abbreviations: no breaks
    assert (
        word_order("Examples\nThe call returns. It is fast, e.g. when cached.\nNote: The value is kept.")[0]
        == 0
    )
    # other languages give no chances
    assert word_order("Der Hund läuft schnell über die Straße und bellt.") == (0, 1)


def test_docs_preset_keeps_repeated_api_phrasing_web_drops_it():
    tails = [
        "It never raises for other types of value.",
        "Infinities and NaNs are treated as the standard says.",
        "A quiet NaN is one that does not signal when it is used.",
        "Signalling NaNs raise InvalidOperation in most contexts.",
        "Subnormal values are smaller than the smallest normal one.",
        "The sign of zero is kept and reported by copy_sign.",
    ]
    kinds = ("finite", "infinite", "a quiet NaN", "a signalling NaN", "subnormal", "a signed zero")
    doc = "\n\n".join(
        f"Return True if the argument is {k}, False otherwise. {t}" for k, t in zip(kinds, tails)
    )
    assert Quality(preset="web").reason(doc).startswith("dup_")
    assert Quality(preset="docs").reason(doc) is None
    assert Quality(preset="docs").reason(" ".join([doc.split("\n\n")[0]] * 8)) is not None  # copied text


def _kept(out):
    return sorted(json.loads(x)["id"] for f in sorted(out.glob("part-*.jsonl")) for x in f.open())


def test_exact_dedup_drops_case_and_punctuation_copies_of_short_records(tmp_path):
    rows = [
        {"id": "a", "text": "How do I reverse a list in Python?"},
        {"id": "b", "text": "how do i reverse a list in python"},
        {"id": "c", "text": "How do I reverse a list in Python ?!"},
        {"id": "d", "text": "How do I reverse a string in Python?"},
    ]
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    clean(src, tmp_path / "out", CleanConfig(steps=["normalize", "exact_dedup"], workers=1))
    assert _kept(tmp_path / "out") == ["a", "d"]
    clean(src, tmp_path / "raw", CleanConfig(steps=[{"exact_dedup": {"normalize_key": False}}], workers=1))
    assert _kept(tmp_path / "raw") == ["a", "b", "c", "d"]


def test_exact_dedup_key_folds_case_punctuation_and_whitespace_only():
    assert dedup_key("How do I  sort a list?") == dedup_key("how do I sort a LIST")
    assert dedup_key("(see below).") == dedup_key("see below")
    for a, b in [
        ("2+2", "2-2"),
        ("$5", "5"),
        ("-5 degrees", "5 degrees"),
        ("#3", "3"),
        ("sort a list", "sort the list"),
    ]:
        assert dedup_key(a) != dedup_key(b), (a, b)
