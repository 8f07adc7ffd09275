"""Generation artifacts: a decoder as one key/value-cache step graph, optionally quantized, checked by the
tokens it generates before anything is written.

:func:`export_generate` lowers the whole model's step graph (:func:`edgellm.models.decoder_step.whole_step`)
for a target, from the same :class:`~edgellm.compress.quant.QuantSpec` that ``compress`` computes once:

- ``onnx`` (server): first the fused graph of :mod:`edgellm.export.decoder_graph` (``GroupQueryAttention``
  over one preallocated cache buffer, ``MatMulNBits`` INT4), cache layout ``shared``; else the exported
  step graph (cache layout ``concat``);
- ``ort`` (ORT-mobile) and ``tensorrt`` (Q/DQ ONNX): the exported step graph (``concat``);
- ``pte`` (ExecuTorch): first the program holding its key/value cache as mutable buffers
  (:mod:`edgellm.export.executorch_static`, cache layout ``static``), else the slot graph;
- ``tflite`` and ``pte``: a static-shape slot graph with a cache of ``context`` positions (``slots``).
- ``openvino``: the step graph as an OpenVINO IR (``concat``), run with its cache as OpenVINO state
  (:class:`~edgellm.runtime.openvino_generation.StatefulEngine`) and checked at bf16 where the CPU has
  it, else f32 (``generation.runtime`` records the precision that passed).

Then the generation check: ``check_tokens`` greedy tokens through the artifact on fixed prompts must equal
the reference's — Hugging Face ``generate()`` for fp32, the torch fake-quantized model's for a QuantSpec
(whose agreement and logits cosine against fp32 are reported too). A variant that fails is dropped for
the next; when none passes nothing is written. The manifest's ``generation`` section records the cache
layout, the context, the parity and what the embeddings and the LM head cost.

Example:
    >>> info = export_generate("tiny-llama", "out/tl-int4", precision="int4")     # doctest: +SKIP
    >>> info["generation"]["parity"]["greedy_equal"]                               # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError, ParityError

PROMPTS = (
    "The with statement is used to wrap the execution of a block",
    "A phone runs the first blocks; the server runs the rest.",
)
DEFAULT_RECIPE = {"int4": "w4a16-rtn", "int8": "int8-dynamic"}
GGUF_RECIPE = {"int4": "w4a16-rtn", "int8": "w8a16-rtn"}
TFLITE_CONTEXT = 256
# A divergence where the reference's two candidate logits differ by less than this fraction of the logits'
# scale is a tie: float kernels sum in other orders (1e-4); int8 activations are rounded per row by the
# runtime but per tensor by the torch reference (1e-2, about one step of a 127-level grid).
TIE = 1e-4
TIE_INT8_ACTIVATIONS = 1e-2


def rename_spec(spec: Any, adapter: Any, step: Any) -> Any:
    """``spec`` with its layers named as in ``step`` (a module holding the same ``nn.Linear`` objects as
    ``adapter.module``, under other names)."""
    import dataclasses

    where = {id(m): n for n, m in step.named_modules()}
    layers = {}
    for name, lq in spec.layers.items():
        new = where.get(id(adapter.submodule(name)))
        if new is not None:
            layers[new] = dataclasses.replace(lq, name=new)
    kept = {where.get(id(adapter.submodule(n)), n): why for n, why in spec.kept.items()}
    return dataclasses.replace(spec, layers=layers, kept=kept)


def quant_config(
    precision: str, recipe: str | None, group_size: int | None, keep: tuple[str, ...], fmt: str | None = None
) -> Any:
    """The QuantConfig of ``precision`` (or ``recipe``), or None for fp32/fp16. For GGUF (``fmt``) the
    defaults are its block formats: group size 32 and float16 scales (``Q4_0``), ``w8a16-rtn`` (``Q8_0``)."""
    from edgellm.compress.quant.config import config_for

    if recipe is None and precision in ("fp32", "fp16"):
        return None
    if recipe is None:
        if precision not in DEFAULT_RECIPE:
            raise EdgeLLMError(
                f"unknown precision '{precision}'", "use fp32, fp16, int8 or int4 (or --recipe with compress)"
            )
        recipe = GGUF_RECIPE[precision] if fmt == "gguf" else DEFAULT_RECIPE[precision]
    if recipe == "w8a16-rtn" and fmt not in (None, "gguf"):
        raise EdgeLLMError(
            f"w8a16-rtn is GGUF's Q8_0 block; the {fmt} format takes int8-dynamic",
            "use --recipe int8-dynamic, or --format gguf",
        )
    opts: dict[str, Any] = {}
    if fmt == "gguf" and recipe.startswith("w4a16"):  # Q4_0 blocks exactly, all 16 levels (as llama.cpp)
        opts = {"group_size": 32, "scale_dtype": "float16", "full_range": True}
    if group_size is not None:
        opts["group_size"] = group_size
    if keep:
        opts["keep"] = tuple(keep)
    return config_for(recipe, **opts)


def prompt_ids(adapter: Any, prompts: tuple[str, ...] | list[str] = PROMPTS) -> list[list[int]]:
    """Token ids of the fixed prompts (seeded random ids for a model without a tokenizer)."""
    tok = adapter.tokenizer
    if tok is None:
        rng = np.random.default_rng(0)
        vocab = int(adapter.config.vocab_size)
        return [rng.integers(3, vocab, size=12).tolist() for _ in prompts]
    out = []
    for p in prompts:
        ids = tok(p, add_special_tokens=False)["input_ids"]
        out.append(([tok.bos_token_id] if tok.bos_token_id is not None else []) + list(ids))
    return out


def reference_tokens(lm: Any, prompts: list[list[int]], n: int) -> list[list[int]]:
    """``n`` greedy tokens after each prompt by Hugging Face ``generate`` (no early stop)."""
    import torch

    out = []
    with torch.inference_mode():
        for p in prompts:
            res = lm.generate(
                torch.tensor([p]),
                attention_mask=torch.ones(1, len(p), dtype=torch.long),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
            )
            out.append(res[0, len(p) :].tolist())
    return out


def artifact_greedy(
    engine: Any, prompts: list[list[int]], n: int
) -> tuple[list[list[int]], list[np.ndarray]]:
    """Greedy tokens through a step engine, and the logits at every generated position."""
    toks, logits = [], []
    for p in prompts:
        engine.reset()
        row, lg = [], []
        x = engine.step(list(p))
        for _ in range(n):
            lg.append(np.array(x, dtype=np.float32))  # an engine may reuse its logits buffer
            t = int(np.argmax(x))
            row.append(t)
            if len(row) < n:
                x = engine.step([t])
        toks.append(row)
        logits.append(np.stack(lg))
    return toks, logits


def logits_cosine(lm: Any, prompts: list[list[int]], toks: list[list[int]], got: list[np.ndarray]) -> float:
    """The lowest cosine between the artifact's logits and ``lm``'s (teacher-forced on the same tokens)."""
    import torch

    worst = 1.0
    with torch.inference_mode():
        for p, t, g in zip(prompts, toks, got):
            ids = torch.tensor([list(p) + list(t)[:-1]])
            ref = lm(input_ids=ids).logits[0, len(p) - 1 :].numpy()
            cos = (ref * g).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(g, axis=-1) + 1e-12)
            worst = min(worst, float(cos.min()))
    return worst


def divergences(lm: Any, prompts: list[list[int]], got: list[list[int]], want: list[list[int]]) -> list[dict]:
    """Where each prompt's tokens first differ from the reference's, and the reference's logit margin there
    (its own token's logit minus the artifact's token's): a margin within float noise is a tie that any
    runtime may break either way."""
    import torch

    out = []
    with torch.inference_mode():
        for i, (p, g, w) in enumerate(zip(prompts, got, want)):
            k = next((j for j, (a, b) in enumerate(zip(g, w)) if a != b), None)
            if k is None:
                continue
            x = lm(input_ids=torch.tensor([list(p) + list(w[:k])])).logits[0, -1].numpy()
            margin = float(x[w[k]] - x[g[k]])
            out.append({"prompt": i, "position": k, "margin": margin, "scale": float(np.abs(x).max())})
    return out


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    pairs = [(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return float(np.mean([x == y for x, y in pairs])) if pairs else 0.0


def _weights_cost(adapter: Any, spec: Any, step: Any) -> dict[str, Any]:
    """What the embeddings and the LM head cost in the artifact (bytes), and at which precision."""
    emb = step.embed.weight
    head = step.lm_head.weight
    tied = head.data_ptr() == emb.data_ptr()
    lq = spec.layers.get("lm_head") if spec is not None else None
    head_bytes = head.numel() * 4 if lq is None else head.numel() * lq.bits // 8 + lq.scale.numel() * 4
    return {
        "embeddings": {"precision": "fp32", "bytes": int(emb.numel() * 4), "tied_to_lm_head": bool(tied)},
        "lm_head": {
            "precision": "fp32" if lq is None else f"int{lq.bits}",
            "bytes": int(head_bytes),
            "fp32_bytes": int(head.numel() * 4),
        },
    }


def export_generate(
    model: Any,
    output: str | Path,
    *,
    target: str = "x86-server",
    format: str | None = None,
    precision: str = "fp32",
    recipe: str | None = None,
    spec: Any = None,
    group_size: int | None = None,
    keep: tuple[str, ...] = (),
    context: int | None = None,
    calib: Any = None,
    check_tokens: int = 64,
    min_agreement: float = 1.0,
    fused: bool = True,
    force: bool = False,
    log: Any = None,
    gguf: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a generation artifact of ``model`` for ``target`` (see the module doc); returns its manifest.

    Args:
        precision: fp32, fp16 (TFLite, TensorRT), int8 or int4 (``w4a16-rtn``/``int8-dynamic`` unless
            ``recipe`` or ``spec`` says otherwise).
        recipe: a quantization recipe (``w4a16-gptq``...); calibration batches come from ``calib``
            (a :class:`~edgellm.compress.calibration.Batches`) or the bundled corpus.
        spec: a QuantSpec computed earlier on ``model`` (``compress`` passes its own).
        keep: layer patterns left in fp32 (``lm_head``).
        context: positions the cache holds (default: the model's, 256 for TFLite's static cache).
        min_agreement: the greedy-token agreement a quantized artifact needs (1.0: every token equal).
        gguf: options of the GGUF file (``format="gguf"``): ``embeddings`` (f32|f16), ``exact`` (refuse
            layers without an exact block form), ``pre_tokenizer`` (llama.cpp's name).
    """
    from edgellm.export.base import choose_format
    from edgellm.models import ModelAdapter, load
    from edgellm.models.decoder_step import check_cache_family, whole_step
    from edgellm.targets import load_target
    from edgellm.utils.fs import atomic_dir

    say = log or (lambda _m: None)
    output = Path(output)
    if output.exists() and not force:
        from edgellm.errors import OutputExistsError

        raise OutputExistsError(output)
    adapter = model if isinstance(model, ModelAdapter) else load(model)
    check_cache_family(adapter)
    tgt = load_target(target)
    fmt = choose_format(tgt, format)
    step, dims = whole_step(adapter)
    static = fmt in ("tflite", "pte")  # static-shape runtimes: the slot graph with a cache of ctx slots
    ctx = int(context or (min(dims.context, TFLITE_CONTEXT) if static else dims.context))
    if not 2 <= ctx <= dims.context:
        raise EdgeLLMError(
            f"context {ctx} is outside 2..{dims.context} (the model's positions)", "give a smaller --context"
        )
    t0 = time.perf_counter()
    if spec is None:
        cfg = quant_config(precision, recipe, group_size, keep, fmt)
        if cfg is not None:
            say(f"quantizing with {cfg.recipe}")
            spec = _quantize(adapter, cfg, calib)
    quant_s = time.perf_counter() - t0
    if (
        spec is not None
        and fmt != "gguf"
        and any(lq.bits == 8 and lq.group_size for lq in spec.layers.values())
    ):
        raise EdgeLLMError(
            f"grouped int8 weights ({spec.recipe}) are GGUF's Q8_0; the {fmt} format takes int8-dynamic",
            "use --recipe int8-dynamic, or --format gguf",
        )
    label = f"int{spec.bits}" if spec is not None else precision
    n = min(int(check_tokens), ctx // 2)  # a small context checks fewer tokens after shorter prompts
    prompts = [p[: ctx - n] for p in prompt_ids(adapter)]
    ref_lm = adapter.module.lm
    gguf_plan = None
    if fmt == "gguf":  # the reference holds the file's own weights, decoded back from its blocks
        from edgellm.export.gguf_export import gguf_reference
        from edgellm.export.gguf_file import plan_gguf

        say("planning the GGUF tensors")
        gguf_plan = plan_gguf(adapter, spec, label if spec is not None else precision, **(gguf or {}))
        ref_lm = gguf_reference(adapter, gguf_plan)
    elif spec is not None:
        from edgellm.compress.quant import apply_quant

        ref_lm = apply_quant(adapter, spec).module.lm
    own_reference = spec is not None or gguf_plan is not None
    refs: dict[str, list[list[int]]] = {}

    def tokens_of(kind: str) -> list[list[int]]:  # computed once, after the first variant is lowered
        if kind not in refs:
            say(f"reference tokens ({kind})")
            refs[kind] = reference_tokens(adapter.module.lm if kind == "fp32" else ref_lm, prompts, n)
        return refs[kind]

    gen_common = {
        "kind": "decoder",
        "family": adapter.family,
        "layers": len(step.ids),
        "kv_heads": dims.kv_heads,
        "head_dim": dims.head_dim,
        "hidden_size": dims.hidden_size,
        "vocab": dims.vocab,
        "context": ctx,
        "eos_token_id": getattr(adapter.tokenizer, "eos_token_id", None),
        "bos_token_id": getattr(adapter.tokenizer, "bos_token_id", None),
        "precision": label,
        "recipe": spec.recipe if spec is not None else None,
        "weights": _weights_cost(adapter, rename_spec(spec, adapter, step) if spec else None, step),
    }
    with atomic_dir(output, force=force) as tmp:
        rejected: list[dict[str, Any]] = []
        chosen = None
        for variant in _variants(fmt, spec, fused):
            work = tmp / f".{variant}"
            try:
                say(f"lowering variant {variant}")
                if variant == "gguf":
                    from edgellm.export.gguf_export import lower_gguf

                    art, layout, extra = lower_gguf(adapter, gguf_plan, tgt, ctx, work)
                else:
                    art, layout, extra = _lower(
                        variant, adapter, step, dims, spec, tgt, fmt, ctx, work, precision
                    )
            except _Skip as skip:
                rejected.append({"variant": variant, "reason": str(skip)})
                continue
            gen = {**gen_common, **extra, "cache": {**extra.get("cache", {}), "layout": layout}}
            _set_generation(art, gen)
            from edgellm.runtime.engines import open_engine

            for prec in _engine_precisions(fmt):  # OpenVINO: bf16 where the CPU has it, then f32
                engine = open_engine(art.path, precision=prec) if prec else open_engine(art.path)
                label_v = f"{variant}@{prec}" if prec else variant
                say(f"checking {n} greedy tokens on {len(prompts)} prompts ({label_v})")
                got, logits = artifact_greedy(engine, prompts, n)
                ref_tokens = tokens_of("reference" if own_reference else "fp32")
                agree = _agreement(got, ref_tokens)
                parity = {
                    "tokens": n,
                    "prompts": len(prompts),
                    "reference": _reference_label(spec, gguf_plan),
                    "greedy_equal": got == ref_tokens,
                    "agreement": round(agree, 4),
                    "logits_cosine_min": round(logits_cosine(ref_lm, prompts, got, logits), 6),
                }
                if own_reference:
                    parity["vs_fp32"] = {
                        "agreement": round(_agreement(got, tokens_of("fp32")), 4),
                        "logits_cosine_min": round(logits_cosine(adapter.module.lm, prompts, got, logits), 6),
                    }
                div = divergences(ref_lm, prompts, got, ref_tokens)
                # XNNPACK (pte) quantizes every quantized linear's input to int8 per token at run time;
                # llama.cpp quantizes activations to 8 bits for its quantized matmuls, keeps a float16 cache
                dyn = _int8_activations(spec) or (fmt == "pte" and spec is not None)
                reduced = dyn or variant in ("fused-al4", "gguf") or prec in ("bf16", "f16")
                tie = TIE_INT8_ACTIVATIONS if reduced else TIE
                ties = [d for d in div if abs(d["margin"]) <= tie * max(1.0, d["scale"])]
                parity["tie_tolerance"] = tie
                parity["first_divergences"] = div
                parity["equal_up_to_ties"] = len(ties) == len(div)
                need = 1.0 if spec is None and precision == "fp32" else min_agreement
                if agree >= need or parity["equal_up_to_ties"]:
                    if prec:
                        gen["runtime"] = {"runtime": "openvino", "precision": prec}
                    chosen = (variant, work, {**gen, "parity": {**parity, "min_agreement": need}})
                    break
                rejected.append(
                    {
                        "variant": label_v,
                        "reason": f"greedy agreement {agree:.0%} < {need:.0%}; first divergences {div}",
                        **parity,
                    }
                )
            if chosen is not None:
                break
            shutil.rmtree(work, ignore_errors=True)
        if chosen is None and all("agreement" not in r for r in rejected):
            from edgellm.errors import ExportError

            raise ExportError(
                f"no generation artifact of '{adapter.name}' can be built for {fmt} ({label}): "
                + "; ".join(f"{r['variant']}: {r['reason']}" for r in rejected),
                "pick another --precision or --format (int4 runs on onnx, ort and tensorrt; tflite takes int8)",
            )
        if chosen is None:
            raise ParityError(
                f"no generation artifact of '{adapter.name}' for {fmt} reproduces the reference's greedy tokens: "
                + "; ".join(f"{r['variant']}: {r['reason']}" for r in rejected),
                "try another --format or precision; report it with the model",
            )
        variant, work, gen = chosen
        gen["variant"], gen["rejected_variants"] = variant, rejected
        gen["timings_s"] = {"quantize": round(quant_s, 2), "total": round(time.perf_counter() - t0, 2)}
        for f in list(work.iterdir()):
            f.rename(tmp / f.name)
        for f in tmp.iterdir():
            if f.name.startswith(".") and f.is_dir():
                shutil.rmtree(f, ignore_errors=True)
        _set_generation_file(tmp, gen)
    from edgellm.runtime.artifact import Artifact

    return Artifact.load(output).manifest


def _reference_label(spec: Any, plan: Any) -> str:
    if plan is not None:
        return "torch with the GGUF file's weights (decoded from its blocks by gguf)"
    return "huggingface generate (fp32)" if spec is None else f"torch fake-quantized ({spec.recipe})"


def _engine_precisions(fmt: str) -> list[str | None]:
    """The inference precisions a generation artifact is checked at, fastest first: OpenVINO's bf16
    (where this CPU has it) then f32; one check in the format's own runtime otherwise."""
    if fmt != "openvino":
        return [None]
    from edgellm.runtime.openvino_runner import device_precisions

    return [p for p in ("bf16", "f32") if p in device_precisions()]


def _int8_activations(spec: Any) -> bool:
    return spec is not None and any(
        lq.dynamic_activation or lq.act_scale is not None for lq in spec.layers.values()
    )


class _Skip(Exception):
    pass


def _variants(fmt: str, spec: Any, fused: bool) -> list[str]:
    """Fastest first: the fused graph with int8-activation ``MatMulNBits`` (accuracy level 4) for a
    QuantSpec (INT4, and INT8 weights), then with float compute, then the exported step graph. (At level
    0, 8-bit ``MatMulNBits`` has no fast CPU kernel: it is the fallback, never the first choice.)"""
    if fmt == "gguf":
        return ["gguf"]
    if fmt == "pte":  # the program holding its cache as buffers, else the slot graph (e.g. GPT-2, fp16)
        return ["static", "step"]
    if fmt != "onnx" or not fused:
        return ["step"]
    return (["fused-al4"] if spec is not None else []) + ["fused", "step"]


def _quantize(adapter: Any, cfg: Any, calib: Any) -> Any:
    from edgellm.compress.calibration import corpus_parts, make_batches
    from edgellm.compress.quant import quantize

    feeds = None
    if cfg.needs_calibration:
        if calib is None:
            docs, _, src, _ = corpus_parts(None, None)
            calib = make_batches(adapter, docs, src, max_sequences=64)
        feeds = calib.feeds
    return quantize(adapter, cfg, feeds, calib_info=calib.describe() if calib is not None else None)


def _lower(
    variant: str,
    adapter: Any,
    step: Any,
    dims: Any,
    spec: Any,
    tgt: Any,
    fmt: str,
    ctx: int,
    work: Path,
    precision: str,
) -> tuple[Any, str, dict[str, Any]]:
    """Write one variant into ``work``; returns the artifact, its cache layout and manifest fields."""
    from edgellm.export import export
    from edgellm.models.decoder_step import slot_adapter, step_adapter, step_names

    if variant == "static":
        return _lower_static(adapter, spec, tgt, ctx, work, precision)
    ins, outs = step_names(step, "decoder")
    cache = {"past_inputs": ins[3:], "present_outputs": outs[1:], "dtype": "float32"}
    if variant.startswith("fused"):
        level = 4 if variant == "fused-al4" else 0
        return _lower_fused(adapter, step, dims, spec, tgt, ctx, work, cache, level)
    name = f"{adapter.name}-gen"
    if fmt in ("tflite", "pte"):
        half = slot_adapter((step, dims), name, ctx, role="decoder")
        layout = "slots"
    else:
        half = step_adapter((step, dims), "decoder", name)
        layout = "concat"
    opts: dict[str, Any] = {"format": fmt}
    if spec is not None:
        opts["quant"] = rename_spec(spec, adapter, half.module)
    elif precision != "fp32":
        opts["precision"] = precision
    half.tokenizer = adapter.tokenizer
    half.config = adapter.config
    try:
        art = export(half, tgt, work, **opts)  # the loaded profile: a YAML path target works too
    except EdgeLLMError as exc:
        raise _Skip(str(exc)) from exc
    return art, layout, {"cache": cache}


def _lower_static(
    adapter: Any, spec: Any, tgt: Any, ctx: int, work: Path, precision: str
) -> tuple[Any, str, dict[str, Any]]:
    """The ExecuTorch program with its key/value cache as mutable buffers (cache layout ``static``)."""
    from edgellm.export.executorch_static import lower_static
    from edgellm.models.static_cache import static_decoder

    try:
        decoder = static_decoder(adapter, ctx)
        quant = rename_spec(spec, adapter, decoder) if spec is not None else None
        art, extra = lower_static(adapter, decoder, quant, tgt, work, precision)
    except EdgeLLMError as exc:
        raise _Skip(str(exc)) from exc
    return art, "static", extra


def _lower_fused(
    adapter: Any,
    step: Any,
    dims: Any,
    spec: Any,
    tgt: Any,
    ctx: int,
    work: Path,
    cache: dict[str, Any],
    accuracy_level: int,
) -> tuple[Any, str, dict[str, Any]]:
    """The fused ONNX Runtime graph (:mod:`edgellm.export.decoder_graph`) with a shared cache buffer."""
    from edgellm.export.decoder_graph import FAMILIES, build_decoder_graph, save_decoder_graph
    from edgellm.runtime.artifact import Artifact, model_fields, write_manifest
    from edgellm.utils.specs import TensorSpec

    if adapter.family not in FAMILIES:
        raise _Skip(f"no fused graph for the {adapter.family} family")
    work.mkdir(parents=True)
    try:
        model = build_decoder_graph(
            adapter, spec, context=ctx, accuracy_level=accuracy_level, weights_file=work / "model.weights"
        )
        save_decoder_graph(model, work / "model.onnx")
    except EdgeLLMError as exc:
        raise _Skip(str(exc)) from exc
    if adapter.tokenizer is not None:
        adapter.tokenizer.save_pretrained(work / "tokenizer")
    kv = [1, dims.kv_heads, ctx, dims.head_dim]
    inputs = [
        TensorSpec("input_ids", "int64", ["batch", "new"]),
        TensorSpec("attention_mask", "int64", ["batch", "total"]),
    ]
    inputs += [TensorSpec(n, "float32", kv) for n in cache["past_inputs"]]
    outputs = [TensorSpec("logits", "float32", ["batch", "new", dims.vocab])]
    outputs += [TensorSpec(n, "float32", kv) for n in cache["present_outputs"]]
    meta = {p.key: p.value for p in model.metadata_props}
    graph = {"builder": "edgellm.export.decoder_graph", "accuracy_level": accuracy_level, **meta}
    fields = {
        "model_file": "model.onnx",
        "task": adapter.task,
        "model": model_fields(adapter),
        "target": {"name": tgt.name, "runtime": "onnxruntime", "format": "onnx", "kind": tgt.kind},
        "precision": f"int{spec.bits}" if spec is not None else "fp32",
        "inputs": [t.to_dict() for t in inputs],
        "outputs": [t.to_dict() for t in outputs],
        "recipe": {"quantization": spec.config if spec is not None else None, "graph": graph},
    }
    write_manifest(work, fields)
    cache = {
        **cache,
        "buffer": "past and present share one [1, kv_heads, context, head_dim] buffer per layer",
    }
    return Artifact.load(work), "shared", {"cache": cache, "graph": graph}


def _set_generation(art: Any, gen: dict[str, Any]) -> None:
    _set_generation_file(Path(art.path), gen)
    art.manifest["generation"] = gen


def _set_generation_file(folder: Path, gen: dict[str, Any]) -> None:
    """Add the ``generation`` section to a written manifest (the file hashes it lists stay valid)."""
    from edgellm.runtime.artifact import MANIFEST

    f = folder / MANIFEST
    manifest = json.loads(f.read_text())
    manifest["generation"] = gen
    f.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
