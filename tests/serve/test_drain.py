"""SIGTERM under load against a real `edgellm serve` process: every request a client got to send is
answered (200, or 503 with Retry-After once the drain began), none is reset or left without an answer;
a client that connects after the listener stopped is refused; stalled connections (half the headers, half
the body) do not delay the exit."""

import http.client
import json
import signal
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("aiohttp", reason="pip install 'edgellm[serve]'")

CLIENTS = 32


def test_sigterm_under_load_answers_every_request_sent(minilm_artifact, minilm, tmp_path, serve_cli):
    proc, port = serve_cli(minilm_artifact.path, tmp_path, "--max-batch-size", 4, "--threads", 1)
    f = minilm.example_inputs(batch=1, seq=64, seed=0)
    body = json.dumps(
        {
            "inputs": [
                {"name": k, "datatype": "INT64", "shape": list(v.shape), "data": v.ravel().tolist()}
                for k, v in f.items()
            ]
        }
    ).encode()
    stop = threading.Event()
    outcomes: list[Counter] = [Counter() for _ in range(CLIENTS)]
    bad: list[str] = []

    def client(i: int) -> None:
        """Requests until the server is gone, each one's outcome counted: even clients open a connection
        per request, odd ones keep theirs alive (reconnecting when an answer says Connection: close)."""
        seen = outcomes[i]
        conn = None
        while not stop.is_set():
            if conn is None or i % 2 == 0:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                if conn.sock is None:
                    conn.connect()
            except (ConnectionRefusedError, TimeoutError):
                seen["refused"] += 1  # never sent: the listener was gone
                return
            try:
                conn.request("POST", "/v2/models/minilm/infer", body=body)
                r = conn.getresponse()
                text = r.read()
            except (OSError, http.client.HTTPException) as exc:  # sent, and no answer
                seen["unanswered"] += 1
                bad.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                continue
            if r.status == 200 and len(json.loads(text)["outputs"][0]["data"]) == 384:
                seen["200"] += 1
            elif r.status == 503 and r.getheader("Retry-After") == "1":
                seen["503"] += 1
            else:
                seen[f"other {r.status}"] += 1
                bad.append(f"{r.status}: {text[:200]!r}")
            if i % 2 == 0:
                conn.close()

    head = b"POST /v2/models/minilm/infer HTTP/1.1\r\nHost: x\r\n"
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    stalled[0].sendall(head)  # half a request's headers, then nothing
    stalled[1].sendall(head + b"Content-Length: 1000\r\n\r\n" + body[:500])  # half its body, then nothing
    try:
        with ThreadPoolExecutor(CLIENTS) as ex:
            futs = [ex.submit(client, i) for i in range(CLIENTS)]
            time.sleep(1.5)  # load is on: requests queued, running, arriving
            t0 = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(20)
            exit_s = time.perf_counter() - t0
            time.sleep(0.2)
            stop.set()
            for fu in futs:
                fu.result()
    finally:
        for s in stalled:
            s.close()
        if proc.poll() is None:
            proc.kill()
    total = sum(outcomes, Counter())
    print(f"drain: {dict(total)}, exit {exit_s:.2f} s")  # the counts for the record (pytest -s)
    assert rc == 0
    assert total["unanswered"] == 0 and not bad, bad[:5]
    assert total["200"] > 0 and total["refused"] == CLIENTS
    assert exit_s < 5  # the stalled connection did not hold it up
