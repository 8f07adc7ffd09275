"""``edgellm train``: train or fine-tune a model with the accelerate trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def train(
    config: Path = typer.Argument(..., help="train.yaml (model, data, steps, optimiser, checkpoints)."),
    model: Optional[str] = typer.Option(None, "--model", help="Override the config's model."),
    data: Optional[str] = typer.Option(None, "--data", help="Override the corpus (file, folder, STORE@REF)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Override the output folder."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Override the number of steps."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the latest checkpoint in the output folder."
    ),
) -> None:
    """Train as CONFIG says; logs to OUT/train_log.jsonl, checkpoints to OUT/checkpoints, the model to OUT/model.

    Example: edgellm train train.yaml --max-steps 500

    More processes: accelerate launch --multi_gpu --num_processes 2 -m edgellm.train train.yaml (on CPU: gloo).

    Search: edgellm train train.yaml --search --trials 12 --jobs 2 (TPE, median pruning; the config's search: space)

    train.yaml: {model: tiny-llama, data: data/store@v1, seq_len: 128, batch_size: 16, lr: 5.0e-4,
    max_steps: 500, warmup_steps: 40, grad: {explode_threshold: 100, action: skip}}

    A classifier: {model: minilm, task: classification, data: reviews.jsonl, label_field: label, seq_len: 64,
    lr: 5.0e-5, max_steps: 300} (JSONL records with text and label; the head is new unless the model has one)
    """
    from edgellm.cli._common import console
    from edgellm.train import TrainConfig
    from edgellm.train import train as run

    cfg = TrainConfig.load(
        config, model=model, data=data, output=output, max_steps=max_steps, resume=resume or None
    )
    s = run(cfg)
    f = s["final"]
    console().print(
        f"trained {s['steps']} steps on {s['processes']} process(es): loss {f.get('loss')}, "
        + (f"eval perplexity {f['eval_ppl']:.2f}, " if "eval_ppl" in f else "")
        + (
            f"eval accuracy {f['eval_accuracy']:.3f} (majority class {s['majority_accuracy']:.3f}), "
            if "eval_accuracy" in f
            else ""
        )
        + f"{s['tokens_per_s']:.0f} tokens/s; model in {cfg.output}/model",
        markup=False,
    )
