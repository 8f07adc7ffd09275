"""``edgellm info``: runtimes and versions present, CPU features, GPUs."""

from __future__ import annotations

import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import typer

from edgellm.cli._common import emit_json, kv_table

PACKAGES = {
    "torch": "torch",
    "transformers": "transformers",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "optimum": "optimum",
    "accelerate": "accelerate",
    "litert (ai-edge-litert)": "ai-edge-litert",
    "tflite-runtime": "tflite-runtime",
    "tensorflow": "tensorflow",
    "tensorrt": "tensorrt",
}


def collect() -> dict[str, Any]:
    """Everything ``info`` reports, as a dict (no heavy SDK is imported)."""
    from edgellm import __version__
    from edgellm.bench.harness import host_info

    runtimes = {}
    for label, dist in PACKAGES.items():
        try:
            runtimes[label] = version(dist)
        except PackageNotFoundError:
            runtimes[label] = None
    return {
        "edgellm": __version__,
        "packages": runtimes,
        "cpu": host_info(),
        "gpus": gpus(),
        "arm64": arm64_status(),
    }


def arm64_status() -> dict[str, Any]:
    """Whether phone artifacts can be validated on emulated arm64 kernels here, and if not, why."""
    from edgellm.runtime.arm64 import find_root

    host, why = find_root()
    if host is None:
        return {"available": False, "reason": why}
    return {"available": True, "root": str(host.root), **host.about}


def gpus() -> list[str]:
    """NVIDIA GPUs from ``nvidia-smi -L`` (empty when there is none)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def info(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Show edgellm's version, the runtimes installed, CPU features and GPUs.

    Example: edgellm info --json
    """
    data = collect()
    if json_out:
        emit_json(data)
        return
    cpu = data["cpu"]
    rows = [("edgellm", data["edgellm"])]
    rows += [(k, v or "not installed") for k, v in data["packages"].items()]
    rows += [
        ("cpu", cpu["cpu"]),
        ("cores (logical/physical)", f"{cpu['logical_cores']}/{cpu['physical_cores']}"),
        ("cpu features", ", ".join(cpu["features"]) or "none of avx2/avx512/vnni/amx/neon"),
        ("gpus", "; ".join(data["gpus"]) or "none"),
    ]
    arm = data["arm64"]
    rows.append(
        (
            "arm64 validation",
            f"qemu-user {arm.get('qemu', '')} root at {arm['root']}"
            if arm["available"]
            else f"off: {arm['reason']}",
        )
    )
    kv_table("edgellm info", rows)
