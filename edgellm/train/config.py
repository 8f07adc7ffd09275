"""``train.yaml`` as a typed config: :class:`TrainConfig` and its sections (gradient monitor,
distillation, quantization-aware training, from-scratch architecture and tokenizer).

Every key is validated on construction (unknown keys are errors, ``extra="forbid"``);
:meth:`TrainConfig.load` reads a YAML file with ``key=value`` overrides and names the first bad key.

Example:
    >>> cfg = TrainConfig(model="tiny-llama", data="corpus.jsonl", output="out/ft", max_steps=100)
    >>> cfg.schedule
    'cosine'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

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
