"""Parity per runtime, and the runtime an artifact prefers, chosen by measurement on the exporting host.

An artifact is validated first in its format's own runtime (:func:`~edgellm.export.base.lower_validated`);
then, for each other runtime the target profile lists for the format (``format_runtimes``) and each
inference precision it lists for that runtime (``runtime_precisions``), the same file is checked again
against the same torch reference, in a process of its own (:class:`~edgellm.runtime.isolated.IsolatedRunner`).
The candidates that pass are timed side by side, interleaved, each in its own process, and the fastest
is recorded as the artifact's preferred runtime (manifest ``runtimes``), which ``make_runner``, ``serve``
and ``bench`` use unless told otherwise.

Tolerances: a reduced inference precision (bf16, f16) is held to the artifact's cosine floor only
(``max_abs`` is dropped: bf16 keeps 8 bits of mantissa); everything else to the artifact's tolerance.

Example:
    >>> art = export("minilm", "x86-server", "out/minilm", runtimes="auto")   # doctest: +SKIP
    >>> art.manifest["runtimes"]["preferred"]                                 # doctest: +SKIP
    {'runtime': 'openvino', 'options': {'precision': 'bf16'}, 'p50_ms': 41.2, ...}
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.export.validate import Tolerance, check_parity, max_positions, passes, summary
from edgellm.runtime import sdk_installed

REDUCED = ("bf16", "f16")


def wanted_runtimes(target: Any, fmt: str, primary: str, runtimes: Any) -> list[str]:
    """The runtimes to validate in besides ``primary``: ``"auto"`` = the target's runtimes for the format
    whose SDK is installed; a list or comma string = exactly those (each must run the format)."""
    if runtimes is None:
        return []
    listed = target.runtimes_for(fmt)
    if runtimes == "auto":
        return [r for r in listed if r != primary and sdk_installed(r)]
    names = [r.strip() for r in runtimes.split(",")] if isinstance(runtimes, str) else list(runtimes)
    for r in names:
        if r not in listed and r != primary:
            raise EdgeLLMError(
                f"target '{target.name}' does not run format '{fmt}' in '{r}'",
                f"runtimes for {fmt} on {target.name}: {', '.join(listed)}",
            )
        if not sdk_installed(r):
            raise EdgeLLMError(f"runtime '{r}' is not installed", f"pip install 'edgellm[{r}]'")
    return [r for r in dict.fromkeys(names) if r != primary]


def tolerance_for(tolerance: Tolerance, precision: str | None) -> Tolerance:
    """The tolerance a candidate is held to: the artifact's, without ``max_abs`` at bf16/f16."""
    if precision in REDUCED:
        return dataclasses.replace(tolerance, max_abs=None)
    return tolerance


def validate_runtimes(
    model: Any,
    target: Any,
    workdir: Path,
    fields: dict[str, Any],
    primary_runner: Any,
    reference: Any,
    tolerance: Tolerance,
    runtimes: Any,
    *,
    threads: int | None = None,
    select: bool = True,
    shape: tuple[int, int] = (8, 128),
) -> dict[str, Any] | None:
    """Validate the artifact lowered into ``workdir`` in the other runtimes against ``reference`` (the
    torch model ``primary_runner`` passed parity with), time the ones that pass and return the manifest's
    ``runtimes`` section (None when only the primary runtime was asked for)."""
    fmt, primary = fields["target"]["format"], fields["target"]["runtime"]
    if runtimes is None:
        return None
    about = primary_runner.describe() if hasattr(primary_runner, "describe") else {}
    first = about.get("precision")
    todo = [
        (rt, p)
        for rt in [primary, *wanted_runtimes(target, fmt, primary, runtimes)]
        for p in target.runtime_precisions.get(rt) or [None]
        if not (rt == primary and p in (None, first))
    ]
    if not todo:
        return None
    from edgellm.runtime.isolated import IsolatedRunner, time_interleaved

    model_file = workdir / fields["model_file"]
    ins, outs = list(primary_runner.inputs), list(primary_runner.outputs)
    primary_name = f"{primary}-{first}" if first else primary
    candidates: list[dict[str, Any]] = [
        {
            "name": primary_name,
            "runtime": primary,
            "options": {"precision": first} if first else {},
            "passed": True,
            "parity": _brief(fields["parity"]),
        }
    ]
    opened: dict[str, Any] = {}
    started = []  # every child starts at once (their start-up overlaps), then each is checked in turn
    for rt, precision in todo:
        opts: dict[str, Any] = {"threads": threads} if threads else {}
        if precision:
            opts["precision"] = precision
        cand: dict[str, Any] = {
            "name": f"{rt}-{precision}" if precision else rt,
            "runtime": rt,
            "options": {"precision": precision} if precision else {},
        }
        candidates.append(cand)
        started.append((cand, precision, IsolatedRunner(rt, model_file, inputs=ins, outputs=outs, **opts)))
    try:
        for cand, precision, runner in started:
            try:
                ran = runner.describe()
            except EdgeLLMError as exc:  # e.g. an op this runtime's ONNX front end cannot convert
                runner.close()
                cand.update(passed=False, error=exc.message.replace(str(model_file), model_file.name))
                continue
            if precision and ran.get("precision") != precision:
                runner.close()
                cand.update(passed=False, error=ran.get("note") or f"{precision} is not available here")
                continue
            parity = check_parity(reference, runner)
            tol = tolerance_for(tolerance, precision)
            ok = passes(parity["fixed"], tol) and passes(parity["random"], tol)
            cand.update(passed=ok, parity=_brief(parity), tolerance=tol.to_dict())
            if not ok:
                cand["error"] = "failed parity: " + summary(parity["random"])
                runner.close()
                continue
            opened[cand["name"]] = runner
        section: dict[str, Any] = {"candidates": candidates, "preferred": _pick(candidates, {}, primary_name)}
        if select and opened:
            popts: dict[str, Any] = {"threads": threads} if threads else {}
            if first:
                popts["precision"] = first
            opened = {
                primary_name: IsolatedRunner(primary, model_file, inputs=ins, outputs=outs, **popts),
                **opened,
            }
            feeds = _timing_feeds(model, primary_runner, shape)
            timings = time_interleaved(opened, feeds)
            for cand in candidates:
                if cand["name"] in timings:
                    cand["latency"] = timings[cand["name"]]
            section["preferred"] = _pick(candidates, timings, primary_name)
            section["measured"] = {
                "batch": int(next(iter(feeds.values())).shape[0]),
                "sequence": int(next(iter(feeds.values())).shape[-1]),
                "threads": threads,
                "host": _host(),
                "how": "each candidate in its own process, interleaved rounds, p50",
            }
        return section
    finally:
        for _, _, r in started:
            r.close()
        for r in opened.values():
            r.close()


def _pick(candidates: list[dict[str, Any]], timings: dict[str, Any], primary: str) -> dict[str, Any]:
    """The fastest candidate that passed (the primary runtime when nothing was timed)."""
    passed = [c for c in candidates if c.get("passed") and c["name"] in timings]
    best = min(passed, key=lambda c: timings[c["name"]]["p50_ms"]) if passed else candidates[0]
    out = {"runtime": best["runtime"], "options": dict(best["options"]), "name": best["name"]}
    if best["name"] in timings and primary in timings:
        out["p50_ms"] = timings[best["name"]]["p50_ms"]
        out["baseline"] = primary
        out["speedup"] = round(timings[primary]["p50_ms"] / timings[best["name"]]["p50_ms"], 3)
    return out


def _timing_feeds(model: Any, runner: Any, shape: tuple[int, int]) -> dict[str, Any]:
    batch, seq = shape
    has_seq = any("sequence" in s.shape for s in runner.inputs)
    seq = min(seq, max_positions(model)) if has_seq else 0
    full = model.example_inputs(batch=batch, seq=seq, seed=7)
    return {s.name: full[s.name] for s in runner.inputs}


def _brief(parity: dict[str, Any]) -> dict[str, Any]:
    return {k: parity[k] for k in ("fixed", "random") if k in parity}


def _host() -> dict[str, Any]:
    from edgellm.targets.host import cpu_model

    return {"cpu": cpu_model()}
