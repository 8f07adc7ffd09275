"""The trainer: causal-LM, sentence-embedding and text-classification training on Hugging Face ``accelerate``.

One script for one process or many (``accelerate launch --num_processes N``: DDP, or FSDP through an
accelerate config): the global batch is split across processes, so N processes with the same global batch
follow the same loss curve as one.

- Data: a corpus source (a file, a folder, ``STORE@REF`` of the dataset store, or the bundled pydoc text),
  tokenized into fixed windows; for classification, labelled JSONL records (``text_field``,
  ``label_field``), one example each. Batch ``s`` is a pure function of the seed and ``s``, so a resumed run
  sees exactly the batches the uninterrupted run would have.
- Tasks: ``causal-lm`` (next-token cross-entropy), ``embedding`` (contrastive, SimCSE),
  ``classification`` (cross-entropy on a ``*ForSequenceClassification`` head, new or the checkpoint's;
  evaluated by accuracy and macro-F1 on the whole held-out set).
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
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgellm.errors import EdgeLLMError, first_error


class GradMonitor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    explode_threshold: float = Field(1e3, gt=0)
    vanish_threshold: float = Field(1e-8, ge=0)
    action: Literal["warn", "skip", "stop"] = "warn"


class Distill(BaseModel):
    """Teacher -> student: ``(1 - alpha) * task loss + alpha * T^2 * KL(teacher/T || student/T)`` on the
    logits (causal LM, classification; for embeddings, ``1 - cosine`` between the sentence embeddings), plus
    ``hidden_mse`` times the MSE between hidden states, student layer i matched to teacher layer
    ``round((i + 1) * L_teacher / L_student) - 1`` (the hidden sizes must agree, as after pruning)."""

    model_config = ConfigDict(extra="forbid")
    teacher: str
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)
    hidden_mse: float = Field(0.0, ge=0)


class QAT(BaseModel):
    """Quantization-aware training with a compression recipe's fake quantization (``edgellm.train.qat``)."""

    model_config = ConfigDict(extra="forbid")
    recipe: str = Field(
        ..., description="int8-dynamic, int8-static, w4a16-rtn, ... (edgellm compress recipes)"
    )
    options: dict[str, Any] = Field(default_factory=dict)


class Tokenizer(BaseModel):
    """A byte-level BPE tokenizer trained on the training part of the data (from-scratch training)."""

    model_config = ConfigDict(extra="forbid")
    vocab_size: int = Field(4096, ge=259, description="including the 256 bytes and the special tokens")
    bos: str = "<s>"
    eos: str = "</s>"
    pad: str = "<pad>"
    max_length: int = Field(512, ge=8)


class Scratch(BaseModel):
    """Train a new model: a Hugging Face architecture with fresh weights (seeded) and a new tokenizer."""

    model_config = ConfigDict(extra="forbid")
    architecture: dict[str, Any] = Field(
        ..., description="a Hugging Face config: model_type (llama, qwen2, gpt2, bert...) and its sizes"
    )
    tokenizer: Tokenizer = Field(default_factory=Tokenizer)
    name: str = "model"


class TrainConfig(BaseModel):
    """``train.yaml``: what to train, on what, how long, and where to write."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="bundled name or Hugging Face model directory")
    scratch: Scratch | None = Field(None, description="instead of model: a new model of this architecture")
    task: Literal["causal-lm", "embedding", "classification"] | None = Field(
        None, description="default: the checkpoint's (a saved classifier is classification)"
    )
    data: str | None = Field(None, description="corpus: file, folder, STORE@REF; default: bundled pydoc text")
    eval_data: str | None = None
    text_field: str = "text"
    label_field: str = Field(
        "label", description="classification: the JSONL key holding each example's class"
    )
    labels: list[str] | None = Field(
        None,
        description="classification: the class names, in order (default: a saved classifier's own, "
        "else the training data's, sorted)",
    )
    output: str = "edgellm-out/train"
    seq_len: int = Field(128, ge=8)
    window_stride: int | None = Field(
        None, ge=1, description="tokens between training windows (default: seq_len, no overlap)"
    )
    batch_size: int = Field(
        8, ge=1, description="global batch per optimizer micro-step (split across processes)"
    )
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    max_steps: int = Field(100, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    eval_every: int = Field(50, ge=1)
    eval_batches: int = Field(8, ge=1)
    save_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    resume: bool = False
    stop_at: int | None = Field(
        None, ge=1, description="end this run after that step (a checkpoint is saved); resume continues"
    )
    seed: int = 0
    temperature: float = Field(0.05, gt=0, description="embedding task: contrastive temperature")
    grad: GradMonitor = Field(default_factory=GradMonitor)
    distill: Distill | None = None
    qat: QAT | None = None
    search: dict[str, Any] | None = Field(
        None, description="hyper-parameter search space (edgellm train --search)"
    )
    comm_hook: Literal["none", "fp16", "bf16"] = "none"
    tensorboard: bool = False
    progress: bool = True
    deterministic: bool = True
    save_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="dtype of the saved model's weights"
    )

    @model_validator(mode="after")
    def _model_or_scratch(self) -> TrainConfig:
        if (self.model is None) == (self.scratch is None):
            raise ValueError("give either model (to fine-tune) or scratch (to train a new model), not both")
        return self

    @classmethod
    def load(cls, path: str | Path, **over: Any) -> TrainConfig:
        import yaml
        from pydantic import ValidationError

        p = Path(path)
        if not p.is_file():
            raise EdgeLLMError(
                f"training config '{path}' does not exist", "write a train.yaml (see edgellm train --help)"
            )
        data = yaml.safe_load(p.read_text()) or {}
        data.update({k: v for k, v in over.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as exc:
            raise EdgeLLMError(
                f"{path}: {first_error(exc)}", "fix that key (unknown keys are errors)"
            ) from exc


class TrainingStopped(EdgeLLMError):
    """The gradient monitor stopped the run."""


# -- data --------------------------------------------------------------------------------------------------
def token_stream(tokenizer: Any, texts: list[str]) -> np.ndarray:
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


def _docs(source: str | None, text_field: str, label_field: str | None = None) -> list[Any]:
    from edgellm.data import read_corpus

    return read_corpus(source, text_field=text_field, label_field=label_field)


def class_names(labels: list[str]) -> list[str]:
    """Distinct labels in a stable order: numerically when every label is an integer, else by name."""
    names = set(labels)
    numeric = all(x.lstrip("-").isdigit() for x in names)
    return sorted(names, key=int) if numeric else sorted(names)


# -- the loop ----------------------------------------------------------------------------------------------
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
        docs = _docs(cfg.data, cfg.text_field, label_field)
    if cfg.eval_data is not None:
        train_docs, eval_docs = docs, _docs(cfg.eval_data, cfg.text_field, label_field)
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
        t_adapter = load(cfg.distill.teacher, task=adapter.task)
        if task == "classification" and t_adapter.config.id2label != adapter.config.id2label:
            raise EdgeLLMError(
                f"teacher '{cfg.distill.teacher}' classifies into {list(t_adapter.config.id2label.values())[:10]}, "
                f"the student into {list(adapter.config.id2label.values())[:10]}",
                "distil from a teacher with the same classes in the same order (set labels: to its order)",
            )
        teacher = t_adapter.module.eval().to(acc.device)
        for p in teacher.parameters():
            p.requires_grad_(False)
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
        if task == "embedding":  # contrastive over two dropout views of each window (SimCSE)
            a, b = module(*args), module(*args)
            sim = (
                torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
            ) / cfg.temperature
            return torch.nn.functional.cross_entropy(sim.float(), torch.arange(len(a), device=sim.device))
        logits = module(*args)
        return torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1)
        )

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
            mine = _slice(full, rank * local, (rank + 1) * local)
            with acc.accumulate(module):
                loss = loss_of(mine)
                acc.backward(loss)
                loss_sum += float(loss.detach()) / cfg.grad_accum
                tokens += _tokens(full)
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
        "dataset": _dataset_version(cfg.data),
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
        _save_model(acc.unwrap_model(module), state, adapter, tok, out / "model", cfg.save_dtype)
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if cfg.tensorboard:
        acc.end_training()
    return summary


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


def _slice(batch: Any, lo: int, hi: int) -> Any:
    return {k: v[lo:hi] for k, v in batch.items()} if isinstance(batch, dict) else batch[lo:hi]


def _tokens(batch: Any) -> int:
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
    """The distillation loss of one batch (see :class:`Distill`)."""
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


def init_model(spec: Scratch, texts: list[str], dest: Path, *, seed: int) -> Path:
    """A new model directory: a byte-level BPE tokenizer trained on ``texts`` and the architecture with
    fresh weights drawn from ``seed``. Reused as is when ``dest`` already holds the same (spec, data)."""
    import hashlib

    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from edgellm.utils.fs import atomic_dir

    data = hashlib.sha256()
    for t in texts:  # one text at a time: no copy of the whole corpus in memory
        data.update(t.encode())
        data.update(b"\x00")
    digest = hashlib.sha256(json.dumps([spec.model_dump(), seed, data.hexdigest()]).encode()).hexdigest()
    marker = dest / "scratch.json"
    if marker.is_file() and json.loads(marker.read_text()).get("sha256") == digest:
        return dest
    arch = dict(spec.architecture)
    model_type = arch.pop("model_type", None)
    if not model_type:
        raise EdgeLLMError(
            "scratch.architecture has no model_type", "add model_type: llama (or qwen2, gpt2, bert...)"
        )
    tok = train_tokenizer(texts, spec.tokenizer)
    try:
        config = AutoConfig.for_model(
            model_type,
            **{
                **arch,
                "vocab_size": len(tok),
                "bos_token_id": tok.bos_token_id,
                "eos_token_id": tok.eos_token_id,
                "pad_token_id": tok.pad_token_id,
            },
        )
    except (ValueError, TypeError) as exc:
        raise EdgeLLMError(
            f"scratch.architecture: {exc}", "use a Hugging Face model_type and its config keys"
        ) from exc
    torch.manual_seed(seed)
    auto = (
        AutoModel
        if getattr(config, "is_encoder_decoder", False) or model_type in ("bert", "roberta")
        else AutoModelForCausalLM
    )
    model = auto.from_config(config)
    with atomic_dir(dest, force=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "scratch.json").write_text(
            json.dumps({"sha256": digest, "spec": spec.model_dump()}, indent=2) + "\n"
        )
    return dest


def train_tokenizer(texts: list[str], spec: Tokenizer) -> Any:
    """Byte-level BPE on ``texts`` (the training part only), with the BOS/EOS/PAD special tokens."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=[spec.bos, spec.eos, spec.pad],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec.bos,
        eos_token=spec.eos,
        pad_token=spec.pad,
        model_max_length=spec.max_length,
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


def _dataset_version(source: str | None) -> Any:
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


def _save_model(
    module: Any, state: dict[str, Any], adapter: Any, tok: Any, dest: Path, dtype: str = "float32"
) -> None:
    """The trained Hugging Face model (safetensors, in ``dtype``) and its tokenizer, written atomically.

    ``state`` is the wrapper's full state dict (``Accelerator.get_state_dict``: gathered under FSDP)."""
    import torch

    from edgellm.models.heads import head_prefix, hf_of
    from edgellm.models.loader import copy_sentence_transformers_files
    from edgellm.utils.fs import atomic_dir

    prefix, src = head_prefix(module), hf_of(module)
    hf = type(src)(src.config)  # a fresh copy: the live one may hold sharded (FSDP) parameters
    hf.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    if dtype != "float32":
        hf = hf.to(getattr(torch, dtype))
    with atomic_dir(dest, force=True) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if adapter.source.get("path") and adapter.task == "embedding":  # pooling + normalisation
            copy_sentence_transformers_files(adapter.source["path"], tmp)
