"""End-to-end latency of a split model, broken down into device, encode, network, server and decode."""

from __future__ import annotations

from typing import Any

import numpy as np

PARTS = ("device_ms", "encode_ms", "network_ms", "server_ms", "decode_ms", "total_ms")


def summarize(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """p50 / p90 / mean / min of each part over the runs."""
    out = {}
    for k in PARTS:
        v = np.asarray([s[k] for s in samples], dtype=np.float64)
        out[k] = {
            "p50": float(np.percentile(v, 50)),
            "p90": float(np.percentile(v, 90)),
            "mean": float(v.mean()),
            "min": float(v.min()),
        }
    return out


def bench_split(
    client: Any, feeds: dict[str, np.ndarray], *, runs: int = 30, warmup: int = 3
) -> dict[str, Any]:
    """Call ``client.infer(feeds)`` ``warmup + runs`` times; the report of the timed runs."""
    for _ in range(warmup):
        client.infer(feeds)
    samples = [client.infer(feeds)[1] for _ in range(runs)]
    split = client.split
    return {
        "plan_id": split.get("plan_id"),
        "cut": split.get("cut"),
        "after_block": split.get("after_block"),
        "codec": split.get("codec"),
        "runs": runs,
        "ms": summarize(samples),
        "upload_bytes": int(samples[-1]["upload_bytes"]),
        "download_bytes": int(samples[-1]["download_bytes"]),
    }
