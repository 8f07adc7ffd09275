"""The ``model_quality`` step: a hashed-feature logistic regression that scores how much a document reads
like text (word salad, mojibake, keyword stuffing, menus and blobs score low), in numpy only.

GPT-3's quality filter was of this kind (logistic regression on hashed n-grams). The features
(:func:`features`, ``FEATURE_VERSION`` 1) are four families hashed into ``dim`` buckets, each with square-
root counts and L2-normalised per document, plus a few dense ratios:

- word uni- and bigrams of normalised tokens (NFKC, casefolded, accents removed), the first 512 tokens;
- shape 1..3-grams: a function word stays itself, any other token becomes its shape (``<Xx>``, ``<x>``,
  ``<xxx>``, ``<9>``, ``<x_x>``, ``<XX>``, punctuation as itself): what carries across domains;
- character 3-grams of the casefolded text, the first 2,000 characters;
- dense: mean word length, alphabetic / function-word / long-token shares of the tokens, symbol / digit /
  upper-case / mojibake-marker shares of the characters, and the duplicate-line share.

No feature measures length on its own: length is the rules' job (a short answer is not worse text), and a
length feature learnt on one corpus drops the short documents of the next one.

:func:`train` fits it (full batch, Adam, L2, balanced class weights) and picks the threshold on a validation
part so that at least 99 % of the good validation documents are kept. :func:`bootstrap` labels an unlabelled
corpus with the rules' decisions. The bundled model is trained by ``scripts/train_quality_model.py``; its
card (``model.json``) lists the sources and the held-out precision and recall of dropping.

Measured (the card's ``heldout``: 1,200 clean documents of three domains it never saw, 2,000 noise documents
of eight families, six of them never seen): at the card's threshold 0.62 it keeps 0.96 of the clean ones
(0.98 docstrings of other modules, 0.97 IDLE's manual, 0.92 changelog entries) and drops 0.70 of the noise
with precision 0.97: word salad 0.81, mojibake 0.84, typos 0.77, but Markov-chain text 0.03 and tag soup 0.0
(the rules drop tag soup). It is therefore not in the default steps: add ``model_quality`` where salad or
mojibake are expected, beside the rules, not instead of them.

Example:
    >>> m = QualityModel.load("bundled")                                      # doctest: +SKIP
    >>> m.score(["Return the number of items in the list.", "list the items of number Return in"])  # doctest: +SKIP
    array([0.97, 0.04], dtype=float32)
"""

from __future__ import annotations

import json
import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from edgellm.data.minhash import _mix  # splitmix64 finaliser: every input bit affects every output bit
from edgellm.data.step import Step
from edgellm.errors import ArtifactError, EdgeLLMError

FEATURE_VERSION = 1
FORMAT = "edgellm-quality-model"
BUNDLED = Path(__file__).resolve().parent / "resources" / "quality_model"
MAX_TOKENS, MAX_CHARS = 512, 2000
DENSE = (
    "mean_word_length",
    "alpha_tokens",
    "function_words",
    "long_tokens",
    "symbol_chars",
    "digit_chars",
    "upper_letters",
    "mojibake_chars",
    "dup_lines",
)
RETRAIN = "retrain it with scripts/train_quality_model.py (or train() and save()), or use model: bundled"

_TOK = re.compile(r"\w+|[^\w\s]")
_MOJIBAKE = frozenset("ÃÂâ€™œ\x9d�ÐÑ¤¦§¨©ª«¬®¯°±²³´µ¶·¸¹º»¼½¾")
_FUNCTION_WORDS = (
    "a about above after again against all also an and any are as at be because been before being below "
    "between both but by can could did do does each few for from further had has have he her here him his "
    "how i if in into is it its itself may me might more most must my no nor not of off on once only or "
    "other our out over own same shall she should so some such than that the their them then there these "
    "they this those through to too under until up upon very was we were what when where which while who "
    "whom why will with would you your"
)
_FUNCTION = frozenset(_FUNCTION_WORDS.split())
_P = np.uint64(0x100000001B3)


@lru_cache(maxsize=1 << 17)
def _word(tok: str) -> int:
    """CRC-32 of the normalised token: casefolded, accents removed (``Café`` = ``cafe``)."""
    t = unicodedata.normalize("NFKD", tok.casefold())
    t = "".join(c for c in t if unicodedata.category(c) != "Mn")
    return zlib.crc32(t.encode("utf-8", "surrogatepass"))


@lru_cache(maxsize=1 << 17)
def _shape(tok: str) -> int:
    """CRC-32 of the token's shape: a function word is itself, punctuation itself, else its form."""
    low = tok.lower()
    if low in _FUNCTION:
        s = low
    elif not (tok[0].isalnum() or tok[0] == "_"):
        s = tok
    elif tok.isdigit():
        s = "<9>"
    elif "_" in tok:
        s = "<x_x>"
    elif not tok.isalpha():
        s = "<x9>"
    elif tok.isupper() and len(tok) > 1:
        s = "<XX>"
    elif tok[0].isupper():
        s = "<Xx>" if tok[1:].islower() or len(tok) == 1 else "<xX>"
    elif not tok.islower():
        s = "<xX>"
    else:
        s = "<x>" if len(tok) < 7 else "<xxx>"
    return zlib.crc32(s.encode("utf-8", "surrogatepass"))


def _ngrams(h: np.ndarray, owner: np.ndarray, n: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Rolled hashes of the n-grams of ``h`` that lie within one document (``owner`` equal)."""
    k = len(h) - n + 1
    if k <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    out = np.full(k, np.uint64(salt), np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            out = out * _P + h[i : i + k]
    same = owner[:k] == owner[n - 1 :]
    return _mix(out[same]), owner[:k][same]


def _family(keys: np.ndarray, owner: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(owner, bucket, value): sqrt counts of each document's buckets, L2-normalised per document."""
    if len(keys) == 0:
        return owner, owner, np.zeros(0, np.float32)
    flat = owner * dim + (keys % np.uint64(dim)).astype(np.int64)
    uniq, counts = np.unique(flat, return_counts=True)
    own, idx = uniq // dim, uniq % dim
    val = np.sqrt(counts.astype(np.float64))
    norm = np.sqrt(np.bincount(own, weights=val * val))
    return own, idx, (val / norm[own]).astype(np.float32)


def _dense(text: str, toks: list[str]) -> list[float]:
    s = text[:MAX_CHARS]
    n_chars = max(len(s), 1)
    words = [t for t in toks if t[0].isalnum() or t[0] == "_"] or [""]
    n_words = len(words)
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    dup = sum(c for c in Counter(lines).values() if c > 1) / max(len(lines), 1)
    spaces = sum(map(str.isspace, s))
    return [
        min(sum(map(len, words)) / n_words / 10.0, 3.0),
        sum(map(str.isalpha, words)) / n_words,
        sum(w.lower() in _FUNCTION for w in words) / n_words,
        sum(len(w) > 15 for w in words) / n_words,
        (len(s) - spaces - sum(map(str.isalnum, s))) / n_chars,
        sum(map(str.isdigit, s)) / n_chars,
        sum(map(str.isupper, s)) / max(sum(map(str.isalpha, s)), 1),
        min(10.0 * sum(map(_MOJIBAKE.__contains__, s)) / n_chars, 1.0),
        dup,
    ]


def features(texts: list[str], dim: int = 1 << 18) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse features of a batch as flat ``(owner, index, value)`` arrays; indices ``>= dim`` are the dense
    features (``dim + j`` for ``DENSE[j]``). A document's features do not depend on the rest of the batch.

    Example:
        >>> own, idx, val = features(["One short line.", "Another one"], dim=1024)
        >>> int(own.max()), bool((idx < 1024 + len(DENSE)).all())
        (1, True)
    """
    n = len(texts)
    words: list[int] = []
    w_own: list[int] = []
    shapes: list[int] = []
    s_own: list[int] = []
    chars: list[str] = []
    dense: list[list[float]] = []
    for i, t in enumerate(texts):
        toks = _TOK.findall(t[: MAX_CHARS * 4])[:MAX_TOKENS]
        ws = [_word(x) for x in toks if x[0].isalnum() or x[0] == "_"]
        words += ws
        w_own += [i] * len(ws)
        shapes += [_shape(x) for x in toks]
        s_own += [i] * len(toks)
        dense.append(_dense(t, toks))
        chars.append(" " + " ".join(t.casefold().split())[:MAX_CHARS] + " ")
    wh, wo = np.array(words, np.uint64), np.array(w_own, np.int64)
    sh, so = np.array(shapes, np.uint64), np.array(s_own, np.int64)
    ch = np.frombuffer("".join(chars).encode("utf-32-le", "surrogatepass"), np.uint32).astype(np.uint64)
    co = np.repeat(np.arange(n, dtype=np.int64), [len(c) for c in chars])
    families = [
        [_ngrams(wh, wo, 1, 1), _ngrams(wh, wo, 2, 2)],
        [_ngrams(sh, so, k, 10 + k) for k in (1, 2, 3)],
        [_ngrams(ch, co, 3, 20)],
    ]
    own, idx, val = [], [], []
    for parts in families:
        o, x, v = _family(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), dim)
        own.append(o)
        idx.append(x)
        val.append(v)
    own.append(np.repeat(np.arange(n, dtype=np.int64), len(DENSE)))
    idx.append(np.tile(np.arange(dim, dim + len(DENSE), dtype=np.int64), n))
    val.append(np.asarray(dense, np.float32).reshape(-1))
    return np.concatenate(own), np.concatenate(idx), np.concatenate(val)


# -- the model -----------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class QualityModel:
    """Weights over ``dim`` hashed buckets and the dense features (stored as float16), a bias, and the
    threshold under which a document is dropped; ``card`` describes how it was trained and measured.

    Example:
        >>> m = train(["A sentence that reads well."] * 40, ["well reads that sentence A"] * 40, dim=1024)
        >>> m.score(["Another sentence that reads well."]).shape
        (1,)
    """

    w: np.ndarray
    bias: float
    threshold: float
    dim: int
    card: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        w = np.asarray(self.w, np.float16)  # what is saved is what scores, also before saving
        if w.shape != (self.dim + len(DENSE),):
            raise ArtifactError(
                f"quality model weights have shape {w.shape}, expected ({self.dim + len(DENSE)},)", RETRAIN
            )
        object.__setattr__(self, "w", w)
        object.__setattr__(self, "_w32", w.astype(np.float32))
        object.__setattr__(self, "bias", float(np.float32(self.bias)))
        object.__setattr__(self, "threshold", float(np.float32(self.threshold)))

    def logits(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, np.float32)
        own, idx, val = features(texts, self.dim)
        z = np.bincount(own, weights=self._w32[idx] * val, minlength=len(texts))  # type: ignore[attr-defined]
        return (z + self.bias).astype(np.float32)

    def score(self, texts: list[str]) -> np.ndarray:
        """P(good) per text, float32."""
        return (1.0 / (1.0 + np.exp(-self.logits(texts).astype(np.float64)))).astype(np.float32)

    def save(self, path: str | Path, *, force: bool = False) -> Path:
        """Write ``model.npz`` and its card ``model.json`` into the folder ``path``, whole or not at all."""
        from edgellm.utils.fs import atomic_dir, sha256_file

        with atomic_dir(path, force=force) as tmp:
            np.savez_compressed(
                tmp / "model.npz",
                w=self.w,
                bias=np.float32(self.bias),
                threshold=np.float32(self.threshold),
                dim=np.int64(self.dim),
                feature_version=np.int64(FEATURE_VERSION),
            )
            card = {
                **self.card,
                "format": FORMAT,
                "feature_version": FEATURE_VERSION,
                "dim": self.dim,
                "dense": list(DENSE),
                "threshold": self.threshold,
                "bias": self.bias,
                "sha256": {"model.npz": sha256_file(tmp / "model.npz")},
            }
            (tmp / "model.json").write_text(json.dumps(card, indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path = "bundled") -> QualityModel:
        """The model in folder ``path`` (``"bundled"``: the one shipped with edgellm), checked against its
        card: format, feature version, sha256 of ``model.npz``, dimensions and threshold."""
        from edgellm.utils.fs import sha256_file

        folder = _folder(path)
        card = _card(folder)
        if card.get("format") != FORMAT:
            raise ArtifactError(f"{folder / 'model.json'} is not a quality model card", RETRAIN)
        if card.get("feature_version") != FEATURE_VERSION:
            raise ArtifactError(
                f"quality model {folder} uses feature version {card.get('feature_version')}, this edgellm "
                f"computes version {FEATURE_VERSION}",
                RETRAIN,
            )
        npz = folder / "model.npz"
        want = (card.get("sha256") or {}).get("model.npz")
        if not npz.is_file() or sha256_file(npz) != want:
            raise ArtifactError(
                f"{npz} is missing or does not match the sha256 in its card (changed or truncated)",
                "restore the folder (reinstall edgellm for the bundled model) or " + RETRAIN,
            )
        with np.load(npz, allow_pickle=False) as z:
            w, bias, threshold, dim = z["w"], float(z["bias"]), float(z["threshold"]), int(z["dim"])
        if dim != card.get("dim") or threshold != card.get("threshold"):
            raise ArtifactError(
                f"the card of {folder} disagrees with model.npz (dim or threshold edited)",
                "set threshold in the model_quality step instead of editing the card, or " + RETRAIN,
            )
        return cls(w, bias, threshold, dim, card)


def _folder(path: str | Path) -> Path:
    folder = BUNDLED if str(path) == "bundled" else Path(path)
    if not (folder / "model.json").is_file():
        if folder == BUNDLED:
            raise EdgeLLMError("the bundled quality model is missing", "reinstall edgellm, or " + RETRAIN)
        raise EdgeLLMError(
            f"'{path}' is not a quality model folder (no model.json)", "give a folder save() wrote"
        )
    return folder.resolve()


def _card(folder: Path) -> dict[str, Any]:
    try:
        card = json.loads((folder / "model.json").read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {folder / 'model.json'}: {exc}", RETRAIN) from exc
    if not isinstance(card, dict):
        raise ArtifactError(f"{folder / 'model.json'} is not a JSON object", RETRAIN)
    return card


_MODELS: dict[tuple[str, str], QualityModel] = {}


def cached(path: str | Path = "bundled") -> QualityModel:
    """:meth:`QualityModel.load`, once per process and (folder, card hash): what a worker calls per batch."""
    folder = _folder(path)
    key = (str(folder), str((_card(folder).get("sha256") or {}).get("model.npz")))
    if key not in _MODELS:
        _MODELS[key] = QualityModel.load(folder)
    return _MODELS[key]


# -- training ------------------------------------------------------------------------------------------
def _split(texts: list[str], val_share: float, seed: int) -> np.ndarray:
    """True for the validation part: by a hash of the text, so the same text always lands on the same side."""
    cut = int(val_share * 1000)
    return np.array(
        [zlib.crc32(f"{seed}:{t}".encode("utf-8", "surrogatepass")) % 1000 < cut for t in texts], bool
    )


def train(
    good: list[str],
    bad: list[str],
    *,
    dim: int = 1 << 18,
    l2: float = 1e-4,
    steps: int = 300,
    lr: float = 0.05,
    val_share: float = 0.2,
    keep: float = 0.99,
    seed: int = 0,
    card: dict[str, Any] | None = None,
) -> QualityModel:
    """Fit the logistic regression on ``good`` (label 1) and ``bad`` (0) texts and pick the threshold.

    Full-batch Adam for ``steps`` steps on the class-balanced log loss plus ``l2 / 2 * |w|^2``; gradients
    are ``np.bincount`` over the flat features (no scipy). ``val_share`` of the texts (by a hash of each
    text and ``seed``) are held back; the threshold is the highest that keeps ``keep`` of the good ones
    there. The validation figures go into the card.

    Example:
        >>> m = train(["The cat sat on the mat."] * 50, ["mat the on sat cat The"] * 50, dim=1024)
        >>> 0.0 < m.threshold < 1.0
        True
    """
    if not good or not bad:
        raise EdgeLLMError("training a quality model needs good and bad texts", "give both classes")
    texts = list(good) + list(bad)
    y = np.r_[np.ones(len(good)), np.zeros(len(bad))]
    val = _split(texts, val_share, seed)
    if val.all() or not val.any():
        val = np.arange(len(texts)) % 5 == 0  # tiny inputs: every fifth text
    tr = np.flatnonzero(~val)
    own, idx, val_ = features([texts[i] for i in tr], dim)
    yt = y[tr]
    cw = np.where(yt == 1, 0.5 / max(yt.sum(), 1), 0.5 / max((1 - yt).sum(), 1))  # sums to 1
    size = dim + len(DENSE)
    w, b = np.zeros(size), 0.0
    m, v, mb, vb = np.zeros(size), np.zeros(size), 0.0, 0.0
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        z = np.bincount(own, weights=w[idx] * val_, minlength=len(tr)) + b
        g = cw * (1.0 / (1.0 + np.exp(-z)) - yt)
        gw = np.bincount(idx, weights=g[own] * val_, minlength=size) + l2 * w
        gb = g.sum()
        m, v = beta1 * m + (1 - beta1) * gw, beta2 * v + (1 - beta2) * gw * gw
        mb, vb = beta1 * mb + (1 - beta1) * gb, beta2 * vb + (1 - beta2) * gb * gb
        c1, c2 = 1 - beta1**t, 1 - beta2**t
        w -= lr * (m / c1) / (np.sqrt(v / c2) + eps)
        b -= lr * (mb / c1) / (np.sqrt(vb / c2) + eps)
    model = QualityModel(w, b, 0.5, dim)
    vi = np.flatnonzero(val)
    s = model.score([texts[i] for i in vi])
    sg, sb = np.sort(s[y[vi] == 1]), s[y[vi] == 0]
    threshold = float(sg[int((1.0 - keep) * len(sg))]) if len(sg) else 0.5
    info = {
        "trained": {
            "good": len(good),
            "bad": len(bad),
            "l2": l2,
            "steps": steps,
            "lr": lr,
            "seed": seed,
            "val_share": val_share,
        },
        "validation": {
            "good": len(sg),
            "bad": len(sb),
            "keep_target": keep,
            "clean_kept": round(float((sg >= threshold).mean()), 4) if len(sg) else None,
            "bad_dropped": round(float((sb < threshold).mean()), 4) if len(sb) else None,
            "accuracy_at_0.5": round(float(((s >= 0.5) == (y[vi] == 1)).mean()), 4),
        },
    }
    return QualityModel(model.w, model.bias, threshold, dim, {**(card or {}), **info})


def bootstrap(texts: list[str], rules: Any = None) -> tuple[list[str], list[str]]:
    """Labels from the rules' decisions, for a user with an unlabelled reference corpus: good = passes every
    rule of ``rules`` (a :class:`~edgellm.data.quality.Quality` or its options, default the ``web`` preset:
    Gopher's and C4's rules); bad = fails a rule other than length (``too_short`` and ``too_long`` are no label:
    length is not quality)."""
    from edgellm.data.quality import Quality

    q = rules if isinstance(rules, Quality) else Quality(**{"preset": "web", **(rules or {})})
    good, bad = [], []
    for t in texts:
        r = q.reason(t)
        if r is None:
            good.append(t)
        elif r not in ("too_short", "too_long"):
            bad.append(t)
    return good, bad


# -- the step ------------------------------------------------------------------------------------------
class ModelQuality(Step):
    """Drop documents the model scores under the threshold (reason ``model_quality``), and write the score
    to ``score_field``. The model is loaded once per process, so it runs unchanged in ``clean``'s worker
    processes and in Ray's ``map_batches``.

    Example:
        >>> ModelQuality(threshold=0.2).run(["Return the list of names in the folder."])[1]  # doctest: +SKIP
        array([False])
    """

    kind: Literal["model_quality"] = "model_quality"
    model: str = Field("bundled", description="'bundled' or a folder that QualityModel.save wrote")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="None: the model card's")
    score_field: str | None = "quality_score"

    @field_validator("model")
    @classmethod
    def _model_folder(cls, v: str) -> str:
        if v != "bundled" and not (Path(v) / "model.json").is_file():
            raise ValueError(f"'{v}' is not a quality model folder (no model.json)")
        return v

    def run(self, texts):
        m = cached(self.model)
        th = m.threshold if self.threshold is None else self.threshold
        live = [i for i, t in enumerate(texts) if t is not None]
        drop = np.zeros(len(texts), bool)
        scores: list[float | None] = [None] * len(texts)
        if live:
            s = m.score([texts[i] for i in live])
            drop[live] = s < th
            for i, x in zip(live, s):
                scores[i] = round(float(x), 6)
        why = Counter({"model_quality": int(drop.sum())}) if drop.any() else Counter()
        return texts, drop, ({self.score_field: scores} if self.score_field else {}), why
