"""The cost model: per block, latency on a target profile from what this host measured, scaled by the
target's compute and memory bandwidth (:func:`edgellm.targets.roofline` over the block's FLOPs and
bytes, the roofline ``bench --estimate`` uses).

The compute efficiency is calibrated on this host: the FLOP/s each block really reached here, over this
host's peak (cores x clock x SIMD FLOPs per cycle, from /proc/cpuinfo). A target is assumed to reach
the same fraction of its own published peak; memory-bound blocks get the documented bandwidth factor.
Every figure it gives is a prediction; the netem benchmark compares it with measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgellm.partition.planner import CostTable
from edgellm.partition.profile import Profile
from edgellm.targets.host import host_peak_gflops
from edgellm.targets.roofline import MEMORY_EFFICIENCY, roofline

BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


def block_flops(model: Any, batch: int, seq: int) -> dict[str, int]:
    """FLOPs of each block at (batch, seq): the counts of the modules the block is made of."""
    from edgellm.models.flops import flop_counts

    counts = flop_counts(model, batch, seq)
    root = type(model.module).__name__
    return {b.name: sum(counts.get(f"{root}.{p}", 0) for p in b.paths) for b in model.blocks}


@dataclass
class Calibration:
    host_peak_gflops: float
    efficiency: float  # achieved / peak on this host, FLOP-weighted over the blocks


def calibrate(profile: Profile, flops: dict[str, int]) -> Calibration:
    peak = host_peak_gflops()
    total_flops = sum(flops.values())
    total_s = sum(b.latency_ms for b in profile.blocks) / 1000.0
    eff = (total_flops / max(total_s, 1e-9)) / (peak * 1e9) if total_flops else 0.1
    return Calibration(peak, float(min(max(eff, 1e-3), 1.0)))


def block_ms_on(
    target: Any, precision: str, flops: int, weight_bytes: int, act_bytes: int, cal: Calibration
) -> float:
    """Roofline latency of one block on ``target`` at ``precision`` (ms), at the host's calibrated efficiency."""
    nbytes = weight_bytes / 4.0 * BYTES_PER_WEIGHT.get(precision, 4.0) + act_bytes
    return roofline(target, precision, flops, nbytes, compute_efficiency=cal.efficiency).ms


def cost_table(
    model: Any,
    profile: Profile,
    device: Any,
    server: Any,
    *,
    device_precision: str = "fp32",
    server_precision: str = "fp32",
) -> tuple[CostTable, dict[str, Any]]:
    """The planner's table for ``model`` split between two target profiles, and how it was derived."""
    flops = block_flops(model, profile.batch, profile.seq)
    cal = calibrate(profile, flops)
    dev, srv = [], []
    host_ms = sum(b.latency_ms for b in profile.blocks)
    prev_out = profile.input_bytes
    for b in profile.blocks:
        act = prev_out + b.out_bytes
        dev.append(block_ms_on(device, device_precision, flops[b.name], b.weight_bytes, act, cal))
        srv.append(block_ms_on(server, server_precision, flops[b.name], b.weight_bytes, act, cal))
        prev_out = b.out_bytes
    table = CostTable(
        blocks=[b.name for b in profile.blocks],
        device_ms=dev,
        server_ms=srv,
        weight_bytes=[
            int(b.weight_bytes / 4.0 * BYTES_PER_WEIGHT.get(device_precision, 4.0)) for b in profile.blocks
        ],
        input_bytes=profile.input_bytes,
        cut_shapes=[b.out_shape for b in profile.blocks[:-1]],
        output_bytes=profile.blocks[-1].out_bytes,
        cut_codecs=[b.codecs for b in profile.blocks[:-1]]
        if all(b.codecs for b in profile.blocks[:-1])
        else None,
        # encode runs on the phone, decode on the server: scale the host's figures by each side's speed
        codec_scale={"device": sum(dev) / max(host_ms, 1e-9), "server": sum(srv) / max(host_ms, 1e-9)},
        side_bytes=profile.side_bytes,
    )
    basis = {
        "host_peak_gflops": round(cal.host_peak_gflops, 1),
        "host_efficiency": round(cal.efficiency, 4),
        "memory_efficiency": MEMORY_EFFICIENCY,
        "flops": flops,
        "host_ms": {b.name: b.latency_ms for b in profile.blocks},
        "device": device.name,
        "server": server.name,
        "precisions": {"device": device_precision, "server": server_precision},
    }
    return table, basis
