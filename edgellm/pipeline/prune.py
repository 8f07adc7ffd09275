"""Prune, recover, and report against the unpruned model in the same run: what ``edgellm compress --prune``
and a recipe's ``prune:`` section run (a workflow across stages: compress, train, export, runtime, bench).

The report holds parameters and FLOPs (torch's FLOP counter on the model's fixed inputs), the file size
and the latency of both models exported for ONNX Runtime (fp32, timed interleaved in one process), and
quality against the unpruned model before and after recovery (MiniLM-style encoders: embedding cosine and
Spearman; causal LMs: perplexity; classifiers: label agreement; plain modules: output cosine).

Recovery (:func:`recover`) is a short distillation fine-tune of the pruned model from the unpruned
teacher, through the training front end (``edgellm.train``): logit KL at a temperature plus the task loss
for a causal LM, cosine to the teacher's sentence embedding for an encoder, and layer-matched hidden-state
MSE (pruning keeps the hidden size, so every student layer has a teacher layer of the same width).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from edgellm.compress.prune import PruneConfig
from edgellm.errors import EdgeLLMError, OutputExistsError
from edgellm.utils.fs import atomic_write_text


def prune_and_report(
    model: Any,
    config: PruneConfig,
    output: str | Path,
    *,
    recover_steps: int = 0,
    recover_lr: float = 2e-4,
    data: str | None = None,
    runs: int = 20,
    force: bool = False,
    log: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Prune ``model`` (name, directory or adapter) as ``config`` says, optionally recover it by
    distillation from the unpruned model, and write the pruned model directory to ``output`` and the
    report to ``<output>.report.json``. Returns the report."""
    from edgellm.bench import p50_side_by_side
    from edgellm.compress.calibration import corpus_parts, make_batches
    from edgellm.compress.evaluate import CachedRunner, accuracy_text, evaluate
    from edgellm.compress.prune import prune_model
    from edgellm.export import export
    from edgellm.models import ModelAdapter, load
    from edgellm.runtime import make_runner

    say = log or (lambda _m: None)
    out = Path(output)
    if out.exists() and not force:
        raise OutputExistsError(out)
    t0 = time.perf_counter()
    base = model if isinstance(model, ModelAdapter) else load(model)
    if recover_steps and base.family == "torch":
        raise EdgeLLMError(
            f"recovery distils through the training front end, which trains Hugging Face models; "
            f"'{base.name}' is a plain torch module",
            "drop --recover-steps (or fine-tune the pruned module with your own loop)",
        )
    if base.family == "torch":  # no corpus for a plain module: seeded inputs of its example's shapes
        calib = [base.example_inputs(batch=4, seed=i) for i in range(4)]
        evalb = [base.example_inputs(batch=4, seed=100 + i) for i in range(4)]
        eval_source = "random inputs"
    else:
        train_docs, eval_docs, cs, es = corpus_parts(data, None)
        calib = make_batches(base, train_docs, cs, max_sequences=32).feeds
        evalb = make_batches(base, eval_docs, es, max_sequences=64).feeds
        eval_source = es
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        work = Path(tmp)
        say(f"pruning {base.name}: {_what(config)} (score {config.score}, scope {config.scope})")
        pruned, record = prune_model(base, config, work / "pruned", calib)
        ref = CachedRunner(make_runner(base, "torch"))
        quality = {"pruned": evaluate(ref, make_runner(pruned, "torch"), base, evalb)}
        say(f"  pruned: {accuracy_text(quality['pruned'])}")
        final_dir, final = work / "pruned", pruned
        if recover_steps:
            say(f"recovering: {recover_steps} distillation steps from {base.name}")
            teacher = base.source.get("path") or base.name
            final_dir, _ = recover(
                work / "pruned", teacher, work / "recover", steps=recover_steps, lr=recover_lr, data=data
            )
            final = load(final_dir)
            quality["recovered"] = evaluate(ref, make_runner(final, "torch"), base, evalb)
            say(f"  recovered: {accuracy_text(quality['recovered'])}")
        say("exporting both for ONNX Runtime (fp32) and timing them side by side")
        arts = {
            "unpruned": export(base, "x86-server", work / "onnx-unpruned"),
            "pruned": export(final, "x86-server", work / "onnx-pruned"),
        }
        runners = {k: make_runner(a) for k, a in arts.items()}
        p50, _, b, s = p50_side_by_side(base, runners, "unpruned", runs=runs, progress=progress)
        rec = record.to_dict()
        report = {
            "model": base.name,
            "output": str(out),
            "pruning": rec,
            "params": {
                "unpruned": rec["params_before"],
                "pruned": rec["params_after"],
                "ratio": rec["params_ratio"],
            },
            "flops": {
                "unpruned": rec["flops_before"],
                "pruned": rec["flops_after"],
                "ratio": rec["flops_ratio"],
            },
            "onnx_size_mb": {k: round(a.size_bytes / 1e6, 3) for k, a in arts.items()},
            # each export's own check against its torch model (export() refuses a failing one)
            "onnx_parity": {k: _parity_summary(a.manifest["parity"]) for k, a in arts.items()},
            "latency": {
                "runtime": "onnxruntime (x86-server, fp32)",
                "batch": b,
                "sequence": s,
                "p50_ms": p50,
                "ratio": round(p50["pruned"] / p50["unpruned"], 4),
            },
            "quality": quality,
            "quality_text": {k: accuracy_text(v) for k, v in quality.items()},
            "eval_data": eval_source,
            "recover_steps": recover_steps,
            "elapsed_s": 0.0,
        }
        if out.exists():
            shutil.rmtree(out)
        final_dir.rename(out)
        if (work / "pruned" / "pruning.json").is_file() and not (out / "pruning.json").exists():
            shutil.copy2(work / "pruned" / "pruning.json", out / "pruning.json")
    report["elapsed_s"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(
        out.parent / f"{out.name}.report.json", json.dumps(report, indent=2, default=str) + "\n"
    )
    return report


def _parity_summary(parity: dict[str, Any]) -> dict[str, Any]:
    """An artifact's parity section in three numbers: passed, worst cosine, largest difference."""
    runs = [m for k in ("fixed", "random") for m in parity.get(k, {}).values()]
    return {
        "passed": bool(parity.get("passed")),
        "cosine_min": min((m["cosine_min"] for m in runs), default=None),
        "max_abs": max((m["max_abs"] for m in runs), default=None),
    }


def _what(config: PruneConfig) -> str:
    parts = [
        f"{k} {getattr(config, k):g}" for k in ("heads", "ffn", "blocks", "channels") if getattr(config, k)
    ]
    return ", ".join(parts)


def parse_prune(text: str) -> dict[str, float]:
    """``heads=0.25,ffn=0.5`` -> ``{"heads": 0.25, "ffn": 0.5}`` (keys: heads, ffn, blocks, channels)."""
    out: dict[str, float] = {}
    for item in [p for p in text.replace(" ", "").split(",") if p]:
        key, sep, value = item.partition("=")
        if not sep or key not in ("heads", "ffn", "blocks", "channels"):
            raise EdgeLLMError(
                f"--prune '{text}': '{item}' is not KEY=RATIO with KEY heads, ffn, blocks or channels",
                "write e.g. --prune heads=0.25,ffn=0.25 (transformers) or --prune channels=0.5 (plain modules)",
            )
        try:
            out[key] = float(value)
        except ValueError:
            raise EdgeLLMError(f"--prune {key}={value}: not a number", "give a fraction, e.g. 0.25") from None
    return out


def recover(
    pruned: str | Path,
    teacher: str | Path,
    output: str | Path,
    *,
    steps: int = 100,
    lr: float = 2e-4,
    batch_size: int = 8,
    seq_len: int = 128,
    hidden_mse: float = 1.0,
    data: str | None = None,
    seed: int = 0,
) -> tuple[Path, dict[str, Any]]:
    """Distil ``teacher`` into the pruned model directory; returns (recovered model directory, summary)."""
    from edgellm.train import TrainConfig, train

    cfg = TrainConfig(
        model=str(pruned),
        data=data,
        output=str(output),
        max_steps=steps,
        lr=lr,
        warmup_steps=max(1, steps // 10),
        batch_size=batch_size,
        seq_len=seq_len,
        eval_every=steps,
        eval_batches=4,
        save_every=max(steps, 1),
        progress=False,
        seed=seed,
        distill={"teacher": str(teacher), "temperature": 2.0, "alpha": 0.5, "hidden_mse": hidden_mse},
    )
    summary = train(cfg)
    src = Path(pruned) / "pruning.json"
    if src.is_file():  # the record travels with the model
        (Path(output) / "model" / "pruning.json").write_text(src.read_text())
    return Path(output) / "model", summary
