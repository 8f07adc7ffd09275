"""Quality presets on real technical text: ``web`` is exactly Gopher/C4, ``docs`` keeps documentation
paragraphs, ``short`` keeps fine-tuning examples, all of them drop generated noise, and they are nested.

The text is the tune text the presets were set on: CPython's pydoc topics and the docstrings of
``TUNE_MODULES`` (a fixed list; held-out benchmarks use other modules)."""

import functools
import importlib
import inspect
import random
import re

import pytest

from edgellm.data.quality import PRESETS, Quality
from edgellm.data.steps import Normalize, parse_steps
from edgellm.errors import EdgeLLMError

TUNE_MODULES = [
    "json",
    "collections",
    "functools",
    "itertools",
    "pathlib",
    "textwrap",
    "string",
    "argparse",
    "logging",
    "heapq",
]


def _paragraphs(text):
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _is_prose(p):
    """Paragraphs, not code: no doctest, grammar or table lines, mostly words."""
    if "::=" in p or any(ln.lstrip().startswith((">>>", "...", "+-", "|", "=")) for ln in p.split("\n")):
        return False
    w = p.split()
    return sum(any(c.isalpha() for c in x) for x in w) / len(w) >= 0.7


@functools.cache
def docstrings():
    out = []
    for name in TUNE_MODULES:
        mod = importlib.import_module(name)
        objs = [mod] + [
            o
            for _, o in inspect.getmembers(mod)
            if (inspect.isclass(o) or inspect.isfunction(o)) and getattr(o, "__module__", "").startswith(name)
        ]
        out += [p for o in objs if inspect.getdoc(o) for p in _paragraphs(inspect.getdoc(o))]
    return tuple(dict.fromkeys(out))


@functools.cache
def pydoc_paragraphs():
    from pydoc_data.topics import topics

    return tuple(dict.fromkeys(p for _, v in sorted(topics.items()) for p in _paragraphs(v)))


def prose(lo, hi):
    """Documentation paragraphs of ``lo``..``hi`` words."""
    return [p for p in (*pydoc_paragraphs(), *docstrings()) if lo <= len(p.split()) <= hi and _is_prose(p)]


def short_records():
    """Fine-tuning style records of 3-40 words: docstring first lines, questions and answers."""
    firsts = [p.split("\n")[0] for p in docstrings()]
    out = [f for f in firsts if 3 <= len(f.split()) <= 40 and _is_prose(f)]
    names = ["json.dumps", "os.path.join()", "itertools.chain", "functools.partial", "--verbose"]
    templates = ["Explain what {} does.", "What does {} return?", "Q: When should I use {}? A: for paths."]
    out += [t.format(n) for t in templates for n in names]
    out += [f"Answer: {n}" for n in ("42", "3.14", "True", "the empty string")]
    return out


def noise(seed=0, n=40):
    """Generated junk, one list per family."""
    rng = random.Random(seed)
    sym = ["#", "$$", "%%", "@@", "~~", "12", "&&", "!!", "<>", "::"]
    return {
        "symbols": [" ".join(rng.choice(sym) for _ in range(rng.randint(5, 150))) for _ in range(n)],
        "gibberish": [
            " ".join(
                "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(12, 20)))
                for _ in range(rng.randint(5, 150))
            )
            for _ in range(n)
        ],
        "spam": ["\n".join(["BUY CHEAP PILLS NOW click here!!!"] * rng.randint(3, 20)) for _ in range(n)],
        "lorem": [
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
            "ut labore et dolore magna aliqua. " * rng.randint(1, 6)
            for _ in range(n)
        ],
    }


def dropped(preset, texts):
    q = Quality(preset=preset)
    return {i for i, t in enumerate(Normalize().run(texts)[0]) if q.check(t)[1] is not None}


def test_web_preset_is_the_gopher_c4_rules():
    # copied from steps.py before the presets (Gopher + C4): an explicit `web` changes only by added rules
    before = {
        "kind": "quality",
        "min_words": 50,
        "max_words": 100_000,
        "min_mean_word_length": 3.0,
        "max_mean_word_length": 10.0,
        "max_symbol_ratio": 0.1,
        "min_alpha_words": 0.8,
        "max_bullet_lines": 0.9,
        "max_ellipsis_lines": 0.3,
        "min_stop_words": 2,
        "max_dup_lines": 0.3,
        "max_dup_paragraphs": 0.3,
        "max_dup_line_chars": 0.2,
        "max_top_ngram_share": {2: 0.20, 3: 0.18, 4: 0.16},
        "max_dup_ngram_share": {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        "boilerplate_lines": ["javascript", "cookie policy", "privacy policy", "terms of use", "use cookies"],
        "reject_phrases": ["lorem ipsum"],
    }
    off = {
        "preset": "web",
        "stop_words": ["the", "be", "to", "of", "and", "that", "have", "with"],
        "stop_words_min_doc_words": 0,
        "repetition_min_words": 0,
        "dup_ngram_min_words": 0,
        "boilerplate_max_words": None,
        "filler_share": None,
    }
    # beside Gopher/C4: mojibake, markup, OCR glyphs, keyword stuffing and word salad, in every preset
    added = {
        "max_mojibake": 0.02,
        "max_markup": 0.25,
        "max_glyph_words": 0.12,
        "min_word_variety": 0.4,
        "word_variety_min_words": 10,
        "max_word_order_breaks": 0.34,
        "word_order_min_breaks": 2,
    }
    assert Quality(preset="web").model_dump() == {**before, **off, **added}
    for name in ("docs", "short"):
        assert {k: getattr(Quality(preset=name), k) for k in added} == added
    assert PRESETS["web"] == {}  # web is the field defaults
    q = Quality(preset="web")
    assert q.reason("a guide to lorem ipsum and other placeholder text " * 10) == "boilerplate"
    assert q.check("Intro to the JavaScript language and its uses.\n" + "the and of words " * 20)[2] == 1


def test_presets_are_nested():
    texts = prose(5, 300)[:400] + short_records() + [t for v in noise().values() for t in v]
    web, docs, short = (dropped(p, texts) for p in ("web", "docs", "short"))
    assert short <= docs <= web
    assert len(short) < len(docs) < len(web)  # and they differ
    for key in ("min_words", "min_alpha_words", "min_mean_word_length"):  # short's thresholds are the lowest
        assert Quality(preset="short").model_dump()[key] <= Quality(preset="docs").model_dump()[key]


def test_docs_preset_keeps_technical_prose_and_drops_noise():
    docs_text = prose(30, 300)
    assert len(docs_text) > 500
    kept = 1 - len(dropped("docs", docs_text)) / len(docs_text)
    assert kept >= 0.97, kept
    assert len(dropped("web", docs_text)) / len(docs_text) > 0.20  # Gopher's 50-word floor and word lengths
    for family, texts in noise().items():
        for preset in ("docs", "short"):
            assert dropped(preset, texts) == set(range(len(texts))), (family, preset)
    # a JavaScript tutorial keeps its sentences; a page's complaint is still removed
    tutorial = "JavaScript runs in the browser, and this guide explains how the event loop schedules work."
    text, why, removed = Quality(preset="docs").check(tutorial + "\nPlease enable JavaScript to continue.")
    assert why is None and removed == 1 and text == tutorial
    # documentation about placeholders mentions lorem ipsum; a page of it is still dropped
    about = (
        "The template fills empty fields with the usual lorem ipsum placeholder until the author edits it."
    )
    assert (
        Quality(preset="docs").reason(about) is None and Quality(preset="web").reason(about) == "boilerplate"
    )


def test_short_preset_keeps_short_examples():
    records = short_records()
    assert len(records) > 150
    kept = 1 - len(dropped("short", records)) / len(records)
    assert kept >= 0.97, kept
    assert len(dropped("web", records)) == len(records)  # every one is under Gopher's 50 words
    junk = noise(seed=1)
    for family in ("symbols", "spam", "gibberish", "lorem"):
        assert dropped("short", junk[family]) == set(range(len(junk[family]))), family


def test_explicit_keys_override_the_preset():
    q = Quality(preset="docs", min_words=40)
    assert q.min_words == 40 and q.max_symbol_ratio == PRESETS["docs"]["max_symbol_ratio"]
    assert q.reason(" ".join(["the word"] * 15)) == "too_short"  # 30 words < 40
    assert parse_steps([{"quality": {"preset": "short", "min_stop_words": 0}}])[0].min_stop_words == 0
    with pytest.raises(EdgeLLMError, match=r"'preset'.*'auto', 'web', 'docs' or 'short'"):
        parse_steps([{"quality": {"preset": "webb"}}])
    with pytest.raises(EdgeLLMError, match="'auto' was not resolved") as err:
        Quality().reason("some text")
    assert "name a preset" in err.value.hint


def test_language_needs_no_confidence_on_short_texts():
    pytest.importorskip("py3langid")
    from edgellm.data.steps import Language

    texts = ["Translate to German: good morning", "Guten Morgen, wie geht es dir heute?"]
    _, drop, cols, _ = Language().run(texts)
    assert cols["lang"][0] == "en" and list(drop) == [False, True]  # en at ~0.3 is kept; de is not en
    assert Language(short_text_chars=0).run(texts)[1][0]  # the confidence rule, as before
