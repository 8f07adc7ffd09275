"""A labelled corpus for the data-front-end benchmarks, generated from real English prose.

Documents are 6-16 prose sentences drawn from CPython's ``pydoc_data.topics`` (seeded). On top:

- PII of every structured type inserted in sentences (``truth["pii"]``: doc id -> [(type, value)]), and
  look-alikes that are not PII (version strings, failed-Luhn numbers, bad ID checksums, dates) in others;
- near-duplicates: copies of earlier documents with a few words replaced, inserted or deleted
  (``truth["near"]``: copy id -> original id);
- noise: symbol soup, lorem-ipsum filler, repeated-line spam, gibberish, too-short fragments
  (``truth["noise"]``: ids).

    python benchmarks/data_corpus.py --docs 5000 -o edgellm-out/labelled.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path


def sentences() -> list[str]:
    """Prose sentences of the pydoc topics (code-like ones left out: clean documents should be prose)."""
    from edgellm.data import pydoc_topics
    from edgellm.data import sentences as split

    out = []
    for s in split(pydoc_topics(), min_words=6):
        words = s.split()
        if len(s) >= 300 or "..." in s or s.lstrip().startswith(("*", "-", ">>>", "#")):
            continue
        if sum(len(w) for w in words) / len(words) > 8 or sum(w.isalpha() for w in words) / len(words) < 0.7:
            continue
        out.append(s)
    return out


def luhn_complete(digits: str) -> str:
    total = 0
    for i, c in enumerate(reversed(digits)):
        n = int(c)
        if i % 2 == 0:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return digits + str((10 - total % 10) % 10)


def cn_id(rng: random.Random, valid: bool = True) -> str:
    region = f"{rng.choice([110105, 310101, 440304, 510104, 330106])}"
    birth = f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    body = region + birth + f"{rng.randint(0, 999):03d}"
    w = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(c) * k for c, k in zip(body, w)) % 11]
    if not valid:
        check = rng.choice([c for c in "0123456789X" if c != check])
    return body + check


def pii_value(kind: str, rng: random.Random) -> str:
    if kind == "email":
        user = rng.choice(["ana", "li.wei", "j.smith", "ops-team", "m_rossi", "kim+news"]) + str(
            rng.randint(1, 999)
        )
        return f"{user}@{rng.choice(['example.com', 'mail.cn', 'uni-berlin.de', 'corp.co.uk'])}"
    if kind == "phone":
        return rng.choice(
            [
                f"+44 20 {rng.randint(7000, 7999)} {rng.randint(1000, 9999)}",
                f"+1-415-555-{rng.randint(1000, 9999):04d}",
                f"+49 30 {rng.randint(1000000, 9999999)}",
                f"1{rng.choice('3456789')}{rng.randint(0, 999999999):09d}",
                f"+86 1{rng.choice('3456789')}{rng.randint(0, 999999999):09d}",
            ]
        )
    if kind == "cn_id":
        return cn_id(rng)
    if kind == "credit_card":
        prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16)])
        num = luhn_complete(
            prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
        )
        sep = rng.choice([" ", "-", ""])
        return sep.join(num[i : i + 4] for i in range(0, len(num), 4))
    if kind == "ipv4":
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    if kind == "ipv6":
        groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
        if rng.random() < 0.5:
            return ":".join(groups)
        return ":".join(groups[:3]) + "::" + ":".join(groups[6:])
    raise ValueError(kind)


TEMPLATES = {
    "email": "Send questions to {} before Friday.",
    "phone": "You can reach the maintainer at {} during office hours.",
    "cn_id": "The applicant's identity number is {} as registered.",
    "credit_card": "The payment was made with card {} last month.",
    "ipv4": "The server answered from {} without delay.",
    "ipv6": "Traffic was routed through {} yesterday.",
}


def lookalike(rng: random.Random) -> str:
    bad_card = luhn_complete("4" + "".join(rng.choice(string.digits) for _ in range(14)))
    bad_card = bad_card[:-1] + str((int(bad_card[-1]) + 1) % 10)
    return rng.choice(
        [
            f"Release {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)} fixed it.",
            f"Order number {bad_card} was shipped.",
            f"The reference {cn_id(rng, valid=False)} could not be matched.",
            f"It happened on {rng.randint(1990, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} at noon.",
            f"The ratio was {rng.randint(1, 999)}.{rng.randint(1, 999)} percent.",
            f"Call extension {rng.randint(100, 9999)} for help.",
        ]
    )


def noise(rng: random.Random) -> str:
    kind = rng.choice(["symbols", "lorem", "spam", "gibberish", "short"])
    if kind == "symbols":
        return " ".join(
            rng.choice(["#", "$$", "%%", "@@", "&&", "|", "##", "**"]) for _ in range(rng.randint(60, 200))
        )
    if kind == "lorem":
        return "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * rng.randint(5, 20)
    if kind == "spam":
        line = rng.choice(
            [
                "BUY NOW cheap pills best price",
                "click here to win a free prize today",
                "subscribe and share and like",
            ]
        )
        return "\n".join([line] * rng.randint(10, 40))
    if kind == "gibberish":
        return " ".join(
            "".join(rng.choice(string.ascii_lowercase + "0123456789") for _ in range(rng.randint(12, 20)))
            for _ in range(rng.randint(60, 150))
        )
    return "Too short to be a document."


def edit(text: str, rng: random.Random, frac: float = 0.02) -> str:
    w = text.split()
    for _ in range(max(1, int(len(w) * frac))):
        op = rng.random()
        i = rng.randrange(len(w))
        if op < 0.4:
            w[i] = rng.choice(["altered", "changed", "other", "new"])
        elif op < 0.7:
            w.insert(i, rng.choice(["really", "also", "then"]))
        elif len(w) > 10:
            del w[i]
    return " ".join(w)


def generate(
    n_docs: int, seed: int = 0, *, pii_rate: float = 0.15, near_rate: float = 0.08, noise_rate: float = 0.08
):
    """``(rows, truth)``: rows are ``{"id", "text"}``."""
    rng = random.Random(seed)
    sents = sentences()
    rows: list[dict] = []
    truth: dict = {"pii": {}, "near": {}, "noise": set(), "lookalike": set()}
    originals: list[int] = []
    for i in range(n_docs):
        ident = f"d{i:07d}"
        r = rng.random()
        if r < noise_rate:
            rows.append({"id": ident, "text": noise(rng)})
            truth["noise"].add(ident)
            continue
        if r < noise_rate + near_rate and originals:
            src = rows[rng.choice(originals[-2000:])]
            text = edit(src["text"], rng)
            rows.append({"id": ident, "text": text})
            truth["near"][ident] = src["id"]
            kept = [(k, v) for k, v in truth["pii"].get(src["id"], []) if v in text]
            if kept:  # the copy carries the original's PII that the edits left whole
                truth["pii"][ident] = kept
            continue
        body = rng.sample(sents, rng.randint(6, 16))
        if rng.random() < pii_rate:
            kinds = rng.sample(list(TEMPLATES), rng.randint(1, 3))
            found = []
            for kind in kinds:
                v = pii_value(kind, rng)
                body.insert(rng.randrange(len(body) + 1), TEMPLATES[kind].format(v))
                found.append((kind, v))
            truth["pii"][ident] = found
        elif rng.random() < 0.2:
            body.insert(rng.randrange(len(body) + 1), lookalike(rng))
            truth["lookalike"].add(ident)
        paras = [" ".join(body[j : j + 4]) for j in range(0, len(body), 4)]
        rows.append({"id": ident, "text": "\n\n".join(paras)})
        originals.append(len(rows) - 1)
    return rows, truth


def write(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", default="edgellm-out/labelled.jsonl")
    a = ap.parse_args()
    rows, truth = generate(a.docs, a.seed)
    write(rows, Path(a.output))
    print(
        json.dumps(
            {
                "docs": len(rows),
                "pii_docs": len(truth["pii"]),
                "near": len(truth["near"]),
                "noise": len(truth["noise"]),
            }
        )
    )
