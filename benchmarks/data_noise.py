"""The noise families of ``data_labelled.py``'s corpora (see its docstring for which split has which)."""

from __future__ import annotations

import base64
import itertools
import random
import string
from typing import Any

import data_sources as src


def word_count(text: str) -> int:
    """Words of ``text`` as the corpora count them (whitespace-separated)."""
    return len(text.split())


_ACCENT = str.maketrans({"e": "é", "a": "à", "o": "ö", "u": "ü", "i": "ï", "c": "ç"})


def _mojibake(text: str) -> str:
    """UTF-8 bytes read as cp1252 (latin-1 where cp1252 has no character): ``é`` -> ``Ã©``."""
    out = []
    for b in text.encode("utf-8"):
        try:
            out.append(bytes([b]).decode("cp1252"))
        except UnicodeDecodeError:
            out.append(chr(b))
    return "".join(out)


def noise(family: str, n_words: int, split: str, deal: Any, rng: random.Random) -> str:
    """A junk document of about ``n_words`` words of one family (``deal.units``: the domain's prose)."""
    n = max(8, n_words)
    if family == "symbols":
        return " ".join(rng.choice(["#", "$$", "%%", "@@", "&&", "|", "##", "**"]) for _ in range(n))
    if family == "gibberish":
        alnum = string.ascii_lowercase + string.digits
        return " ".join("".join(rng.choice(alnum) for _ in range(rng.randint(12, 20))) for _ in range(n))
    if family == "spam":
        line = rng.choice(src.SPAM[split])
        return "\n".join([line] * max(2, round(n / word_count(line))))
    if family == "lorem":
        words = ["Lorem", "ipsum", "dolor", "sit", "amet,"] + [rng.choice(src.LOREM) for _ in range(n - 5)]
        return " ".join(words) + "."
    units = [deal.units[j][1] for j in rng.sample(range(len(deal.units)), min(len(deal.units), 40))]
    prose = " ".join(" ".join(units).split()[:n])
    if family == "word_salad":
        w = prose.split()
        rng.shuffle(w)
        return " ".join(w)
    if family == "mojibake":
        w = [x.translate(_ACCENT) if rng.random() < 0.4 else x for x in prose.replace("'", "’").split()]
        return _mojibake(" ".join(f"“{x}”" if rng.random() < 0.1 else x for x in w).replace(" - ", " — "))
    if family == "nav_menu":
        lines, k = [], 0
        while k < n:
            line = rng.choice([" | ", " · ", " › "]).join(rng.sample(src.NAV, rng.randint(3, 8)))
            lines.append(line)
            k += word_count(line)
        return "\n".join(lines)
    if family == "base64":
        blob = base64.b64encode(rng.randbytes(max(60, n * 6))).decode()
        return f"attachment: {rng.choice(['report.pdf', 'image.png', 'data.bin'])}\n" + "\n".join(
            blob[i : i + 76] for i in range(0, len(blob), 76)
        )
    if family == "keyword_stuffing":
        kw = rng.choice(src.KEYWORDS)
        out = []
        while len(out) < n:
            out += [*(rng.choice(kw) for _ in range(rng.randint(3, 7))), rng.choice(["-", "|", "and", "for"])]
        return " ".join(out[:n]).capitalize() + "."
    if family == "markov":  # a word-bigram chain over the prose: every pair reads, the whole does not
        w = prose.split()
        nxt: dict[str, list[str]] = {}
        for a, b in itertools.pairwise(w):
            nxt.setdefault(a, []).append(b)
        out = [rng.choice(w)]
        while len(out) < n:
            out.append(rng.choice(nxt.get(out[-1]) or w))
        return " ".join(out)
    if family == "tag_soup":  # markup left in: tags and attributes around a few words
        tags = ["div", "span", "td", "li", "a", "p", "tr"]
        out = []
        while len(out) < n:
            t = rng.choice(tags)
            out.append(f'<{t} class="{rng.choice(["nav", "col-md-4", "btn", "row", "x1"])}">')
            out += rng.sample(prose.split(), min(2, len(prose.split())))
            out.append(f"</{t}>")
        return " ".join(out)
    if family == "ocr":  # a scan read badly: a quarter of the letters replaced by look-alike glyphs
        glyph = {"e": "c", "l": "1", "o": "0", "m": "rn", "i": "!", "a": "@", "s": "5", "t": "+", "h": "b"}
        return "".join(glyph.get(c, c) if c in glyph and rng.random() < 0.25 else c for c in prose)
    if family == "url_list":
        hosts = ["example.com", "cdn.example.net", "img.host.org", "files.site.io"]
        return "\n".join(
            f"https://{rng.choice(hosts)}/{'/'.join(rng.choice(prose.split()).strip('.,') for _ in range(3))}"
            f"?id={rng.randrange(10**6)}"
            for _ in range(max(2, n // 2))
        )
    if family == "table_dump":  # a spreadsheet pasted as text
        cols = rng.randint(4, 8)
        return "\n".join(
            " | ".join(f"{rng.uniform(-1e4, 1e4):.2f}" if j else f"row{r}" for j in range(cols))
            for r in range(max(2, n // cols))
        )
    if family == "char_repetition":
        toks = ["a" * rng.randint(5, 30), "!" * rng.randint(3, 20), "looo" + "o" * rng.randint(3, 15) + "l",
                "ha" * rng.randint(3, 12), "=" * rng.randint(10, 40), "z" * rng.randint(4, 25)]  # fmt: skip
        return " ".join(rng.choice(toks) for _ in range(n))
    raise ValueError(family)
