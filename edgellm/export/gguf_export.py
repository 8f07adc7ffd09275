"""GGUF generation artifacts: ``model.gguf`` (plus ``tokenizer/`` and the manifest), checked in llama.cpp.

:func:`gguf_reference` is the torch model carrying exactly the weights the file holds (decoded back
from its bytes); :func:`lower_gguf` writes the artifact's folder and checks, before anything is kept,
that llama.cpp loads the file and tokenizes fixed texts exactly as the model's own tokenizer does.
The generation check itself (greedy tokens and logits against :func:`gguf_reference`) is the one every
generation artifact gets, in :func:`edgellm.pipeline.generate_export.export_generate`.

Example:
    >>> plan = plan_gguf(adapter, spec, "int4")                                     # doctest: +SKIP
    >>> art, layout, extra = lower_gguf(adapter, plan, target, 256, Path("work"))   # doctest: +SKIP
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from edgellm.errors import ExportError
from edgellm.export.base import Exporter, register_exporter
from edgellm.export.gguf_file import GgufPlan, write_gguf

GGUF_FILE = "model.gguf"
TOKENIZER_TEXTS = (
    "The with statement is used to wrap the execution of a block.",
    "Caf\u00e9 \u00fcber 12,345.67 -- naïve r\u00e9sum\u00e9s\n\n\ttabs  and  spaces!",
    "def f(x):\n    return x ** 2  # squares",
)


def gguf_reference(adapter: Any, plan: GgufPlan) -> Any:
    """A copy of ``adapter``'s Hugging Face model holding the file's weights (a head quantized apart
    from tied embeddings is untied, as in the file)."""
    import torch

    lm = copy.deepcopy(adapter.module.lm)
    new = {n: torch.nn.Parameter(v.clone(), requires_grad=False) for n, v in plan.reference_weights.items()}
    shared: dict[int, list[str]] = {}
    for n, p in lm.named_parameters(remove_duplicate=False):
        shared.setdefault(id(p), []).append(n)
    for names in shared.values():  # a name the file does not hold shares the tensor of one it does
        written = next((n for n in names if n in new), None)
        for n in names:
            value = new.get(n) if n in new else (new[written] if written else None)
            if value is not None:
                owner, attr = n.rsplit(".", 1)
                setattr(lm.get_submodule(owner), attr, value)
    _activations_as_llama_cpp(lm, plan)
    return lm.eval()


def _activations_as_llama_cpp(lm: Any, plan: GgufPlan) -> None:
    """Round each linear layer's input as llama.cpp's CPU kernels do before the dot products: to int8 in
    blocks of 32 (``Q8_0``: ``d = absmax / 127``, codes by ``1 / d``, ``d`` stored as float16) for a
    quantized weight, to float16 for an F16 one; so the reference computes what llama.cpp computes, up
    to summation order and its float16 key/value cache."""
    import torch

    from edgellm.export.gguf_file import BLOCK

    def q8_0(x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xb = x.float().reshape(*shape[:-1], shape[-1] // BLOCK, BLOCK)
        d = xb.abs().amax(dim=-1, keepdim=True) / 127.0
        q = torch.round(xb * torch.where(d > 0, 1.0 / d, torch.zeros_like(d)))
        return (q * d.half().float()).reshape(shape).to(x.dtype)

    def f16(x: torch.Tensor) -> torch.Tensor:
        return x.half().to(x.dtype)

    kinds = {t.source.rsplit(".", 1)[0]: t.qtype for t in plan.tensors if t.source.endswith("weight")}
    table = next((t.qtype for t in plan.tensors if t.name == "token_embd.weight"), None)
    kinds.setdefault("lm_head", table)  # a tied head multiplies by the embedding table as it is stored
    for name, module in lm.named_modules():
        kind = kinds.get(name)
        if kind is None or (not isinstance(module, torch.nn.Linear) and type(module).__name__ != "Conv1D"):
            continue
        fn = f16 if kind == "F16" else (q8_0 if kind.startswith("Q") else None)
        if fn is not None and (kind == "F16" or _in_features(module) % BLOCK == 0):
            module.register_forward_pre_hook(lambda _m, args, fn=fn: (fn(args[0]), *args[1:]))


def _in_features(module: Any) -> int:
    return int(module.in_features if hasattr(module, "in_features") else module.weight.shape[0])


def lower_gguf(
    adapter: Any, plan: GgufPlan, tgt: Any, context: int, work: Path, *, threads: int | None = None
) -> tuple[Any, str, dict[str, Any]]:
    """Write ``plan`` as a generation artifact in ``work``; check llama.cpp loads it and tokenizes as the
    model's tokenizer does. Returns (artifact, cache layout, manifest fields of the generation section)."""
    from edgellm.runtime.artifact import Artifact, model_fields, write_manifest
    from edgellm.runtime.llama_cpp_engine import LlamaCppEngine
    from edgellm.utils.specs import TensorSpec

    work.mkdir(parents=True)
    info = write_gguf(plan, work / GGUF_FILE, name=adapter.name)
    adapter.tokenizer.save_pretrained(work / "tokenizer")
    eng = LlamaCppEngine(work / GGUF_FILE, context=context, threads=threads)
    try:
        tok = adapter.tokenizer
        for text in TOKENIZER_TEXTS:
            want = tok(text, add_special_tokens=False)["input_ids"]
            got = eng.tokenize(text)
            if got != want:
                k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                raise ExportError(
                    f"llama.cpp tokenizes {text[:40]!r} differently from the tokenizer of '{adapter.name}' "
                    f"(pre-tokenizer '{plan.pre_tokenizer}'; first difference at token {k}: {got[k : k + 3]} vs "
                    f"{want[k : k + 3]})",
                    "pass the pre-tokenizer llama.cpp knows this tokenizer by (pre_tokenizer=NAME)",
                )
    finally:
        eng.close()
    vocab = int(adapter.config.vocab_size)
    fields = {
        "model_file": GGUF_FILE,
        "task": adapter.task,
        "model": model_fields(adapter),
        "target": {"name": tgt.name, "runtime": "llama.cpp", "format": "gguf", "kind": tgt.kind},
        "precision": {"f32": "fp32", "f16": "fp16", "q8_0": "int8"}.get(plan.file_type, "int4"),
        "inputs": [TensorSpec("input_ids", "int64", ["batch", "new"]).to_dict()],
        "outputs": [TensorSpec("logits", "float32", ["batch", vocab]).to_dict()],
        "recipe": {"gguf": info},
    }
    write_manifest(work, fields)
    tensors = {t.name: t for t in plan.tensors}
    emb, head = tensors["token_embd.weight"], tensors.get("output.weight")
    extra = {
        "weights": {  # what a decode step reads: a head apart from the embeddings, or the tied table
            "embeddings": {
                "precision": emb.qtype,
                "bytes": int(emb.data.nbytes),
                "tied_to_lm_head": head is None,
            },
            "lm_head": {
                "precision": (head or emb).qtype,
                "bytes": int((head or emb).data.nbytes),
                "reads_embeddings": head is None,
                "fp32_bytes": int(adapter.config.vocab_size) * int(adapter.config.hidden_size) * 4,
            },
        },
        "cache": {"inside": "llama.cpp (float16 keys and values)"},
        "gguf": {
            "file_type": info["file_type"],
            "tensor_types": info["tensor_types"],
            "pre_tokenizer": plan.pre_tokenizer,
            "requantized_layers": info["requantized"],
            "scales_rounded_layers": info["scales_rounded"],
            "tokenizer_equal": True,
        },
    }
    return Artifact.load(work), "llama.cpp", extra


@register_exporter("gguf")
class GgufExporter(Exporter):
    """``--format gguf``: a GGUF file holds a decoder for generation, so it is written by the generation
    exporter (``edgellm export MODEL --generate --format gguf``); this entry makes the format known to
    target profiles and says so when a plain export asks for it."""

    generation_only = True

    def __init__(self, quant: Any = None, **options: Any) -> None:
        self.quant = quant

    def lower(self, model: Any, target: Any, workdir: Path, variant: str) -> dict[str, Any]:
        raise ExportError(
            f"GGUF files hold decoders for generation; '{model.name}' was asked for as a plain export",
            f"run: edgellm export {model.name} --generate --format gguf [--precision int4|int8|fp16|fp32]",
        )

    def runner(self, workdir: Path, fields: dict[str, Any], model: Any) -> Any:  # pragma: no cover
        raise ExportError("GGUF artifacts run through edgellm.runtime.Generator", "use edgellm generate")
