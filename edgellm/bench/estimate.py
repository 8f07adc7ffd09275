"""Cost-model latency of an artifact on a target profile, for when no device is attached.

The roofline of :func:`edgellm.targets.roofline` (the one the partition cost model uses): one forward
pass needs ``flops`` of compute and reads the artifact's bytes; on a target with peak compute ``P`` at
the artifact's precision and memory bandwidth ``B`` it takes at least
``max(flops / (P * e_c), bytes / (B * e_m))``. The efficiencies are the fixed, documented defaults there
(the partition planner calibrates the compute one on the host instead), so every figure this module
returns is labelled an **estimate**, never a measurement.
"""

from __future__ import annotations

from typing import Any

from edgellm.targets.roofline import COMPUTE_EFFICIENCY, MEMORY_EFFICIENCY, peak_tops, roofline


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
    from edgellm.models.flops import count_flops
    from edgellm.targets import load_target

    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    tgt = load_target(target or art.manifest["target"]["name"])
    precision = art.manifest["precision"]
    # e.g. an int8 artifact on a target that lists no int8 peak: it runs at fp32 speed
    basis_precision, peak = peak_tops(tgt, precision)
    tokens = batch * max(seq, 1)
    flops_source = "torch FlopCounterMode on the source model"
    if flops is None:
        try:
            flops = count_flops(reload_source(art), batch, seq)
        except EdgeLLMError:
            flops = 2 * int(art.manifest["model"]["num_parameters"]) * tokens
            flops_source = "2 x parameters x tokens (source model not reloadable)"
    weight_bytes = art.size_bytes
    roof = roofline(tgt, precision, flops, weight_bytes)
    fits = weight_bytes / 2**20 <= tgt.memory_budget_mb
    return {
        "estimate": True,
        "label": f"ESTIMATE (roofline on the '{tgt.name}' profile, not a measurement)",
        "target": tgt.name,
        "precision": precision,
        "peak_precision": basis_precision,
        "batch": batch,
        "seq": seq,
        "latency_ms": round(roof.ms, 4),
        "bound": roof.bound,
        "compute_ms": round(roof.compute_s * 1000.0, 4),
        "memory_ms": round(roof.memory_s * 1000.0, 4),
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
