"""``compress --generate``: quantize a decoder once (GPTQ, AWQ, RTN, INT8 dynamic or SmoothQuant), guard its
accuracy, and write the generation artifact lowered from that one QuantSpec.

The guard (``--max-accuracy-drop ppl+5%``, ``top1>=0.9``) is checked on held-out text with the torch
fake-quantized model, which the artifact reproduces token for token (the export checks it); when it fails,
the fallbacks of :func:`~edgellm.pipeline.compress_search.fallbacks` (smaller groups, layers left in fp32)
are tried in order. The report (``OUT.report.json``) records every try, the accuracy, the GPTQ time and
the generation parity.

Example:
    >>> compress_generate("tiny-llama", "w4a16-gptq", "out/tl-gptq", max_accuracy_drop="ppl+10%")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError, OutputExistsError


def compress_generate(
    model: Any,
    config: Any,
    output: str | Path,
    *,
    target: str = "x86-server",
    format: str | None = None,
    calib: str | None = None,
    eval_data: str | None = None,
    max_accuracy_drop: str | None = None,
    context: int | None = None,
    check_tokens: int = 64,
    min_agreement: float = 1.0,
    max_keep: int = 8,
    calib_sequences: int = 64,
    eval_sequences: int = 64,
    force: bool = False,
    log: Any = None,
    gguf: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Quantize ``model`` with ``config`` (a QuantConfig or recipe name), guard, export for generation.

    Returns the report (also written to ``OUT.report.json``)."""
    from edgellm.compress.calibration import corpus_parts, make_batches
    from edgellm.compress.evaluate import evaluate
    from edgellm.compress.guard import parse_guard
    from edgellm.compress.quant import apply_quant, quantize
    from edgellm.compress.quant.config import config_for
    from edgellm.models import ModelAdapter, load
    from edgellm.models.decoder_step import check_cache_family
    from edgellm.pipeline.compress_search import fallbacks
    from edgellm.pipeline.generate_export import export_generate
    from edgellm.runtime import make_runner

    say = log or (lambda _m: None)
    output = Path(output)
    if output.exists() and not force:
        raise OutputExistsError(output)
    adapter = model if isinstance(model, ModelAdapter) else load(model)
    check_cache_family(adapter)
    if isinstance(config, str):
        config = config_for(config)
    guard = parse_guard(max_accuracy_drop, adapter.task)
    train_docs, eval_docs, calib_src, eval_src = corpus_parts(calib, eval_data)
    calib_b = make_batches(adapter, train_docs, calib_src, max_sequences=calib_sequences)
    eval_b = make_batches(adapter, eval_docs, eval_src, max_sequences=eval_sequences) if guard else None
    plan = [("requested", config)] + (fallbacks(config, max_keep) if guard else [])
    tries: list[dict[str, Any]] = []
    chosen = None
    reference = make_runner(adapter, "torch") if guard else None
    for label, cfg in plan:
        say(f"quantizing with {cfg.recipe} ({label})")
        t0 = time.perf_counter()
        spec = quantize(
            adapter, cfg, calib_b.feeds if cfg.needs_calibration else None, calib_info=calib_b.describe()
        )
        row: dict[str, Any] = {
            "label": label,
            "recipe": cfg.recipe,
            "config": cfg.to_dict(),
            "quantize_s": round(time.perf_counter() - t0, 2),
            "kept": sorted(spec.kept),
        }
        if guard is not None:
            fake = make_runner(apply_quant(adapter, spec), "torch")
            acc = evaluate(reference, fake, adapter, eval_b.feeds)
            ok, verdict = guard.check(acc)
            row.update(accuracy=acc, verdict=verdict, passed=ok)
            tries.append(row)
            if not ok:
                continue
        else:
            tries.append(row)
        chosen = (cfg, spec)
        break
    report_path = output.with_name(output.name + ".report.json")
    report: dict[str, Any] = {
        "model": adapter.name,
        "requested": config.recipe,
        "guard": max_accuracy_drop,
        "calibration": calib_b.describe(),
        "tries": tries,
    }
    if chosen is None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        raise EdgeLLMError(
            f"no quantization of '{adapter.name}' meets --max-accuracy-drop {max_accuracy_drop}: "
            + "; ".join(f"{t['recipe']} ({t['label']}): {t.get('verdict')}" for t in tries),
            f"the report is at {report_path}; loosen the guard or try another --recipe",
        )
    cfg, spec = chosen
    manifest = export_generate(
        adapter,
        output,
        target=target,
        format=format,
        spec=spec,
        context=context,
        check_tokens=check_tokens,
        min_agreement=min_agreement,
        force=force,
        log=say,
        gguf=gguf,
    )
    report.update(chosen=cfg.recipe, artifact=str(output), generation=manifest["generation"])
    report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
