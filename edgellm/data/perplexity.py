"""The ``perplexity`` step: a causal language model's perplexity of each document, as CCNet filters web
text with a language model of the target language (Wenzek et al. 2020).

A document's perplexity is ``exp`` of the model's mean negative log-likelihood per token over its first
``max_tokens`` tokens, after the tokenizer's BOS token where it has one (so every token is scored, as in
training). It is written to ``score_field``; with
``max_perplexity`` set, documents above it are dropped (reason ``perplexity``). Documents of fewer than
``min_tokens`` tokens are neither scored nor dropped: a perplexity of five tokens says little.

``model`` is any Hugging Face causal-LM folder with its tokenizer and all its weights (a Qwen2/Llama/GPT-2
checkpoint you have on disk: nothing is downloaded); ``bundled`` is edgellm's tiny-llama (11 M parameters,
trained on CPython's pydoc topics), which is there to make the step runnable everywhere, not to judge text:
on the held-out corpora of ``benchmarks/data_perplexity.py`` it ranks word salad, keyword stuffing,
mojibake, tag soup and navigation menus above clean prose (AUC 0.985-1.0 in the docs, web and legal
domains), but not Markov-chain text (0.78-0.80: a threshold keeping 97 % of clean text drops 5-20 % of it),
URL lists or table dumps (0.03-0.38: numbers and paths are easy to predict), nor most noise among short
examples (0.06-0.82). Separating Markov-chain text needs a model that knows the language (CCNet's are 5-gram
models trained on Wikipedia): give ``model`` one, and pick ``max_perplexity`` from the distribution the step
writes (run it first without a threshold).

The model is loaded once per process, so ``clean``'s worker processes and Ray's ``map_batches`` run the step
unchanged: each worker imports torch and holds its own copy of the model (a 0.5 B model in fp32 is 2 GB a
worker: size ``workers`` to memory) and runs torch on one thread (``clean`` starts one worker per core).
A pass scores ``batch_size`` documents of similar length.

Example:
    >>> step = Perplexity(max_perplexity=2000)
    >>> step.run(["Return the list of names in the folder, sorted by name."])[1]  # doctest: +SKIP
    array([False])
"""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from edgellm.data.step import Step
from edgellm.errors import EdgeLLMError

CAUSAL = ("ForCausalLM", "LMHeadModel")  # the architectures transformers saves for next-token models
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
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise EdgeLLMError(
            f"perplexity: {folder / 'config.json'} is not JSON: {exc}", "save the model again"
        ) from exc
    archs = cfg.get("architectures") or []
    if not any(a.endswith(CAUSAL) for a in archs) or cfg.get("is_encoder_decoder"):
        raise EdgeLLMError(
            f"perplexity: {folder} holds {', '.join(archs) or 'a model without architectures'}, not a causal "
            "language model",
            "give the folder of a decoder saved as *ForCausalLM / *LMHeadModel (a BERT-style encoder reads "
            "both ways and has no next-token head)",
        )
    return folder


def load_lm(model: str) -> tuple[Any, Any]:
    """``(tokenizer, model)`` in fp32 eval mode, once per process and folder (checked on the first load only:
    every batch calls this)."""
    key = str(BUNDLED if model == "bundled" else Path(model).expanduser())
    if key not in _MODELS:
        folder = model_folder(model)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from edgellm.utils.quiet import quiet

        try:
            with quiet("transformers"):
                tok = AutoTokenizer.from_pretrained(folder)
                lm, info = AutoModelForCausalLM.from_pretrained(
                    folder, dtype=torch.float32, output_loading_info=True
                )
        except (OSError, ValueError, KeyError) as exc:
            raise EdgeLLMError(
                f"perplexity: could not load a causal language model from {folder}: {exc}".splitlines()[0],
                "give the folder of a causal LM transformers can load (AutoModelForCausalLM)",
            ) from exc
        missing = list(info.get("missing_keys") or [])
        if missing:  # a head or layers left at random initialisation would score noise
            raise EdgeLLMError(
                f"perplexity: {folder} lacks {len(missing)} of the model's weights "
                f"({', '.join(missing[:3])}...)",
                "give the folder of a trained causal LM with all its weights",
            )
        if multiprocessing.parent_process() is not None:  # one of clean's workers: one per core already
            torch.set_num_threads(1)
        _MODELS[key] = (tok, lm.eval())
    return _MODELS[key]


# rows a forward pass takes: their fp32 logits (rows x tokens x vocabulary) at most ~512 MB, about twice that
# while the cross-entropy runs; one row of max_tokens always goes (max_tokens 8192 x a 150k vocabulary is
# 5 GB: lower max_tokens for such a model)
LOGITS_BYTES = 1 << 29


def perplexities(
    texts: list[str],
    model: str = "bundled",
    *,
    max_tokens: int = 256,
    min_tokens: int = 8,
    batch_size: int = 16,
) -> list[float | None]:
    """Per text, the model's perplexity over its first ``max_tokens`` tokens (at most the model's positions),
    after the tokenizer's BOS token where it has one (so the first token is scored too, as in training);
    None under ``min_tokens`` tokens. Texts of similar length share a pass; a large vocabulary gets fewer
    rows."""
    import torch

    tok, lm = load_lm(model)
    cfg = lm.config
    positions = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    n = min(max_tokens, positions) if positions else max_tokens
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    if min_tokens > n - len(bos):
        raise EdgeLLMError(
            f"perplexity: min_tokens {min_tokens} is more than the {n - len(bos)} tokens a document is scored "
            f"on (max_tokens {max_tokens}, the model's positions {positions})",
            "lower min_tokens, or raise max_tokens",
        )
    ids = [
        bos + tok(t, add_special_tokens=False, truncation=True, max_length=n - len(bos))["input_ids"]
        for t in texts
    ]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    vocab = int(getattr(cfg, "vocab_size", 0) or len(tok))
    out: list[float | None] = [None] * len(texts)
    todo = sorted(
        (i for i, x in enumerate(ids) if len(x) - len(bos) >= min_tokens), key=lambda i: len(ids[i])
    )
    start = 0
    while start < len(todo):
        rows = todo[start : start + batch_size]
        width = max(len(ids[i]) for i in rows)
        rows = rows[: max(1, LOGITS_BYTES // (width * vocab * 4))]  # the shortest of them (sorted)
        width = max(len(ids[i]) for i in rows)
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
            folder = model_folder(v)
        except EdgeLLMError as exc:
            raise ValueError(exc.message) from exc  # parse_steps gives the error's own hint
        return v if v == "bundled" else str(folder.resolve())  # workers may run elsewhere (Ray)

    @model_validator(mode="after")
    def _lengths(self) -> Perplexity:
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens {self.min_tokens} is more than max_tokens {self.max_tokens}")
        return self

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
