"""Parity on arm64 kernels: a phone artifact run on emulated arm64 (qemu-user) against the torch reference.

Every artifact is validated on this host's kernels (x86: AVX-512/VNNI); a phone runs XNNPACK's and ONNX
Runtime's arm64 paths, with their own activation quantization and accumulation. For a target whose ISA is
arm64, :func:`validate_arm64` runs the file lowered for it in :class:`~edgellm.runtime.arm64.Arm64Runner`
(the target's CPU emulated: ``cortex-a76`` for Armv8.2 phones, Armv9 without SME for newer ones) on the
fixed inputs and on short random shapes, compares with the same reference as the x86 check, and returns
the manifest's ``parity.arm64`` section. A miss is treated like an x86 miss (the variant is refused; the
fallbacks of ``edgellm compress`` take over). For a dynamic-range INT8 TFLite file the fixed inputs also
run on TFLite's builtin kernels (``xnnpack=False``: what an interpreter without the delegate computes).

Modes (``export(arm64=...)``, ``--arm64``; default ``$EDGELLM_ARM64`` or ``auto``): ``auto`` validates when
the arm64 root is there and records why not otherwise; ``require`` refuses to export without it; ``off``
skips it. Timings under emulation are never taken.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError, ExportError
from edgellm.export.validate import Tolerance, check_parity, compare, passes, summary

MODES = ("auto", "require", "off")
MODE_ENV = "EDGELLM_ARM64"
# the runtime a format runs in inside the arm64 root (the root has aarch64 wheels of these)
RUNTIMES = {
    "tflite": ("litert", "ai-edge-litert"),
    "ort": ("onnxruntime-mobile", "onnxruntime"),
    "onnx": ("onnxruntime", "onnxruntime"),
}
# short shapes: every position is emulated (a static TFLite file runs its full length whatever the request)
SHAPES = [(1, 7), (2, 33)]


def resolve_mode(mode: str | None) -> str:
    """``mode``, else ``$EDGELLM_ARM64``, else ``auto``; anything else is refused by name."""
    chosen = (mode or os.environ.get(MODE_ENV) or "auto").strip().lower()
    if chosen not in MODES:
        raise ExportError(f"unknown arm64 mode '{chosen}'", f"use one of {', '.join(MODES)}")
    return chosen


def preflight(mode: str, target: Any, fmt: str) -> None:
    """Refuse ``require`` before any work when the check cannot run (no root, or a format it cannot run)."""
    from edgellm.runtime.arm64 import find_root, is_arm64

    if mode != "require" or not is_arm64(target):
        return
    if fmt not in RUNTIMES:
        raise ExportError(
            f"cannot validate {fmt} files on arm64 kernels (the arm64 root runs {', '.join(RUNTIMES)})",
            "export with --arm64 auto or off",
        )
    host, why = find_root()
    if host is None:
        raise ExportError(f"cannot validate on arm64 kernels: {why}", "or export with --arm64 auto/off")


class _Recorded:
    """A runner whose outputs are kept per input, so a second comparison (vs fp32) runs nothing again."""

    def __init__(self, runner: Any, max_seq: int | None) -> None:
        self.runner, self.max_seq = runner, max_seq
        self.inputs, self.outputs = runner.inputs, runner.outputs
        self._seen: dict[str, dict[str, np.ndarray]] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h = hashlib.sha1()
        for k in sorted(feeds):
            a = np.ascontiguousarray(feeds[k])
            h.update(f"{k}{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        key = h.hexdigest()
        if key not in self._seen:
            self._seen[key] = self.runner.run(feeds)
        return self._seen[key]


def validate_arm64(
    exporter: Any,
    model: Any,
    target: Any,
    workdir: Path,
    fields: dict[str, Any],
    runner: Any,
    reference: Any,
    tolerance: Tolerance,
    mode: str,
) -> dict[str, Any] | None:
    """The ``parity.arm64`` section of the artifact lowered into ``workdir`` (None: not an arm64 target,
    or ``mode == "off"``). ``runner`` is the x86 runner that passed parity (its specs are reused);
    ``passed`` is False on a miss, with the figures."""
    return check_on_arm64(
        workdir / fields["model_file"],
        fields,
        target,
        reference,
        model,
        tolerance,
        mode=mode,
        specs={"inputs": list(runner.inputs), "outputs": list(runner.outputs)},
    )


def artifact_arm64_parity(
    artifact: Any,
    model: Any,
    *,
    reference: Any = None,
    tolerance: Tolerance | None = None,
    target: Any = None,
    mode: str = "require",
) -> dict[str, Any] | None:
    """Check an exported artifact on arm64 kernels: against ``reference`` (default: ``model``, the
    fp32 torch model) at ``tolerance`` (default: the manifest's), with the manifest's specs and target."""
    from edgellm.targets import load_target

    m = artifact.manifest
    tol = tolerance or Tolerance(**m["parity"]["tolerance"])
    tgt = load_target(target or m["target"]["name"])
    specs = {"inputs": list(artifact.inputs), "outputs": list(artifact.outputs)}
    return check_on_arm64(
        artifact.model_path, m, tgt, reference or model, model, tol, mode=resolve_mode(mode), specs=specs
    )


def check_on_arm64(
    model_file: Path,
    fields: dict[str, Any],
    target: Any,
    reference: Any,
    model: Any,
    tolerance: Tolerance,
    *,
    mode: str,
    specs: dict[str, Any],
) -> dict[str, Any] | None:
    """Run ``model_file`` (format and precision from the manifest ``fields``) on emulated arm64 against
    ``reference`` and, for a quantized or fp16 file, against the fp32 ``model`` (``vs_fp32``)."""
    from edgellm.runtime.arm64 import find_root, is_arm64, qemu_cpu

    if mode == "off" or not is_arm64(target):
        return None
    fmt = fields["target"]["format"]
    if fmt not in RUNTIMES:
        reason = f"the arm64 root runs {' and '.join(RUNTIMES)} files, not {fmt}"
        if fmt == "pte":
            reason += " (ExecuTorch's aarch64 wheel needs torch's, 427 MB)"
        elif fmt == "gguf":
            reason += " (llama-cpp-python has no aarch64 wheel: sdist only)"
        if mode == "require":
            raise ExportError(
                f"cannot validate on arm64 kernels: {reason}", "export with --arm64 auto or off"
            )
        return {"skipped": reason}
    host, why = find_root()
    if host is None:
        if mode == "require":
            raise ExportError(f"cannot validate on arm64 kernels: {why}", "or export with --arm64 auto/off")
        return {"skipped": why}
    host = host.with_cpu(qemu_cpu(target))
    rt, wheel = RUNTIMES[fmt]
    section: dict[str, Any] = {**host.describe(), "runtime": rt, "runtime_version": _pinned(host, wheel)}
    try:
        parity, ok = _run_checks(
            section, fmt, rt, model_file, host, specs, fields, reference, model, tolerance
        )
    except EdgeLLMError as exc:  # the runtime could not run the file under emulation (not a parity miss)
        if mode == "require":
            raise ExportError(
                f"the artifact could not be run on emulated arm64 ({host.cpu}): {exc.message}", exc.hint
            ) from exc
        return {"skipped": f"could not run on emulated arm64 ({host.cpu}): {exc.message}"}
    section.update(
        fixed=parity["fixed"],
        random=parity["random"],
        random_shapes=parity["random_shapes"],
        tolerance=tolerance.to_dict(),
        passed=ok,
    )
    return section


def _run_checks(
    section: dict[str, Any],
    fmt: str,
    rt: str,
    model_file: Path,
    host: Any,
    specs: dict[str, Any],
    fields: dict[str, Any],
    reference: Any,
    model: Any,
    tolerance: Tolerance,
) -> tuple[dict[str, Any], bool]:
    """Run the checks in the emulated runtime; fills ``section`` and returns (parity, passed)."""
    from edgellm.runtime.arm64 import Arm64Runner

    with Arm64Runner(rt, model_file, host, **specs) as arm:
        about = arm.describe()
        section["kernels"] = about.get("kernels", "mlas" if fmt in ("ort", "onnx") else None)
        recorded = _Recorded(arm, about.get("max_seq"))
        parity = check_parity(reference, recorded, shapes=SHAPES)
        if fields.get("precision") not in (None, "fp32"):
            vs = check_parity(model, recorded, shapes=SHAPES)
            section["vs_fp32"] = {k: vs[k] for k in ("fixed", "random")}
    ok = passes(parity["fixed"], tolerance) and passes(parity["random"], tolerance)
    if fields.get("recipe", {}).get("tflite", {}).get("mode") == "int8-dynamic":
        # the kernels a plain interpreter (no XNNPACK delegate) runs: the hybrid FULLY_CONNECTED
        with Arm64Runner(rt, model_file, host, xnnpack=False, **specs) as builtin:
            feeds = model.fixed_inputs()
            got = builtin.run({s.name: feeds[s.name] for s in builtin.inputs})
        ref_fixed = compare(reference.run(feeds), got, builtin.outputs, feeds)
        fp32_fixed = compare(model.run(feeds), got, builtin.outputs, feeds)
        section["builtin_kernels"] = {"fixed": ref_fixed, "vs_fp32": {"fixed": fp32_fixed}}
        ok = ok and passes(ref_fixed, tolerance)
    return parity, ok


def miss_summary(section: dict[str, Any]) -> str:
    """What missed, for a rejection reason or an error message."""
    parts = [f"fixed {summary(section['fixed'])}", f"random {summary(section['random'])}"]
    if "builtin_kernels" in section:
        parts.append(f"builtin kernels, fixed {summary(section['builtin_kernels']['fixed'])}")
    return f"on arm64 kernels (qemu-user, {section['cpu']}): " + "; ".join(parts)


def _pinned(host: Any, wheel: str) -> str | None:
    """The runtime's version in the root, from its stamp's wheel list (``onnxruntime==1.32.0``)."""
    m = re.search(rf"{re.escape(wheel)}==(\S+)", str(host.about.get("wheels", "")))
    return m.group(1) if m else None
