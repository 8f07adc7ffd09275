"""Task heads: the ``nn.Module`` whose outputs every later stage (export, bench, serve) sees."""

from __future__ import annotations

import torch
from torch import nn


class MeanPooling(nn.Module):
    """Masked mean over tokens, as sentence-transformers' ``Pooling(mean)``; optional L2 normalisation."""

    def __init__(self, mode: str = "mean", normalize: bool = True) -> None:
        super().__init__()
        self.mode = mode
        self.normalize = normalize

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # hidden: (B, T, H), attention_mask: (B, T) -> (B, H)
        if self.mode == "cls":
            emb = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            emb = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            emb = nn.functional.normalize(emb, p=2.0, dim=1)
        return emb


class SentenceEmbedding(nn.Module):
    """Encoder + pooling: ``(input_ids, attention_mask[, token_type_ids]) -> sentence_embedding (B, H)``."""

    def __init__(self, encoder: nn.Module, pooling: MeanPooling) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]  # (B, T, H)
        return self.pooling(hidden, attention_mask)


class CausalLMLogits(nn.Module):
    """Decoder LM without cache: ``(input_ids, attention_mask) -> logits (B, T, V)``."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class SequenceClassifier(nn.Module):
    """A ``*ForSequenceClassification`` model: ``(input_ids, attention_mask[, token_type_ids]) -> logits
    (B, num_labels)``. Decoders classify from the last non-padding token (``config.pad_token_id``)."""

    def __init__(self, clf: nn.Module, decoder: bool = False) -> None:
        super().__init__()
        self.clf = clf
        self.decoder = decoder

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        if self.decoder:
            kwargs["use_cache"] = False
        return self.clf(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits


def hf_of(module: nn.Module) -> nn.Module:
    """The Hugging Face model inside a task head (the LM, the encoder or the classifier)."""
    return getattr(module, head_prefix(module)[:-1])


def head_prefix(module: nn.Module) -> str:
    """The state-dict prefix of the Hugging Face model inside a task head (``"lm."``, ``"encoder."``...)."""
    for name in ("lm", "encoder", "clf"):
        if hasattr(module, name):
            return name + "."
    raise TypeError(f"{type(module).__name__} is not an edgellm task head")
