"""``edgellm export``: lower a model for a target into a validated artifact directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgellm.cli._common import emit_json, kv_table


def export(
    model: Optional[str] = typer.Argument(
        None, help="A bundled model name (minilm, tiny-llama) or a Hugging Face model directory."
    ),
    target: str = typer.Option(
        "x86-server",
        "--target",
        "-t",
        help="Target profile name or YAML path; 'all' for every target the --recipe names (else every profile).",
    ),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="Artifact directory (default: edgellm-out/MODEL-TARGET); with --target all, the parent folder.",
    ),
    fmt: Optional[str] = typer.Option(
        None, "--format", "-f", help="Format to write (default: the target's first format edgellm can write)."
    ),
    precision: str = typer.Option(
        "fp32",
        "--precision",
        "-p",
        help="fp32, fp16, int8 (dynamic activations), int8-static (calibrated; full-integer on TFLite) or "
        "int4 (weight-only); calibrated methods with accuracy guards: 'edgellm compress'.",
    ),
    keep: list[str] = typer.Option(
        [],
        "--keep",
        help="Layer-name pattern left in fp32 when quantizing (repeatable), e.g. '*output.dense'.",
    ),
    calib: Optional[str] = typer.Option(
        None,
        "--calib",
        help="Calibration text/JSONL/directory for int8-static (default: the bundled corpus).",
    ),
    recipe: Optional[Path] = typer.Option(
        None, "--recipe", "-r", help="Recipe YAML whose 'targets' list --target all exports (and 'model')."
    ),
    seq_len: int = typer.Option(128, "--seq-len", min=1, help="Static sequence length of TFLite artifacts."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
    task: Optional[str] = typer.Option(
        None, "--task", help="embedding, causal-lm or classification (default: from the model)."
    ),
    exporter: str = typer.Option("auto", "--exporter", help="ONNX: auto, torchscript or dynamo."),
    opset: int = typer.Option(17, "--opset", min=13, max=23, help="ONNX opset (TorchScript exporter)."),
    optimize: bool = typer.Option(
        True, "--optimize/--no-optimize", help="ONNX: apply ONNX Runtime's transformer fusions."
    ),
    atol: float = typer.Option(1e-3, "--atol", min=0.0, help="Parity: largest absolute error allowed."),
    min_cosine: float = typer.Option(
        0.9999, "--min-cosine", min=-1.0, max=1.0, help="Parity: smallest cosine allowed."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest (or the rows) as JSON."),
    runtimes: str = typer.Option(
        "auto",
        "--runtimes",
        help="Runtimes to validate the artifact in besides its format's own: 'auto' (every one the target "
        "lists for the format that is installed, e.g. OpenVINO for x86-server ONNX), a comma list, or 'none'.",
    ),
    select: bool = typer.Option(
        True,
        "--select/--no-select",
        help="Time the runtimes that pass parity (each in its own process) and record the fastest as the "
        "artifact's preferred runtime (serve and bench use it).",
    ),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="Threads for those timings (default: each runtime's own)."
    ),
    arm64: Optional[str] = typer.Option(
        None,
        "--arm64",
        help="For an arm64 target (a phone), also validate the artifact on arm64 kernels, emulated (qemu-user "
        "in the root sudo scripts/arm64_root.sh builds): 'auto' (when the root is built), 'require' or 'off'. "
        "Default: $EDGELLM_ARM64, else auto.",
        show_default=False,
    ),
    generate: bool = typer.Option(
        False,
        "--generate",
        help="A decoder as a key/value-cache generation artifact (edgellm generate runs it).",
    ),
    context: Optional[int] = typer.Option(
        None,
        "--context",
        min=2,
        help="--generate: positions the cache holds (default: the model's; TFLite 256).",
    ),
    check_tokens: int = typer.Option(
        64,
        "--check-tokens",
        min=1,
        help="--generate: greedy tokens checked against the reference per prompt.",
    ),
    exact: bool = typer.Option(
        False,
        "--exact",
        help="--format gguf: refuse a layer whose quantization has no exact GGUF block (instead of "
        "re-quantizing it and reporting it).",
    ),
) -> None:
    """Export MODEL for a target, validate it against torch, and write an artifact with manifest.json.

    Example: edgellm export minilm --target x86-server -o edgellm-out/minilm-onnx --force

    Example: edgellm export minilm --target x86-server --format openvino --precision int8 -o edgellm-out/minilm-ov

    Example: edgellm export minilm --target snapdragon-865 --precision fp16 -o edgellm-out/minilm-tflite

    Example: edgellm export tiny-llama --target snapdragon-865 --format ort --precision int8

    Example: edgellm export minilm --target snapdragon-865 --precision int8 --arm64 require

    Example: edgellm export minilm --target all --precision int8 -o edgellm-out/all

    Example: edgellm export tiny-llama --generate --target all --format gguf --precision int4 -o edgellm-out/gguf

    Example: edgellm export tiny-llama --generate --precision int4 -o edgellm-out/tl-gen-int4
    """
    from edgellm.errors import EdgeLLMError
    from edgellm.export import Tolerance
    from edgellm.models import load
    from edgellm.pipeline.export_many import check_precision, export_at, export_many
    from edgellm.targets import list_targets

    if generate or fmt == "gguf":  # a GGUF file is a generation artifact
        from edgellm.cli.generate import print_generation
        from edgellm.pipeline.generate_export import export_generate

        if model is None:
            raise EdgeLLMError("no model given", "pass MODEL, e.g. edgellm export tiny-llama --generate")
        if precision not in ("fp32", "fp16", "int8", "int4"):
            raise EdgeLLMError(
                f"--generate takes precision fp32, fp16, int8 or int4, not '{precision}'",
                "for calibrated methods use: edgellm compress MODEL --generate --recipe w4a16-gptq",
            )
        if target == "all":
            from edgellm.pipeline.generate_many import export_generate_many

            rows = export_generate_many(
                load(model, task=task),
                list(list_targets()),
                precision=precision,
                output_dir=output or Path("edgellm-out"),
                fmt=fmt,
                keep=tuple(keep),
                context=context,
                check_tokens=check_tokens,
                force=force,
            )
            _rows_table(rows, json_out)
            if all(r.error for r in rows):
                raise EdgeLLMError("no target could be exported", "see the errors in the table above")
            return
        out = output or Path("edgellm-out") / f"{Path(model).name}-gen-{precision}"
        m = export_generate(
            load(model, task=task),
            out,
            target=target,
            format=fmt,
            precision=precision,
            keep=tuple(keep),
            context=context,
            check_tokens=check_tokens,
            force=force,
            gguf={"exact": True} if exact else None,
        )
        if json_out:
            emit_json(m)
        else:
            print_generation(out, m)
        return
    check_precision(precision)
    targets: list[str] | None = None
    if recipe is not None:
        from edgellm.pipeline.compress_recipe import load_recipe

        r = load_recipe(recipe)
        model = model or r.model
        targets = r.targets or ([r.target] if r.target else None)
    if model is None:
        raise EdgeLLMError("no model given", "pass MODEL (e.g. minilm) or set 'model' in the --recipe YAML")
    tolerance = Tolerance(max_abs=atol, min_cosine=min_cosine)
    onnx_opts = {"exporter": exporter, "opset": opset, "optimize": optimize, "seq_len": seq_len}
    onnx_opts.update(
        runtimes=None if runtimes == "none" else runtimes, select_runtime=select, threads=threads
    )
    if arm64 is not None:
        from edgellm.export.arm64 import resolve_mode

        onnx_opts["arm64"] = resolve_mode(arm64)  # a wrong value fails before any work
    if target == "all":
        rows = export_many(
            load(model, task=task),
            targets or list(list_targets()),
            precision=precision,
            output_dir=output or Path("edgellm-out"),
            fmt=fmt,
            keep=tuple(keep),
            calib=calib,
            force=force,
            tolerance=tolerance,
            **onnx_opts,
        )
        _rows_table(rows, json_out)
        if all(r.error for r in rows):
            raise EdgeLLMError("no target could be exported", "see the errors in the table above")
        return
    art = export_at(
        load(model, task=task),
        target,
        output,
        precision=precision,
        fmt=fmt,
        keep=tuple(keep),
        calib=calib,
        force=force,
        tolerance=tolerance,
        **onnx_opts,
    )
    m = art.manifest
    if json_out:
        emit_json(m)
        return
    rec = m["recipe"]
    rows = [
        ("artifact", art.path),
        (
            "target",
            f"{m['target']['name']} ({m['target']['runtime']}, {m['target']['format']}, {m['precision']})",
        ),
        (
            "model",
            f"{m['model']['name']} [{m['model']['family']}, {m['task']}], {m['model']['num_parameters']:,} params",
        ),
    ]
    if "tflite" in rec:
        t = rec["tflite"]
        shapes = ", ".join(f"{k}{v['shape']}" for k, v in t["file_inputs"].items())
        rows += [
            ("converter", f"litert-torch ({t['mode']}), file inputs {shapes}"),
            (
                "ops",
                ", ".join(f"{k}x{v}" for k, v in list(t["ops"].items())[:8])
                + (" ..." if len(t["ops"]) > 8 else ""),
            ),
            ("XNNPACK fallback", ", ".join(t["xnnpack_fallback_ops"]) or "none"),
        ]
    else:
        fusion = rec.get("fusion", {})
        fused = (
            ", ".join(f"{k}x{v}" for k, v in fusion.get("ops", {}).items())
            if fusion.get("applied")
            else (fusion.get("reason", "none"))
        )
        rows += [("exporter", f"{rec['exporter']} (opset {rec['opset']})"), ("fusions", fused)]
    if "tensorrt" in rec:
        rows.append(("engine", f"{rec['tensorrt']['engine']}: {rec['tensorrt']['build_script']}"))
    rows.append(("size", f"{art.size_bytes / 2**20:.1f} MB"))
    for suite in ("fixed", "random"):
        for name, v in m["parity"][suite].items():
            rows.append(
                (f"parity {suite} {name}", f"max_abs={v['max_abs']:.2e} cosine_min={v['cosine_min']:.6f}")
            )
    rows += arm64_rows(m)
    rows += runtime_rows(m)
    kv_table("export", rows)


def arm64_rows(m: dict) -> list[tuple[str, str]]:
    """The manifest's ``parity.arm64``: the emulated CPU and kernels, the figures, or why it was skipped."""
    sec = m.get("parity", {}).get("arm64")
    if not sec:
        return []
    if "skipped" in sec:
        return [("parity arm64", f"not checked: {sec['skipped']}")]
    rows = [
        (
            "parity arm64",
            f"{sec['runtime']} {sec.get('runtime_version') or ''} on {sec['cpu']} "
            f"({sec['emulator']}), {sec.get('kernels')} kernels",
        )
    ]
    for suite in ("fixed", "random"):
        for name, v in sec[suite].items():
            rows.append(
                (f"arm64 {suite} {name}", f"max_abs={v['max_abs']:.2e} cosine_min={v['cosine_min']:.6f}")
            )
    for name, v in sec.get("vs_fp32", {}).get("fixed", {}).items():
        rows.append((f"arm64 vs fp32 {name}", f"cosine_min={v['cosine_min']:.6f} (fixed sentences)"))
    return rows


def runtime_rows(m: dict) -> list[tuple[str, str]]:
    """One row per runtime candidate of the manifest's ``runtimes`` section, and the preferred one."""
    sec = m.get("runtimes")
    if not sec:
        return []
    rows = []
    for c in sec["candidates"]:
        if not c.get("passed"):
            rows.append((f"runtime {c['name']}", f"[red]not used: {c.get('error', 'failed')}[/red]"))
            continue
        cos = min(v["cosine_min"] for s in c["parity"].values() for v in s.values())
        lat = f", p50 {c['latency']['p50_ms']:.1f} ms" if "latency" in c else ""
        rows.append((f"runtime {c['name']}", f"parity cosine_min={cos:.6f}{lat}"))
    p = sec["preferred"]
    how = f" ({p['speedup']:.2f}x {p['baseline']})" if "speedup" in p else ""
    meas = sec.get("measured")
    at = f" at batch {meas['batch']}, sequence {meas['sequence']}" if meas else ""
    rows.append(("preferred runtime", f"{p['name']}{how}{at}"))
    return rows


def _rows_table(rows: list, json_out: bool) -> None:
    from rich.table import Table

    from edgellm.cli._common import console

    if json_out:
        emit_json([r.to_dict() for r in rows])
        return
    t = Table(title="export --target all")
    for col in ("target", "format", "precision", "size MB", "parity cosine_min", "artifact / error"):
        t.add_column(col)
    for r in rows:
        cos = min((v["cosine_min"] for s in r.parity.values() for v in s.values()), default=None)
        t.add_row(
            r.target,
            r.format or "-",
            r.precision,
            f"{r.size_mb:.1f}" if r.size_mb is not None else "-",
            f"{cos:.6f}" if cos is not None else "-",
            str(r.path) if r.path else f"[red]{r.error}[/red]",
        )
    console().print(t)
