"""Calibration and evaluation batches: corpus text tokenized with the model's own tokenizer.

Encoders get sentences (padded batches); causal LMs get fixed-length windows of one token stream.
The default corpus is CPython's bundled help text, split into disjoint calibration and evaluation parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgellm.data.corpus import Document, read_corpus, sentences, split
from edgellm.errors import EdgeLLMError

MIN_CALIB_SEQUENCES = 8


@dataclass
class Batches:
    """Model feeds (name -> array) in batches, with where they came from."""

    feeds: list[dict[str, np.ndarray]]
    source: str
    n_sequences: int
    n_tokens: int

    def describe(self) -> dict[str, Any]:
        """Source, size and, for a versioned dataset (``STORE@REF`` or a checkout), its commit."""
        from edgellm.data.store import dataset_version

        d: dict[str, Any] = {"source": self.source, "sequences": self.n_sequences, "tokens": self.n_tokens}
        base = self.source
        for part in (":calibration", ":evaluation"):
            base = base.removesuffix(part)
        version = dataset_version(base) if base != "pydoc" else None
        if version is not None:
            d["dataset_version"] = version
        return d


def corpus_parts(calib: str | None, eval_: str | None) -> tuple[list[Document], list[Document], str, str]:
    """Calibration and evaluation documents: each from its own source, or disjoint parts of one corpus."""
    if calib is None and eval_ is None:
        train, held = split(read_corpus(None))
        return train, held, "pydoc:calibration", "pydoc:evaluation"
    if calib is not None and eval_ is not None:
        return read_corpus(calib), read_corpus(eval_), str(calib), str(eval_)
    one = calib if calib is not None else eval_
    train, held = split(read_corpus(one))
    return train, held, f"{one}:calibration", f"{one}:evaluation"


def make_batches(
    model: Any,
    docs: list[Document],
    source: str,
    *,
    max_sequences: int,
    seq_len: int = 128,
    batch_size: int = 8,
    min_sequences: int = MIN_CALIB_SEQUENCES,
) -> Batches:
    """Tokenize ``docs`` for ``model`` into batches of feeds.

    Raises:
        EdgeLLMError: no tokenizer, a tokenizer whose ids fall outside the model's vocabulary, or fewer
            than ``min_sequences`` sequences of text.
    """
    tok = model.tokenizer
    if tok is None:
        raise EdgeLLMError(
            f"model '{model.name}' has no tokenizer to turn calibration text into inputs",
            "save the tokenizer files next to the model (tokenizer.json or vocab.txt)",
        )
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if len(tok) > vocab > 0:
        raise EdgeLLMError(
            f"tokenizer mismatch: the tokenizer has {len(tok)} tokens but the model's vocabulary has {vocab}",
            "use the tokenizer that was trained with this model",
        )
    names = [s.name for s in model.inputs]
    feeds: list[dict[str, np.ndarray]] = []
    if model.task == "causal-lm":
        ids: list[int] = []
        for d in docs:
            bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
            ids += bos + tok(d.text, add_special_tokens=False)["input_ids"]
            if tok.eos_token_id is not None:
                ids.append(tok.eos_token_id)
        n = min(max_sequences, len(ids) // seq_len)
        rows = (
            np.asarray(ids[: n * seq_len], dtype=np.int64).reshape(n, seq_len)
            if n
            else np.zeros((0, seq_len))
        )
        for i in range(0, n, batch_size):
            x = rows[i : i + batch_size].astype(np.int64)
            feeds.append({"input_ids": x, "attention_mask": np.ones_like(x)})
        n_seq, n_tok = n, n * seq_len
    else:
        texts = sentences(docs)[:max_sequences]
        n_seq, n_tok = len(texts), 0
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        for i in range(0, len(texts), batch_size):
            enc = tok(
                texts[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=seq_len,
                return_tensors="np",
            )
            f = {
                k: np.asarray(enc[k], dtype=np.int64)
                if k in enc
                else np.zeros(enc["input_ids"].shape, np.int64)
                for k in names
            }
            n_tok += int(f["attention_mask"].sum())
            feeds.append(f)
    if vocab and any(int(f["input_ids"].max()) >= vocab for f in feeds):
        raise EdgeLLMError(
            f"tokenizer mismatch: token ids reach {max(int(f['input_ids'].max()) for f in feeds)} but the model's "
            f"vocabulary has {vocab}",
            "use the tokenizer that was trained with this model",
        )
    if n_seq < min_sequences:
        unit = f"windows of {seq_len} tokens" if model.task == "causal-lm" else "sentences"
        raise EdgeLLMError(
            f"data '{source}' is too small: {n_seq} {unit}, at least {min_sequences} are needed",
            "give more text with --calib/--eval (or leave them out to use the bundled corpus)",
        )
    return Batches(feeds, source, n_seq, n_tok)
