"""The split planner: over every cut (all on the server, after each block, all on the device) and every
activation codec, predict end-to-end latency and pick the fastest plan that meets the constraints.

    latency = device compute + encode + upload + RTT + server compute + download + decode

A cut ``k`` puts the first ``k`` blocks on the device. ``k = 0`` sends the raw input (never allowed when
``min_device_blocks`` >= 1: the raw input stays on the phone); ``k = n`` runs everything on the device
and sends nothing. The :class:`SplitPlan` keeps the whole table of candidates, feasible or not, with the
reason, so a user can see why the winner won.

Example:
    >>> plan = make_plan(table, Network.parse("10mbit", "50ms"), device_memory=512 * 2**20)  # doctest: +SKIP
    >>> plan.best["cut"], plan.best["codec"], plan.best["total_ms"]                                  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.partition.network import Network
from edgellm.runtime.codecs import CODECS, Codec


@dataclass
class CostTable:
    """What the planner needs, per block and per cut (from profiling and the cost model).

    Args:
        blocks: block names in order.
        device_ms / server_ms: predicted compute per block on each side.
        weight_bytes: weights per block (the device half must fit its memory budget).
        input_bytes: the raw model input (what a cut at 0 uploads).
        cut_shapes: activation shape after block ``i`` (``len(blocks) - 1`` entries; the last block's
            output is the result).
        output_bytes: the model's result (downloaded unless everything runs on the device).
        codec_ms_per_mb: encode + decode cost per MB of fp32 activation, per codec (used when a cut has
            no measured codec figures).
        cut_codecs: per inner cut, per codec, measured on the profiled activation: ``bytes`` on the wire
            (after compression), ``encode_ms`` and ``decode_ms`` on the profiling host.
        codec_scale: multiplies the host's encode time (device) and decode time (server).
        side_bytes: model inputs the server half needs with every activation (the attention mask).
    """

    blocks: list[str]
    device_ms: list[float]
    server_ms: list[float]
    weight_bytes: list[int]
    input_bytes: int
    cut_shapes: list[list[int]]
    output_bytes: int
    codec_ms_per_mb: dict[str, float] = field(default_factory=lambda: {"fp32": 0.0, "fp16": 0.5, "int8": 2.0})
    cut_codecs: list[dict[str, dict[str, float]]] | None = None
    codec_scale: dict[str, float] = field(default_factory=lambda: {"device": 1.0, "server": 1.0})
    side_bytes: int = 0

    def __post_init__(self) -> None:
        n = len(self.blocks)
        if not (len(self.device_ms) == len(self.server_ms) == len(self.weight_bytes) == n):
            raise EdgeLLMError(
                "cost table columns differ in length", "give one entry per block in each column"
            )
        if len(self.cut_shapes) != n - 1:
            raise EdgeLLMError(
                f"{len(self.cut_shapes)} cut shapes for {n} blocks", f"give one shape per inner cut ({n - 1})"
            )


@dataclass
class SplitPlan:
    """Every candidate (cut, codec) with its predicted components, and the chosen one.

    Args:
        id: a hash of what the plan was made from (the same table, network and constraints: the same id).
        candidates: one row per (cut, codec): ``cut``, ``after_block``, ``codec``, the predicted parts
            (``device_ms``, ``codec_ms``, ``upload_ms``, ``rtt_ms``, ``server_ms``, ``download_ms``),
            ``total_ms``, ``upload_bytes``, ``device_weight_bytes``, ``feasible`` and its ``reason``.
        best: the chosen candidate (the fastest feasible one).
        network: the link it was planned for.
        constraints: device memory budget, blocks kept on the device, server load (and generated tokens).
        basis: how the cost table was derived (:func:`edgellm.partition.plan` fills it: the device and
            server profiles, precisions, the host's calibration, FLOPs and times per block).
    """

    id: str
    candidates: list[dict[str, Any]]
    best: dict[str, Any]
    network: Network
    constraints: dict[str, Any]
    basis: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> str | None:
        """The device's target name (when the plan came from :func:`edgellm.partition.plan`)."""
        return self.basis.get("device")

    @property
    def server(self) -> str | None:
        """The server's target name (when the plan came from :func:`edgellm.partition.plan`)."""
        return self.basis.get("server")

    def to_dict(self) -> dict[str, Any]:
        """What ``plan.json`` holds (``edgellm split export --plan`` reads it)."""
        return asdict(self)


def _codec_cost(table: CostTable, k: int, codec: str) -> tuple[int, float]:
    """Bytes uploaded at inner cut ``k`` with ``codec`` (plus side inputs) and its encode + decode ms."""
    measured = (table.cut_codecs[k - 1] if table.cut_codecs else {}).get(codec)
    if measured:
        ms = measured["encode_ms"] * table.codec_scale.get("device", 1.0) + measured[
            "decode_ms"
        ] * table.codec_scale.get("server", 1.0)
        return int(measured["bytes"]) + table.side_bytes, ms
    shape = table.cut_shapes[k - 1]
    fp32_mb = Codec("fp32").nbytes(shape) / 1e6
    c = Codec(codec)
    return c.nbytes(shape) + table.side_bytes, table.codec_ms_per_mb.get(c.format, 0.0) * fp32_mb


def make_plan(
    table: CostTable,
    network: Network,
    *,
    codecs: tuple[str, ...] = CODECS,
    device_memory: float | None = None,
    min_device_blocks: int = 0,
    server_load: float = 1.0,
) -> SplitPlan:
    """Choose the cut and codec with the lowest predicted latency under the constraints.

    Args:
        device_memory: bytes of weights the device may hold (None: no limit).
        min_device_blocks: at least this many blocks on the device (1 keeps the raw input on the phone).
        server_load: multiplies server compute (1.0 idle; 2.0 means the server is half as fast now).
    """
    n = len(table.blocks)
    if not 0 <= min_device_blocks <= n:
        raise EdgeLLMError(
            f"min_device_blocks {min_device_blocks} is outside 0..{n}", f"the model has {n} blocks"
        )
    if server_load <= 0:
        raise EdgeLLMError(f"server_load {server_load} must be positive", "use 1.0 for an idle server")
    for c in codecs:
        Codec(c)  # unknown codec -> clear error
    candidates: list[dict[str, Any]] = []
    for k in range(n + 1):
        device_ms = sum(table.device_ms[:k])
        server_ms = sum(table.server_ms[k:]) * server_load
        mem = sum(table.weight_bytes[:k])
        reasons = []
        if k < min_device_blocks:
            reasons.append(f"fewer than {min_device_blocks} block(s) on the device")
        if device_memory is not None and mem > device_memory:
            reasons.append(
                f"device weights {mem / 2**20:.1f} MiB exceed the budget {device_memory / 2**20:.1f} MiB"
            )
        if k == n:  # everything on the phone: nothing crosses the network
            options = [("none", 0, 0.0)]
        elif k == 0:  # raw input to the server
            options = [("raw", table.input_bytes, 0.0)]
        else:
            options = [(c, *_codec_cost(table, k, c)) for c in codecs]
        for codec, nbytes, codec_ms in options:
            remote = k < n
            row = {
                "cut": k,
                "after_block": table.blocks[k - 1] if k else None,
                "codec": codec,
                "device_ms": device_ms,
                "codec_ms": codec_ms,
                "upload_ms": network.send_ms(nbytes) if remote else 0.0,
                "rtt_ms": network.rtt_ms if remote else 0.0,
                "server_ms": server_ms,
                "download_ms": network.send_ms(table.output_bytes, up=False) if remote else 0.0,
                "upload_bytes": nbytes,
                "device_weight_bytes": mem,
                "feasible": not reasons,
                "reason": "; ".join(reasons) or None,
            }
            row["total_ms"] = sum(
                row[c] for c in ("device_ms", "codec_ms", "upload_ms", "rtt_ms", "server_ms", "download_ms")
            )
            candidates.append(row)
    feasible = [c for c in candidates if c["feasible"]]
    if not feasible:
        need = sum(table.weight_bytes[:min_device_blocks])
        raise EdgeLLMError(
            f"no cut fits: the device memory budget is {device_memory / 2**20:.1f} MiB, and the smallest "
            f"feasible device half ({min_device_blocks} block(s)) needs {need / 2**20:.1f} MiB",
            f"raise --device-memory to at least {need / 2**20:.1f}MiB or lower --min-device-blocks",
        )
    best = min(feasible, key=lambda c: (c["total_ms"], -c["cut"]))
    constraints = {
        "device_memory": device_memory,
        "min_device_blocks": min_device_blocks,
        "server_load": server_load,
    }
    ident = hashlib.sha256(
        json.dumps(
            [asdict(table), asdict(network), constraints, list(codecs)], sort_keys=True, default=str
        ).encode()
    ).hexdigest()[:16]
    return SplitPlan(ident, candidates, best, network, constraints)


TOKEN_REPLY_BYTES = 64  # what a split-generation step answers: one token id in a small JSON object


def make_generation_plan(
    prefill: CostTable,
    decode: CostTable,
    network: Network,
    *,
    tokens: int,
    codecs: tuple[str, ...] = CODECS,
    device_memory: float | None = None,
    min_device_blocks: int = 0,
    server_load: float = 1.0,
) -> SplitPlan:
    """Plan a split for token generation: the prompt's prefill once (``prefill``: costs at the prompt's
    length), then ``tokens - 1`` decode steps (``decode``: costs of one new token), each paying the
    device and server compute, the codec, one token's upload and a full round trip; the server answers a
    token id, not the model's output. The chosen (cut, codec) minimises ``ttft + (tokens - 1) x
    per_token``, so a long round trip pushes generation toward all-on-device sooner than one-shot
    inference; each candidate keeps ``ttft_ms`` and ``per_token_ms`` and the per-token components."""
    import dataclasses

    if tokens < 1:
        raise EdgeLLMError(f"tokens {tokens} must be at least 1", "give the number of tokens to generate")
    kw = dict(
        codecs=codecs,
        device_memory=device_memory,
        min_device_blocks=min_device_blocks,
        server_load=server_load,
    )
    first = make_plan(dataclasses.replace(prefill, output_bytes=TOKEN_REPLY_BYTES), network, **kw)
    step = make_plan(dataclasses.replace(decode, output_bytes=TOKEN_REPLY_BYTES), network, **kw)
    per = {(c["cut"], c["codec"]): c for c in step.candidates}
    candidates = []
    for c in first.candidates:
        d = per[(c["cut"], c["codec"])]
        candidates.append(
            {
                **d,
                "ttft_ms": c["total_ms"],
                "per_token_ms": d["total_ms"],
                "tokens": tokens,
                "total_ms": c["total_ms"] + (tokens - 1) * d["total_ms"],
            }
        )
    best = min((c for c in candidates if c["feasible"]), key=lambda c: (c["total_ms"], -c["cut"]))
    ident = hashlib.sha256(json.dumps([first.id, step.id, tokens]).encode()).hexdigest()[:16]
    return SplitPlan(ident, candidates, best, network, {**first.constraints, "tokens": tokens})
