"""What the trainer feeds the model: the corpus read and split into batches.

- Causal LM and embeddings: the texts tokenized into one stream (BOS/EOS around each document) and cut
  into fixed windows of ``seq_len + 1`` tokens (:class:`Windows`).
- Classification: labelled records, one example each, tokenized once (:class:`Examples`).

Batch ``s`` is a pure function of the seed and ``s`` (a seeded permutation per epoch), so a resumed run
sees exactly the batches the uninterrupted run would have, and N processes that each take their slice of
the global batch (:func:`rank_slice`) see what one process sees.

Example:
    >>> w = Windows(np.arange(100), seq=8, seed=0)
    >>> w.batch(0, 4).shape  # (B, seq + 1): the inputs and, shifted by one, the targets
    (4, 9)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError


def token_stream(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """The token ids of ``texts``, one after the other, each between the tokenizer's BOS and EOS."""
    ids: list[int] = []
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for t in texts:
        body = tokenizer(t, add_special_tokens=False)["input_ids"]
        ids += ([bos] if bos is not None else []) + body + ([eos] if eos is not None else [])
    return np.asarray(ids, dtype=np.int64)


class _SeededRows:
    """Rows ``0..n-1`` in a seeded order per epoch: batch ``s`` is a pure function of the seed and ``s``."""

    n: int
    seed: int

    def order(self, epoch: int) -> np.ndarray:
        """The row order of ``epoch`` (seeded; computed once per epoch, not per sample)."""
        if getattr(self, "_epoch", None) != epoch:
            self._epoch, self._order = (epoch, np.random.default_rng(self.seed + epoch).permutation(self.n))
        return self._order

    def rows(self, step: int, size: int) -> np.ndarray:
        return np.asarray(
            [
                self.order(epoch)[pos]
                for epoch, pos in (divmod(k, self.n) for k in range(step * size, (step + 1) * size))
            ]
        )


class Windows(_SeededRows):
    """Windows of a token stream (``stride`` apart), in a seeded order that is a pure function of the step."""

    def __init__(self, ids: np.ndarray, seq: int, seed: int, stride: int | None = None) -> None:
        self.seq, self.seed = seq, seed
        stride = stride or seq
        n = (len(ids) - seq - 1) // stride + 1 if len(ids) > seq else 0
        if n < 1:
            raise EdgeLLMError(
                f"the training data has {len(ids)} tokens, fewer than one window of {seq + 1}",
                "give more text or a shorter seq_len",
            )
        self.windows = np.stack([ids[i * stride : i * stride + seq + 1] for i in range(n)])
        self.n = n

    def batch(self, step: int, size: int) -> np.ndarray:
        return self.windows[self.rows(step, size)]


class Examples(_SeededRows):
    """Labelled texts for classification, tokenized once (truncated to ``seq``); a batch keeps only the
    columns where some row has a token, so short texts cost short sequences."""

    def __init__(
        self,
        tok: Any,
        docs: list[Any],
        label2id: dict[str, int],
        seq: int,
        seed: int,
        names: list[str],
        what: str,
    ) -> None:
        if not docs:
            raise EdgeLLMError(f"the {what} data has no examples", "give labelled JSONL records")
        unknown = sorted({d.label for d in docs} - set(label2id))
        if unknown:
            raise EdgeLLMError(
                f"the {what} data has labels {unknown[:5]} that are not among the model's classes "
                f"{list(label2id)[:10]}",
                "list every class under labels: in the training config, or drop those examples",
            )
        enc = tok(
            [d.text for d in docs], truncation=True, max_length=seq, padding="longest", return_tensors="np"
        )
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        self.arrays = {
            n: np.asarray(enc[n], dtype=np.int64) if n in enc else np.zeros_like(ids) for n in names
        }
        self.labels = np.asarray([label2id[d.label] for d in docs], dtype=np.int64)
        self.n, self.seed = len(docs), seed

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        keep = self.arrays["attention_mask"][idx].any(0)  # right or left padding alike
        return {**{n: a[idx][:, keep] for n, a in self.arrays.items()}, "labels": self.labels[idx]}

    def batch(self, step: int, size: int) -> dict[str, np.ndarray]:
        return self.take(self.rows(step, size))


def read_docs(source: str | None, text_field: str, label_field: str | None = None) -> list[Any]:
    """The documents of a corpus source (file, folder, ``STORE@REF``; ``None``: the bundled pydoc text)."""
    from edgellm.data import read_corpus

    return read_corpus(source, text_field=text_field, label_field=label_field)


def class_names(labels: list[str]) -> list[str]:
    """Distinct labels in a stable order: numerically when every label is an integer, else by name."""
    names = set(labels)
    numeric = all(x.lstrip("-").isdigit() for x in names)
    return sorted(names, key=int) if numeric else sorted(names)


def rank_slice(batch: Any, lo: int, hi: int) -> Any:
    """Rows ``lo:hi`` of a batch (windows or labelled examples): one process's part of the global batch."""
    return {k: v[lo:hi] for k, v in batch.items()} if isinstance(batch, dict) else batch[lo:hi]


def batch_tokens(batch: Any) -> int:
    """Input tokens in a global batch (windows: all but the last, the target; examples: unpadded)."""
    return int(batch["attention_mask"].sum()) if isinstance(batch, dict) else int(batch[:, :-1].size)


def model_inputs(batch: Any, task: str, names: list[str], device: Any) -> tuple[list[Any], Any]:
    """The model's positional inputs and the target of a batch: windows give (ids, mask) and the next
    tokens; labelled examples give their tokenizer inputs and the class ids."""
    import torch

    if isinstance(batch, dict):
        return [torch.as_tensor(batch[n], device=device) for n in names], torch.as_tensor(
            batch["labels"], device=device
        )
    x = torch.as_tensor(batch[:, :-1], device=device)
    return [x, torch.ones_like(x)], torch.as_tensor(batch[:, 1:], device=device)


def dataset_provenance(source: str | None) -> Any:
    """The dataset version of ``source``; for a plain file or folder, its path and content hash."""
    from edgellm.data.store import dataset_version
    from edgellm.utils.fs import sha256_files

    if not source:
        return {"builtin": "pydoc"}
    version = dataset_version(source)
    path = Path(source)
    if version is None and path.exists():
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        root = path if path.is_dir() else path.parent
        version = {"path": str(path.resolve()), "sha256": sha256_files(files, root)}
    return version
