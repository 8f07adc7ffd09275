"""The training loop: causal-LM, sentence-embedding and text-classification training on Hugging Face
``accelerate``, with evaluation, gradient monitoring and checkpoints; :func:`train` runs it.

One script for one process or many (``accelerate launch --num_processes N``: DDP, or FSDP through an
accelerate config): the global batch is split across processes, so N processes with the same global batch
follow the same loss curve as one.

- Data (:mod:`edgellm.train.data`): a corpus source tokenized into fixed windows, or labelled JSONL
  records for classification; batch ``s`` is a pure function of the seed and ``s``.
- Objectives (:mod:`edgellm.train.losses`): next-token cross-entropy, contrastive (SimCSE), class
  cross-entropy (evaluated by accuracy and macro-F1), distillation.
- Models (:mod:`edgellm.train.model`): a checkpoint to fine-tune or a new architecture from scratch, the
  teacher, the saved result.
- Optimisation: AdamW, warm-up then linear / cosine / constant schedule, gradient accumulation, gradient
  clipping (max norm 1.0 by default), mixed precision where the hardware has it (``auto``).
- Monitoring: the gradient norm of every optimizer step is logged; an explosion (norm over a threshold or
  not finite) or vanishing (under a threshold) triggers the configured action: ``warn``, ``skip`` the step,
  or ``stop`` with a clear message (after saving a checkpoint).
- Checkpoints: ``accelerate``'s state (safetensors weights, optimizer, scheduler, RNG) plus the step, every
  ``save_every`` steps; ``resume: true`` continues from the latest. The final model is saved with
  ``save_pretrained`` (safetensors) and its tokenizer. Logs: ``train_log.jsonl`` (TensorBoard optional).
- Distributed options: ``comm_hook: fp16 | bf16`` registers DDP's gradient-compression hook.

Example:
    >>> report = train(TrainConfig(model="tiny-llama", data="corpus.jsonl", output="out/ft", max_steps=100))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.train.config import GradMonitor, TrainConfig
from edgellm.train.data import (
    Examples,
    Windows,
    batch_tokens,
    class_names,
    dataset_provenance,
    model_inputs,
    rank_slice,
    read_docs,
    token_stream,
)
from edgellm.train.losses import classification_metrics, distill_loss, task_loss, unigram_perplexity
from edgellm.train.model import init_model, load_teacher, save_model


class TrainingStopped(EdgeLLMError):
    """The gradient monitor stopped the run."""


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        shape = 1.0 - frac if cfg.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape

    return f


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return ckpts[-1] if ckpts else None


def train(cfg: TrainConfig, *, dataset_texts: list[str] | None = None, on_eval: Any = None) -> dict[str, Any]:
    """Run training as configured; returns the summary (also written to ``OUT/train_summary.json``)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    from edgellm.models import load

    kwargs = []
    if cfg.comm_hook != "none":
        from accelerate.utils import DDPCommunicationHookType

        hook = DDPCommunicationHookType.FP16 if cfg.comm_hook == "fp16" else DDPCommunicationHookType.BF16
        kwargs.append(DistributedDataParallelKwargs(comm_hook=hook))
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true") and not torch.cuda.is_available():
        raise EdgeLLMError(
            "FSDP under accelerate needs GPUs (accelerate refuses it on a CPU-only host)",
            "on CPU run DDP instead: accelerate launch --multi_gpu --num_processes N -m edgellm.train CONFIG",
        )
    acc = Accelerator(
        cpu=not torch.cuda.is_available(),  # on a CPU-only host: gloo processes under accelerate launch
        # one scheduler step per optimizer step, whatever the process count: the global batch is fixed
        step_scheduler_with_optimizer=False,
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=_mixed_precision(cfg.mixed_precision),
        log_with="tensorboard" if cfg.tensorboard else None,
        project_dir=cfg.output,
        kwargs_handlers=kwargs,
    )
    set_seed(cfg.seed)
    out = Path(cfg.output)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    if cfg.batch_size % acc.num_processes:
        raise EdgeLLMError(
            f"batch_size {cfg.batch_size} does not split over {acc.num_processes} processes",
            f"use a multiple of {acc.num_processes}",
        )
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    from edgellm.models.loader import saved_labels

    saved = (
        saved_labels(cfg.model) if cfg.model is not None and cfg.task in (None, "classification") else None
    )
    labelled = cfg.task == "classification" or saved is not None
    label_field = cfg.label_field if labelled else None
    if dataset_texts is not None:
        if labelled:
            raise EdgeLLMError(
                "classification trains on labelled examples, not plain texts",
                "give data: a labelled JSONL source",
            )
        from edgellm.data.corpus import Document

        docs = [Document(str(i), t) for i, t in enumerate(dataset_texts)]
    else:
        docs = read_docs(cfg.data, cfg.text_field, label_field)
    if cfg.eval_data is not None:
        train_docs, eval_docs = docs, read_docs(cfg.eval_data, cfg.text_field, label_field)
    else:  # edgellm's fixed split by document id: the same held-out documents as compress's evaluation
        from edgellm.data.corpus import split

        train_docs, eval_docs = split(docs)
    texts, eval_texts = [d.text for d in train_docs], [d.text for d in eval_docs]
    model_path = cfg.model
    if cfg.scratch is not None:
        model_path = str(out / "init")
        if acc.is_main_process:
            init_model(cfg.scratch, texts, out / "init", seed=cfg.seed)
        acc.wait_for_everyone()
    labels = None
    if labelled:
        found = class_names([d.label for d in train_docs])
        # a saved classifier keeps its head when the data's classes are among its own
        labels = cfg.labels or (saved if saved and set(found) <= set(saved) else found)
    adapter = load(model_path, task="classification" if labelled else cfg.task, labels=labels)
    if adapter.tokenizer is None:
        raise EdgeLLMError(f"model '{cfg.model}' has no tokenizer", "train a model directory that has one")
    tok = adapter.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    task = adapter.task
    names = [s.name for s in adapter.inputs]
    train_w: Windows | Examples
    eval_w: Windows | Examples
    if task == "classification":
        label2id = {str(k): int(v) for k, v in adapter.config.label2id.items()}
        train_w = Examples(tok, train_docs, label2id, cfg.seq_len, cfg.seed, names, "training")
        eval_w = Examples(tok, eval_docs, label2id, cfg.seq_len, cfg.seed + 10_000, names, "evaluation")
        token_ids = eval_ids = np.zeros(0, np.int64)
    else:
        token_ids, eval_ids = token_stream(tok, texts), token_stream(tok, eval_texts)
        train_w = Windows(token_ids, cfg.seq_len, cfg.seed, cfg.window_stride)
        eval_w = Windows(eval_ids, cfg.seq_len, cfg.seed + 10_000)
    qat_handle = None
    if cfg.qat is not None:
        from edgellm.train import qat

        qat_handle = qat.prepare(adapter, cfg.qat.recipe, **cfg.qat.options)
    module = adapter.module
    module.train()
    decay = [p for n, p in module.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in module.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    teacher = None
    if cfg.distill is not None:
        teacher = load_teacher(cfg.distill, adapter, acc.device)
    module, opt, sched = acc.prepare(module, opt, sched)
    start = 0
    if cfg.resume:
        ck = _latest_checkpoint(out)
        if ck is not None:
            state = json.loads((ck / "trainer_state.json").read_text())
            check_architecture(state.get("architecture"), architecture(adapter), ck)
            try:
                acc.load_state(str(ck))
            except (RuntimeError, KeyError, ValueError) as exc:
                raise EdgeLLMError(
                    f"checkpoint {ck} does not load into {adapter.name}: {str(exc).splitlines()[0][:300]}",
                    f"it was saved by another model or edgellm version; use another output folder or "
                    f"remove {out / 'checkpoints'}",
                ) from exc
            start = int(state["step"])
    arch = architecture(adapter)
    local = cfg.batch_size // acc.num_processes
    rank = acc.process_index
    log_path = out / "train_log.jsonl"
    if acc.is_main_process and start == 0 and log_path.exists():
        log_path.unlink()
    if cfg.tensorboard:
        acc.init_trackers("edgellm")
    events: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    tokens = 0
    bar = None
    if cfg.progress and acc.is_main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=start, desc="train", leave=False)

    def loss_of(batch: Any, distill: bool = True) -> Any:
        args, target = model_inputs(batch, task, names, acc.device)
        if teacher is not None and distill:
            return distill_loss(module, teacher, args, target, cfg, task)
        return task_loss(module, args, target, task, cfg.temperature)

    def evaluate() -> dict[str, float]:
        module.eval()
        try:
            with torch.no_grad():
                if task == "classification":  # the whole held-out set, in order
                    return classification_metrics(module, eval_w, local, names, acc.device)
                losses = [  # the task loss, also when distilling
                    float(loss_of(eval_w.batch(i, local), distill=False)) for i in range(cfg.eval_batches)
                ]
        finally:
            module.train()
        m = float(np.mean(losses))
        return {"eval_loss": m, **({"eval_ppl": math.exp(min(m, 50))} if task == "causal-lm" else {})}

    def save(step: int) -> None:
        acc.wait_for_everyone()
        ck = out / "checkpoints" / f"step-{step}"
        acc.save_state(str(ck), safe_serialization=True)
        if acc.is_main_process:
            (ck / "trainer_state.json").write_text(
                json.dumps({"step": step, "config": cfg.model_dump(), "architecture": arch}) + "\n"
            )
            for old in sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[
                : -cfg.keep_checkpoints
            ]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    last: dict[str, Any] = {}
    norm = float("nan")
    for step in range(start, cfg.max_steps):
        loss_sum = 0.0
        for micro in range(cfg.grad_accum):
            full = train_w.batch(step * cfg.grad_accum + micro, cfg.batch_size)
            mine = rank_slice(full, rank * local, (rank + 1) * local)
            with acc.accumulate(module):
                loss = loss_of(mine)
                acc.backward(loss)
                loss_sum += float(loss.detach()) / cfg.grad_accum
                tokens += batch_tokens(full)
                if acc.sync_gradients:
                    if cfg.max_grad_norm is not None:
                        norm = float(acc.clip_grad_norm_(module.parameters(), cfg.max_grad_norm))
                    else:
                        norm = float(
                            torch.norm(
                                torch.stack(
                                    [p.grad.norm() for p in module.parameters() if p.grad is not None]
                                )
                            )
                        )
                    event = _check(norm, cfg.grad)
                    if event is not None:
                        events.append({"step": step + 1, **event})
                        if acc.is_main_process:
                            _append(log_path, {"step": step + 1, "event": event})
                    if event is not None and cfg.grad.action == "stop":
                        save(step)
                        raise TrainingStopped(
                            f"step {step + 1}: gradient {event['kind']} (norm {norm:.3g}); stopped, checkpoint at step {step}",
                            "lower lr, raise warmup_steps, or set grad.action: warn|skip",
                        )
                    if event is not None and cfg.grad.action == "skip":
                        opt.zero_grad(set_to_none=True)
                    else:
                        opt.step()
                        sched.step()
                        opt.zero_grad(set_to_none=True)
        mean_loss = float(acc.reduce(torch.tensor(loss_sum, device=acc.device), reduction="mean"))
        rec = {
            "step": step + 1,
            "loss": round(mean_loss, 6),
            "lr": sched.get_last_lr()[0],
            "grad_norm": round(norm, 6),
            "tokens": tokens,
            "elapsed_s": round(time.perf_counter() - t0, 3),
        }
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.max_steps:
            rec.update(evaluate())
            if on_eval is not None:
                on_eval(step + 1, rec)
        if acc.is_main_process:
            _append(log_path, rec)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.3f}")
        if cfg.tensorboard:
            acc.log({k: v for k, v in rec.items() if isinstance(v, (int, float))}, step=step + 1)
        last = rec
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.stop_at:
            save(step + 1)
        if step + 1 == cfg.stop_at:
            break
    if bar is not None:
        bar.close()
    acc.wait_for_everyone()
    seconds = time.perf_counter() - t0
    summary = {
        "steps": last.get("step", start),
        "resumed_from": start,
        "final": last,
        "events": events,
        "processes": acc.num_processes,
        "mixed_precision": acc.mixed_precision,
        "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
        "seconds": round(seconds, 2),
        "dataset": dataset_provenance(cfg.data),
        "data_split": {
            "train_documents": len(train_docs),
            "eval_documents": len(eval_docs),
            "train_tokens": len(token_ids),
            "eval_tokens": len(eval_ids),
        },
        "model_source": adapter.source.get("sha256"),
    }
    if task == "classification":
        summary["labels"] = [adapter.config.id2label[i] for i in range(len(adapter.config.id2label))]
        counts = np.bincount(eval_w.labels, minlength=len(summary["labels"]))
        summary["majority_accuracy"] = round(float(counts.max() / counts.sum()), 4)  # the floor to beat
    if task == "causal-lm":  # what a model that learnt nothing but word frequencies would score
        summary["unigram_ppl"] = round(unigram_perplexity(token_ids, eval_ids, len(tok)), 2)
    if qat_handle is not None and last.get("step") == cfg.max_steps:
        from edgellm.train import qat

        qat.remove(qat_handle)  # the float weights the fake quantization trained, for the usual lowering
        summary["qat"] = {"recipe": cfg.qat.recipe, "layers": len(qat_handle["layers"])}
    finished = last.get("step") == cfg.max_steps
    # the full weights: under FSDP every process takes part in gathering them, the main one writes them
    state = acc.get_state_dict(module) if finished else None
    if acc.is_main_process and finished:
        (out / "data_split.json").write_text(
            json.dumps({"train": [d.id for d in train_docs], "eval": [d.id for d in eval_docs]}) + "\n"
        )
        save_model(acc.unwrap_model(module), state, adapter, tok, out / "model", cfg.save_dtype)
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if cfg.tensorboard:
        acc.end_training()
    return summary


def architecture(adapter: Any) -> dict[str, Any]:
    """What a checkpoint must match to resume: the model type and every parameter's name and shape."""
    import hashlib

    shapes = [(n, list(p.shape)) for n, p in adapter.module.named_parameters()]
    return {
        "model_type": adapter.family,
        "num_parameters": adapter.num_parameters,
        "shapes_sha256": hashlib.sha256(json.dumps(shapes).encode()).hexdigest(),
    }


def check_architecture(saved: dict[str, Any] | None, now: dict[str, Any], ck: Path) -> None:
    """Refuse a checkpoint of another architecture, before loading it fails half-way."""
    if saved is None or saved == now:
        return
    raise EdgeLLMError(
        f"checkpoint {ck} is of another architecture ({saved['model_type']}, "
        f"{saved['num_parameters']:,} parameters) than the model being trained ({now['model_type']}, "
        f"{now['num_parameters']:,} parameters)",
        f"train into another output folder, or remove {ck.parent} to start over",
    )


def _check(norm: float, mon: GradMonitor) -> dict[str, Any] | None:
    if not math.isfinite(norm):
        return {"kind": "explosion", "norm": str(norm)}
    if norm > mon.explode_threshold:
        return {"kind": "explosion", "norm": norm}
    if norm < mon.vanish_threshold:
        return {"kind": "vanishing", "norm": norm}
    return None


def _append(path: Path, rec: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, default=str) + "\n")
