"""Emulated phone <-> server networks on one Linux host, for measuring split inference for real.

- Two network namespaces (phone, server) joined by a veth pair (iproute2); addresses only inside them.
- Bandwidth: ``tc`` token-bucket filters (``tbf``) on each end: the phone's egress is the uplink, the
  server's the downlink.
- Round-trip time: this kernel has no ``netem``, so a small user-space TCP relay in the phone namespace
  (on its loopback) holds every chunk for RTT/2 in each direction before forwarding it, which adds the RTT
  to each exchange without capping throughput.
- A slower phone CPU: a cgroup v1 ``cpu`` group with ``cfs_quota_us / cfs_period_us`` = the fraction.

Everything needs root (CAP_NET_ADMIN and a writable cgroup); :func:`missing_rights` says what is lacking.
Every object cleans up after itself (namespaces, which take the veth with them; the cgroup).

Example:
    >>> with EmulatedLink() as link:                                       # doctest: +SKIP
    ...     link.shape(up_bps=10e6, down_bps=10e6)
    ...     subprocess.Popen(link.in_server([...edgellm serve ... --host", link.server_ip]))
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True)


def missing_rights() -> str | None:
    """Why network and CPU emulation cannot run here, or None when they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces, shaping links and CPU quotas needs root"
    for tool in ("ip", "tc", "taskset"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (iproute2 / util-linux)"
    name = f"elm-probe-{uuid.uuid4().hex[:6]}"
    try:
        _run("ip", "netns", "add", name)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create a network namespace: {getattr(exc, 'stderr', exc)}".strip()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    if not (CGROUP_CPU / "cpu.cfs_quota_us").exists() or not os.access(CGROUP_CPU, os.W_OK):
        return f"no writable cgroup v1 cpu controller at {CGROUP_CPU}"
    return None


class EmulatedLink:
    """Phone and server namespaces joined by a shaped veth pair."""

    def __init__(self, prefix: str | None = None) -> None:
        tag = prefix or f"elm{uuid.uuid4().hex[:5]}"
        self.phone_ns, self.server_ns = f"{tag}-phone", f"{tag}-srv"
        self.phone_if, self.server_if = f"{tag}p", f"{tag}s"
        self.phone_ip, self.server_ip = "10.231.0.2", "10.231.0.1"

    def __enter__(self) -> EmulatedLink:
        try:
            for ns in (self.phone_ns, self.server_ns):
                _run("ip", "netns", "add", ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "link", "add", self.phone_if, "type", "veth", "peer", "name", self.server_if)
            for ifc, ns, ip in (
                (self.phone_if, self.phone_ns, self.phone_ip),
                (self.server_if, self.server_ns, self.server_ip),
            ):
                _run("ip", "link", "set", ifc, "netns", ns)
                _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", ifc)
                _run("ip", "-n", ns, "link", "set", ifc, "up")
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def shape(self, up_bps: float, down_bps: float) -> None:
        """Token-bucket rate limits: phone -> server at ``up_bps``, server -> phone at ``down_bps``."""
        for ns, ifc, rate in (
            (self.phone_ns, self.phone_if, up_bps),
            (self.server_ns, self.server_if, down_bps),
        ):
            subprocess.run(
                ["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", ifc, "root"], capture_output=True
            )
            burst = max(3200, int(rate / 8 * 0.004))  # 4 ms of line rate, at least two full frames
            _run(
                "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", ifc, "root", "tbf",
                "rate", f"{int(rate)}bit", "burst", str(burst), "latency", "2000ms",
            )  # fmt: skip

    def in_phone(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.phone_ns, *argv]

    def in_server(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.server_ns, *argv]

    def cleanup(self) -> None:
        for ns in (self.phone_ns, self.server_ns):  # deleting a namespace deletes its veth end too
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class CpuLimit:
    """A cgroup v1 cpu group that lets its processes use ``fraction`` of one core."""

    def __init__(self, fraction: float, name: str | None = None) -> None:
        if not 0 < fraction <= 64:
            raise ValueError(f"CPU fraction {fraction} must be in (0, 64]")
        self.path = CGROUP_CPU / (name or f"edgellm-{uuid.uuid4().hex[:6]}")
        # a short period keeps throttling fine-grained; the kernel wants a quota of at least 1 ms
        self.period_us = max(20_000, int(1000 / fraction))
        self.quota_us = int(self.period_us * fraction)

    def __enter__(self) -> CpuLimit:
        self.path.mkdir()
        (self.path / "cpu.cfs_period_us").write_text(str(self.period_us))
        (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        return self

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the group."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        if not self.path.exists():
            return
        root = CGROUP_CPU / "cgroup.procs"
        for pid in (self.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # a live process goes back to the root group first
                root.write_text(pid)
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


# -- the RTT relay ------------------------------------------------------------------------------------
def _pump(src: socket.socket, dst: socket.socket, delay_s: float) -> None:
    q: queue.Queue = queue.Queue()

    def reader() -> None:
        while True:
            try:
                data = src.recv(1 << 16)
            except OSError:
                data = b""
            q.put((time.monotonic(), data))
            if not data:
                return

    threading.Thread(target=reader, daemon=True).start()
    while True:
        t, data = q.get()
        wait = t + delay_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if not data:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            return
        try:
            dst.sendall(data)
        except OSError:
            return


def relay(listen_port: int, target: tuple[str, int], delay_ms: float) -> None:
    """Forward 127.0.0.1:``listen_port`` to ``target``, each direction held ``delay_ms`` (RTT / 2)."""
    srv = socket.create_server(("127.0.0.1", listen_port), reuse_port=False)
    while True:
        client, _ = srv.accept()
        try:
            upstream = socket.create_connection(target, timeout=10)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        for a, b in ((client, upstream), (upstream, client)):
            a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_pump, args=(a, b, delay_ms / 1000.0), daemon=True).start()


def wait_port(argv_prefix: list[str], host: str, port: int, timeout_s: float = 60.0) -> None:
    """Wait until ``host:port`` accepts connections, checked from inside a namespace."""
    probe = f"import socket; socket.create_connection(('{host}', {port}), timeout=1).close()"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if subprocess.run([*argv_prefix, sys.executable, "-c", probe], capture_output=True).returncode == 0:
            return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s")


if __name__ == "__main__":  # python -m edgellm.bench.netem relay LISTEN_PORT HOST PORT DELAY_MS
    if len(sys.argv) != 6 or sys.argv[1] != "relay":
        sys.exit("usage: python -m edgellm.bench.netem relay LISTEN_PORT HOST PORT DELAY_MS")
    relay(int(sys.argv[2]), (sys.argv[3], int(sys.argv[4])), float(sys.argv[5]))
