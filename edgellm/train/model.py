"""The models the trainer works with: a new one built from scratch, the teacher for distillation, and the
trained model written out as an ordinary model directory.

- :func:`init_model`: a Hugging Face architecture with fresh (seeded) weights and a byte-level BPE
  tokenizer trained on the training texts (:func:`train_tokenizer`), saved as a model directory.
- :func:`load_teacher`: the frozen teacher, checked against the student (same classes, same order).
- :func:`save_model`: the trained weights (gathered under FSDP) in safetensors with the tokenizer.

Example:
    >>> init_model(Scratch(architecture={"model_type": "llama", "hidden_size": 64}), texts, Path("out/init"), seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.train.config import Distill, Scratch, Tokenizer


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


def save_model(
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


def load_teacher(spec: Distill, student: Any, device: Any) -> Any:
    """The teacher's module for ``student`` (an adapter): loaded for the student's task, frozen, in eval
    mode on ``device``. A classifier's teacher must classify into the same classes in the same order."""
    from edgellm.models import load

    t_adapter = load(spec.teacher, task=student.task)
    if student.task == "classification" and t_adapter.config.id2label != student.config.id2label:
        raise EdgeLLMError(
            f"teacher '{spec.teacher}' classifies into {list(t_adapter.config.id2label.values())[:10]}, "
            f"the student into {list(student.config.id2label.values())[:10]}",
            "distil from a teacher with the same classes in the same order (set labels: to its order)",
        )
    teacher = t_adapter.module.eval().to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
