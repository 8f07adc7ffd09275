"""``edgellm export``: lower a model for a target into a validated artifact directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgellm.cli._common import emit_json, kv_table


def export(
    model: str = typer.Argument(..., help="A bundled model name (minilm) or a Hugging Face model directory."),
    target: str = typer.Option("x86-server", "--target", "-t", help="Target profile name or YAML path."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Artifact directory (default: edgellm-out/MODEL-TARGET)."
    ),
    fmt: Optional[str] = typer.Option(
        None, "--format", "-f", help="Format to write (default: the target's first format edgellm can write)."
    ),
    precision: str = typer.Option(
        "fp32",
        "--precision",
        "-p",
        help="fp32, int8 (dynamic) or int4 (RTN, group 128); see 'edgellm compress'.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
    task: Optional[str] = typer.Option(
        None, "--task", help="embedding or causal-lm (default: from the model)."
    ),
    exporter: str = typer.Option("auto", "--exporter", help="auto, torchscript or dynamo."),
    opset: int = typer.Option(17, "--opset", min=13, max=23, help="ONNX opset (TorchScript exporter)."),
    optimize: bool = typer.Option(
        True, "--optimize/--no-optimize", help="Apply ONNX Runtime's transformer fusions."
    ),
    atol: float = typer.Option(1e-3, "--atol", min=0.0, help="Parity: largest absolute error allowed."),
    min_cosine: float = typer.Option(
        0.9999, "--min-cosine", min=-1.0, max=1.0, help="Parity: smallest cosine allowed."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Export MODEL for a target, validate it against torch, and write an artifact with manifest.json.

    Example: edgellm export minilm --target x86-server -o edgellm-out/minilm-onnx --force

    Example: edgellm export minilm --target snapdragon-865 --format ort --precision int8 -o edgellm-out/minilm-ort
    """
    from edgellm.errors import EdgeLLMError
    from edgellm.export import Tolerance
    from edgellm.export import export as do_export
    from edgellm.models import load

    if precision not in ("fp32", "int8", "int4"):
        raise EdgeLLMError(f"unknown precision '{precision}'", "use fp32, int8 or int4")
    adapter = load(model, task=task)
    spec = None
    if precision != "fp32":
        from edgellm.compress.quant import Int4WeightOnly, Int8Dynamic, quantize

        # the quick path without calibration; calibrated methods and accuracy reports: edgellm compress
        spec = quantize(adapter, Int8Dynamic() if precision == "int8" else Int4WeightOnly(group_size=128))
    art = do_export(
        adapter,
        target,
        output,
        force=force,
        tolerance=Tolerance(max_abs=atol, min_cosine=min_cosine) if spec is None else None,
        exporter=exporter,
        format=fmt,
        quant=spec,
        opset=opset,
        optimize=optimize,
    )
    m = art.manifest
    if json_out:
        emit_json(m)
        return
    fusion = m["recipe"]["fusion"]
    fused = (
        ", ".join(f"{k}x{v}" for k, v in fusion.get("ops", {}).items())
        if fusion.get("applied")
        else (fusion.get("reason", "none"))
    )
    rows = [
        ("artifact", art.path),
        ("target", f"{m['target']['name']} ({m['target']['runtime']}, {m['precision']})"),
        (
            "model",
            f"{m['model']['name']} [{m['model']['family']}, {m['task']}], {m['model']['num_parameters']:,} params",
        ),
        ("exporter", f"{m['recipe']['exporter']} (opset {m['recipe']['opset']})"),
        ("fusions", fused),
        ("size", f"{art.size_bytes / 2**20:.1f} MB"),
    ]
    for suite in ("fixed", "random"):
        for name, v in m["parity"][suite].items():
            rows.append(
                (f"parity {suite} {name}", f"max_abs={v['max_abs']:.2e} cosine_min={v['cosine_min']:.6f}")
            )
    kv_table("export", rows)
