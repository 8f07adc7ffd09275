"""Recovery after pruning: a short distillation fine-tune of the pruned model from the unpruned teacher,
through the training front end (``edgellm.train``): logit KL at a temperature plus the task loss for a
causal LM, cosine to the teacher's sentence embedding for an encoder, and layer-matched hidden-state MSE
(pruning keeps the hidden size, so every student layer has a teacher layer of the same width)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def recover(
    pruned: str | Path,
    teacher: str | Path,
    output: str | Path,
    *,
    steps: int = 100,
    lr: float = 2e-4,
    batch_size: int = 8,
    seq_len: int = 128,
    hidden_mse: float = 1.0,
    data: str | None = None,
    seed: int = 0,
) -> tuple[Path, dict[str, Any]]:
    """Distil ``teacher`` into the pruned model directory; returns (recovered model directory, summary)."""
    from edgellm.train import TrainConfig, train

    cfg = TrainConfig(
        model=str(pruned),
        data=data,
        output=str(output),
        max_steps=steps,
        lr=lr,
        warmup_steps=max(1, steps // 10),
        batch_size=batch_size,
        seq_len=seq_len,
        eval_every=steps,
        eval_batches=4,
        save_every=max(steps, 1),
        progress=False,
        seed=seed,
        distill={"teacher": str(teacher), "temperature": 2.0, "alpha": 0.5, "hidden_mse": hidden_mse},
    )
    summary = train(cfg)
    src = Path(pruned) / "pruning.json"
    if src.is_file():  # the record travels with the model
        (Path(output) / "model" / "pruning.json").write_text(src.read_text())
    return Path(output) / "model", summary
