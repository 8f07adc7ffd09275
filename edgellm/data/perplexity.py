"""The ``perplexity`` step: a causal language model's perplexity of each document, as CCNet filters web
text with a language model of the target language (Wenzek et al. 2020).

A document's perplexity is ``exp`` of the model's mean negative log-likelihood per token over its first
``max_tokens`` tokens (the first token is context only). It is written to ``score_field``; with
``max_perplexity`` set, documents above it are dropped (reason ``perplexity``). Documents of fewer than
``min_tokens`` tokens are neither scored nor dropped: a perplexity of five tokens says little.

``model`` is any Hugging Face causal-LM folder with its tokenizer (a Qwen2/Llama/GPT-2 checkpoint you have
on disk: nothing is downloaded); ``bundled`` is edgellm's tiny-llama (11 M parameters, trained on CPython's
pydoc topics), which is there to make the step runnable everywhere, not to judge text: on the held-out
corpora of ``benchmarks/data_perplexity.py`` it ranks word salad, keyword stuffing, mojibake, tag soup and
navigation menus above clean prose (AUC 0.94-1.0 in the docs, web and legal domains), but not Markov-chain
text (0.70-0.83), URL lists or table dumps (0.03-0.43: numbers and paths are easy to predict), nor most
noise among short examples (0.04-0.80). Separating Markov-chain text needs a model that knows the language
(CCNet's are 5-gram models trained on Wikipedia): give ``model`` one, and pick ``max_perplexity`` from the
distribution the step writes (run it first without a threshold).

The model is loaded once per process, so ``clean``'s worker processes and Ray's ``map_batches`` run the step
unchanged (each worker pays torch's import and the model's load once, a few seconds), and scores
``batch_size`` documents a forward pass, sorted by length.

Example:
    >>> Perplexity(max_perplexity=2000).run(["Return the list of names in the folder, sorted."])[1]  # doctest: +SKIP
    array([False])
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from edgellm.data.step import Step
from edgellm.errors import EdgeLLMError

# edgellm's bundled tiny-llama, found beside the package (the data stage does not import edgellm.models)
BUNDLED = Path(__file__).resolve().parents[1] / "models" / "bundled_models" / "tiny-llama"
_MODELS: dict[str, tuple[Any, Any]] = {}


def model_folder(model: str) -> Path:
    """The folder ``model`` names (``bundled``: the tiny-llama), checked to hold a config and a tokenizer."""
    folder = BUNDLED if model == "bundled" else Path(model).expanduser()
    if not (folder / "config.json").is_file():
        raise EdgeLLMError(
            f"perplexity: '{model}' is not a model folder (no config.json in {folder})",
            "give the folder of a Hugging Face causal language model (config.json, weights, tokenizer), or "
            "'bundled'",
        )
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise EdgeLLMError(
            f"perplexity: the model folder {folder} has no tokenizer",
            "save the tokenizer beside the weights (tokenizer.save_pretrained(folder))",
        )
    return folder


def load_lm(model: str) -> tuple[Any, Any]:
    """``(tokenizer, model)`` in fp32 eval mode, once per process and folder."""
    folder = model_folder(model)
    key = str(folder)
    if key not in _MODELS:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(folder)
            lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise EdgeLLMError(
                f"perplexity: could not load a causal language model from {folder}: {exc}".splitlines()[0],
                "give the folder of a causal LM transformers can load (AutoModelForCausalLM)",
            ) from exc
        _MODELS[key] = (tok, lm)
    return _MODELS[key]


LOGITS_BYTES = 1 << 29  # a forward pass holds at most ~512 MB of fp32 logits (rows x tokens x vocabulary)


def perplexities(
    texts: list[str],
    model: str = "bundled",
    *,
    max_tokens: int = 256,
    min_tokens: int = 8,
    batch_size: int = 16,
) -> list[float | None]:
    """Per text, the model's perplexity over its first ``max_tokens`` tokens (at most the model's positions);
    None under ``min_tokens``. Texts of similar length share a pass; a large vocabulary gets fewer rows."""
    import torch

    tok, lm = load_lm(model)
    cfg = lm.config
    positions = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    n = min(max_tokens, positions) if positions else max_tokens
    ids = [tok(t, add_special_tokens=False, truncation=True, max_length=n)["input_ids"] for t in texts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    vocab = int(getattr(cfg, "vocab_size", 0) or len(tok))
    out: list[float | None] = [None] * len(texts)
    todo = sorted((i for i, x in enumerate(ids) if len(x) >= max(min_tokens, 2)), key=lambda i: len(ids[i]))
    start = 0
    while start < len(todo):
        rows = todo[start : start + batch_size]
        width = max(len(ids[i]) for i in rows)
        rows = rows[: max(1, LOGITS_BYTES // (width * vocab * 4))]
        start += len(rows)
        x = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, i in enumerate(rows):
            x[k, : len(ids[i])] = torch.tensor(ids[i])
            mask[k, : len(ids[i])] = 1
        with torch.no_grad():
            logits = lm(input_ids=x, attention_mask=mask).logits.float()
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none"
            )  # (rows, width - 1)
        m = mask[:, 1:].float()
        mean = (nll * m).sum(1) / m.sum(1)
        for k, i in enumerate(rows):
            out[i] = round(float(np.exp(min(float(mean[k]), 50.0))), 3)
    return out


class Perplexity(Step):
    """Score (and, with ``max_perplexity``, drop) documents by a causal language model's perplexity."""

    kind: Literal["perplexity"] = "perplexity"
    model: str = Field("bundled", description="'bundled' (tiny-llama) or a Hugging Face causal-LM folder")
    max_perplexity: float | None = Field(None, gt=1.0, description="None: score only, drop nothing")
    max_tokens: int = Field(256, ge=2, le=8192)
    min_tokens: int = Field(8, ge=2)
    batch_size: int = Field(16, ge=1, le=1024)
    score_field: str | None = "perplexity"

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        try:
            model_folder(v)
        except EdgeLLMError as exc:
            raise ValueError(str(exc)) from None
        return v

    def run(self, texts):
        live = [i for i, t in enumerate(texts) if t is not None]
        drop = np.zeros(len(texts), bool)
        scores: list[float | None] = [None] * len(texts)
        counts: Counter = Counter()
        if live:
            got = perplexities(
                [texts[i] for i in live],
                self.model,
                max_tokens=self.max_tokens,
                min_tokens=self.min_tokens,
                batch_size=self.batch_size,
            )
            for i, p in zip(live, got):
                scores[i] = p
                if p is None:
                    counts["not_scored_short"] += 1
                elif self.max_perplexity is not None and p > self.max_perplexity:
                    drop[i] = True
            if drop.any():
                counts["perplexity"] = int(drop.sum())
        return texts, drop, ({self.score_field: scores} if self.score_field else {}), counts
