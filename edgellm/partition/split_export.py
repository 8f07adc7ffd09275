"""Exporting a split model: the device half for the phone, the server half for the server, linked.

``export_split`` cuts the model (:func:`edgellm.partition.cut.split_model`) where a
:class:`~edgellm.partition.planner.SplitPlan` says (or at a given cut and codec), exports each half for its
target through the ordinary exporters, and writes::

    OUT/
      split.json      the link: plan id, cut, codec, activation spec, side inputs, both manifests' sha256,
                      end-to-end parity
      device/         artifact for the phone (tflite or ort), manifest section "split" (role device)
      server/         artifact for the server (onnx), manifest section "split" (role server)

Each half is validated against its own torch half by its exporter; then the whole chain (device artifact ->
codec -> server artifact) is checked against the unsplit torch model: cosine >= 0.9999 (fp32),
0.999 (fp16), 0.99 (int8) on every row. A failing split raises and leaves nothing behind.

Example:
    >>> s = export_split("minilm", cut=4, codec="int8", output="out/minilm-split")   # doctest: +SKIP
    >>> s.link["parity"]["cosine_min"] >= 0.99                                         # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import ArtifactError, EdgeLLMError, ParityError
from edgellm.export.validate import compare, merge
from edgellm.runtime.artifact import MANIFEST, Artifact
from edgellm.utils.fs import atomic_dir, sha256_file

SPLIT_FILE = "split.json"
SPLIT_SCHEMA = 1
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99}


@dataclass
class SplitArtifacts:
    """A verified split export: the link and both half artifacts (either may be None at the ends)."""

    path: Path
    link: dict[str, Any]
    device: Artifact | None
    server: Artifact | None

    @classmethod
    def load(cls, path: str | Path) -> SplitArtifacts:
        """Read ``split.json`` and check that both halves are the artifacts it was written with."""
        path = Path(path)
        f = path / SPLIT_FILE
        if not f.is_file():
            raise ArtifactError(
                f"'{path}' is not a split export: it has no {SPLIT_FILE}",
                "export one with: edgellm split export MODEL --cut N (or --plan plan.json)",
            )
        try:
            link = json.loads(f.read_text())
        except ValueError as exc:
            raise ArtifactError(f"{f} is not valid JSON: {exc}", "re-export the split") from exc
        halves: dict[str, Artifact | None] = {}
        for role in ("device", "server"):
            entry = link.get(role)
            if entry is None:
                halves[role] = None
                continue
            art = Artifact.load(path / entry["dir"])
            if sha256_file(art.path / MANIFEST) != entry["manifest_sha256"]:
                raise ArtifactError(
                    f"the {role} half in '{art.path}' is not the one {SPLIT_FILE} was written with "
                    f"(plan {link.get('plan_id')})",
                    "export both halves together with edgellm split export; never mix halves of two plans",
                )
            halves[role] = art
        return cls(path, link, halves["device"], halves["server"])

    @property
    def codec(self) -> str:
        return self.link["codec"]


def plan_choice(plan: Any) -> tuple[int, str, str]:
    """``(cut, codec, plan id)`` from a SplitPlan, its dict, or a plan.json path."""
    if isinstance(plan, (str, Path)):
        p = Path(plan)
        if not p.is_file():
            raise EdgeLLMError(f"plan file '{p}' does not exist", "write one with: edgellm partition MODEL")
        plan = json.loads(p.read_text())
    d = plan if isinstance(plan, dict) else plan.to_dict()
    best = d["best"]
    codec = best["codec"]
    return int(best["cut"]), ("fp32" if codec in ("none", "raw") else codec), d["id"]


def export_split(
    model: Any,
    *,
    cut: int | None = None,
    codec: str = "fp16",
    plan: Any = None,
    device: str = "snapdragon-865",
    server: str = "x86-server",
    output: str | Path | None = None,
    device_format: str | None = None,
    device_precision: str = "fp32",
    force: bool = False,
    seq_len: int | None = None,
    server_runtimes: str | list[str] | None = None,
) -> SplitArtifacts:
    """Cut ``model`` and export both halves, linked; validate the chain against the unsplit model.

    Args:
        model: a ModelAdapter or a name/path :func:`edgellm.models.load` takes.
        cut / codec: where to cut (blocks on the device) and the activation codec; or ``plan``.
        plan: a SplitPlan (or plan.json) from ``edgellm partition``; its best candidate is exported.
        device / server: target profiles of the two halves.
        device_format: the phone half's format (default: the device target's first, e.g. tflite).
        device_precision: fp32 or fp16 (TFLite) for the phone half; the server half is fp32.
        seq_len: static sequence length for a TFLite device half (default 128).
        server_runtimes: validate the server half in the server target's other runtimes too and record
            the fastest (``"auto"``; see :func:`edgellm.export.export`'s ``runtimes``).
    """
    from edgellm.export.base import choose_format, export
    from edgellm.models import ModelAdapter, load
    from edgellm.partition.cut import split_model
    from edgellm.runtime.codecs import Codec
    from edgellm.targets import load_target

    adapter = model if isinstance(model, ModelAdapter) else load(model)
    if plan is not None:
        cut, codec, plan_id = plan_choice(plan)
    else:
        if cut is None:
            raise EdgeLLMError(
                "give a cut or a plan", "pass --cut N, or --plan plan.json from edgellm partition"
            )
        plan_id = None
    Codec(codec)
    halves = split_model(adapter, cut)
    plan_id = (
        plan_id
        or hashlib.sha256(
            json.dumps([adapter.source.get("sha256"), cut, codec, device, server]).encode()
        ).hexdigest()[:16]
    )
    dev_t, srv_t = load_target(device), load_target(server)
    dev_fmt = choose_format(dev_t, device_format)
    output = Path(output) if output is not None else Path("edgellm-out") / f"{adapter.name}-split-cut{cut}"
    act = halves.activation.to_dict() if halves.activation else None
    common = {
        "plan_id": plan_id,
        "cut": cut,
        "after_block": halves.after_block,
        "codec": codec,
        "activation": act,
        "side_inputs": halves.side_inputs,
        "server_model": halves.server.name if halves.server is not None else None,
        "parent": {"name": adapter.name, "sha256": adapter.source.get("sha256")},
    }
    link: dict[str, Any] = {
        "schema_version": SPLIT_SCHEMA,
        **common,
        "outputs": [o.to_dict() for o in adapter.outputs],
    }
    with atomic_dir(output, force=force) as tmp:
        arts: dict[str, Artifact | None] = {"device": None, "server": None}
        for role, half, tgt, opts in (
            ("device", halves.device, dev_t, _device_options(dev_fmt, device_precision, seq_len)),
            ("server", halves.server, srv_t, {"runtimes": server_runtimes} if server_runtimes else {}),
        ):
            if half is None:
                link[role] = None
                continue
            peer = srv_t.name if role == "device" else dev_t.name
            art = export(
                half,
                tgt.name,
                tmp / role,
                manifest_extra={"split": {**common, "role": role, "peer_target": peer}},
                **opts,
            )
            arts[role] = art
            link[role] = {
                "dir": role,
                "target": tgt.name,
                "format": art.manifest["target"].get("format"),
                "runtime": art.manifest["target"]["runtime"],
                "model_name": half.name,
                "manifest_sha256": sha256_file(tmp / role / MANIFEST),
            }
        link["parity"] = split_parity(adapter, arts["device"], arts["server"], codec, halves.side_inputs)
        need = MIN_COSINE[Codec(codec).format]
        if link["parity"]["cosine_min"] < need:
            raise ParityError(
                f"the split chain (device artifact -> {codec} -> server artifact) reaches cosine "
                f"{link['parity']['cosine_min']:.5f} against the unsplit model; {codec} needs >= {need}",
                "use a wider codec (fp16 instead of int8), or cut elsewhere",
            )
        link["parity"]["min_cosine_required"] = need
        (tmp / SPLIT_FILE).write_text(json.dumps(link, indent=2, default=str) + "\n")
    return SplitArtifacts.load(output)


def _device_options(fmt: str, precision: str, seq_len: int | None) -> dict[str, Any]:
    opts: dict[str, Any] = {"format": fmt}
    if precision != "fp32":
        opts["precision"] = precision
    if seq_len is not None and fmt == "tflite":
        opts["seq_len"] = seq_len
    return opts


def run_chain(
    device: Any, server: Any, codec: str, side_inputs: list[str], feeds: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Device runner -> codec -> server runner on ``feeds`` (either runner may be None)."""
    from edgellm.runtime.codecs import Codec

    if device is None:
        return server.run({s.name: feeds[s.name] for s in server.inputs})
    out = device.run({s.name: feeds[s.name] for s in device.inputs})
    if server is None:
        return out
    c = Codec(codec)
    x = c.decode(*c.encode(out["hidden"]))
    return server.run({"hidden": x, **{n: feeds[n] for n in side_inputs}})


def split_parity(
    model: Any, device: Artifact | None, server: Artifact | None, codec: str, side_inputs: list[str]
) -> dict[str, Any]:
    """The chain against the unsplit torch model on fixed inputs and a padded random batch."""
    from edgellm.runtime import make_runner

    dev = make_runner(device) if device is not None else None
    srv = make_runner(server) if server is not None else None
    limit = getattr(dev, "max_seq", None) or 1 << 30
    runs = []
    for feeds in (model.fixed_inputs(), model.example_inputs(batch=3, seq=min(24, limit), seed=7)):
        got = run_chain(dev, srv, codec, side_inputs, feeds)
        runs.append(compare(model.run(feeds), got, model.outputs, feeds))
    worst = merge(runs)
    return {
        "outputs": worst,
        "cosine_min": min(m["cosine_min"] for m in worst.values()),
        "max_abs": max(m["max_abs"] for m in worst.values()),
    }
