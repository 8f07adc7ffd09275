"""Train the bundled ``model_quality`` model from local text only, measure it on held-out domains and noise
families, and publish it into edgellm/data/resources/quality_model.

    .venv/bin/python scripts/train_quality_model.py --lodo          # train, measure, publish (~2 min on 2 cores)
    .venv/bin/python scripts/train_quality_model.py --check-only -o /tmp/qm   # do not publish
    .venv/bin/python scripts/train_quality_model.py --versus-rules '{"min_words": 10}'  # the bundled model beside rules

The bundled model was published by the first command; running it again gives the same model.npz (sha256).

Everything is generated with a fixed seed from this Python's own files (no download): the result depends
only on the seed and the Python version (recorded in the card).

Good text (label 1), lengths 5..~400 words:
- ``pydoc``: prose paragraphs of ``pydoc_data.topics`` (1-4 per document);
- ``docstrings``: paragraphs of the docstrings of ``TRAIN_MODULES`` (a fixed list, below);
- ``license``: paragraphs of the interpreter's ``LICENSE.txt``;
- ``short``: 5-40-word instruction / question / answer records built from those docstrings' first lines.

Bad text (label 0), lengths drawn from the good documents' lengths so that length does not separate the
classes: ``symbols``, ``lorem``, ``spam`` (one line repeated), ``gibberish``, ``salad`` (a good document's
words shuffled), ``mojibake`` (UTF-8 read as cp1252), ``stuffing`` (keyword lists), ``nav`` (menu lines),
``blob`` (base64 / hex).

Held out (never trained on), reported in the card's ``heldout``: the good domains ``docstrings_heldout``
(``HELDOUT_MODULES``, disjoint from ``TRAIN_MODULES``), ``idle_help`` (IDLE's manual, idlelib/help.html) and
``idle_news`` (idlelib/NEWS.txt entries); the seen families ``salad`` and ``mojibake`` applied to those
domains; and the unseen families ``markov`` (a word-bigram chain over held-out text), ``html`` (tag soup),
``urls``, ``table`` (numbers), ``typos`` (a third of the letters replaced) and ``repeat`` (character runs).
"""

from __future__ import annotations

import argparse
import html.parser
import importlib
import inspect
import itertools
import json
import os
import random
import re
import string
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUNDLED = ROOT / "edgellm" / "data" / "resources" / "quality_model"
SEED = 0
DIM = 1 << 17
MAX_BYTES = 512 * 1024

_TRAIN_MODULES = (
    "abc ast base64 bdb bisect bz2 calendar cmd codecs configparser contextlib copy dataclasses difflib "
    "dis doctest enum filecmp fileinput fnmatch ftplib getopt gettext glob graphlib gzip hashlib heapq "
    "hmac imaplib ipaddress lzma mailbox mimetypes netrc numbers operator optparse pdb pickle pickletools "
    "platform plistlib poplib pprint queue sched secrets selectors shelve shlex smtplib socket "
    "socketserver ssl struct tempfile timeit tokenize tomllib trace traceback types uuid warnings wave "
    "weakref xml.dom.minidom zoneinfo"
)
TRAIN_MODULES = _TRAIN_MODULES.split()
_HELDOUT_MODULES = (
    "json os pathlib collections itertools functools re argparse logging subprocess typing email "
    "http.client urllib.parse csv sqlite3 threading asyncio shutil tarfile zipfile datetime decimal "
    "fractions statistics random string textwrap unittest inspect"
)
HELDOUT_MODULES = _HELDOUT_MODULES.split()
assert not set(TRAIN_MODULES) & set(HELDOUT_MODULES)


# -- sources -------------------------------------------------------------------------------------------
def _flat(p: str) -> str:
    return " ".join(re.sub(r"[*=~^-]{3,}", " ", p).split())


def _prose(p: str, min_words: int = 5) -> bool:
    w = p.split()
    return len(w) >= min_words and sum(any(c.isalpha() for c in x) for x in w) / len(w) >= 0.7


def pydoc_paragraphs() -> list[str]:
    from pydoc_data.topics import topics

    out = [_flat(p) for k in sorted(topics) for p in topics[k].split("\n\n")]
    return sorted({p for p in out if _prose(p) and not p.startswith((">>>", "..."))})


def docstrings(modules: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(paragraphs, [(qualified name, first line)]) of the public members' docstrings of ``modules``."""
    paras, firsts = set(), set()
    for name in modules:
        mod = importlib.import_module(name)
        for attr, obj in [(name, mod), *inspect.getmembers(mod)]:
            if attr.startswith("_"):
                continue
            doc = inspect.getdoc(obj)
            if not doc or (obj is not mod and getattr(obj, "__module__", name) not in (name, None)):
                continue
            ps = [_flat(p) for p in doc.split("\n\n")]
            paras.update(p for p in ps if _prose(p) and not p.startswith((">>>", "...")))
            if ps and _prose(ps[0], 4):
                firsts.add((f"{name}.{attr}" if obj is not mod else name, ps[0]))
    return sorted(paras), sorted(firsts)


def license_paragraphs() -> list[str]:
    text = (Path(os.__file__).parent / "LICENSE.txt").read_text(encoding="utf-8", errors="replace")
    return sorted({_flat(p) for p in text.split("\n\n") if _prose(_flat(p), 8)})


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("p", "li", "dt", "dd", "h1", "h2", "h3", "pre", "div"):
            self.parts.append("\n\n")


def idle_help() -> list[str]:
    import idlelib

    p = _Text()
    p.feed((Path(idlelib.__file__).parent / "help.html").read_text(encoding="utf-8"))
    return sorted({_flat(x) for x in "".join(p.parts).split("\n\n") if _prose(_flat(x), 8)})


def idle_news() -> list[str]:
    import idlelib

    text = (Path(idlelib.__file__).parent / "NEWS.txt").read_text(encoding="utf-8")
    return sorted({_flat(x) for x in re.split(r"\n\s*\n|\n(?=bpo-|gh-)", text) if _prose(_flat(x), 8)})


def short_examples(firsts: list[tuple[str, str]], rng: random.Random) -> list[str]:
    out = []
    for name, line in firsts:
        k = rng.randrange(4)
        if k == 0:
            out.append(f"Q: What does {name} do?\nA: {line}")
        elif k == 1:
            out.append(f"Explain what {name} does in one sentence.")
        elif k == 2:
            out.append(line)
        else:
            out.append(f"Instruction: describe {name}.\nResponse: {line}")
    return [t for t in out if 5 <= len(t.split()) <= 40]


def compose(paras: list[str], n: int, rng: random.Random, hi: int = 4) -> list[str]:
    return ["\n\n".join(rng.sample(paras, min(len(paras), rng.randint(1, hi)))) for _ in range(n)]


# -- bad text ------------------------------------------------------------------------------------------
SPAM = [
    "BUY NOW cheap pills best price",
    "click here to win a free prize today",
    "subscribe and share and like",
]
_NAV = "Home About Blog Contact Login Register Cart Products Services Support FAQ Careers News Shop Search"
NAV = _NAV.split()
_KEYWORDS = "cheap best free online download python tutorial course deals buy price top review 2024 new sale"
KEYWORDS = _KEYWORDS.split()
_LOREM = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore"
LOREM = _LOREM.split()


def mojibake(text: str, rng: random.Random) -> str:
    t = (
        text.replace("'", "\u2019")
        .replace(' "', " \u201c")
        .replace('" ', "\u201d ")
        .replace(" - ", " \u2014 ")
    )
    w = t.split(" ")
    for _ in range(max(1, len(w) // 12)):  # a few accented words, as in names and loan words
        i = rng.randrange(len(w))
        w[i] = w[i].replace("e", "\u00e9", 1).replace("a", "\u00e0", 1)
    return " ".join(w).encode("utf-8").decode("cp1252", errors="replace")


def salad(text: str, rng: random.Random) -> str:
    w = text.split()
    rng.shuffle(w)
    return " ".join(w)


def bad_train(family: str, n_words: int, src: str, rng: random.Random) -> str:
    pick = rng.choice
    if family == "symbols":
        return " ".join(
            pick(["#", "$$", "%%", "@@", "&&", "|", "##", "**", "~~", "++"]) for _ in range(n_words)
        )
    if family == "lorem":
        return " ".join(pick(LOREM) for _ in range(n_words)).capitalize() + "."
    if family == "spam":
        line = pick(SPAM)
        return "\n".join([line] * max(2, n_words // len(line.split())))
    if family == "gibberish":
        abc = string.ascii_lowercase + string.digits
        return " ".join("".join(pick(abc) for _ in range(rng.randint(3, 20))) for _ in range(n_words))
    if family == "salad":
        return salad(src, rng)
    if family == "mojibake":
        return mojibake(src, rng)
    if family == "stuffing":
        words = [w.strip(".,:;()").lower() for w in src.split()][:8] + KEYWORDS
        return ", ".join(" ".join(rng.sample(words, rng.randint(1, 3))) for _ in range(max(1, n_words // 2)))
    if family == "nav":
        lines = [" | ".join(rng.sample(NAV, rng.randint(3, 7))) for _ in range(max(1, n_words // 5))]
        return "\n".join(lines)
    if family == "blob":
        abc = string.ascii_letters + string.digits + "+/" if rng.random() < 0.5 else "0123456789abcdef"
        return "\n".join("".join(pick(abc) for _ in range(76)) for _ in range(max(1, n_words // 8)))
    raise ValueError(family)


TRAIN_FAMILIES = ("symbols", "lorem", "spam", "gibberish", "salad", "mojibake", "stuffing", "nav", "blob")
HELDOUT_FAMILIES = ("markov", "html", "urls", "table", "typos", "repeat")


def bad_heldout(family: str, n_words: int, src: str, chain: dict, rng: random.Random) -> str:
    pick = rng.choice
    if family == "markov":
        w = pick(list(chain))
        out = [w]
        while len(out) < n_words:
            w = pick(chain.get(w) or list(chain))
            out.append(w)
        return " ".join(out)
    if family == "html":
        tags = ["div", "span", "a", "li", "td", "script"]
        return "".join(
            f'<{t} class="{pick(["nav", "item", "c-1", "row"])}" id="x{rng.randint(1, 999)}">'
            + (pick(src.split()) if rng.random() < 0.3 else "")
            + f"</{t}>"
            for t in (pick(tags) for _ in range(max(2, n_words // 3)))
        )
    if family == "urls":
        return "\n".join(
            f"https://www.{pick(['example', 'shop', 'news'])}{rng.randint(1, 99)}.com/{pick(KEYWORDS)}/{rng.randint(1, 9999)}"
            for _ in range(max(2, n_words // 3))
        )
    if family == "table":
        cols = rng.randint(3, 8)
        return "\n".join(
            ",".join(f"{rng.uniform(-999, 999):.{rng.randint(0, 3)}f}" for _ in range(cols))
            for _ in range(max(2, n_words // cols))
        )
    if family == "typos":
        abc = string.ascii_lowercase
        return "".join(pick(abc) if c.isalpha() and rng.random() < 0.33 else c for c in src)
    if family == "repeat":
        return " ".join(pick("a!.-=xz?") * rng.randint(4, 30) for _ in range(max(2, n_words // 4)))
    raise ValueError(family)


# -- run -----------------------------------------------------------------------------------------------
def _n_words(good: list[str], rng: random.Random) -> int:
    return max(5, len(rng.choice(good).split()))


def build(rng: random.Random, scale: float = 1.0) -> tuple[dict, dict, dict]:
    """(good by source, bad by family, the source each bad document was made from or None) for training;
    ``scale``: a fraction of the documents, for a quick run. ``salad``, ``mojibake`` and ``stuffing`` are made
    from good documents, so their lengths and words are those of the good class."""
    doc_paras, firsts = docstrings(TRAIN_MODULES)
    good = {
        "pydoc": compose(pydoc_paragraphs(), int(3000 * scale), rng),
        "docstrings": compose(doc_paras, int(3000 * scale), rng),
        "license": compose(license_paragraphs(), int(300 * scale), rng, hi=3),
        "short": rng.sample(s := short_examples(firsts, rng), min(len(s), int(1500 * scale))),
    }
    pool = [(k, t) for k, v in good.items() for t in v]
    bad: dict[str, list[str]] = {f: [] for f in TRAIN_FAMILIES}
    made_from: dict[str, list[str | None]] = {f: [] for f in TRAIN_FAMILIES}
    for i in range(int(850 * scale) * len(TRAIN_FAMILIES)):
        f = TRAIN_FAMILIES[i % len(TRAIN_FAMILIES)]
        domain, src = rng.choice(pool)
        bad[f].append(bad_train(f, max(5, len(rng.choice(pool)[1].split())), src, rng))
        made_from[f].append(domain if f in ("salad", "mojibake", "stuffing") else None)
    return good, bad, made_from


def heldout(rng: random.Random) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    paras, _ = docstrings(HELDOUT_MODULES)
    good = {
        "docstrings_heldout": compose(paras, 600, rng, hi=3),
        "idle_help": compose(idle_help(), 300, rng, hi=3),
        "idle_news": compose(idle_news(), 300, rng, hi=3),
    }
    pool = [t for v in good.values() for t in v]
    chain: dict[str, list[str]] = {}
    for t in pool:
        w = t.split()
        for a, b in itertools.pairwise(w):
            chain.setdefault(a, []).append(b)
    bad = {"salad": [salad(t, rng) for t in rng.sample(pool, 400)]}
    bad["mojibake"] = [mojibake(t, rng) for t in rng.sample(pool, 400)]
    for f in HELDOUT_FAMILIES:
        bad[f] = [bad_heldout(f, _n_words(pool, rng), pick, chain, rng) for pick in rng.sample(pool, 200)]
    return good, bad


def measure(model, good: dict[str, list[str]], bad: dict[str, list[str]], threshold: float) -> dict:
    by_domain = {k: round(float((model.score(v) >= threshold).mean()), 4) for k, v in good.items()}
    by_family = {k: round(float((model.score(v) < threshold).mean()), 4) for k, v in bad.items()}
    n_good = sum(len(v) for v in good.values())
    fp = sum(round((1 - by_domain[k]) * len(v)) for k, v in good.items())
    tp = sum(round(by_family[k] * len(v)) for k, v in bad.items())
    n_bad = sum(len(v) for v in bad.values())
    unseen = [k for k in bad if k in HELDOUT_FAMILIES]
    return {
        "threshold": threshold,
        "good_docs": n_good,
        "bad_docs": n_bad,
        "clean_kept": round(1 - fp / n_good, 4),
        "precision": round(tp / max(tp + fp, 1), 4),
        "recall": round(tp / n_bad, 4),
        "recall_seen_families": round(
            sum(by_family[k] * len(bad[k]) for k in bad if k not in unseen)
            / sum(len(bad[k]) for k in bad if k not in unseen),
            4,
        ),
        "recall_unseen_families": round(
            sum(by_family[k] * len(bad[k]) for k in unseen) / sum(len(bad[k]) for k in unseen), 4
        ),
        "clean_kept_by_domain": by_domain,
        "recall_by_family": by_family,
    }


def versus_rules(options: dict) -> dict:
    """The bundled model on the held-out set beside the ``quality`` rules (``options``: the step's options):
    clean kept and noise dropped by the rules alone and by the rules and the model together."""
    from edgellm.data.quality import Quality
    from edgellm.data.quality_model import QualityModel

    m, q = QualityModel.load(), Quality(**options)
    hg, hb = heldout(random.Random(SEED + 1))
    out: dict = {"rules": options, "threshold": m.threshold, "clean_kept": {}, "noise_dropped": {}}
    for k, v in hg.items():
        ok, s = [q.reason(t) is None for t in v], m.score(v)
        both = sum(a and b >= m.threshold for a, b in zip(ok, s))
        out["clean_kept"][k] = {"rules": round(sum(ok) / len(v), 4), "rules+model": round(both / len(v), 4)}
    for k, v in hb.items():
        bad, s = [q.reason(t) is not None for t in v], m.score(v)
        either = sum(a or b < m.threshold for a, b in zip(bad, s))
        out["noise_dropped"][k] = {
            "rules": round(sum(bad) / len(v), 4),
            "rules+model": round(either / len(v), 4),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "edgellm-out" / "quality_model")
    ap.add_argument("--check-only", action="store_true", help="train and measure, do not publish")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--l2", type=float, default=1e-4)
    ap.add_argument(
        "--lodo",
        action="store_true",
        help="also train once without each good source and measure it (4x time)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="a tenth of the documents, 60 steps; implies --check-only"
    )
    ap.add_argument(
        "--versus-rules",
        metavar="JSON",
        help="only measure the bundled model beside the quality rules, e.g. '{\"min_words\": 10}'",
    )
    args = ap.parse_args()
    if args.versus_rules is not None:
        print(json.dumps(versus_rules(json.loads(args.versus_rules)), indent=2))
        return 0

    from edgellm.data.quality_model import train

    t0 = time.perf_counter()
    rng = random.Random(SEED)
    good, bad, made_from = build(rng, 0.1 if args.quick else 1.0)
    card = {
        "script": "scripts/train_quality_model.py",
        "python": sys.version.split()[0],
        "sources": {
            "good": {k: len(v) for k, v in good.items()},
            "bad": {k: len(v) for k, v in bad.items()},
            "train_modules": TRAIN_MODULES,
            "heldout_modules": HELDOUT_MODULES,
        },
    }
    g = [t for v in good.values() for t in v]
    b = [t for v in bad.values() for t in v]
    steps = 60 if args.quick else args.steps
    model = train(g, b, dim=DIM, l2=args.l2, steps=steps, seed=SEED, card=card)
    hg, hb = heldout(random.Random(SEED + 1))
    card = {**model.card, "heldout": measure(model, hg, hb, model.threshold)}
    card["heldout"]["at_0.5"] = {
        k: v for k, v in measure(model, hg, hb, 0.5).items() if k in ("clean_kept", "precision", "recall")
    }
    probes = [
        "Return a new list containing all items from the iterable in ascending order.",
        "order iterable the from items all in containing list a Return new ascending",
        "Home | About | Contact | Login",
        "The function raises ValueError when the argument is negative.",
    ]
    if args.lodo:  # leave one domain out (its good documents and the bad ones made from them): domain shift
        card["leave_one_domain_out"] = {}
        for k, v in good.items():
            rest = [t for j, u in good.items() if j != k for t in u]
            others = [t for f, u in bad.items() for t, d in zip(u, made_from[f]) if d != k]
            m = train(rest, others, dim=DIM, l2=args.l2, steps=steps, seed=SEED)
            card["leave_one_domain_out"][k] = {
                "clean_kept": round(float((m.score(v) >= m.threshold).mean()), 4),
                "threshold": m.threshold,
            }
    card["probes"] = {"texts": probes, "scores": [float(x) for x in model.score(probes)]}
    model = type(model)(model.w, model.bias, model.threshold, model.dim, card)
    model.save(args.output, force=True)
    size = (args.output / "model.npz").stat().st_size
    print(
        json.dumps(
            {
                "seconds": round(time.perf_counter() - t0, 1),
                "bytes": size,
                "validation": card["validation"],
                "heldout": card["heldout"],
                "leave_one_domain_out": card.get("leave_one_domain_out"),
            },
            indent=2,
        )
    )
    if size > MAX_BYTES:
        print(f"model.npz is {size / 1024:.0f} KB, over {MAX_BYTES // 1024} KB", file=sys.stderr)
        return 1
    if not (args.check_only or args.quick):
        model.save(BUNDLED, force=True)
        print(f"published {BUNDLED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
