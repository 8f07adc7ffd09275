"""``edgellm export MODEL --generate --target all``: one generation artifact per target, one quantization
per distinct recipe (GGUF's group-32 float16-scale spec is its own), each checked in its own runtime.

A target that does not take the requested format, or whose format cannot hold the precision, becomes a
row with the reason instead of failing the run.

Example:
    >>> rows = export_generate_many("tiny-llama", ["x86-server", "snapdragon-8-gen-3"], precision="int4",
    ...                             output_dir="edgellm-out/all-gen", fmt="gguf")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError


def export_generate_many(
    model: Any,
    targets: list[str],
    *,
    precision: str = "int4",
    output_dir: str | Path = "edgellm-out",
    fmt: str | None = None,
    keep: tuple[str, ...] = (),
    context: int | None = None,
    check_tokens: int = 64,
    force: bool = False,
    log: Any = None,
) -> list[Any]:
    """Export ``model`` for generation on each of ``targets``; returns one ``ExportRow`` per target."""
    from edgellm.export.base import choose_format
    from edgellm.models import ModelAdapter, load
    from edgellm.pipeline.export_many import ExportRow
    from edgellm.pipeline.generate_export import _quantize, export_generate, quant_config
    from edgellm.targets import load_target

    say = log or (lambda _m: None)
    adapter = model if isinstance(model, ModelAdapter) else load(model)
    specs: dict[str, Any] = {}
    rows = []
    for name in targets:
        row = ExportRow(name, None, precision)
        rows.append(row)
        try:
            profile = load_target(name)
            if fmt is not None and fmt not in profile.formats:
                raise EdgeLLMError(f"target '{name}' does not take format '{fmt}'", "")
            row.format = choose_format(profile, fmt)
            cfg = quant_config(precision, None, None, keep, row.format)
            spec = None
            if cfg is not None:
                key = repr(cfg)
                if key not in specs:
                    say(f"quantizing with {cfg.recipe} ({key[:60]})")
                    specs[key] = _quantize(adapter, cfg, None)
                spec = specs[key]
            out = Path(output_dir) / f"{adapter.name}-{name}-{row.format}-gen-{precision}"
            say(f"{name}: {row.format} {precision}")
            m = export_generate(
                adapter,
                out,
                target=name,
                format=row.format,
                precision=precision,
                spec=spec,
                keep=keep,
                context=context,
                check_tokens=check_tokens,
                force=force,
            )
        except EdgeLLMError as exc:
            row.error = str(exc).split(" (")[0] if not getattr(exc, "hint", None) else str(exc)
            continue
        row.path = out
        row.size_mb = round(sum(f["bytes"] for f in m["files"].values()) / 2**20, 2)
        cos = m["generation"]["parity"]["logits_cosine_min"]
        row.parity = {"generation": {"logits": {"cosine_min": cos}}}
    return rows
