"""Cleaning steps: typed, composable, plain functions over Arrow record batches.

Each step is a pydantic model (unknown keys are errors) with a ``run`` over one batch's texts. Per-
document steps (normalise, quality, language, PII, and the hashing half of both deduplications) run in
parallel worker processes; the two deduplication decisions need every earlier document, so they run in
order in the main process on the hashes the workers computed. Documents dropped by a step are not
removed at once: each carries the index of the step that dropped it, so a deduplication at position
``i`` sees exactly the documents alive at ``i`` and the result is that of running the steps in order.

Defaults (documented, all configurable):

- ``normalize``: Unicode NFKC, control characters removed (tab and newline kept), runs of spaces
  collapsed, at most one blank line in a row, lines stripped.
- ``quality``: :class:`~edgellm.data.quality.Quality` (Gopher and C4's rules; see that module).
- ``language``: py3langid's bundled model (97 languages, no download); ``keep`` (e.g. ``[en]``) and
  ``min_confidence`` (normalised probability, default 0.5), which texts shorter than ``short_text_chars``
  (80) need not reach (py3langid gives "Translate to German: good morning" ``en`` at 0.31); the
  language goes to a ``lang`` column.
- ``pii``: :class:`~edgellm.data.pii.PiiScanner` with ``action`` mask | drop | hash (salt from the
  environment variable named by ``salt_env``), over the text only unless told more: ``fields: [text,
  author_email]`` (``text`` and ``id`` are the text and the id whatever they are called in the input)
  or ``all_strings: true`` (every field, strings inside lists and objects included). A hit in any
  scanned field masks or hashes it there, or drops the document; the report names the fields that held
  strings and were not scanned.
- ``exact_dedup``: SHA-1 of the text case-folded, with punctuation stripped from the ends of words and
  whitespace collapsed (``Hello, World!`` and ``hello world`` are copies; ``2+2`` and ``2-2`` are not);
  ``normalize_key: false`` hashes the text as it is; the first copy is kept.
- ``near_dedup``: MinHash LSH (:mod:`edgellm.data.minhash`) over normalised tokens (case, width, accents,
  punctuation and whitespace folded): ``ngram`` 2 words, ``num_perm`` 128, ``threshold`` 0.6 Jaccard
  (chosen on ``benchmarks/data_near_dup.py``: precision 0.998, recall 0.998 on copies with up to 10 % of
  their words edited, 20-2,000 words), bands/rows derived from the threshold unless given; documents of
  fewer than ``min_tokens`` (16) tokens are only exact-deduplicated (two short examples that differ in one
  word are different examples); the first document of a cluster is kept and the clusters are recorded.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections import Counter
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from edgellm import plugins
from edgellm.data.perplexity import Perplexity
from edgellm.data.quality import Quality
from edgellm.data.quality_model import ModelQuality
from edgellm.data.step import ALIVE, Step
from edgellm.errors import EdgeLLMError, first_error

__all__ = [
    "ALIVE",
    "STEPS",
    "ExactDedup",
    "Language",
    "NearDedup",
    "Normalize",
    "Pii",
    "Quality",
    "Step",
    "parse_steps",
]


class Normalize(Step):
    kind: Literal["normalize"] = "normalize"
    form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFKC"
    max_blank_lines: int = Field(1, ge=0)

    _CTRL: ClassVar = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")
    _SPACES: ClassVar = re.compile(r"[ \t\u00a0\u3000]+")

    def run(self, texts):
        out = []
        for t in texts:
            if t is None:
                out.append(None)
                continue
            t = unicodedata.normalize(self.form, t).replace("\r\n", "\n").replace("\r", "\n")
            t = self._CTRL.sub("", t)
            lines = [self._SPACES.sub(" ", ln).strip() for ln in t.split("\n")]
            kept, blank = [], 0
            for ln in lines:
                blank = blank + 1 if not ln else 0
                if blank <= self.max_blank_lines:
                    kept.append(ln)
            out.append("\n".join(kept).strip())
        return out, np.zeros(len(texts), bool), {}, Counter()


class Language(Step):
    kind: Literal["language"] = "language"
    keep: list[str] = Field(default_factory=lambda: ["en"])
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    short_text_chars: int = Field(
        80, ge=0, description="below this length only 'keep' applies: confidence on a short text is noise"
    )

    def run(self, texts):
        ident = _langid()
        langs, drop, why = [], np.zeros(len(texts), bool), Counter()
        for i, t in enumerate(texts):
            if t is None:
                langs.append(None)
                continue
            lang, prob = ident.classify(t[:1500])  # the first 1500 characters decide
            langs.append(lang)
            sure = prob >= self.min_confidence or len(t) < self.short_text_chars
            if (self.keep and lang not in self.keep) or not sure:
                drop[i] = True
                why[f"lang_{lang}" if sure else "low_confidence"] += 1
        return texts, drop, {"lang": langs}, why


_IDENT = None


def _langid():
    global _IDENT
    if _IDENT is None:
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
        except ImportError as exc:
            raise EdgeLLMError(
                "language identification needs py3langid", "pip install 'edgellm[data]'"
            ) from exc
        _IDENT = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _IDENT


class Pii(Step):
    kind: Literal["pii"] = "pii"
    action: Literal["mask", "drop", "hash"] = "mask"
    types: list[str] | None = None
    patterns: dict[str, str] = Field(default_factory=dict)
    salt_env: str = "EDGELLM_PII_SALT"
    fields: list[str] | None = Field(None, min_length=1, description="fields to scan (default: [text])")
    all_strings: bool = Field(False, description="scan every field's strings (lists and objects included)")

    def scanner(self):
        from edgellm.data.pii import BUILTIN, PiiScanner

        salt = os.environ.get(self.salt_env) if self.action == "hash" else None
        if self.action == "hash" and not salt:
            raise EdgeLLMError(
                f"PII action 'hash' needs a salt in the environment variable {self.salt_env}",
                f"export {self.salt_env}=<a long random secret> (keep it out of the repo and the dataset)",
            )
        return PiiScanner(tuple(self.types or BUILTIN), dict(self.patterns), self.action, salt)

    def named(self) -> list[str]:
        """The fields named to scan (none under ``all_strings``: then every field is)."""
        return [] if self.all_strings else list(self.fields or ["text"])

    def run(self, texts):
        return self.run_fields(texts, {})

    def run_fields(self, texts, fields):
        """Counters: ``pii_<type>`` entities, ``scanned:<field>`` / ``unscanned:<field>`` documents whose
        field held a string (the id is reported only when scanned: every document has one)."""
        from edgellm.data.pii import holds_string

        sc = self.scanner()
        scan = ["text", *fields] if self.all_strings else self.named()
        others = {n: list(fields[n]) for n in scan if n != "text" and n in fields}
        out, drop, counts = [], np.zeros(len(texts), bool), Counter()
        for i, t in enumerate(texts):
            if t is None:
                out.append(None)
                continue
            found: Counter = Counter()
            new = t
            if "text" in scan:
                new, found = sc.scan(t)
                counts["scanned:text"] += 1
            for n, values in others.items():
                if holds_string(values[i]):
                    values[i], c = sc.scan(values[i])
                    found.update(c)
                    counts[f"scanned:{n}"] += 1
            counts.update({f"pii_{k}": v for k, v in found.items()})
            drop[i] = self.action == "drop" and bool(found)
            out.append(new)
        alive = [i for i, t in enumerate(texts) if t is not None]
        if "text" not in scan:
            counts["unscanned:text"] += sum(bool(texts[i]) for i in alive)
        for n in fields:
            if n not in scan and n != "id":
                values = fields[n]
                hits = sum(holds_string(values[i]) for i in alive)
                if hits:
                    counts[f"unscanned:{n}"] += hits
        return out, drop, others, counts


class ExactDedup(Step):
    kind: Literal["exact_dedup"] = "exact_dedup"
    stateful: ClassVar[bool] = True

    normalize_key: bool = True

    def run(self, texts):
        key = dedup_key if self.normalize_key else str
        keys = [None if t is None else hashlib.sha1(key(t).encode()).digest() for t in texts]
        return texts, np.zeros(len(texts), bool), {"key": keys}, Counter()


# what a word may lose at either end for exact deduplication: sentence punctuation, brackets and quotes
# (ASCII and Unicode's punctuation classes but dashes); signs, currency, ``%`` and ``#`` carry meaning
_PUNCT = "".join(
    {
        *"!\"'(),.:;?[]{}`",
        *(
            chr(c)
            for c in range(0xA1, 0x3000)
            if unicodedata.category(chr(c)) in ("Po", "Ps", "Pe", "Pi", "Pf")
        ),
    }
)


def dedup_key(text: str) -> str:
    """The text ``exact_dedup`` compares: case-folded, words stripped of edge punctuation, single spaces.

    Example:
        >>> dedup_key("Is it  READY? (yes)") == dedup_key("is it ready (yes).")
        True
        >>> dedup_key("2+2") == dedup_key("2-2")
        False
    """
    words = (w.strip(_PUNCT) for w in text.casefold().split())
    return " ".join(w for w in words if w)


class NearDedup(Step):
    kind: Literal["near_dedup"] = "near_dedup"
    stateful: ClassVar[bool] = True
    threshold: float = Field(0.6, gt=0.0, le=1.0)
    num_perm: int = Field(128, ge=8, le=1024)
    ngram: int = Field(2, ge=1, le=20)
    min_tokens: int = Field(16, ge=0)
    bands: int | None = None
    rows: int | None = None
    fp_weight: float = Field(0.2, ge=0.0, le=1.0)
    seed: int = 1

    def run(self, texts):
        from edgellm.data.minhash import SIG_DTYPE, is_skip, signatures

        live = [i for i, t in enumerate(texts) if t is not None]
        sig = np.zeros((len(texts), self.num_perm), SIG_DTYPE)
        counts: Counter = Counter()
        if live:
            sig[live] = signatures(
                [texts[i] for i in live], self.num_perm, self.ngram, self.seed, self.min_tokens
            )
            skipped = sum(is_skip(sig[i]) for i in live)
            if skipped:
                counts["skipped_short"] = skipped
        return texts, np.zeros(len(texts), bool), {"sig": sig}, counts


STEPS: dict[str, type[Step]] = {
    "normalize": Normalize,
    "quality": Quality,
    "language": Language,
    "pii": Pii,
    "exact_dedup": ExactDedup,
    "near_dedup": NearDedup,
    "model_quality": ModelQuality,
    "perplexity": Perplexity,
}


@plugins.accepts("edgellm.cleaning_steps")
def _accept_plugin(name: str, obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Step)):
        raise TypeError(f"{obj!r} is not a edgellm.data.steps.Step subclass")
    STEPS.setdefault(name, obj)


def parse_steps(spec: list[Any]) -> list[Step]:
    """Steps from a config list: ``["normalize", {"quality": {"min_words": 20}}, ...]``."""
    from pydantic import ValidationError

    steps: list[Step] = []
    for i, item in enumerate(spec):
        if isinstance(item, str):
            name, cfg = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, cfg = next(iter(item.items()))
            cfg = cfg or {}
        else:
            raise EdgeLLMError(f"steps[{i}] is {item!r}", "write each step as a name or as {name: {options}}")
        if name not in STEPS:
            plugins.load("edgellm.cleaning_steps", name)  # a plugin package may provide it
        if name not in STEPS:
            raise EdgeLLMError(f"steps[{i}]: unknown step '{name}'", f"steps: {', '.join(STEPS)}")
        try:
            steps.append(STEPS[name](**cfg))
        except ValidationError as exc:
            cause = (exc.errors()[0].get("ctx") or {}).get("error")
            own = getattr(cause, "__cause__", None)  # a validator's EdgeLLMError carries its own fix
            hint = (
                own.hint
                if isinstance(own, EdgeLLMError) and own.hint
                else "see the step's documented options"
            )
            raise EdgeLLMError(f"steps[{i}].{name}: {first_error(exc)}", hint) from exc
    return steps
