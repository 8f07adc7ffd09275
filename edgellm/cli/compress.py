"""``edgellm compress``: INT8/INT4 quantization with accuracy and speed reports and guards, and structured
pruning (``--prune``) with recovery and a report against the unpruned model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from edgellm.cli._common import console, emit_json

# Written out so that `edgellm --help` imports no torch (edgellm.compress.quant does); a test keeps it
# equal to edgellm.compress.quant.RECIPES.
RECIPE_NAMES = "int8-dynamic | int8-static | int8-smoothquant | int8-static-ov | w8a16-rtn | w4a16-rtn | w4a16-gptq | w4a16-awq | auto"


def compress(
    model: Optional[str] = typer.Argument(
        None, help="Bundled model name or model directory (or set in --recipe YAML)."
    ),
    recipe: str = typer.Option(
        "int8-dynamic", "--recipe", "-r", help=f"{RECIPE_NAMES}, or a recipe YAML file."
    ),
    precision: Optional[str] = typer.Option(
        None,
        "--precision",
        help="auto: build the INT8/INT4 candidates, keep the fastest that meets the guard.",
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Artifact directory (report: OUT.report.json)."
    ),
    target: str = typer.Option("x86-server", "--target", "-t", help="Target profile."),
    group_size: Optional[int] = typer.Option(
        None, "--group-size", "-g", help="INT4 group size (32, 64, 128)."
    ),
    asymmetric: bool = typer.Option(False, "--asymmetric", help="INT4 with a zero point per group."),
    calibration: Optional[str] = typer.Option(
        None, "--calibration", help="int8-static: minmax, percentile, entropy."
    ),
    alpha: Optional[float] = typer.Option(
        None, "--smoothquant-alpha", help="int8-static: SmoothQuant alpha."
    ),
    keep: list[str] = typer.Option(
        [], "--keep", "-k", help="Layer pattern left in fp32 (repeatable), e.g. lm_head."
    ),
    auto_keep: int = typer.Option(0, "--auto-keep", min=0, help="Leave the N most sensitive layers in fp32."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Calibration text: .txt, .jsonl or directory."),
    eval_data: Optional[str] = typer.Option(
        None, "--eval", help="Evaluation text (default: held-out bundled corpus)."
    ),
    max_drop: Optional[str] = typer.Option(
        None, "--max-accuracy-drop", help="Guard: cosine>=0.99, ppl+3%, or 0.01."
    ),
    runs: int = typer.Option(20, "--runs", "-n", min=1, help="Timed rounds for the latency comparison."),
    max_keep: int = typer.Option(8, "--max-keep", min=1, help="Guard fallback: keep up to N layers in fp32."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    prune: Optional[str] = typer.Option(
        None,
        "--prune",
        help="Structured pruning instead of quantization: heads=0.25,ffn=0.25,blocks=0.1 (transformers) or "
        "channels=0.5 (plain torch modules, through the dependency graph).",
    ),
    prune_score: str = typer.Option("l2", "--prune-score", help="Importance: l1, l2, taylor, wanda."),
    prune_scope: str = typer.Option(
        "layer", "--prune-scope", help="layer: the same fraction per layer; global: ranked across layers."
    ),
    multiple_of: int = typer.Option(
        1, "--multiple-of", min=1, help="Keep pruned widths multiples of N (8, 16)."
    ),
    recover_steps: int = typer.Option(
        0, "--recover-steps", min=0, help="Distillation steps from the unpruned model after pruning."
    ),
    recover_lr: float = typer.Option(2e-4, "--recover-lr", help="Learning rate of the recovery."),
    generate: bool = typer.Option(
        False, "--generate", help="Write a key/value-cache generation artifact (edgellm generate runs it)."
    ),
    fmt: Optional[str] = typer.Option(
        None, "--format", "-f", help="--generate: onnx, ort, tflite or tensorrt."
    ),
    context: Optional[int] = typer.Option(
        None, "--context", min=2, help="--generate: positions the cache holds (default: the model's)."
    ),
    exact: bool = typer.Option(
        False,
        "--exact",
        help="--format gguf: refuse layers with no exact GGUF block instead of re-quantizing.",
    ),
) -> None:
    """Quantize MODEL once (INT8 or INT4), lower it for the target, and report accuracy and speed vs fp32.

    Example: edgellm compress minilm --recipe int8-static --max-accuracy-drop cosine>=0.99 -o edgellm-out/minilm-int8

    Example: edgellm compress tiny-llama --recipe w4a16-gptq --group-size 128 --max-accuracy-drop ppl+5% -o out/tl-int4

    Generation: edgellm compress tiny-llama --generate --recipe w4a16-gptq --group-size 32 -o out/tl-gen-gptq

    Pruning: edgellm compress minilm --prune heads=0.25,ffn=0.25 --prune-score wanda --recover-steps 100 -o out/minilm-p25
    (then quantize the pruned directory: edgellm compress out/minilm-p25 --recipe int8-static)
    """
    if prune is not None:
        _prune(
            model,
            prune,
            prune_score,
            prune_scope,
            multiple_of,
            recover_steps,
            recover_lr,
            output,
            calib,
            runs,
            force,
            json_out,
        )
        return
    from edgellm.compress.quant.config import config_for
    from edgellm.errors import EdgeLLMError
    from edgellm.pipeline.compress_recipe import load_recipe
    from edgellm.pipeline.compress_search import compress as run

    if precision is not None:
        if precision != "auto":
            raise EdgeLLMError(
                f"--precision '{precision}' is not supported", "use --precision auto, or a --recipe"
            )
        recipe = "auto"
    opts: dict[str, Any] = {}
    if recipe.endswith((".yaml", ".yml")):
        r = load_recipe(recipe)
        model = model or r.model
        if r.quantization is None:
            raise EdgeLLMError(
                f"recipe {recipe} has no 'quantization' section", "add quantization: {recipe: ...}"
            )
        recipe, opts = r.quantization.recipe, dict(r.quantization.options)
        output = output or (Path(r.output) if r.output else None)
        target, calib, eval_data = r.target or target, calib or r.data.calib, eval_data or r.data.eval
        max_drop = max_drop or r.max_accuracy_drop
    if model is None:
        raise EdgeLLMError("no model given", "pass MODEL (e.g. minilm) or set 'model' in the recipe YAML")
    for key, value in (
        ("group_size", group_size),
        ("calibration", calibration),
        ("smoothquant_alpha", alpha),
    ):
        if value is not None:
            opts[key] = value
    if asymmetric:
        opts["symmetric"] = False
    if keep:
        opts["keep"] = tuple(keep)
    if auto_keep:
        opts["auto_keep"] = auto_keep
    if generate and fmt == "gguf" and recipe.startswith("w4a16"):  # GGUF's Q4_0/Q4_1 blocks, exactly
        opts.setdefault("group_size", 32)
        opts.setdefault("scale_dtype", "float16")
        opts.setdefault("full_range", opts.get("symmetric", True))
    config: Any = "auto" if recipe == "auto" else config_for(recipe, **opts)
    if generate:
        _generate(
            model,
            recipe,
            config,
            output,
            target,
            fmt,
            calib,
            eval_data,
            max_drop,
            context,
            force,
            json_out,
            exact,
        )
        return
    if recipe == "auto" and opts:
        raise EdgeLLMError("--recipe auto takes no method options", "drop --group-size/--calibration/...")
    out = output or Path("edgellm-out") / f"{Path(model).name}-{recipe}"
    c = console()
    res = run(
        model,
        config,
        target=target,
        output=out,
        calib=calib,
        eval_data=eval_data,
        max_accuracy_drop=max_drop,
        force=force,
        runs=runs,
        progress=not json_out,
        log=None if json_out else lambda m: c.print(m),
    )
    if json_out:
        emit_json(res.report)
        return
    print_report(res.report)
    c.print(f"artifact: {res.artifact.path}  report: {res.report_path}")


def _generate(
    model: str,
    recipe: str,
    config: Any,
    output: Optional[Path],
    target: str,
    fmt: Optional[str],
    calib: Optional[str],
    eval_data: Optional[str],
    max_drop: Optional[str],
    context: Optional[int],
    force: bool,
    json_out: bool,
    exact: bool = False,
) -> None:
    from edgellm.cli.generate import print_generation
    from edgellm.errors import EdgeLLMError
    from edgellm.pipeline.compress_generate import compress_generate

    if recipe == "auto":
        raise EdgeLLMError("--generate needs one --recipe", "e.g. --recipe w4a16-gptq or int8-dynamic")
    out = output or Path("edgellm-out") / f"{Path(model).name}-gen-{recipe}"
    c = console()
    rep = compress_generate(
        model,
        config,
        out,
        target=target,
        format=fmt,
        calib=calib,
        eval_data=eval_data,
        max_accuracy_drop=max_drop,
        context=context,
        force=force,
        log=None if json_out else lambda m: c.print(m, markup=False),
        gguf={"exact": True} if exact else None,
    )
    if json_out:
        emit_json(rep)
        return
    from edgellm.runtime.artifact import Artifact

    print_generation(out, Artifact.load(out).manifest, tries=rep["tries"])
    c.print(f"artifact: {out}  report: {out}.report.json", markup=False)


def _prune(
    model: Optional[str],
    spec: str,
    score: str,
    scope: str,
    multiple_of: int,
    recover_steps: int,
    recover_lr: float,
    output: Optional[Path],
    data: Optional[str],
    runs: int,
    force: bool,
    json_out: bool,
) -> None:
    from edgellm.compress.prune import PruneConfig
    from edgellm.errors import EdgeLLMError
    from edgellm.pipeline.prune import parse_prune, prune_and_report

    if model is None:
        raise EdgeLLMError("no model given", "pass MODEL, e.g. edgellm compress minilm --prune heads=0.25")
    config = PruneConfig(**parse_prune(spec), score=score, scope=scope, multiple_of=multiple_of)  # type: ignore[arg-type]
    out = output or Path("edgellm-out") / f"{Path(model).name}-pruned"
    c = console()
    rep = prune_and_report(
        model,
        config,
        out,
        recover_steps=recover_steps,
        recover_lr=recover_lr,
        data=data,
        runs=runs,
        force=force,
        log=None if json_out else lambda m: c.print(m, markup=False),
        progress=not json_out,
    )
    if json_out:
        emit_json(rep)
        return
    print_prune_report(rep)
    c.print(f"pruned model: {rep['output']}  report: {rep['output']}.report.json", markup=False)


def print_prune_report(rep: dict[str, Any]) -> None:
    from rich.table import Table

    cfg = rep["pruning"]["config"]
    what = ", ".join(f"{k} {cfg[k]:g}" for k in ("heads", "ffn", "blocks", "channels") if cfg.get(k))
    t = Table(title=f"prune {rep['model']}: {what} (score {cfg['score']}, scope {cfg['scope']})")
    for col in (
        "model",
        "parameters",
        "GFLOPs",
        "ONNX MB",
        f"p50 ms (b{rep['latency']['batch']})",
        "quality vs unpruned",
    ):
        t.add_column(col)
    lat = rep["latency"]["p50_ms"]
    t.add_row(
        "unpruned",
        f"{rep['params']['unpruned']:,}",
        f"{rep['flops']['unpruned'] / 1e9:.3f}",
        f"{rep['onnx_size_mb']['unpruned']:.1f}",
        f"{lat['unpruned']:.2f}",
        "reference",
    )
    for k, text in rep["quality_text"].items():
        last = k == list(rep["quality_text"])[-1]
        t.add_row(
            k,
            f"{rep['params']['pruned']:,} ({rep['params']['ratio']:.3f})" if last else "",
            f"{rep['flops']['pruned'] / 1e9:.3f} ({rep['flops']['ratio']:.3f})" if last else "",
            f"{rep['onnx_size_mb']['pruned']:.1f}" if last else "",
            f"{lat['pruned']:.2f} ({rep['latency']['ratio']:.2f}x)" if last else "",
            text,
        )
    console().print(t)


def print_report(rep: dict[str, Any]) -> None:
    from rich.table import Table

    from edgellm.compress.evaluate import accuracy_text

    t = Table(title=f"compress {rep['model']} for {rep['target']} (guard: {rep['guard'] or 'none'})")
    for col in ("try", "recipe", "accuracy", "kept fp32", "size MB", "p50 ms", "vs fp32", "verdict"):
        t.add_column(col)
    t.add_row(
        "fp32",
        "-",
        "reference",
        "-",
        f"{rep['fp32']['size_mb']:.1f}",
        f"{rep['fp32']['p50_ms']:.1f}",
        "1.00",
        "",
    )
    for row in rep["tries"]:
        sp = rep["speed"].get(row["recipe"]) if row["ok"] else None
        t.add_row(
            row["try"],
            row["recipe"],
            accuracy_text(row["accuracy"]),
            str(len(row["kept_fp32"])),
            f"{row['size_mb']:.1f}" if row["size_mb"] else "-",
            f"{sp['p50_ms']:.1f}" if sp else "-",
            f"{sp['ratio_vs_fp32']:.2f}" if sp else "-",
            row["verdict"] or (row["error"] or ""),
        )
    c = console()
    c.print(t)
    for w in rep.get("warnings", []):
        c.print(f"[yellow]warning:[/] {w}")
