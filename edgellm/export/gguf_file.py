"""GGUF files for llama.cpp, written from a decoder and its QuantSpec's own codes.

:func:`plan_gguf` turns a Hugging Face decoder (Llama, Mistral, Qwen2, Qwen3, GPT-2) and an optional
:class:`~edgellm.compress.quant.QuantSpec` into the tensors of a GGUF file, named as llama.cpp expects
(``gguf``'s own name map), and :func:`write_gguf` writes them with the architecture's metadata and the
tokenizer (vocabulary, merges, special tokens, pre-tokenizer, chat template).

Block formats, from edgellm's codes when they have one exactly:

- ``Q4_0``: 4-bit codes of a symmetric group-32 spec (edgellm's unsigned codes 0..15 with zero point 8
  are llama.cpp's ``q - 8``), the float16 scale as ``d``;
- ``Q4_1``: an asymmetric group-32 spec: ``d`` = scale, ``m`` = -scale x zero point (float16);
- ``Q8_0``: an 8-bit group-32 spec (codes -127..127, float16 ``d``).

A layer whose spec has another group size (or per-channel int8) has no exact block form: it is
re-quantized by ``gguf``'s reference quantizer from the spec's dequantized weights and reported
(``exact=True`` refuses instead). A group-32 spec with float32 scales keeps its codes and rounds the
scales to float16 (reported; quantize with ``scale_dtype="float16"`` to be exact). Llama's query and key
rows are permuted to llama.cpp's rotary layout (adjacent pairs instead of halves): a row permutation,
which keeps every block intact.

:attr:`GgufPlan.reference_weights` are the weights as llama.cpp will see them, decoded back from the
file's bytes by ``gguf``'s own dequantizer (and un-permuted): the torch reference the export checks
llama.cpp's tokens and logits against.

Example:
    >>> plan = plan_gguf(load("tiny-llama"), spec, "q4_0")           # doctest: +SKIP
    >>> write_gguf(plan, "out/model.gguf")                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError, ExportError, require

ARCHES = {"llama": "LLAMA", "mistral": "LLAMA", "qwen2": "QWEN2", "qwen3": "QWEN3", "gpt2": "GPT2"}
ROPE_PAIRS = {"llama", "mistral"}  # llama.cpp rotates adjacent pairs for these (rope NORM): permute q/k
FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0"}
FILE_TYPES["q4_1"] = "MOSTLY_Q4_1"
BLOCK = 32
EMBEDDINGS = ("model.embed_tokens", "transformer.wte", "transformer.wpe")
# llama.cpp's names for BPE pre-tokenizers, by the split regex of tokenizer.json (GPT-2's is ByteLevel's own)
_QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PRE_TOKENIZERS = {_QWEN2: "qwen2", _LLAMA3: "llama-bpe"}


@dataclass
class GgufTensor:
    name: str  # GGUF name, e.g. blk.0.attn_q.weight
    data: np.ndarray  # float32/float16 values, or uint8 block bytes (rows, bytes per row)
    qtype: str  # F32, F16, Q4_0, Q4_1, Q8_0
    source: str  # the Hugging Face parameter it holds
    how: str  # "spec codes", "spec codes, scales rounded to float16", "re-quantized: ...", "float"


@dataclass
class GgufPlan:
    arch: str
    family: str
    metadata: dict[str, Any]
    tensors: list[GgufTensor]
    reference_weights: dict[str, Any]  # HF parameter name -> torch tensor as llama.cpp sees it
    tokens: list[bytes]  # the vocabulary by id, as llama.cpp reads it
    token_types: list[int]
    special: Any  # gguf.SpecialVocab: merges, special ids, add-bos, chat template (read once, in memory)
    pre_tokenizer: str | None
    file_type: str
    report: dict[str, Any] = field(default_factory=dict)


def _gguf() -> Any:
    require("gguf", "gguf", "GGUF export")
    import gguf

    return gguf


def check_family(adapter: Any) -> str:
    """The llama.cpp architecture of ``adapter``, or a clear error naming the families GGUF export takes."""
    family = getattr(adapter, "family", None)
    if family not in ARCHES:
        raise ExportError(
            f"GGUF export has no tensor layout for the '{family}' family",
            f"GGUF takes: {', '.join(sorted(ARCHES))}; use --format onnx / ort / tflite / pte for others",
        )
    cfg = adapter.config
    scaling = getattr(cfg, "rope_scaling", None)
    if scaling and (scaling.get("rope_type") or scaling.get("type")) not in (None, "default"):
        kind = scaling.get("rope_type") or scaling.get("type")
        raise ExportError(
            f"GGUF export does not write rope scaling '{kind}' yet ({adapter.name})",
            "export to --format onnx, or a model without rope_scaling",
        )
    if getattr(cfg, "pruned_heads", None):
        raise ExportError(
            f"GGUF export cannot write '{adapter.name}': its heads were pruned per layer "
            "(config.pruned_heads), and a GGUF file holds one head count for every layer",
            "export the pruned model to --format onnx / ort / tflite, or prune FFN channels only for GGUF",
        )
    return ARCHES[family]


# --------------------------------------------------------------------------------------------- blocks
def _f16_exact(scale: np.ndarray) -> bool:
    return bool(np.array_equal(scale.astype(np.float16).astype(np.float32), scale))


def pack_blocks(lq: Any, qtype: str) -> np.ndarray:
    """A group-32 :class:`LayerQuant`'s codes as llama.cpp block bytes (rows, groups x block bytes)."""
    q = lq.qweight.numpy().astype(np.int16)
    out, inp = q.shape
    g = inp // BLOCK
    q = q.reshape(out, g, BLOCK)
    d = lq.scale.numpy().astype(np.float32).astype(np.float16).reshape(out, g, 1)
    if qtype == "Q8_0":
        qs = q.astype(np.int8).view(np.uint8)
        return np.concatenate([d.view(np.uint8), qs], axis=-1).reshape(out, -1)
    u = q.astype(np.uint8)  # 0..15
    qs = u[..., :16] | (u[..., 16:] << 4)  # element j in the low nibble, j + 16 in the high one
    if qtype == "Q4_0":
        return np.concatenate([d.view(np.uint8), qs], axis=-1).reshape(out, -1)
    zp = lq.zero_point.numpy().astype(np.float32).reshape(out, g, 1)
    m = (-(lq.scale.numpy().astype(np.float32).reshape(out, g, 1)) * zp).astype(np.float16)
    return np.concatenate([d.view(np.uint8), m.view(np.uint8), qs], axis=-1).reshape(out, -1)


def block_type(lq: Any) -> tuple[str | None, str]:
    """The exact block format of a layer's spec, or (None, why there is none)."""
    if lq.group_size != BLOCK:
        return None, f"group size {lq.group_size or 'per-channel'} is not GGUF's {BLOCK}"
    if lq.bits == 8:
        return "Q8_0", ""
    if lq.bits == 4:
        return ("Q4_0" if lq.symmetric else "Q4_1"), ""
    return None, f"{lq.bits}-bit codes have no GGUF block format here"


def _rtn_q8_0(w: np.ndarray) -> np.ndarray:
    """A float table (embeddings, a head left out of the spec) as Q8_0 by edgellm's own RTN grid."""
    import torch

    from edgellm.compress.quant.primitives import quantize_weight, weight_grid
    from edgellm.compress.quant.spec import LayerQuant

    t = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    scale, zero = weight_grid(t, 8, BLOCK, True, True)
    lq = LayerQuant("table", 8, BLOCK, True, quantize_weight(t, scale, zero, 8), scale, zero)
    return pack_blocks(lq, "Q8_0")


def _requantize(w: np.ndarray, qtype: str) -> np.ndarray:
    gguf = _gguf()
    return gguf.quants.quantize(
        np.ascontiguousarray(w, dtype=np.float32), getattr(gguf.GGMLQuantizationType, qtype)
    )


def _decode(t: GgufTensor) -> np.ndarray:
    """Float32 values of a planned tensor, decoded by ``gguf``'s reference dequantizer."""
    if t.qtype in ("F32", "F16"):
        return t.data.astype(np.float32)
    gguf = _gguf()
    return gguf.quants.dequantize(t.data, getattr(gguf.GGMLQuantizationType, t.qtype)).astype(np.float32)


def _permute_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rotary halves -> llama.cpp's adjacent pairs, per head (rows only)."""
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _unpermute_rows(w: np.ndarray, heads: int) -> np.ndarray:
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ----------------------------------------------------------------------------------------------- plan
def plan_gguf(
    adapter: Any,
    spec: Any = None,
    precision: str = "fp32",
    *,
    embeddings: str | None = None,
    exact: bool = False,
    pre_tokenizer: str | None = None,
) -> GgufPlan:
    """The tensors and metadata of ``adapter`` (+ ``spec``) as a GGUF file; see the module doc.

    Args:
        precision: fp32 or fp16 (float files), int8 (Q8_0) or int4 (Q4_0/Q4_1) with ``spec``; a layer the
            spec leaves in float stays at ``embeddings``' float type.
        embeddings: type of the token (and position) embeddings and of a 2-D weight the spec leaves in
            float (a kept head): ``f32``, ``f16`` or ``q8_0`` (default: the file's float type, ``q8_0`` with
            a spec, as llama.cpp's own Q4_0 files keep a tied embedding table).
        exact: refuse (instead of re-quantizing) a layer whose spec has no exact block form.
        pre_tokenizer: llama.cpp's pre-tokenizer name, when it cannot be told from tokenizer.json.
    """
    import torch

    gguf = _gguf()
    arch_name = check_family(adapter)
    cfg = adapter.config
    lm = adapter.module.lm
    layers = {n.removeprefix("lm."): lq for n, lq in (spec.layers.items() if spec is not None else [])}
    if precision in ("int8", "int4") and spec is None:
        raise EdgeLLMError(
            f"GGUF {precision} needs a QuantSpec", "quantize first (edgellm compress ... --generate)"
        )
    float_type = "F32" if precision == "fp32" else "F16"
    default = float_type if spec is None else "Q8_0"  # as llama.cpp's Q4_0 files keep a tied table
    emb_type = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", None: default}.get(embeddings)
    if emb_type is None:
        raise EdgeLLMError(f"embeddings type '{embeddings}' is not f32, f16 or q8_0", "use embeddings=q8_0")
    fallback = {8: "Q8_0", 4: "Q4_0"}
    tmap = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch_name), int(cfg.num_hidden_layers))
    family = adapter.family
    heads, kv_heads = (
        int(cfg.num_attention_heads),
        int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads),
    )
    conv1d = family == "gpt2"  # GPT-2's Conv1D stores (in, out)
    tensors: list[GgufTensor] = []
    reference: dict[str, Any] = {}
    report: dict[str, Any] = {"exact": [], "scales_rounded": [], "requantized": {}, "float": []}
    seen: dict[int, str] = {}
    tied = False
    for name, p in lm.named_parameters(remove_duplicate=False):
        if id(p) in seen and name.removesuffix(".weight") not in layers:
            tied = True  # a tied head is written only when the spec quantizes it apart from the embeddings
            continue
        seen[id(p)] = name
        gname = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ExportError(
                f"GGUF export does not know where '{name}' of the {family} model goes",
                "report it with the model's config; export to --format onnx meanwhile",
            )
        w = p.detach().float().numpy()
        module = name.rsplit(".", 1)[0]
        lq = layers.get(module) if name.endswith(".weight") else None
        permute = family in ROPE_PAIRS and re.search(r"\.(q_proj|k_proj)\.(weight|bias)$", name)
        nh = heads if ".q_proj." in name else kv_heads
        is_conv1d = conv1d and type(lm.get_submodule(module)).__name__ == "Conv1D"
        if lq is not None:
            qtype, why = block_type(lq)
            if qtype is not None:
                data = pack_blocks(lq, qtype)
                rounded = not _f16_exact(lq.scale.numpy().astype(np.float32)) or (
                    qtype == "Q4_1" and not lq.symmetric
                )
                how = "spec codes" if not rounded else "spec codes, scales rounded to float16"
                (report["scales_rounded"] if rounded else report["exact"]).append(module)
            else:
                if exact:
                    raise ExportError(
                        f"layer '{module}' has no exact GGUF block form: {why}",
                        f"quantize with group_size={BLOCK} (and scale_dtype float16), or drop --exact to re-quantize it",
                    )
                qtype = fallback.get(lq.bits, "Q8_0")
                data = _requantize(lq.dequantize().numpy(), qtype)
                how = f"re-quantized to {qtype}: {why}"
                report["requantized"][module] = why
            if permute:
                data = _permute_rows(data, nh)
        else:
            if is_conv1d and w.ndim == 2:
                w = w.T
            if permute:
                w = _permute_rows(w, nh)
            if w.ndim == 1:
                kind = "F32"  # norms and biases stay float32
            elif module in EMBEDDINGS or spec is not None:
                kind = emb_type
            else:
                kind = float_type
            if w.ndim == 2 and spec is not None and module not in EMBEDDINGS:
                report["float"].append(module)
            if kind == "Q8_0":
                data, how = _rtn_q8_0(w), "edgellm RTN to Q8_0 (group 32, float16 scales)"
            else:
                data, how = w.astype(np.float16 if kind == "F16" else np.float32), "float"
            qtype = kind
        t = GgufTensor(gname, np.ascontiguousarray(data), qtype, name, how)
        tensors.append(t)
        back = _decode(t)
        if permute:
            back = _unpermute_rows(back, nh)
        if is_conv1d and back.ndim == 2:
            back = back.T
        reference[name] = torch.from_numpy(np.ascontiguousarray(back.reshape(p.shape)))
    file_type = {"fp32": "f32", "fp16": "f16"}.get(precision)
    if file_type is None:
        bits = {lq.bits for lq in layers.values()}
        file_type = (
            "q8_0" if bits == {8} else ("q4_1" if any(not lq.symmetric for lq in layers.values()) else "q4_0")
        )
    tokens, token_types, special, pre = _tokenizer(adapter, pre_tokenizer)
    report["tied_head_written_apart"] = any(t.name == "output.weight" for t in tensors) and bool(
        getattr(cfg, "tie_word_embeddings", False)
    )
    report["tied"] = tied
    meta = _metadata(adapter, arch_name)
    return GgufPlan(
        arch_name.lower(),
        family,
        meta,
        tensors,
        reference,
        tokens,
        token_types,
        special,
        pre,
        file_type,
        report,
    )


def _metadata(adapter: Any, arch: str) -> dict[str, Any]:
    cfg = adapter.config
    if arch == "GPT2":
        return {
            "context_length": int(cfg.n_positions),
            "embedding_length": int(cfg.n_embd),
            "feed_forward_length": int(getattr(cfg, "n_inner", None) or 4 * cfg.n_embd),
            "block_count": int(cfg.n_layer),
            "head_count": int(cfg.n_head),
            "layer_norm_eps": float(cfg.layer_norm_epsilon),
        }
    heads = int(cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    meta = {
        "context_length": int(cfg.max_position_embeddings),
        "embedding_length": int(cfg.hidden_size),
        "feed_forward_length": int(cfg.intermediate_size),
        "block_count": int(cfg.num_hidden_layers),
        "head_count": heads,
        "head_count_kv": int(getattr(cfg, "num_key_value_heads", None) or heads),
        "rope_freq_base": float(getattr(cfg, "rope_theta", 10000.0)),
        "layer_norm_rms_eps": float(cfg.rms_norm_eps),
        "rope_dimension_count": head_dim,
        "vocab_size": int(cfg.vocab_size),
    }
    if head_dim * heads != int(cfg.hidden_size) or arch == "QWEN3":
        meta["key_length"] = meta["value_length"] = head_dim
    return meta


# ------------------------------------------------------------------------------------------- tokenizer
def _tokenizer(adapter: Any, pre: str | None) -> tuple[list[bytes], list[int], Any, str]:
    """The vocabulary, token types, gguf's SpecialVocab and llama.cpp's pre-tokenizer name of the
    adapter's tokenizer (saved to a temporary folder that is gone when this returns: gguf reads files)."""
    gguf = _gguf()
    tok = adapter.tokenizer
    if tok is None:
        raise ExportError(
            f"'{adapter.name}' has no tokenizer: a GGUF file carries its vocabulary",
            "load the model from a folder with tokenizer.json beside it",
        )
    with tempfile.TemporaryDirectory(prefix="edgellm-gguf-tok-") as tmp:
        folder = Path(tmp)
        tok.save_pretrained(folder)
        tj = folder / "tokenizer.json"
        if not tj.is_file():
            raise ExportError(
                f"the tokenizer of '{adapter.name}' is not a fast tokenizer (no tokenizer.json)",
                "GGUF export takes byte-level BPE tokenizers saved as tokenizer.json",
            )
        data = json.loads(tj.read_text())
        if data.get("model", {}).get("type") != "BPE":
            raise ExportError(
                f"GGUF export takes byte-level BPE tokenizers; '{adapter.name}' has a "
                f"{data.get('model', {}).get('type')} one",
                "export to --format onnx / ort / pte, which take the tokenizer as it is",
            )
        name = pre or _pre_tokenizer(data.get("pre_tokenizer") or {}, adapter.name)
        tokens, types = _vocab(data, int(adapter.config.vocab_size))
        special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens))
    return tokens, types, special, name


def _pre_tokenizer(pt: dict[str, Any], name: str) -> str:
    if pt.get("type") == "ByteLevel" and pt.get("use_regex", True):
        return "gpt-2"  # the GPT-2 split regex inside ByteLevel
    steps = pt.get("pretokenizers", []) if pt.get("type") == "Sequence" else [pt]
    for s in steps:
        if s.get("type") == "Split":
            regex = (s.get("pattern") or {}).get("Regex")
            if regex in PRE_TOKENIZERS:
                return PRE_TOKENIZERS[regex]
    raise ExportError(
        f"llama.cpp has no pre-tokenizer known to edgellm for the tokenizer of '{name}' ({json.dumps(pt)[:160]})",
        "pass pre_tokenizer=NAME (llama.cpp's name, e.g. gpt-2, qwen2, llama-bpe); the export then checks "
        "llama.cpp's tokens against the tokenizer's",
    )


def _vocab(data: dict[str, Any], n_vocab: int) -> tuple[list[bytes], list[int]]:
    gguf = _gguf()
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    special = {}
    for at in data.get("added_tokens", []):
        vocab[at["content"]] = at["id"]
        special[at["id"]] = bool(at.get("special"))
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]".encode())
            types.append(int(gguf.TokenType.UNUSED))
            continue
        tokens.append(by_id[i].encode("utf-8"))
        if i in special:
            types.append(int(gguf.TokenType.CONTROL if special[i] else gguf.TokenType.USER_DEFINED))
        else:
            types.append(int(gguf.TokenType.NORMAL))
    return tokens, types


# ---------------------------------------------------------------------------------------------- write
def write_gguf(plan: GgufPlan, path: str | Path, *, name: str = "") -> dict[str, Any]:
    """Write ``plan`` to ``path``; returns what the manifest records (tensor types, sizes, tokenizer)."""
    gguf = _gguf()
    path = Path(path)
    w = gguf.GGUFWriter(str(path), plan.arch)
    w.add_name(name or plan.family)
    for key, value in plan.metadata.items():
        getattr(w, f"add_{key}")(value)
    w.add_file_type(int(getattr(gguf.LlamaFileType, FILE_TYPES[plan.file_type])))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, special = plan.tokens, plan.special
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(plan.pre_tokenizer)
    w.add_token_list(tokens)
    w.add_token_types(plan.token_types)
    special.add_to_gguf(w, quiet=True)
    counts: dict[str, int] = {}
    for t in plan.tensors:
        raw = None if t.qtype in ("F32", "F16") else getattr(gguf.GGMLQuantizationType, t.qtype)
        w.add_tensor(t.name, t.data, raw_dtype=raw)
        counts[t.qtype] = counts.get(t.qtype, 0) + 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {
        "architecture": plan.arch,
        "file_type": plan.file_type.upper(),
        "tensor_types": counts,
        "tensors": {t.name: {"type": t.qtype, "from": t.source, "how": t.how} for t in plan.tensors},
        "tokenizer": {
            "model": "gpt2",
            "pre": plan.pre_tokenizer,
            "tokens": len(tokens),
            "merges": len(special.merges),
            "chat_template": bool(special.chat_template),
            "special": {k: v for k, v in special.special_token_ids.items()},
        },
        "spec_layers": {k: (len(v) if isinstance(v, (list, dict)) else v) for k, v in plan.report.items()},
        "requantized": plan.report["requantized"],
        "scales_rounded": plan.report["scales_rounded"],
    }
