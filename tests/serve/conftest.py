"""Fixtures of the server tests: a real `edgellm serve` process."""

import http.client
import socket
import subprocess
import sys
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_serve(artifact, tmp_path, *flags):
    """``edgellm serve ARTIFACT FLAGS`` on a free port, REST only; returns (process, port) once ready."""
    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - the server writes to it until it exits
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgellm.cli",
            "serve",
            str(artifact),
            "--port",
            str(port),
            "--grpc-port",
            "-1",
        ]
        + [str(f) for f in flags],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/v2/health/ready")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    pytest.fail("server did not become ready: " + (tmp_path / "serve.log").read_text()[-2000:])


@pytest.fixture(scope="session")
def serve_cli():
    """``serve_cli(artifact, log_dir, *flags)`` -> ``(process, port)``: `edgellm serve` (REST only) on a
    free port, once it is ready; the caller terminates it."""
    return _start_serve
