"""Load on the batching server: throughput and p50/p99 at concurrency 1, 8, 32 and 64 for MiniLM at
sequence 16 and 128, for edgellm with dynamic batching on ONNX Runtime and on OpenVINO (the artifact's
validated bf16/f32), edgellm with ``--max-batch-size 1``, and the same ONNX Runtime model served by
LitServe with its batching; plus each runtime's raw throughput at the same batch sizes (no server at all,
each runtime in its own process) as the ceiling.

    .venv/bin/python benchmarks/serve_load.py --seconds 4

Every server runs as its own process with the same runtime thread count; the load generator is one
asyncio process (keep-alive connections, requests encoded once). Prints JSON and writes it to
edgellm-out/serve_load.json. A server half from a split model joins once the partition stage exists.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


async def load(url: str, bodies: list[tuple[bytes, dict]], concurrency: int, seconds: float) -> dict:
    import aiohttp

    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < stop:
                body, headers = bodies[i % len(bodies)]
                i += concurrency
                t0 = time.perf_counter()
                async with s.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        lat.append(time.perf_counter() - t0)
                    else:
                        errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "errors": errors,
        "throughput_rps": len(lat) / wall,
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
    }


def kserve_bodies(feeds_list: list[dict]) -> list[tuple[bytes, dict]]:
    """KServe v2 binary requests (Triton's extension), as tritonclient sends them."""
    out = []
    for feeds in feeds_list:
        head = {
            "inputs": [
                {
                    "name": k,
                    "datatype": "INT64",
                    "shape": list(v.shape),
                    "parameters": {"binary_data_size": v.nbytes},
                }
                for k, v in feeds.items()
            ],
            "outputs": [{"name": "sentence_embedding", "parameters": {"binary_data": True}}],
        }
        h = json.dumps(head).encode()
        out.append(
            (
                h + b"".join(v.tobytes() for v in feeds.values()),
                {"Inference-Header-Content-Length": str(len(h))},
            )
        )
    return out


def litserve_bodies(feeds_list: list[dict]) -> list[tuple[bytes, dict]]:
    return [
        (json.dumps({k: v.tolist() for k, v in f.items()}).encode(), {"Content-Type": "application/json"})
        for f in feeds_list
    ]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    import urllib.request

    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def ceiling(
    artifact,
    seqs: list[int],
    batches: list[int],
    threads: int,
    runs: int,
    model,
    runtime: str = "onnxruntime",
) -> dict:
    """Raw rows/s of ``runtime`` at each batch size, in a process of its own: the most any server on
    this runtime can deliver."""
    from edgellm.runtime.isolated import IsolatedRunner

    r = IsolatedRunner(runtime, str(artifact.path), threads=threads)
    out = {}
    try:
        for s in seqs:
            for b in batches:
                f = model.example_inputs(batch=b, seq=s, seed=0, padded=False)
                t = r.time(f, runs + 1)[1:]
                out[f"s{s}_b{b}"] = b / (float(np.median(t)) / 1000)
    finally:
        r.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="load duration per point")
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--seqs", default="16,128")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--port", type=int, default=18000)
    ap.add_argument("--no-litserve", action="store_true")
    ap.add_argument(
        "--compare-spin-wait", action="store_true", help="add the batched server with --spin-wait"
    )
    ap.add_argument("--serve-args", default="", help="extra arguments for edgellm serve, e.g. '--spin-wait'")
    args = ap.parse_args(argv)
    concs = [int(c) for c in args.concurrency.split(",")]
    seqs = [int(s) for s in args.seqs.split(",")]

    from edgellm.export import Artifact, export
    from edgellm.models import load as load_model

    model = load_model("minilm")
    art_dir = ROOT / "edgellm-out" / "serve-bench" / "minilm-x86-server"
    try:
        import openvino  # noqa: F401

        runtimes = ["onnxruntime", "openvino"]
    except ImportError:
        runtimes = ["onnxruntime"]
    art = Artifact.load(art_dir) if (art_dir / "manifest.json").is_file() else None
    if art is None or (len(runtimes) > 1 and "runtimes" not in art.manifest):  # validated in OpenVINO too
        art = export(model, "x86-server", art_dir, runtimes="auto", threads=args.threads, force=True)
    inputs = {
        s: [model.example_inputs(batch=1, seq=s, seed=i, padded=False) for i in range(64)] for s in seqs
    }
    py = sys.executable
    serve = [py, "-m", "edgellm.cli", "serve", str(art.path), "--max-queue-size", "1024"]
    batched = [
        "--max-batch-size",
        str(args.max_batch_size),
        "--max-queue-delay-ms",
        str(args.max_queue_delay_ms),
    ]
    modes = {
        "edgellm batched": [*serve, *batched, "--runtime", "onnxruntime"],
        "edgellm max-batch-size 1": [*serve, "--max-batch-size", "1", "--runtime", "onnxruntime"],
    }
    if "openvino" in runtimes:
        modes["edgellm batched openvino"] = [*serve, *batched, "--runtime", "openvino"]
    if args.compare_spin_wait:  # the same batched server with ONNX Runtime's threads spin-waiting
        modes["edgellm batched spin-wait"] = [*modes["edgellm batched"], "--spin-wait"]
    if not args.no_litserve:
        modes["litserve batched"] = [
            py,
            str(ROOT / "benchmarks" / "_litserve_server.py"),
            str(art.path),
            "PORT",
            str(args.max_batch_size),
            str(args.max_queue_delay_ms / 1000),
            str(args.threads),
        ]
    results: dict[str, list] = {}
    for i, (mode, cmd) in enumerate(modes.items()):
        port = args.port + i
        if mode.startswith("edgellm"):
            cmd = [
                *cmd,
                "--port",
                str(port),
                "--grpc-port",
                "-1",
                "--threads",
                str(args.threads),
                "--log-level",
                "warning",
                *args.serve_args.split(),
            ]
            health, url = (
                f"http://127.0.0.1:{port}/v2/health/ready",
                f"http://127.0.0.1:{port}/v2/models/minilm/infer",
            )
            make = kserve_bodies
        else:
            cmd = [c if c != "PORT" else str(port) for c in cmd]
            health, url = f"http://127.0.0.1:{port}/health", f"http://127.0.0.1:{port}/predict"
            make = litserve_bodies
        print(f"{mode}: starting", file=sys.stderr)
        # own process group: LitServe forks workers that a plain terminate() leaves running
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            wait_ready(health, proc)
            for s in seqs:
                bodies = make(inputs[s])
                asyncio.run(load(url, bodies, 4, 1.0))  # warm the connections and the runtime
                for c in concs:
                    row = asyncio.run(load(url, bodies, c, args.seconds))
                    row.update({"mode": mode, "seq": s})
                    results.setdefault(mode, []).append(row)
                    print(
                        f"  seq {s} c {c}: {row['throughput_rps']:.1f} req/s p50 {row['p50_ms']:.1f} p99 {row['p99_ms']:.1f}",
                        file=sys.stderr,
                    )
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(1.0)  # let the group exit and free the cores before the next server
    sizes = sorted({min(c, args.max_batch_size) for c in concs})
    ceils = {rt: ceiling(art, seqs, sizes, args.threads, 20, model, rt) for rt in runtimes}
    ceil = ceils["onnxruntime"]

    def tp(mode: str, s: int, c: int) -> float:
        return next(r["throughput_rps"] for r in results[mode] if r["seq"] == s and r["concurrency"] == c)

    cmax = max(concs)
    summary = {}
    for s in seqs:
        summary[f"seq{s}"] = {
            f"batched / ceiling at c{cmax}": tp("edgellm batched", s, cmax)
            / ceil[f"s{s}_b{min(cmax, args.max_batch_size)}"],
            f"batched / unbatched at c{cmax}": tp("edgellm batched", s, cmax)
            / tp("edgellm max-batch-size 1", s, cmax),
        }
        if "edgellm batched openvino" in results:
            b = f"s{s}_b{min(cmax, args.max_batch_size)}"
            summary[f"seq{s}"][f"openvino / onnxruntime throughput at c{cmax}"] = tp(
                "edgellm batched openvino", s, cmax
            ) / tp("edgellm batched", s, cmax)
            summary[f"seq{s}"][
                f"openvino / onnxruntime runtime rows/s at batch {min(cmax, args.max_batch_size)}"
            ] = ceils["openvino"][b] / ceils["onnxruntime"][b]
        if "litserve batched" in results:
            summary[f"seq{s}"][f"batched / litserve throughput at c{cmax}"] = tp(
                "edgellm batched", s, cmax
            ) / tp("litserve batched", s, cmax)
            lit = next(r for r in results["litserve batched"] if r["seq"] == s and r["concurrency"] == cmax)
            ours = next(r for r in results["edgellm batched"] if r["seq"] == s and r["concurrency"] == cmax)
            summary[f"seq{s}"][f"p99 batched / litserve at c{cmax}"] = ours["p99_ms"] / lit["p99_ms"]
    from edgellm.bench import host_info
    from edgellm.runtime.openvino_runner import validated_precision

    out = {
        "config": vars(args),
        "host": host_info(),
        "results": results,
        "ceiling_rows_per_s": ceil,
        "ceiling_rows_per_s_by_runtime": ceils,
        "openvino_precision": validated_precision(art.manifest) if "openvino" in runtimes else None,
        "summary": summary,
    }
    text = json.dumps(out, indent=2)
    (ROOT / "edgellm-out").mkdir(exist_ok=True)
    (ROOT / "edgellm-out" / "serve_load.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
