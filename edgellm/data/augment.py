"""Augmentation: EDA (Wei & Zou 2019) and back-translation through two local sequence-to-sequence models.

EDA operations, each seeded: synonym replacement (from the synonym table edgellm ships,
``resources/synonyms.json``, or one the user gives), random insertion (a synonym of a random word at a
random position), random swap, random deletion. ``alpha`` is the share of words each operation touches.

Back-translation runs any two local Hugging Face seq2seq models (forward: source -> pivot language,
backward: pivot -> source), e.g. two Marian models saved with ``save_pretrained``; nothing is downloaded.
"""

from __future__ import annotations

import json
import random
import re
from functools import cache
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError

RESOURCES = Path(__file__).resolve().parent / "resources"
_WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*$")


@cache
def _shipped() -> dict[str, list[str]]:
    return json.loads((RESOURCES / "synonyms.json").read_text())


def load_synonyms(path: str | Path | None = None) -> dict[str, list[str]]:
    """The shipped table, or a user JSON ``{word: [synonyms]}`` (lookups are lowercase)."""
    if path is None:
        return _shipped()
    p = Path(path)
    try:
        table = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise EdgeLLMError(
            f"cannot read synonym table '{path}': {exc}", "give a JSON object {word: [synonyms]}"
        ) from exc
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise EdgeLLMError(f"'{path}' is not {{word: [synonyms]}}", "give a JSON object of lists")
    return {str(k).lower(): [str(s) for s in v] for k, v in table.items()}


class EDA:
    def __init__(self, synonyms: dict[str, list[str]] | None = None, seed: int = 0) -> None:
        self.syn = synonyms if synonyms is not None else _shipped()
        self.rng = random.Random(seed)

    def _synonyms(self, word: str) -> list[str]:
        return [s for s in self.syn.get(word.lower(), []) if s.lower() != word.lower()]

    def synonym_replace(self, words: list[str], n: int) -> list[str]:
        out = list(words)
        cands = [i for i, w in enumerate(out) if _WORD.match(w) and self._synonyms(w)]
        self.rng.shuffle(cands)
        for i in cands[:n]:
            s = self.rng.choice(self._synonyms(out[i]))
            out[i] = s.capitalize() if out[i][0].isupper() else s
        return out

    def random_insert(self, words: list[str], n: int) -> list[str]:
        out = list(words)
        cands = [w for w in out if self._synonyms(w)]
        for _ in range(n if cands else 0):
            out.insert(
                self.rng.randrange(len(out) + 1), self.rng.choice(self._synonyms(self.rng.choice(cands)))
            )
        return out

    def random_swap(self, words: list[str], n: int) -> list[str]:
        out = list(words)
        for _ in range(n if len(out) > 1 else 0):
            i, j = self.rng.sample(range(len(out)), 2)
            out[i], out[j] = out[j], out[i]
        return out

    def random_delete(self, words: list[str], p: float) -> list[str]:
        if len(words) <= 1:
            return list(words)
        kept = [w for w in words if self.rng.random() > p]
        return kept or [self.rng.choice(words)]

    def augment(
        self,
        text: str,
        *,
        alpha: float = 0.1,
        n_aug: int = 4,
        ops: tuple[str, ...] = ("sr", "ri", "rs", "rd"),
    ) -> list[str]:
        """``n_aug`` variants of ``text``, each from one operation (cycling through ``ops``)."""
        words = text.split()
        if not words:
            return [text] * n_aug
        n = max(1, int(alpha * len(words)))
        out = []
        for k in range(n_aug):
            op = ops[k % len(ops)]
            w = {
                "sr": lambda: self.synonym_replace(words, n),
                "ri": lambda: self.random_insert(words, n),
                "rs": lambda: self.random_swap(words, n),
                "rd": lambda: self.random_delete(words, alpha),
            }[op]()
            out.append(" ".join(w))
        return out


def back_translate(
    texts: list[str],
    forward: str | Path,
    backward: str | Path,
    *,
    max_new_tokens: int = 128,
    num_beams: int = 1,
    seed: int = 0,
    batch_size: int = 16,
) -> list[str]:
    """``texts`` translated by ``forward`` then back by ``backward`` (two local seq2seq model folders)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    def load(path: str | Path) -> tuple[Any, Any]:
        p = Path(path)
        if not (p / "config.json").is_file():
            raise EdgeLLMError(
                f"'{path}' is not a model folder (no config.json)",
                "give a seq2seq model saved with save_pretrained",
            )
        try:
            return AutoTokenizer.from_pretrained(p), AutoModelForSeq2SeqLM.from_pretrained(p).eval()
        except (OSError, ValueError) as exc:
            raise EdgeLLMError(
                f"'{path}' is not a sequence-to-sequence model: {exc}", "use e.g. a Marian or T5 model"
            ) from exc

    def run(tok: Any, model: Any, batch: list[str]) -> list[str]:
        live = [i for i, t in enumerate(batch) if t.strip()]  # an empty translation stays empty
        if not live:
            return ["" for _ in batch]
        enc = tok(
            [batch[i] for i in live], return_tensors="pt", padding=True, truncation=True, max_length=512
        )
        enc.pop("token_type_ids", None)  # seq2seq models take ids and mask only
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
        out = ["" for _ in batch]
        for i, t in zip(live, tok.batch_decode(ids, skip_special_tokens=True)):
            out[i] = t.strip()
        return out

    torch.manual_seed(seed)
    fwd, bwd = load(forward), load(backward)
    out: list[str] = []
    for i in range(0, len(texts), batch_size):
        pivot = run(*fwd, texts[i : i + batch_size])
        out += run(*bwd, pivot)
    return out
