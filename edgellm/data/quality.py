"""The ``quality`` step: heuristic document filters, with presets for what a corpus is.

``preset`` names a set of thresholds; any key given beside it wins over the preset's value:

- ``web`` (Gopher, Rae et al. 2021, and C4, Raffel et al. 2020; the field defaults): 50..100,000 words;
  mean word length 3..10 characters; symbol (``#``, ``...``) to word ratio <= 0.1; >= 80 % of words with a
  letter; <= 90 % of lines starting with a bullet; <= 30 % of lines ending with an ellipsis; at least 2 of
  Gopher's 8 English stop words (``min_stop_words: 0`` for other languages); duplicate lines <= 30 % and
  duplicate paragraphs <= 30 % (by count), duplicate-line characters <= 20 %; top 2/3/4-gram character
  share <= 20/18/16 %; repeated 5..10-gram character share <= 15..10 %; C4 boilerplate lines (javascript,
  cookie/privacy policy, terms of use) removed and documents containing ``lorem ipsum`` dropped.
- ``docs`` (technical prose: documentation paragraphs with identifiers, flags and headings): from 10
  words; mean word length 2.5..14 (``os.path.join()`` is 14 characters); symbols <= 0.25 a word;
  >= 60 % alphabetic words; any share of bullet lines; >= 1 of 45 English function words, for
  documents of 8 words and more; the top n-gram rules from 50 words and the repeated n-gram rules from 100
  words (one repeated 5-gram in 30 words is a third of it); a boilerplate line is removed only when it has
  at most 12 words and ``javascript`` counts only in "enable javascript", "javascript is disabled" and
  the like (a JavaScript tutorial keeps its sentences); ``lorem ipsum`` drops a document only when
  the Latin filler words are >= 20 % of it (documentation about placeholders mentions it).
- ``short`` (fine-tuning examples, questions, answers): as ``docs`` with no length floor, mean word
  length 1.5..14, >= 50 % alphabetic words and <= 50 % ellipsis lines.
- every preset (beside Gopher/C4): mojibake (ftfy's badness sequences per word <= 0.02), markup (tags,
  attributes, entities <= 25 % of the words), OCR glyph words (a digit or symbol between letters, from 3
  words and <= 12 %), word variety (:func:`word_variety` >= 0.4 from 10 words: keyword stuffing) and word
  order (:func:`word_order`'s breaks <= 0.34 of its chances, from 2 breaks: word salad); in ``docs`` and
  ``short`` the repeated n-gram rules drop from about half the words (API references repeat phrases).
- ``auto`` (the default): :func:`edgellm.data.profile.choose_preset` picks one of the three from a first
  pass over the corpus (``clean`` and ``clean_ray`` do it before any worker starts).

Every ``short`` threshold is at least as lenient as ``docs``'s, and every ``docs`` one as ``web``'s, so a
document that ``short`` drops is dropped by ``docs`` and by ``web`` too (line removal is not a drop).

Example:
    >>> q = Quality(preset="short")
    >>> q.reason("Answer: 42"), Quality(preset="web").reason("Answer: 42")
    (None, 'too_short')
    >>> Quality(preset="docs", min_words=40).min_words
    40
"""

from __future__ import annotations

import copy
import itertools
import re
from collections import Counter
from typing import Any, Literal

import numpy as np
from pydantic import Field, PrivateAttr, model_validator

from edgellm.data.step import Step
from edgellm.errors import EdgeLLMError

GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


def _words(s: str) -> list[str]:
    return s.split()


# English function words (Gopher's 8 among them): one of them in a sentence of 8 words is near certain
FUNCTION_WORDS = [
    *GOPHER_STOP_WORDS,
    *_words("a an or but if then than is are was were been being it its this these those"),
    *_words("in on at by for from as into not no can will may must should which when where who"),
]
_FUNCTION = frozenset(FUNCTION_WORDS)
# the lorem-ipsum vocabulary (English look-alikes such as "in", "do", "id", "non" left out)
FILLER_WORDS = frozenset(
    _words(
        """lorem ipsum dolor sit amet consectetur consectetuer adipiscing adipisicing elit sed eiusmod tempor
        incididunt ut labore et dolore magna aliqua aliquam enim minim veniam quis nostrud exercitation
        ullamco laboris nisi aliquip ea commodo consequat duis aute irure reprehenderit voluptate velit esse
        cillum eu fugiat nulla pariatur excepteur sint occaecat cupidatat proident sunt culpa qui officia
        deserunt mollit anim laborum vestibulum donec mauris nunc integer"""
    )
)
# the order a profile table lists the rules in (the order ``reason`` checks them)
RULES = (
    "boilerplate",
    "too_short",
    "too_long",
    "mean_word_length",
    "symbol_ratio",
    "non_alphabetic",
    "mojibake",
    "markup",
    "glyph_words",
    "bullet_lines",
    "ellipsis_lines",
    "stop_words",
    "dup_lines",
    "dup_line_chars",
    "dup_paragraphs",
    "top_2gram",
    "top_3gram",
    "top_4gram",
    *(f"dup_{k}gram" for k in range(5, 11)),
    "word_variety",
    "word_order",
)
_LENIENT = {
    "max_mean_word_length": 14.0,
    "max_symbol_ratio": 0.25,
    "max_bullet_lines": 1.0,
    "min_stop_words": 1,
    "stop_words": FUNCTION_WORDS,
    "stop_words_min_doc_words": 8,
    "repetition_min_words": 50,
    "dup_ngram_min_words": 100,
    # a boilerplate line: C4's phrases with "javascript" narrowed to the page's complaint, <= 12 words
    "boilerplate_lines": [
        "enable javascript",
        "javascript is disabled",
        "javascript is required",
        "requires javascript",
        "cookie policy",
        "privacy policy",
        "terms of use",
        "use cookies",
    ],
    "boilerplate_max_words": 12,
    "filler_share": 0.2,
    # API references repeat their phrasing from entry to entry ("Return True if the argument is ..."):
    # repeated n-grams drop a document when about half its words repeat (degenerate repetition is also
    # caught by the duplicate-line, word-variety and top n-gram rules)
    "max_top_ngram_share": {2: 0.30, 3: 0.27, 4: 0.24},
    "max_dup_ngram_share": {5: 0.50, 6: 0.48, 7: 0.46, 8: 0.44, 9: 0.42, 10: 0.40},
}
# the keys each preset sets; ``web`` is the field defaults. Nested: short <= docs <= web in what they drop.
PRESETS: dict[str, dict[str, Any]] = {
    "web": {},
    "docs": {**_LENIENT, "min_words": 10, "min_mean_word_length": 2.5, "min_alpha_words": 0.6},
    "short": {
        **_LENIENT,
        "min_words": 1,
        "min_mean_word_length": 1.5,
        "min_alpha_words": 0.5,
        "max_ellipsis_lines": 0.5,
    },
}
# sentence ends that are not: abbreviations whose period is part of the word
_ABBREVIATIONS = frozenset(
    _words("e.g. i.e. etc. vs. cf. approx. no. fig. al. mr. mrs. ms. dr. st. jr. inc. ltd.")
)
# determiners ("a" left out: it is also the usual name of a variable in technical prose, "a and b")
_DETERMINERS = frozenset(_words("the an this these those its their our your my every each"))
# words that do not follow a determiner in English ("the of", "an and"); other languages have none
_NOT_AFTER_DETERMINER = _DETERMINERS.union(
    _words("a of to in on at by for from with as into and or but if than is are was")
) | {"were", "be", "been", "it", "which", "that"}
# words that open a sentence: capitalised after a word that ends none, they are out of place
_OPENERS = frozenset(
    w.capitalize() for w in _words("the a an this these those it its if in on for when while return")
)
_EDGE_PUNCT = "\"'()[]{}<>,.;:!?`“”‘’"
# a tag (<div, </td>, <br/>), an attribute (class="x">), an entity (&nbsp;) or a tag's end
_MARKUP = re.compile(r"""^(</?[A-Za-z][\w:-]*/?(>|$)|[\w:-]+=["'].*|&[a-z]+;|/?>)$""")
# a digit or symbol between two letters: what OCR makes of letters (c0de, fi1e, st@te); utf8, k8s, i18n
# and x86_64 match too, so the rule needs three such words and a share of them
_GLYPH = re.compile(r"[^\W\d_][0-9@!+$|]+[^\W\d_]")
_BULLET = re.compile(r"^\s*[-*•●▪‣◦]")
_WORD = re.compile(r"\S+")
_LETTERS = re.compile(r"[^\W\d_]+")


def _dup_ngram_share(words: list[str], n: int, lengths: list[int], total: int) -> float:
    """Characters of words covered by n-grams that occur more than once, over all word characters."""
    if len(words) < n:
        return 0.0
    grams = list(zip(*(words[i:] for i in range(n))))
    counts = Counter(grams)
    if len(counts) == len(grams):
        return 0.0
    covered = bytearray(len(words))
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i : i + n] = b"\x01" * n
    return sum(ln for ln, c in zip(lengths, covered) if c) / max(total, 1)


def _top_ngram_share(words: list[str], n: int, total: int) -> float:
    if len(words) < n:
        return 0.0
    gram, c = Counter(zip(*(words[i:] for i in range(n)))).most_common(1)[0]
    return (sum(len(w) for w in gram) * c) / max(total, 1) if c > 1 else 0.0


class Quality(Step):
    """Document filters (see the module docstring for the presets). ``reason`` names the first rule a text
    fails; ``check`` also removes the boilerplate lines first, as ``run`` does."""

    kind: Literal["quality"] = "quality"
    preset: Literal["auto", "web", "docs", "short"] = "auto"
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_ratio: float = 0.1
    min_alpha_words: float = 0.8
    max_mojibake: float | None = Field(
        0.02, ge=0.0, description="drop when ftfy's mojibake sequences per word exceed this (None: off)"
    )
    max_markup: float | None = Field(
        0.25, gt=0.0, le=1.0, description="share of words that are HTML/XML tags, attributes or entities"
    )
    max_glyph_words: float | None = Field(
        0.12,
        gt=0.0,
        le=1.0,
        description="share of words with a digit or symbol between letters (OCR's 'c0de', 'fi1e'), from 3",
    )
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_stop_words: int = 2
    stop_words: list[str] = Field(default_factory=lambda: list(GOPHER_STOP_WORDS))
    stop_words_min_doc_words: int = Field(0, ge=0, description="the stop-word rule applies from this length")
    min_word_variety: float | None = Field(
        0.4, ge=0.0, le=1.0, description="distinct words per word in windows of 50 (MATTR); None: off"
    )
    word_variety_min_words: int = Field(
        10, ge=1, description="the word-variety rule applies from this length"
    )
    max_word_order_breaks: float | None = Field(
        0.34,
        gt=0.0,
        le=1.0,
        description="share of sentence ends followed by a lower-case word and determiners followed by a "
        "function word ('the of') above which a document is word salad; None: off",
    )
    word_order_min_breaks: int = Field(2, ge=1, description="the word-order rule needs this many breaks")
    max_dup_lines: float = 0.3
    max_dup_paragraphs: float = 0.3
    max_dup_line_chars: float = 0.2
    max_top_ngram_share: dict[int, float] = Field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    max_dup_ngram_share: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    repetition_min_words: int = Field(0, ge=0, description="the top n-gram rules apply from this length")
    dup_ngram_min_words: int = Field(0, ge=0, description="the repeated n-gram rules apply from this length")
    boilerplate_lines: list[str] = Field(
        default_factory=lambda: [
            "javascript",
            "cookie policy",
            "privacy policy",
            "terms of use",
            "use cookies",
        ]
    )
    boilerplate_max_words: int | None = Field(
        None, ge=1, description="remove a boilerplate line only if it has at most this many words"
    )
    reject_phrases: list[str] = Field(default_factory=lambda: ["lorem ipsum"])
    filler_share: float | None = Field(
        None, gt=0.0, le=1.0, description="a reject phrase drops only if filler words are this share"
    )
    _stop: frozenset = PrivateAttr(default=frozenset())

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        """Every key not given takes the preset's value (explicit keys win)."""
        if isinstance(data, dict):
            preset = data.get("preset", "auto")
            if isinstance(preset, str) and preset in PRESETS:
                data = {**copy.deepcopy(PRESETS[preset]), **data}
        return data

    def model_post_init(self, _: Any) -> None:
        self._stop = frozenset(w.lower() for w in self.stop_words)

    def reason(self, text: str) -> str | None:
        """The first rule ``text`` fails, or None."""
        if self.preset == "auto":
            raise EdgeLLMError(
                "quality preset 'auto' was not resolved",
                "run it through edgellm.data.clean / clean_ray, or name a preset (web, docs, short)",
            )
        low = text.lower()
        if any(p in low for p in self.reject_phrases) and (
            self.filler_share is None or _filler_share(low) >= self.filler_share
        ):
            return "boilerplate"
        words = _WORD.findall(text)
        n = len(words)
        if n < self.min_words or n == 0:
            return "too_short"
        if n > self.max_words:
            return "too_long"
        mean = sum(len(w) for w in words) / n
        if not self.min_mean_word_length <= mean <= self.max_mean_word_length:
            return "mean_word_length"
        if (text.count("#") + text.count("...") + text.count("…")) / n > self.max_symbol_ratio:
            return "symbol_ratio"
        if sum(any(c.isalpha() for c in w) for w in words) / n < self.min_alpha_words:
            return "non_alphabetic"
        if self.max_mojibake is not None and _mojibake(text) / n > self.max_mojibake:
            return "mojibake"
        if self.max_markup is not None and sum(bool(_MARKUP.match(w)) for w in words) / n > self.max_markup:
            return "markup"
        if self.max_glyph_words is not None:
            glyphs = sum(bool(_GLYPH.search(w)) for w in words)
            if glyphs >= 3 and glyphs / n > self.max_glyph_words:
                return "glyph_words"
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if lines:
            if sum(bool(_BULLET.match(ln)) for ln in lines) / len(lines) > self.max_bullet_lines:
                return "bullet_lines"
            if sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines) > self.max_ellipsis_lines:
                return "ellipsis_lines"
        if (
            self.min_stop_words
            and n >= self.stop_words_min_doc_words
            and len(self._stop.intersection(w.lower() for w in words)) < self.min_stop_words
        ):
            return "stop_words"
        if lines:
            counts = Counter(lines)
            dup = sum(c for c in counts.values() if c > 1)
            if dup / len(lines) > self.max_dup_lines:
                return "dup_lines"
            dup_chars = sum(len(ln) * c for ln, c in counts.items() if c > 1)
            if dup_chars / max(sum(len(ln) for ln in lines), 1) > self.max_dup_line_chars:
                return "dup_line_chars"
        paras = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
        if len(paras) > 1:
            pc = Counter(paras)
            if sum(c for c in pc.values() if c > 1) / len(paras) > self.max_dup_paragraphs:
                return "dup_paragraphs"
        lw = [w.lower() for w in words]
        lengths = [len(w) for w in lw]
        total = sum(lengths)
        if n >= self.repetition_min_words:
            for k, limit in self.max_top_ngram_share.items():
                if _top_ngram_share(lw, int(k), total) > limit:
                    return f"top_{k}gram"
        if n >= self.dup_ngram_min_words:
            for k, limit in sorted(self.max_dup_ngram_share.items()):
                share = _dup_ngram_share(lw, int(k), lengths, total)
                if share > limit:
                    return f"dup_{k}gram"
                if share == 0.0:  # no repeated k-gram: no longer one repeats either
                    break
        if (
            self.min_word_variety is not None
            and n >= self.word_variety_min_words
            and word_variety(words) < self.min_word_variety
        ):
            return "word_variety"
        if self.max_word_order_breaks is not None:
            breaks, chances = word_order(text)
            if breaks >= self.word_order_min_breaks and breaks / chances > self.max_word_order_breaks:
                return "word_order"
        return None

    def check(self, text: str) -> tuple[str, str | None, int]:
        """``(text without its boilerplate lines, the first rule it fails or None, lines removed)``."""
        removed = 0
        if self.boilerplate_lines:
            lines = text.split("\n")
            keep = [ln for ln in lines if not self._boilerplate(ln)]
            removed = len(lines) - len(keep)
            if removed:
                text = "\n".join(keep)
        return text, self.reason(text), removed

    def _boilerplate(self, line: str) -> bool:
        low = line.lower()
        if not any(b in low for b in self.boilerplate_lines):
            return False
        return self.boilerplate_max_words is None or len(line.split()) <= self.boilerplate_max_words

    def run(self, texts):
        out, drop, why = [], np.zeros(len(texts), bool), Counter()
        for i, t in enumerate(texts):
            if t is None:
                out.append(None)
                continue
            t, r, removed = self.check(t)
            if removed:
                why["boilerplate_lines_removed"] += removed
            if r is not None:
                drop[i] = True
                why[r] += 1
            out.append(t)
        return out, drop, {}, why


def _filler_share(low: str) -> float:
    words = _LETTERS.findall(low)
    return sum(w in FILLER_WORDS for w in words) / max(len(words), 1)


def _mojibake(text: str) -> int:
    """How many mojibake sequences (UTF-8 read as cp1252/latin-1: ``Ã©``, ``â€™``) ftfy finds in ``text``."""
    if text.isascii():
        return 0
    try:
        from ftfy.badness import badness
    except ImportError as e:  # pragma: no cover - ftfy is in the data extra
        raise EdgeLLMError(
            "the quality step's mojibake rule needs ftfy",
            "pip install 'edgellm[data]', or set max_mojibake: null",
        ) from e
    return badness(text)


def word_variety(words: list[str], window: int = 50) -> float:
    """Moving-average type-token ratio: distinct words per word over every window of ``window`` words
    (lower-cased, edge punctuation stripped). Prose is 0.6-0.9 at 50; keyword stuffing and repeated
    templates 0.1-0.3. A shorter text gets its plain ratio; under 20 words, with six content words (not
    function words) or more, their ratio less 0.1 if that is lower: a one-line text that repeats its few
    content words is keyword stuffing, one that repeats "the" and "of" is not.

    Example:
        >>> round(word_variety("cheap flights cheap hotels best cheap flights deals".split()), 3)
        0.525
        >>> round(word_variety("Return the name of the file and the size of the file".split()), 3)
        0.583
    """
    w = [x.lower().strip(_EDGE_PUNCT) or x for x in words]
    if len(w) <= window:
        plain = len(set(w)) / max(len(w), 1)
        content = [x for x in w if x not in _FUNCTION and any(c.isalpha() for c in x)]
        if len(w) < 20 and len(content) >= 6:
            return min(plain, len(set(content)) / len(content) - 0.1)
        return plain
    counts = Counter(w[:window])
    total = distinct = len(counts)
    for i in range(window, len(w)):
        old, new = w[i - window], w[i]
        counts[old] -= 1
        if not counts[old]:
            distinct -= 1
        if not counts[new]:
            distinct += 1
        counts[new] += 1
        total += distinct
    return total / ((len(w) - window + 1) * window)


def word_order(text: str) -> tuple[int, int]:
    """``(breaks, chances)`` of English word order, line by line: a sentence end (``word.``) followed by a
    lower-case word, a determiner followed by a function word (``the of``), and a capitalised sentence
    opener (``The``, ``If``, ``Return``) after a word that ends no sentence, over the sentence ends,
    determiners and openers. Prose breaks it rarely (list items, abbreviations, headings on a line of
    their own are not counted); shuffled words about half the time. Other languages give no chances.

    Example:
        >>> word_order("Open the file. Read it to the end.")
        (0, 3)
        >>> word_order("file. the it end. read the to Open")
        (4, 4)
        >>> word_order("Read the file The end.")
        (1, 3)
    """
    breaks = chances = 0
    for line in text.split("\n"):
        toks = line.split()
        for x, nxt in itertools.pairwise(toks):
            low = x.lower()
            if x[-1] in ".!?" and x[:-1].isalpha() and low not in _ABBREVIATIONS:
                chances += 1
                breaks += nxt[0].islower()
            elif low in _DETERMINERS:
                chances += 1
                breaks += nxt.lower().strip(_EDGE_PUNCT) in _NOT_AFTER_DETERMINER
            if nxt in _OPENERS:
                chances += 1
                breaks += x[-1].isalpha()
    return breaks, max(chances, 1)
