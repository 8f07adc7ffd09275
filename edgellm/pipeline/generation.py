"""Split generation across stages. :func:`export_generation` cuts a decoder into cached step graphs
(:mod:`edgellm.models.decoder_step`), exports both halves and checks the chain's greedy tokens in their
runtimes; :func:`bench_generation` times concurrent phones
(:class:`~edgellm.split.generation_client.GenerationClient`) against a running ``edgellm serve``.

Example:
    >>> info = export_generation("tiny-llama", 2, "out/tl-gen")                         # doctest: +SKIP
    >>> bench_generation("out/tl-gen", "http://127.0.0.1:8000", [1, 4], tokens=32)      # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.partition.wire import GenerationError
from edgellm.split.generation_client import GenerationClient


def export_generation(
    model: Any,
    layers: int,
    output: str | Path,
    *,
    codec: str = "fp16",
    device: str = "snapdragon-865",
    server: str = "x86-server",
    device_format: str = "ort",
    device_cache: int = 256,
    check_tokens: int = 16,
    device_precision: str = "fp32",
    server_precision: str = "fp32",
    recipe: str | None = None,
    group_size: int | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Export a decoder cut after ``layers`` layers for split generation: ``OUT/device`` (the phone's
    format: ORT-mobile by default, prefill and decode from one file; ``tflite``: a slot graph with a
    fixed cache of ``device_cache`` positions), ``OUT/server`` (ONNX Runtime) and ``OUT/tokenizer``. The
    chain is checked: ``check_tokens`` greedy tokens through both artifacts with the codec must equal the
    unsplit model's, else nothing is written.

    Each half has its own precision (``device_precision`` / ``server_precision``: fp32, int8 or int4;
    ``recipe`` names the method of the quantized halves, e.g. ``w4a16-gptq``): the model is quantized once
    per method, each half lowers its own layers, and the chain is then checked against the torch model
    with exactly those layers fake-quantized."""
    import hashlib

    from edgellm.export import export
    from edgellm.models import ModelAdapter, load
    from edgellm.models.decoder_step import (
        cache_halves,
        reference_greedy,
        slot_adapter,
        step_adapter,
        step_names,
    )
    from edgellm.runtime import make_runner
    from edgellm.runtime.codecs import Codec
    from edgellm.split.stepper import greedy_split
    from edgellm.utils.fs import atomic_dir

    adapter = model if isinstance(model, ModelAdapter) else load(model)
    if codec not in ("fp16", "int8", "fp32"):
        raise EdgeLLMError(f"codec '{codec}' is not one split generation carries", "use fp16, int8 or fp32")
    if device_format not in ("ort", "tflite"):
        raise EdgeLLMError(
            f"device format '{device_format}' cannot hold a generation cache", "use ort or tflite"
        )
    halves = cache_halves(adapter, layers)
    slots = device_cache if device_format == "tflite" else None
    specs = _half_specs(
        adapter, halves, {"device": device_precision, "server": server_precision}, recipe, group_size
    )
    plan_id = hashlib.sha256(json.dumps([adapter.source.get("sha256"), layers, codec]).encode()).hexdigest()[
        :16
    ]
    common = {
        "plan_id": plan_id,
        "layers_on_device": layers,
        "codec": codec,
        "kv_heads": halves.kv_heads,
        "head_dim": halves.head_dim,
        "hidden_size": halves.hidden_size,
        "vocab": halves.vocab,
        "eos_token_id": getattr(adapter.tokenizer, "eos_token_id", None),
        "server_model": f"{adapter.name}-gen-server",
        "device_cache": {"kind": "slots", "slots": slots} if slots else {"kind": "dynamic"},
        "context": halves.dims.context
        or int(getattr(adapter.config, "max_position_embeddings", 0) or 0)
        or None,
        "precision": {r: (f"int{sp.bits}" if sp is not None else "fp32") for r, sp in specs.items()},
        "parent": {"name": adapter.name, "sha256": adapter.source.get("sha256")},
    }
    with atomic_dir(output, force=force) as tmp:
        arts = {}
        for role, target, fmt in (("device", device, device_format), ("server", server, None)):
            half = halves.device if role == "device" else halves.server
            ins, outs = step_names(half, role)
            extra = {
                "generation": {**common, "role": role, "past_inputs": ins[3:], "present_outputs": outs[1:]}
            }
            name = f"{adapter.name}-gen-{role}"
            half_adapter = (
                slot_adapter(halves, name, slots)
                if role == "device" and slots
                else step_adapter(halves, role, name)
            )
            opts: dict[str, Any] = {"format": fmt} if fmt else {}
            if specs[role] is not None:
                from edgellm.pipeline.generate_export import rename_spec

                opts["quant"] = rename_spec(specs[role], adapter, half_adapter.module)
            arts[role] = export(half_adapter, target, tmp / role, manifest_extra=extra, **opts)
        if adapter.tokenizer is not None:
            adapter.tokenizer.save_pretrained(tmp / "tokenizer")
        runners = {r: make_runner(a) for r, a in arts.items()}
        prompt = list(adapter.fixed_inputs()["input_ids"][0][:8])
        ref = adapter
        quantized = [sp for sp in specs.values() if sp is not None]
        if quantized:
            import dataclasses

            from edgellm.compress.quant import apply_quant

            both = {n: lq for sp in quantized for n, lq in sp.layers.items()}
            ref = apply_quant(adapter, dataclasses.replace(quantized[0], layers=both))
        want = reference_greedy(ref, [int(t) for t in prompt], check_tokens)
        got = greedy_split(
            runners["device"].run,
            runners["server"].run,
            halves,
            [int(t) for t in prompt],
            check_tokens,
            Codec(codec),
            slots=slots,
        )
        agree = float(np.mean([a == b for a, b in zip(got, want)]))
        check = {
            "tokens": check_tokens,
            "agreement": agree,
            "codec": codec,
            "reference": "unsplit model"
            + (" with the halves' layers fake-quantized" if ref is not adapter else ""),
        }
        if got != want and codec != "int8":
            from edgellm.pipeline.generate_export import (
                TIE,
                TIE_INT8_ACTIVATIONS,
                _int8_activations,
                divergences,
            )

            div = divergences(ref.module.lm, [[int(t) for t in prompt]], [got], [want])
            tie = TIE_INT8_ACTIVATIONS if any(_int8_activations(sp) for sp in specs.values()) else TIE
            check["first_divergences"] = div
            check["equal_up_to_ties"] = all(abs(d["margin"]) <= tie * max(1.0, d["scale"]) for d in div)
        if got != want and codec != "int8" and not check.get("equal_up_to_ties"):
            raise EdgeLLMError(
                f"greedy tokens through the exported halves agree {agree:.0%} with the unsplit model's",
                "report it with the model; try codec fp32 to rule out the codec",
            )
        (tmp / "generation.json").write_text(json.dumps({**common, "check": check}, indent=2) + "\n")
    return {**common, "check": check, "output": str(output)}


def _half_specs(
    adapter: Any, halves: Any, precision: dict[str, str], recipe: str | None, group_size: int | None
) -> dict[str, Any]:
    """Per half, a QuantSpec of only that half's layers (None for fp32); one quantization per method."""
    from edgellm.pipeline.generate_export import _quantize, quant_config

    for role, p in precision.items():
        if p not in ("fp32", "int8", "int4"):
            raise EdgeLLMError(
                f"--{role}-precision '{p}' is not one a generation half takes", "use fp32, int8 or int4"
            )
    cache: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for role, p in precision.items():
        if p == "fp32":
            out[role] = None
            continue
        cfg = quant_config(p, recipe if recipe and _bits(recipe) == p else None, group_size, ())
        key = repr(cfg)
        if key not in cache:
            cache[key] = _quantize(adapter, cfg, None)
        spec = cache[key]
        half = halves.device if role == "device" else halves.server
        mine = {id(m) for m in half.modules()}
        layers = {n: lq for n, lq in spec.layers.items() if id(adapter.submodule(n)) in mine}
        import dataclasses

        out[role] = dataclasses.replace(spec, layers=layers) if layers else None
    return out


def _bits(recipe: str) -> str:
    return "int4" if recipe.startswith("w4") else "int8"


def bench_generation(
    folder: str | Path,
    server_url: str,
    sessions: list[int],
    *,
    tokens: int = 32,
    prompts: list[str] | None = None,
    codec: str | None = None,
) -> list[dict[str, Any]]:
    """For each count of concurrent sessions (one phone each, in threads here): time to first token
    and tokens/s per session (median over sessions) and in aggregate (all tokens over the wall time)."""
    import threading

    from edgellm.data.corpus import pydoc_topics, sentences

    texts = prompts or sentences(pydoc_topics()[:20])[:64]
    rows = []
    for n in sessions:
        clients = [GenerationClient(folder, server_url, codec=codec) for _ in range(n)]
        results: list[dict[str, Any] | None] = [None] * n
        errors: list[str] = []

        def run(i: int, clients=clients, results=results, errors=errors) -> None:
            c = clients[i]
            try:
                ms = [t["ms"] for t in c.generate(c.encode(texts[i % len(texts)]), tokens, stop_at_eos=False)]
                results[i] = {"ttft_ms": ms[0], "tok_s": 1000.0 * (len(ms) - 1) / max(sum(ms[1:]), 1e-9)}
            except (GenerationError, EdgeLLMError) as exc:
                errors.append(str(exc))
            finally:
                c.close()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        ok = [r for r in results if r is not None]
        rows.append(
            {
                "sessions": n,
                "completed": len(ok),
                "refused": errors[:3],
                "ttft_ms_p50": round(float(np.median([r["ttft_ms"] for r in ok])), 2) if ok else None,
                "tok_s_per_session_p50": round(float(np.median([r["tok_s"] for r in ok])), 2) if ok else None,
                "tok_s_aggregate": round(len(ok) * tokens / wall, 2),
                "wall_s": round(wall, 3),
            }
        )
    return rows
