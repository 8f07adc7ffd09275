"""The network and CPU emulation the split benchmark stands on: namespaces, tbf bandwidth, the RTT relay,
the cgroup CPU quota. Skipped with the reason where this host lacks the rights (root, iproute2, cgroup v1)."""

import subprocess
import sys

import pytest

from edgellm.bench.netem import CpuLimit, EmulatedLink, missing_rights, wait_port

reason = missing_rights()
pytestmark = pytest.mark.skipif(reason is not None, reason=f"network emulation unavailable: {reason}")

SINK = """
import socket, sys
s = socket.create_server(("{ip}", 9100))
while True:
    c, _ = s.accept()
    head = c.recv(16)
    if not head:  # a readiness probe
        c.close()
        continue
    n = int(head.split(b":")[0])
    got = len(head) - 16
    while got < n:
        got += len(c.recv(1 << 16))
    c.sendall(b"ok")
    c.close()
"""

CLIENT = """
import socket, time, json
out = {{}}
for n in (1, {big}):
    t = time.perf_counter()
    c = socket.create_connection(("127.0.0.1", 9200))
    c.sendall(f"{{n}}:".encode().ljust(16) + b"x" * n)
    assert c.recv(2) == b"ok"
    out[n] = time.perf_counter() - t
    c.close()
print(json.dumps(out))
"""


def test_link_adds_the_rtt_and_caps_the_bandwidth():
    import json

    big = 500_000
    with EmulatedLink() as link:
        link.shape(up_bps=8e6, down_bps=8e6)
        procs = [
            subprocess.Popen(link.in_server([sys.executable, "-c", SINK.format(ip=link.server_ip)])),
        ]
        try:
            wait_port(link.in_server([]), link.server_ip, 9100)
            procs.append(
                subprocess.Popen(
                    link.in_phone(
                        [
                            sys.executable,
                            "-m",
                            "edgellm.bench.netem",
                            "relay",
                            "9200",
                            link.server_ip,
                            "9100",
                            "25",
                        ]
                    )
                )
            )
            wait_port(link.in_phone([]), "127.0.0.1", 9200)
            res = subprocess.run(
                link.in_phone([sys.executable, "-c", CLIENT.format(big=big)]),
                capture_output=True,
                text=True,
                check=True,
            )
            t = json.loads(res.stdout)
        finally:
            for p in procs:
                p.kill()
    small, large = t["1"], t[str(big)]
    # one exchange is one RTT (2 x 25 ms) plus a little; connection setup through the relay adds nothing shaped
    assert 0.045 <= small <= 0.2, small
    # 500 kB at 8 Mbit/s is 0.5 s of line time, plus the RTT
    assert 0.45 <= large - small <= 0.9, large


def test_cpu_limit_slows_a_process_to_its_fraction():
    spin = "import time\nt=time.process_time()\nx=0\nwhile time.process_time()-t<0.3: x+=1\n"
    code = f"import time; w=time.perf_counter(); exec({spin!r}); print(time.perf_counter()-w)"
    with CpuLimit(0.25) as cg:
        p = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, "-c", "import sys; sys.stdin.readline();" + code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        cg.add(p.pid)
        out, _ = p.communicate("go\n", timeout=60)
    wall = float(out)
    assert wall >= 0.3 / 0.25 * 0.8, wall  # 0.3 s of CPU at a quarter of a core: about 1.2 s of wall time
    assert not cg.path.exists()
