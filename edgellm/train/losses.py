"""The training objectives and the evaluation metrics.

- :func:`task_loss`: next-token cross-entropy (``causal-lm``), cross-entropy on the class
  (``classification``), or the SimCSE contrastive loss over two dropout views (``embedding``).
- :func:`distill_loss`: ``(1 - alpha) * task loss + alpha * T^2 * KL(teacher/T || student/T)`` on the
  logits (``1 - cosine`` to the teacher's embeddings), plus layer-matched hidden-state MSE.
- :func:`classification_metrics` (loss, accuracy, macro-F1 on the whole held-out set) and
  :func:`unigram_perplexity`, the floor a language model must beat.

Example:
    >>> loss = task_loss(module, [ids, mask], ids_next, "causal-lm")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.train.config import TrainConfig
from edgellm.train.data import Examples, model_inputs


def task_loss(module: Any, args: list[Any], target: Any, task: str, temperature: float = 0.05) -> Any:
    """The task's own loss of one batch: cross-entropy on the targets (next tokens or classes), or for
    ``embedding`` the contrastive loss over two dropout views of each window (SimCSE; ``temperature``)."""
    import torch

    if task == "embedding":  # contrastive over two dropout views of each window (SimCSE)
        a, b = module(*args), module(*args)
        sim = (
            torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
        ) / temperature
        return torch.nn.functional.cross_entropy(sim.float(), torch.arange(len(a), device=sim.device))
    logits = module(*args)
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1))


class _Capture:
    """Forward hooks on a model's transformer layers: their outputs, from the one ordinary forward (so a
    DDP-wrapped student still runs a single forward per step)."""

    def __init__(self, module: Any) -> None:
        m = getattr(module, "module", module)  # unwrap DDP
        layers = [
            mod
            for mod in m.modules()
            if isinstance(mod, __import__("torch").nn.ModuleList)
            and len(mod)
            and "Layer" in type(mod[0]).__name__
        ]
        if not layers:
            raise EdgeLLMError(
                "cannot find the model's transformer layers for hidden-state distillation",
                "set distill.hidden_mse: 0",
            )
        self.out: list[Any] = []
        self.handles = [layer.register_forward_hook(self._hook) for layer in layers[0]]

    def _hook(self, _m: Any, _a: Any, out: Any) -> None:
        self.out.append(out[0] if isinstance(out, tuple) else out)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def classification_metrics(
    module: Any, data: Examples, size: int, names: list[str], device: Any
) -> dict[str, float]:
    """Loss, accuracy and macro-F1 (mean over classes of F1; absent classes skipped) on every example."""
    import torch

    loss, pred = 0.0, []
    for lo in range(0, data.n, size):
        batch = data.take(np.arange(lo, min(lo + size, data.n)))
        args, y = model_inputs(batch, "classification", names, device)
        logits = module(*args).float()
        loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        pred.append(logits.argmax(-1).cpu().numpy())
    p, y = np.concatenate(pred), data.labels
    f1 = []
    for c in np.union1d(np.unique(y), np.unique(p)):
        tp, fp, fn = (
            int(((p == c) & (y == c)).sum()),
            int(((p == c) & (y != c)).sum()),
            int(((p != c) & (y == c)).sum()),
        )
        f1.append(2 * tp / max(2 * tp + fp + fn, 1))
    return {
        "eval_loss": loss / data.n,
        "eval_accuracy": float((p == y).mean()),
        "eval_macro_f1": float(np.mean(f1)),
        "eval_examples": int(data.n),
    }


def distill_loss(
    student: Any, teacher: Any, args: list[Any], target: Any, cfg: TrainConfig, task: str
) -> Any:
    """The distillation loss of one batch (see :class:`edgellm.train.config.Distill`)."""
    import torch
    import torch.nn.functional as F

    d = cfg.distill
    caps = (_Capture(teacher), _Capture(student)) if d.hidden_mse > 0 else None
    try:
        with torch.no_grad():
            t_out = teacher(*args)
        s_out = student(*args)
    finally:
        if caps is not None:
            for c in caps:
                c.close()
    if task in ("causal-lm", "classification"):  # cross-entropy on the targets + KL to the teacher
        ce = F.cross_entropy(s_out.float().reshape(-1, s_out.shape[-1]), target.reshape(-1))
        T = d.temperature
        kl = F.kl_div(
            F.log_softmax(s_out.float() / T, dim=-1).reshape(-1, s_out.shape[-1]),
            F.log_softmax(t_out.float() / T, dim=-1).reshape(-1, s_out.shape[-1]),
            log_target=True,
            reduction="batchmean",
        ) * (T * T)
        loss = (1 - d.alpha) * ce + d.alpha * kl
    else:
        loss = 1.0 - F.cosine_similarity(s_out.float(), t_out.float(), dim=-1).mean()
    if caps is not None:
        th, sh = caps[0].out, caps[1].out
        if sh[0].shape[-1] != th[0].shape[-1]:
            raise EdgeLLMError(
                f"student hidden size {sh[0].shape[-1]} differs from the teacher's {th[0].shape[-1]}",
                "set distill.hidden_mse: 0 (logit distillation only) for students of another width",
            )
        mse = sum(
            F.mse_loss(h.float(), th[round((i + 1) * len(th) / len(sh)) - 1].float().detach())
            for i, h in enumerate(sh)
        ) / len(sh)
        loss = loss + d.hidden_mse * mse
    return loss


def unigram_perplexity(train_ids: np.ndarray, eval_ids: np.ndarray, vocab: int) -> float:
    """Held-out perplexity of add-one-smoothed token frequencies: the floor a language model must beat."""
    counts = np.bincount(train_ids, minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(math.exp(-logp[eval_ids[1:]].mean()))
