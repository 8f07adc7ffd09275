"""Phone kernels on an x86 host: runners whose runtime runs on emulated arm64 (qemu-user, in a chroot).

A phone runs other kernels than this host: XNNPACK's and ONNX Runtime's arm64 paths (NEON, dot-product,
i8mm), with their own activation quantization and accumulation. :class:`Arm64Runner` is the
:class:`~edgellm.runtime.Runner` interface over a child Python that runs inside a Debian arm64 root under
``qemu-aarch64-static`` (the root is made by ``scripts/arm64_root.sh``: aarch64 wheels of the runtimes at
the project's pins), so a parity check runs the artifact on the kernels a phone runs. Emulated timings
are not latencies: :meth:`Arm64Runner.time` refuses.

The root gets a fake ``/proc/cpuinfo`` and ``/sys/devices/system/cpu/{possible,present,online}`` (plain
files, never the host's: with the x86 host's /sys the runtimes' cpuinfo library crashes), describing as
many cores as this host has, of the emulated CPU model. Without them cpuinfo fails, XNNPACK is not applied
and TFLite silently falls back to its builtin kernels (checked: 0 delegate nodes).

Example:
    >>> host = find_root()                                                       # doctest: +SKIP
    >>> with Arm64Runner("litert", "out/minilm-phone/model.tflite", host) as r:  # doctest: +SKIP
    ...     r.run(feeds)["sentence_embedding"].shape
    (4, 384)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.runtime.isolated import IsolatedRunner

ROOT_ENV = "EDGELLM_ARM64_ROOT"
STAMP = ".edgellm-arm64.json"
PY = "/usr/bin/python3.11"
QEMU = "/usr/bin/qemu-aarch64-static"
BUILD = "sudo scripts/arm64_root.sh  (or: make arm64-root)"

# qemu -cpu model -> (MIDR implementer, part, the Features line of /proc/cpuinfo)
CPUS = {
    "cortex-a76": (
        "0x41",
        "0xd0b",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
    ),
    "max,sme=off": (
        "0x41",
        "0xd47",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc "
        "dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm sb paca pacg dcpodp sve2 "
        "sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 dgh bti",
    ),
}


def default_root() -> Path:
    """Where ``scripts/arm64_root.sh`` puts the root by default: ``$XDG_CACHE_HOME/edgellm/arm64-root``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "edgellm" / "arm64-root"


@dataclass(frozen=True)
class Arm64Host:
    """A built arm64 root and the CPU model qemu emulates in it."""

    root: Path
    cpu: str = "cortex-a76"
    about: dict[str, Any] = field(default_factory=dict)  # the root's stamp (suite, wheels)

    def with_cpu(self, cpu: str) -> Arm64Host:
        if cpu not in CPUS:
            raise EdgeLLMError(f"unknown emulated CPU '{cpu}'", f"use one of {', '.join(CPUS)}")
        return Arm64Host(self.root, cpu, self.about)

    def describe(self) -> dict[str, Any]:
        """What a manifest records about the emulation."""
        return {
            "arch": "arm64",
            "emulator": "qemu-user " + str(self.about.get("qemu", "")).strip(),
            "cpu": self.cpu,
            "root": {k: v for k, v in self.about.items() if k != "qemu"},
        }


def find_root(path: str | Path | None = None) -> tuple[Arm64Host | None, str]:
    """The arm64 root to run in (``path``, else ``$EDGELLM_ARM64_ROOT``, else :func:`default_root`), or
    None and the reason it cannot be used."""
    if sys.platform != "linux":
        return None, f"emulated arm64 needs Linux (this is {sys.platform})"
    root = Path(path or os.environ.get(ROOT_ENV) or default_root())
    stamp = root / STAMP
    if not stamp.is_file() or not (root / QEMU.lstrip("/")).is_file():
        return None, f"no arm64 root at {root}: build it with {BUILD}"
    if os.geteuid() != 0:
        return None, "running in the arm64 root needs chroot, which needs root: run as root"
    if shutil.which("chroot") is None:
        return None, "no chroot on PATH (coreutils)"
    try:
        about = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None, f"{stamp} is unreadable: rebuild the root with {BUILD}"
    return Arm64Host(root, "cortex-a76", about), ""


def qemu_cpu(target: Any) -> str:
    """The emulated CPU for a target: ``max`` without SME for Armv9 / SVE2 / i8mm cores (SME is on no
    phone core these targets name), else ``cortex-a76`` (Armv8.2 + dot-product + fp16)."""
    isa = " ".join(str(x).lower() for x in (getattr(target, "hardware", None) or {}).get("isa", []))
    return "max,sme=off" if any(k in isa for k in ("armv9", "sve", "i8mm")) else "cortex-a76"


def is_arm64(target: Any) -> bool:
    """Does the target run arm64 code (its ISA names an Armv8/v9 architecture)?"""
    isa = " ".join(str(x).lower() for x in (getattr(target, "hardware", None) or {}).get("isa", []))
    return "armv8" in isa or "armv9" in isa or "aarch64" in isa or "arm64" in isa


def _fake_cpu_files(host: Arm64Host, cores: int) -> None:
    """Plain-file /proc/cpuinfo and /sys cpu lists in the root for ``cores`` cores of the host's CPU model."""
    implementer, part, features = CPUS[host.cpu]
    proc, cpu_dir = host.root / "proc", host.root / "sys" / "devices" / "system" / "cpu"
    for d in (proc, host.root / "sys"):
        if os.path.ismount(d):
            raise EdgeLLMError(
                f"{d} is a mount point inside the arm64 root",
                "unmount it: the runtimes must not read the x86 host's /proc or /sys",
            )
    cpu_dir.mkdir(parents=True, exist_ok=True)
    proc.mkdir(exist_ok=True)
    info = "".join(
        f"processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {features}\nCPU implementer\t: {implementer}\n"
        f"CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: {part}\nCPU revision\t: 0\n\n"
        for i in range(cores)
    )
    files = {proc / "cpuinfo": info, cpu_dir / "kernel_max": f"{max(cores - 1, 0)}\n"}
    for name in ("possible", "present", "online"):
        files[cpu_dir / name] = f"0-{cores - 1}\n" if cores > 1 else "0\n"
    for f, text in files.items():
        if f.is_file() and f.read_text() == text:
            continue
        tmp = f.with_name(f".{f.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, f)


def _copy_package(dest: Path) -> None:
    """This edgellm's Python sources (the child imports only ``edgellm.runtime``: stdlib + numpy)."""
    src = Path(__file__).resolve().parents[1]
    shutil.copytree(src, dest / "edgellm", ignore=lambda d, names: [n for n in names if _skip(Path(d) / n)])


def _skip(p: Path) -> bool:
    return p.name == "__pycache__" or (p.is_file() and p.suffix != ".py")


class Arm64Runner(IsolatedRunner):
    """``make_runner(model, runtime, **options)`` in an aarch64 Python under qemu-user, in the arm64 root.

    The model file (or artifact directory) is copied into a scratch folder inside the root with this
    edgellm's sources; both are removed on :meth:`close`. ``threads`` defaults to this host's cores.

    Args:
        runtime: ``litert`` or ``onnxruntime``/``onnxruntime-mobile`` (the runtimes the root has).
        model: a model file or an artifact directory.
        host: from :func:`find_root` (and :meth:`Arm64Host.with_cpu`).
        **options: the runner's options (``xnnpack=False`` for TFLite's builtin kernels...).
    """

    def __init__(self, runtime: str, model: str | Path, host: Arm64Host, **options: Any) -> None:
        self.host = host
        cores = os.cpu_count() or 1
        _fake_cpu_files(host, cores)
        options.setdefault("intra_op_threads", cores)
        (host.root / "tmp").mkdir(exist_ok=True)
        self._stage = Path(tempfile.mkdtemp(prefix="edgellm-", dir=host.root / "tmp"))
        try:
            _copy_package(self._stage / "src")
            src = Path(model)
            inside = self._stage / "model" / src.name
            if src.is_dir():
                shutil.copytree(src, inside, copy_function=_link_or_copy)
            else:
                inside.parent.mkdir()
                _link_or_copy(src, inside)
            guest = "/" + str(self._stage.relative_to(host.root))
            self._guest_model = f"{guest}/model/{src.name}"
            self._argv = [shutil.which("chroot") or "chroot", str(host.root), QEMU, "-cpu", host.cpu, PY]
            self._env = {
                "PYTHONPATH": f"{guest}/src",
                "PYTHONNOUSERSITE": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "HOME": "/tmp",
                "PATH": "/usr/bin:/bin",
                "LANG": "C.UTF-8",
            }
            super().__init__(runtime, self._guest_model, **options)
        except BaseException:
            shutil.rmtree(self._stage, ignore_errors=True)
            raise
        self.runtime_name = f"{runtime} (arm64 {host.cpu}, emulated)"

    def command(self, fd: int) -> list[str]:
        return [*self._argv, "-m", "edgellm.runtime.isolated", str(fd)]

    def environment(self) -> dict[str, str] | None:
        return self._env

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.host.describe()}

    def time(self, feeds: Any, runs: int) -> list[float]:
        raise EdgeLLMError(
            "timings under emulation are not latencies (qemu-user translates every instruction)",
            "time the artifact on the phone (edgellm bench --device adb) or on the x86 host",
        )

    def peak_rss_mb(self) -> float | None:
        return None  # no /proc in the root

    def close(self) -> None:
        try:
            super().close()
        finally:
            stage = getattr(self, "_stage", None)
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)
                self._stage = None


def _link_or_copy(src: Any, dst: Any) -> Any:
    with contextlib.suppress(OSError):
        os.link(src, dst)
        return dst
    return shutil.copy2(src, dst)
