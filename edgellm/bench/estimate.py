"""Cost-model latency of an artifact on a target profile, for when no device is attached.

A roofline: one forward pass needs ``flops`` of compute and reads ``bytes`` of weights (plus the
activations it writes and reads back); on a target with peak compute ``P`` at the artifact's
precision and memory bandwidth ``B`` it takes at least ``max(flops / (P * e_c), bytes / (B * e_m))``.
The efficiencies say how much of the published peak a mobile/server runtime reaches on transformer
layers; they are fixed, documented assumptions here (per-host calibration arrives with the partition
planner), so every figure this module returns is labelled an **estimate**, never a measurement.
"""

from __future__ import annotations

from typing import Any

# fractions of the published peaks that CPU/GPU runtimes reach on batch-1 transformer inference
COMPUTE_EFFICIENCY = 0.30
MEMORY_EFFICIENCY = 0.60


def flop_counts(model: Any, batch: int, seq: int) -> dict[str, int]:
    """FLOPs of one forward pass at (batch, seq) per module (``"Global"`` is the total), counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    feeds = model.example_inputs(batch=batch, seq=seq, seed=0, padded=False)
    args = [torch.as_tensor(feeds[s.name]) for s in model.inputs]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.module(*args)
    return {k: int(sum(v.values())) for k, v in counter.get_flop_counts().items()}


def count_flops(model: Any, batch: int, seq: int) -> int:
    """Floating-point operations of one forward pass at (batch, seq)."""
    return flop_counts(model, batch, seq).get("Global", 0)


def estimate_latency(
    artifact: Any,
    target: str | None = None,
    *,
    batch: int = 1,
    seq: int = 128,
    flops: int | None = None,
) -> dict[str, Any]:
    """The roofline latency of ``artifact`` on ``target`` (default: the artifact's own target).

    ``flops`` defaults to a count on the reloaded source model; a plain module that cannot be reloaded
    falls back to ``2 x parameters x tokens``.
    """
    from edgellm.bench import reload_source
    from edgellm.errors import EdgeLLMError
    from edgellm.export import Artifact
    from edgellm.targets import load_target

    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    tgt = load_target(target or art.manifest["target"]["name"])
    precision = art.manifest["precision"]
    peak = tgt.peak_compute_tops.get(precision)
    basis_precision = precision
    if peak is None:  # e.g. an int8 artifact on a target that lists no int8 peak: it runs at fp32 speed
        basis_precision = "fp32" if "fp32" in tgt.peak_compute_tops else next(iter(tgt.peak_compute_tops))
        peak = tgt.peak_compute_tops[basis_precision]
    tokens = batch * max(seq, 1)
    flops_source = "torch FlopCounterMode on the source model"
    if flops is None:
        try:
            flops = count_flops(reload_source(art), batch, seq)
        except EdgeLLMError:
            flops = 2 * int(art.manifest["model"]["num_parameters"]) * tokens
            flops_source = "2 x parameters x tokens (source model not reloadable)"
    weight_bytes = art.size_bytes
    compute_s = flops / (peak * 1e12 * COMPUTE_EFFICIENCY)
    memory_s = weight_bytes / (tgt.memory_bandwidth_gbs * 1e9 * MEMORY_EFFICIENCY)
    latency_ms = max(compute_s, memory_s) * 1000.0
    fits = weight_bytes / 2**20 <= tgt.memory_budget_mb
    return {
        "estimate": True,
        "label": f"ESTIMATE (roofline on the '{tgt.name}' profile, not a measurement)",
        "target": tgt.name,
        "precision": precision,
        "peak_precision": basis_precision,
        "batch": batch,
        "seq": seq,
        "latency_ms": round(latency_ms, 4),
        "bound": "compute" if compute_s >= memory_s else "memory",
        "compute_ms": round(compute_s * 1000.0, 4),
        "memory_ms": round(memory_s * 1000.0, 4),
        "flops": flops,
        "flops_source": flops_source,
        "weight_bytes": weight_bytes,
        "peak_tops": peak,
        "memory_bandwidth_gbs": tgt.memory_bandwidth_gbs,
        "efficiency": {"compute": COMPUTE_EFFICIENCY, "memory": MEMORY_EFFICIENCY},
        "fits_memory_budget": fits,
        "memory_budget_mb": tgt.memory_budget_mb,
        "sources": tgt.sources,
    }
