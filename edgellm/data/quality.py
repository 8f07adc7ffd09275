"""The ``quality`` step: heuristic document filters after Gopher (Rae et al. 2021) and C4 (Raffel et al. 2020).

Defaults: 50..100,000 words; mean word length 3..10 characters; symbol (``#``, ``...``) to word ratio
<= 0.1; >= 80 % of words with a letter; <= 90 % of lines starting with a bullet; <= 30 % of lines ending
with an ellipsis; at least 2 English stop words (``min_stop_words: 0`` for other languages); duplicate
lines <= 30 % and duplicate paragraphs <= 30 % (by count), duplicate-line characters <= 20 %; top 2/3/4-gram
character share <= 20/18/16 %; repeated 5..10-gram character share <= 15..10 %; C4 boilerplate lines
(javascript, cookie/privacy policy, terms of use) are removed and documents containing ``lorem ipsum``
dropped.

Example:
    >>> q = Quality(min_words=3, min_stop_words=0)
    >>> q.reason("ok"), q.reason("three plain words")
    ('too_short', None)
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

import numpy as np
from pydantic import Field

from edgellm.data.step import Step

_STOP = frozenset(("the", "be", "to", "of", "and", "that", "have", "with"))
_BULLET = re.compile(r"^\s*[-*•●▪‣◦]")
_WORD = re.compile(r"\S+")


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
    kind: Literal["quality"] = "quality"
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_ratio: float = 0.1
    min_alpha_words: float = 0.8
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_stop_words: int = 2
    max_dup_lines: float = 0.3
    max_dup_paragraphs: float = 0.3
    max_dup_line_chars: float = 0.2
    max_top_ngram_share: dict[int, float] = Field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    max_dup_ngram_share: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    boilerplate_lines: list[str] = Field(
        default_factory=lambda: [
            "javascript",
            "cookie policy",
            "privacy policy",
            "terms of use",
            "use cookies",
        ]
    )
    reject_phrases: list[str] = Field(default_factory=lambda: ["lorem ipsum"])

    def reason(self, text: str) -> str | None:
        """The first rule ``text`` fails, or None."""
        low = text.lower()
        if any(p in low for p in self.reject_phrases):
            return "boilerplate"
        words = _WORD.findall(text)
        n = len(words)
        if n < self.min_words:
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
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if lines:
            if sum(bool(_BULLET.match(ln)) for ln in lines) / len(lines) > self.max_bullet_lines:
                return "bullet_lines"
            if sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines) > self.max_ellipsis_lines:
                return "ellipsis_lines"
        if self.min_stop_words and len(_STOP.intersection(w.lower() for w in words)) < self.min_stop_words:
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
        for k, limit in self.max_top_ngram_share.items():
            if _top_ngram_share(lw, int(k), total) > limit:
                return f"top_{k}gram"
        for k, limit in sorted(self.max_dup_ngram_share.items()):
            share = _dup_ngram_share(lw, int(k), lengths, total)
            if share > limit:
                return f"dup_{k}gram"
            if share == 0.0:  # no repeated k-gram: no longer one repeats either
                break
        return None

    def run(self, texts):
        out, drop, why = [], np.zeros(len(texts), bool), Counter()
        for i, t in enumerate(texts):
            if t is None:
                out.append(None)
                continue
            if self.boilerplate_lines:
                lines = t.split("\n")
                keep = [ln for ln in lines if not any(b in ln.lower() for b in self.boilerplate_lines)]
                if len(keep) != len(lines):
                    why["boilerplate_lines_removed"] += len(lines) - len(keep)
                    t = "\n".join(keep)
            r = self.reason(t)
            if r is not None:
                drop[i] = True
                why[r] += 1
            out.append(t)
        return out, drop, {}, why
