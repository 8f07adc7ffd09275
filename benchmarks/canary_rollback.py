"""Canary rollback under steady load: the time from the canary's first bad request to its rollback, and
the requests that failed meanwhile (the stable version answers for a failing canary, so: none).

    .venv/bin/python benchmarks/canary_rollback.py --clients 8 --requests 400

Two versions of a small model behind a 90/10 split (``edgellm serve`` in this process, loopback): the
stable one answers in well under a millisecond; the canary either fails every request (a model with a
static batch of one, fed two rows) or is ~100x slower than the latency budget allows. Prints JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn


class Slow(nn.Module):
    """~85 M multiply-adds per row from 4 MB of weights: one 1024x1024 layer applied 80 times."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(16, 1024), nn.Linear(1024, 1024), nn.Linear(1024, 8)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        for _ in range(80):
            h = torch.tanh(self.mid(h))
        return self.out(h)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--canary-percent", type=float, default=10.0)
    ap.add_argument("--output", type=Path, default=Path("edgellm-out/canary_rollback.json"))
    args = ap.parse_args()

    from edgellm.bench.report import write_json
    from edgellm.export import export
    from edgellm.models import load
    from edgellm.serve import CanaryConfig, ModelConfig, serve_in_background

    root = Path(tempfile.mkdtemp(prefix="edgellm-canary-"))
    torch.manual_seed(0)

    def art(name, module, static=False):
        m = load(module.eval(), example_inputs=torch.randn(1, 16), dynamic_axes={} if static else None)
        return export(m, "x86-server", root / name).path

    fast = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    slow = Slow()
    cases = {
        "errors": (art("batch1", fast, static=True), 2, CanaryConfig(max_error_rate=0.05, min_requests=20)),
        "latency": (art("slow", slow), 1, CanaryConfig(max_p90_ms=10.0, min_requests=20)),
    }
    stable = art("fast", fast)
    out: dict = {
        "clients": args.clients,
        "requests": args.requests,
        "canary_percent": args.canary_percent,
        "cases": {},
    }
    split = {"m": {"1": 100 - args.canary_percent, "2": args.canary_percent}}
    for case, (canary, rows, policy) in cases.items():
        models = [ModelConfig(stable, "m", "1"), ModelConfig(canary, "m", "2")]
        with serve_in_background(models, traffic=split, canary=policy, max_queue_delay_ms=0) as srv:
            port = srv.config.port

            def call(_, port=port, rows=rows):
                body = {
                    "inputs": [
                        {"name": "input", "datatype": "FP32", "shape": [rows, 16], "data": [0.5] * 16 * rows}
                    ]
                }
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                t0 = time.perf_counter()
                conn.request(
                    "POST",
                    "/v2/models/m/infer",
                    body=json.dumps(body),
                    headers={"Content-Type": "application/json"},
                )
                r = conn.getresponse()
                r.read()
                return r.status, (time.perf_counter() - t0) * 1000

            with ThreadPoolExecutor(args.clients) as pool:
                res = list(pool.map(call, range(args.requests)))
            rel = srv.releases["m"].describe()
        d = rel["decisions"][0] if rel["decisions"] else None
        out["cases"][case] = {
            "decision": d,
            "rollback_s_from_first_bad_request": d["first_bad_to_decision_s"] if d else None,
            "failed_requests": sum(1 for s, _ in res if s != 200),
            "canary_requests": rel["counts"]["2"],
            "traffic_after": rel["traffic_percent"],
        }
    out["command"] = "python benchmarks/canary_rollback.py " + " ".join(sys.argv[1:])
    write_json(out, args.output)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
