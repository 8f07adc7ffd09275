"""``load``: a bundled name, a local Hugging Face directory, or a plain ``nn.Module`` -> ModelAdapter."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgellm.errors import ModelLoadError, UnsupportedArchitectureError
from edgellm.models.adapter import Block, ModelAdapter, TensorSpec
from edgellm.models.bundled import bundled_names, bundled_path
from edgellm.models.families import FAMILIES, Family, supported_types
from edgellm.models.heads import CausalLMLogits, MeanPooling, SentenceEmbedding, SequenceClassifier
from edgellm.utils.fs import sha256_files

TASKS = ("embedding", "causal-lm", "classification")
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")


def load(
    source: str | Path | nn.Module,
    *,
    task: str | None = None,
    example_inputs: Any = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    attn_implementation: str = "eager",
    name: str | None = None,
    labels: Sequence[str] | None = None,
) -> ModelAdapter:
    """Load a model for compression, export and benchmarking.

    Args:
        source: a bundled name (``"minilm"``), a local Hugging Face model directory, or an ``nn.Module``.
        task: ``"embedding"``, ``"causal-lm"`` or ``"classification"`` for Hugging Face models; inferred
            when omitted (a checkpoint saved as ``*ForSequenceClassification`` is a classifier).
        example_inputs: for an ``nn.Module``: a tensor, a tuple of tensors, or a dict name -> tensor.
        input_names / output_names: names for a plain module's inputs/outputs.
        dynamic_axes: for a plain module, ``{input_name: {axis: "axis_name"}}``; default: axis 0 is
            ``"batch"`` on every input.
        attn_implementation: attention kernel for Hugging Face models. ``"eager"`` (default) exports
            to graphs that ONNX Runtime fuses into its ``Attention`` op; ``"sdpa"`` is faster in torch.
        name: a display name; defaults to the bundled name or the directory name.
        labels: classification: the class names (their number is the head's size). A checkpoint that
            already classifies into the same names keeps its head and its order; otherwise the head is
            new (random, from torch's seed). Default: the checkpoint's own labels.

    Returns:
        A :class:`ModelAdapter` in eval mode, float32.

    Example:
        >>> import edgellm
        >>> m = edgellm.models.load("minilm")                      # doctest: +SKIP
        >>> [b.name for b in m.blocks][:3]                          # doctest: +SKIP
        ['embeddings', 'layers.0', 'layers.1']
    """
    if isinstance(source, nn.Module):
        return _load_module(source, example_inputs, input_names, output_names, dynamic_axes, name)
    if labels is not None and task not in (None, "classification"):
        raise ModelLoadError(
            f"labels are for classification, not task '{task}'", "drop labels or use task classification"
        )
    if example_inputs is not None:
        raise ModelLoadError(
            "example_inputs is only for a plain torch.nn.Module",
            "drop example_inputs: a Hugging Face model's inputs come from its config and tokenizer",
        )
    from edgellm.models.vision import VISION, build

    if str(source) in VISION:  # a CNN defined in edgellm (random weights, for split inference)
        module, image = build(str(source))
        return _load_module(
            module, {"image": image}, None, ["logits"], None, name or str(source), source_name=str(source)
        )
    folder = Path(str(source)).expanduser()
    if (folder / MODULE_META).is_file():  # a plain module saved by edgellm (a pruned CNN...)
        return _load_module_dir(folder.resolve(), name)
    path, display = _resolve(str(source))
    return _load_hf(path, display if name is None else name, task, attn_implementation, labels)


MODULE_META = "edgellm-module.json"


def save_module(adapter: ModelAdapter, dest: Path) -> None:
    """A plain torch module as a model directory: the pickled module (``module.pt``, its class must stay
    importable), its example inputs (``example.npz``) and its I/O names (``edgellm-module.json``)."""
    torch.save(adapter.module, dest / "module.pt")
    np.savez(dest / "example.npz", **(adapter.example or {}))
    meta = {
        "name": adapter.name,
        "class": f"{type(adapter.module).__module__}.{type(adapter.module).__qualname__}",
        "inputs": [s.name for s in adapter.inputs],
        "outputs": [s.name for s in adapter.outputs],
        "dynamic_axes": {
            s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)} for s in adapter.inputs
        },
        "builtin": adapter.source.get("builtin"),
    }
    (dest / MODULE_META).write_text(json.dumps(meta, indent=2) + "\n")


def _load_module_dir(path: Path, name: str | None) -> ModelAdapter:
    meta = json.loads((path / MODULE_META).read_text())
    try:
        # the directory's own pickle, written by save_module: loading it runs its classes' code
        module = torch.load(path / "module.pt", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load the torch module in {path}: {str(exc).splitlines()[0][:200]}",
            f"its class {meta.get('class')} must be importable where it is loaded",
        ) from exc
    with np.load(path / "example.npz") as z:
        example = {k: z[k] for k in meta["inputs"]}
    axes = {k: {int(i): d for i, d in v.items()} for k, v in meta.get("dynamic_axes", {}).items()}
    adapter = _load_module(module, example, None, meta["outputs"], axes, name or path.name)
    adapter.source["path"] = str(path)
    return adapter


def _resolve(source: str) -> tuple[Path, str]:
    bundled = bundled_path(source)
    if bundled is not None:
        return bundled, source
    path = Path(source).expanduser()
    if not path.exists():
        hub = _from_hub(source)
        if hub is not None:
            return hub
        raise ModelLoadError(
            f"model '{source}' is neither a bundled model nor an existing path",
            f"give a Hugging Face model directory or one of: {', '.join(_all_names())}",
        )
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelLoadError(
            f"'{source}' is not a model directory: it has no config.json",
            "point to a directory saved with save_pretrained() (config.json + weights)",
        )
    return path.resolve(), path.resolve().name


def _from_hub(source: str) -> tuple[Path, str] | None:
    """A model pushed to the hub (``NAME[@VERSION|@TAG]``), checked out and verified; None if the hub has
    no such name."""
    from edgellm.errors import EdgeLLMError
    from edgellm.hub import Hub, parse_ref

    try:
        name, _ = parse_ref(source)
    except EdgeLLMError:
        return None
    hub = Hub()
    if name not in hub.names():
        return None
    path = hub.resolve(source)
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"hub entry '{source}' is not a Hugging Face model directory (no config.json)",
            "load a model entry; artifacts are served with edgellm serve REF",
        )
    return path.resolve(), name.replace(":", "-")


def _all_names() -> list[str]:
    from edgellm.models.vision import VISION

    return [*bundled_names(), *VISION]


def _read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read {path / 'config.json'}: {exc}", "the file must be valid JSON from save_pretrained()"
        ) from exc
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise ModelLoadError(
            f"{path / 'config.json'} has no 'model_type'",
            "save the model with transformers' save_pretrained()",
        )
    return cfg


def saved_labels(source: str | Path) -> list[str] | None:
    """The class names of a model directory (or bundled name) saved as a sequence classifier, in the
    order of its head; None for any other model."""
    path, _ = _resolve(str(source))
    cfg = _read_config(path)
    if not _saved_classifier(cfg):
        return None
    return [str(v) for _, v in sorted((int(k), v) for k, v in (cfg.get("id2label") or {}).items())]


def _saved_classifier(cfg: dict[str, Any]) -> bool:
    return any(str(a).endswith("ForSequenceClassification") for a in cfg.get("architectures") or [])


def _classifier_labels(cfg: dict[str, Any], labels: Sequence[str] | None) -> dict[str, Any]:
    """``from_pretrained`` keywords for a classification head of ``labels`` (the checkpoint's own order
    when it already classifies into the same names)."""
    if labels is None:
        return {}
    names = [str(x) for x in labels]
    if len(set(names)) != len(names) or len(names) < 2:
        raise ModelLoadError(
            f"classification labels {names[:10]} must be at least two distinct names",
            "give two or more labels",
        )
    saved = [str(v) for _, v in sorted((int(k), v) for k, v in (cfg.get("id2label") or {}).items())]
    if sorted(saved) == sorted(names):
        names = saved
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
        "ignore_mismatched_sizes": True,  # a head of another size is replaced, not an error
    }


def _load_hf(
    path: Path, display: str, task: str | None, attn: str, labels: Sequence[str] | None = None
) -> ModelAdapter:
    cfg = _read_config(path)
    model_type = cfg["model_type"]
    family = FAMILIES.get(model_type)
    if family is None:
        arch = ", ".join(cfg.get("architectures") or []) or "unknown class"
        raise UnsupportedArchitectureError(
            f"architecture '{model_type}' ({arch}) is not supported",
            f"supported model types: {supported_types()}; or load the nn.Module with example_inputs",
        )
    if task is None:
        task = "classification" if _saved_classifier(cfg) or labels is not None else None
    task = task or ("causal-lm" if family.kind == "decoder" else "embedding")
    if task not in TASKS:
        raise ModelLoadError(f"unknown task '{task}'", f"use one of: {', '.join(TASKS)}")
    weights = [p for g in _WEIGHT_GLOBS for p in path.glob(g)]
    if not weights:
        raise ModelLoadError(
            f"'{path}' has a config.json but no weights (*.safetensors or pytorch_model*.bin)",
            "copy the weight files next to config.json",
        )
    import transformers

    logging.getLogger("transformers").setLevel(logging.ERROR)
    kw = {"attn_implementation": attn, "dtype": torch.float32}
    try:
        if task == "causal-lm":
            if family.kind != "decoder":
                raise ModelLoadError(
                    f"'{model_type}' is an encoder: it has no causal-LM head", "use --task embedding"
                )
            hf = transformers.AutoModelForCausalLM.from_pretrained(path, **kw)
        elif task == "classification":
            hf = transformers.AutoModelForSequenceClassification.from_pretrained(
                path, **kw, **_classifier_labels(cfg, labels)
            )
        else:
            hf = transformers.AutoModel.from_pretrained(path, **kw)
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises many types for broken checkpoints
        raise ModelLoadError(
            f"transformers could not load '{path}': {str(exc).splitlines()[0]}",
            "check that config.json matches the weight files",
        ) from exc
    hf.eval()
    tokenizer = load_tokenizer(path)
    config = hf.config
    vocab = int(getattr(config, "vocab_size", 0) or 2)
    seq_names = ["batch", "sequence"]

    if task == "embedding":
        module: nn.Module = SentenceEmbedding(hf, _pooling_from_st(path))
        prefix = "encoder."
        input_names = ["input_ids", "attention_mask"]
        if int(getattr(config, "type_vocab_size", 0) or 0) > 0 and model_type != "distilbert":
            input_names.append("token_type_ids")
        outputs = [TensorSpec("sentence_embedding", "float32", ["batch", int(config.hidden_size)])]
        head = Block("head", "head", ("pooling",))
        base = hf
    elif task == "classification":
        decoder = family.kind == "decoder"
        if decoder and getattr(config, "pad_token_id", None) is None and tokenizer is not None:
            # a decoder classifies from the last token before padding: it must know the padding id
            config.pad_token_id = (
                tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            )
        module = SequenceClassifier(hf, decoder=decoder)
        input_names = ["input_ids", "attention_mask"]
        if not decoder and int(getattr(config, "type_vocab_size", 0) or 0) > 0 and model_type != "distilbert":
            input_names.append("token_type_ids")
        outputs = [TensorSpec("logits", "float32", ["batch", int(config.num_labels)])]
        base = hf if decoder else hf.base_model  # family paths are relative to the base model of encoders
        prefix = "clf." if decoder else f"clf.{hf.base_model_prefix}."
        head_paths = [prefix + p for p in family.final if p != "lm_head" and _has(base, p)]
        if not decoder and getattr(base, "pooler", None) is not None:
            head_paths.append(prefix + "pooler")
        head_paths += [f"clf.{n}" for n, _ in hf.named_children() if n != hf.base_model_prefix]
        head = Block("head", "head", tuple(head_paths))
    else:
        module = CausalLMLogits(hf)
        prefix = "lm."
        input_names = ["input_ids", "attention_mask"]
        outputs = [TensorSpec("logits", "float32", ["batch", "sequence", vocab], valid_mask="attention_mask")]
        head = Block("head", "head", tuple(prefix + p for p in family.final))
        base = hf
    module.eval()
    inputs = [TensorSpec(n, "int64", list(seq_names)) for n in input_names]
    blocks = [*_hf_blocks(base, family, prefix), head]
    files = [path / "config.json", *weights]
    return ModelAdapter(
        name=display,
        module=module,
        task=task,
        family=model_type,
        inputs=inputs,
        outputs=outputs,
        blocks=blocks,
        source={
            "name": display,
            "path": str(path),
            "sha256": sha256_files(files, path),
            "model_type": model_type,
        },
        config=config,
        tokenizer=tokenizer,
        int_high={
            "input_ids": vocab,
            "token_type_ids": max(1, int(getattr(config, "type_vocab_size", 1) or 1)),
        },
    )


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def _hf_blocks(base: nn.Module, family: Family, prefix: str) -> list[Block]:
    try:
        layers = base.get_submodule(family.layers)
    except AttributeError as exc:
        raise UnsupportedArchitectureError(
            f"model has no '{family.layers}' module list where its family keeps its blocks",
            "the checkpoint's layout differs from its model_type; report it with the model's class name",
        ) from exc
    blocks = [Block("embeddings", "embeddings", tuple(prefix + p for p in family.embeddings))]
    blocks += [Block(f"layers.{i}", "block", (f"{prefix}{family.layers}.{i}",)) for i in range(len(layers))]
    return blocks


def load_tokenizer(path: Path) -> Any:
    if not any((path / f).exists() for f in ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json")):
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    except Exception:  # a model without a usable tokenizer still exports with random ids
        return None


SENTENCE_TRANSFORMERS_FILES = ("modules.json", "1_Pooling", "2_Normalize", "sentence_bert_config.json")


def copy_sentence_transformers_files(src: str | Path, dest: Path) -> None:
    """Copy the sentence-transformers pipeline files (pooling, normalisation) of model directory ``src``
    into ``dest``, so a re-saved encoder (trained, pruned) pools and normalises as before."""
    import shutil

    src = Path(src)
    for extra in SENTENCE_TRANSFORMERS_FILES:
        if (src / extra).exists():
            (shutil.copytree if (src / extra).is_dir() else shutil.copy2)(src / extra, dest / extra)


def _pooling_from_st(path: Path) -> MeanPooling:
    """Read sentence-transformers' pooling/normalize modules if present; default: mean, normalized."""
    normalize, mode = True, "mean"
    modules_json = path / "modules.json"
    if modules_json.is_file():
        mods = json.loads(modules_json.read_text())
        normalize = any(m.get("type", "").endswith("Normalize") for m in mods)
        for m in mods:
            if m.get("type", "").endswith("Pooling"):
                pcfg = path / m.get("path", "") / "config.json"
                if pcfg.is_file():
                    p = json.loads(pcfg.read_text())
                    mode = "cls" if p.get("pooling_mode_cls_token") else "mean"
    return MeanPooling(mode=mode, normalize=normalize)


def _load_module(
    module: nn.Module,
    example_inputs: Any,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None,
    name: str | None,
    source_name: str | None = None,
) -> ModelAdapter:
    if example_inputs is None:
        raise ModelLoadError(
            "a plain torch.nn.Module needs example_inputs",
            "pass example_inputs=torch.randn(1, 16) (a tensor, tuple of tensors or dict name -> tensor)",
        )
    if isinstance(example_inputs, torch.Tensor | np.ndarray):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, Mapping):
        names = list(example_inputs)
        tensors = list(example_inputs.values())
    else:
        tensors = list(example_inputs)
        names = list(
            input_names or ([f"input_{i}" for i in range(len(tensors))] if len(tensors) > 1 else ["input"])
        )
    if len(names) != len(tensors):
        raise ModelLoadError(
            f"{len(names)} input names for {len(tensors)} example inputs", "give one name per input"
        )
    example = {n: np.asarray(torch.as_tensor(t).detach().cpu().numpy()) for n, t in zip(names, tensors)}
    axes = dynamic_axes if dynamic_axes is not None else {n: {0: "batch"} for n in names}
    inputs = []
    for n, arr in example.items():
        ax = dict(axes.get(n, {}))
        inputs.append(TensorSpec(n, str(arr.dtype), [ax.get(i, d) for i, d in enumerate(arr.shape)]))
    module = module.eval()
    with torch.inference_mode():
        out = module(*[torch.as_tensor(a) for a in example.values()])
    outs = [out] if isinstance(out, torch.Tensor) else list(out.values() if isinstance(out, Mapping) else out)
    onames = list(
        output_names or (["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))])
    )
    batch_dynamic = all(s.shape and s.shape[0] == "batch" for s in inputs)
    outputs = [
        TensorSpec(
            n,
            str(t.detach().numpy().dtype),
            ["batch" if (i == 0 and batch_dynamic) else d for i, d in enumerate(t.shape)],
        )
        for n, t in zip(onames, outs)
    ]
    blocks = [Block(n, "block", (n,)) for n, _ in module.named_children()] or [
        Block("module", "block", ("",))
    ]
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(
            state[k].numpy().tobytes()
            if state[k].dtype != torch.bfloat16
            else state[k].float().numpy().tobytes()
        )
    display = name or type(module).__name__
    return ModelAdapter(
        name=display,
        module=module,
        task="custom",
        family="torch",
        inputs=inputs,
        outputs=outputs,
        blocks=blocks,
        source={
            "name": display,
            "path": None,
            "builtin": source_name,
            "sha256": h.hexdigest(),
            "model_type": type(module).__name__,
        },
        example=example,
        int_high={n: int(a.max()) + 1 for n, a in example.items() if np.issubdtype(a.dtype, np.integer)},
    )
