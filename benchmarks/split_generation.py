"""Split generation of tiny-llama through the real server: tokens/s per session and in aggregate against the
number of concurrent sessions, with and without batching of decode steps; time to first token per
network profile; and the all-on-server and all-on-device baselines.

    .venv/bin/python benchmarks/split_generation.py --sessions 1,4,16,32 --tokens 32

- Split: tiny-llama cut after 2 of its 6 layers (phone: ORT-mobile artifact, server: ONNX Runtime),
  fp16 hidden states between them; every session is one phone (a thread here, sharing this host's cores
  with the server: on a real deployment each phone has its own CPU, so these per-session figures are a
  lower bound).
- Batching on: the server batches whatever decode steps are waiting (up to 32); off: one step per pass.
- All-on-server: the phone only embeds the tokens (cut after 0 layers); all-on-device: both halves run on
  the phone, no network (one session).
- Network profiles of the partition issue (3g 1 Mbit/s 100 ms, 4g 10 Mbit/s 50 ms, wifi 50 Mbit/s
  10 ms): with root, the server runs in its own network namespace behind a ``tc``-shaped veth link and
  the phone in another, with the RTT relay of ``edgellm.bench.netem`` (as ``split_netem.py`` does);
  without root, the relay alone on loopback (real round trips, bandwidth not shaped).
Prints JSON and writes it to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

PROFILES = {"wifi": ("50mbit", 10.0), "4g": ("10mbit", 50.0), "3g": ("1mbit", 100.0)}  # as in split_netem.py


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", default="1,4,16,32")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--cut", type=int, default=2)
    ap.add_argument("--output", type=Path, default=Path("edgellm-out/split_generation.json"))
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # run inside the phone namespace
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        from edgellm.pipeline.generation import bench_generation

        print(json.dumps(bench_generation(args.worker, args.url, [1], tokens=args.tokens)[0]), flush=True)
        return 0
    sessions = [int(x) for x in args.sessions.split(",")]

    from edgellm.bench.netem import relay
    from edgellm.bench.report import write_json
    from edgellm.export import Artifact
    from edgellm.models import load
    from edgellm.models.decoder_step import cache_halves, reference_greedy
    from edgellm.pipeline.generation import bench_generation, export_generation
    from edgellm.runtime import make_runner
    from edgellm.serve import ModelConfig, serve_in_background
    from edgellm.split.generation_client import GenerationClient
    from edgellm.split.stepper import greedy_split

    root = Path(tempfile.mkdtemp(prefix="edgellm-gen-"))
    model = load("tiny-llama")
    out: dict = {"model": "tiny-llama", "cut": args.cut, "tokens": args.tokens, "codec": "fp16"}
    split = root / "split"
    export_generation(model, args.cut, split)
    server_only = root / "server-only"
    export_generation(model, 0, server_only)
    name = "tiny-llama-gen-server"

    def serve(folder: Path, batch: int):
        return serve_in_background([ModelConfig(folder / "server")], max_batch_size=batch, max_sessions=64)

    # codec agreement: 64 greedy tokens for 8 prompts, fp16 and int8 against the unsplit model

    from edgellm.data.corpus import pydoc_topics, sentences

    prompts = sentences(pydoc_topics()[20:40])[:8]
    with serve(split, 32) as srv:
        url = f"http://127.0.0.1:{srv.config.port}"
        agree: dict[str, list[float]] = {"fp16": [], "int8": []}
        for text in prompts:
            ids = GenerationClient(split, url).encode(text)
            want = reference_greedy(model, ids, 64)
            for codec in agree:
                c = GenerationClient(split, url, codec=codec)
                got = [t["token"] for t in c.generate(ids, 64, stop_at_eos=False)]
                agree[codec].append(sum(a == b for a, b in zip(got, want)) / 64)
        out["agreement_vs_unsplit"] = {k: round(sum(v) / len(v), 4) for k, v in agree.items()}
        out["agreement_prompts"] = len(prompts)

    for label, batch in (("batched", 32), ("unbatched", 1)):
        with serve(split, batch) as srv:
            url = f"http://127.0.0.1:{srv.config.port}"
            bench_generation(split, url, [1], tokens=4)  # warm-up
            out[f"split_{label}"] = bench_generation(split, url, sessions, tokens=args.tokens)
            out[f"split_{label}_server"] = srv.generators[name].describe()
    with serve(server_only, 32) as srv:
        url = f"http://127.0.0.1:{srv.config.port}"
        bench_generation(server_only, url, [1], tokens=4)
        out["all_on_server"] = bench_generation(server_only, url, sessions, tokens=args.tokens)

    # all on the device: both halves of a cut after every layer, run here, no network
    device = export_generation(model, len(model.module.lm.model.layers), root / "device-only")
    halves = cache_halves(model, device["layers_on_device"])
    runners = [make_runner(Artifact.load(root / "device-only" / r)) for r in ("device", "server")]
    prompt = GenerationClient(split, "http://127.0.0.1:1").encode("The with statement is used to wrap")
    greedy_split(runners[0].run, runners[1].run, halves, prompt, 4)
    t0 = time.perf_counter()
    greedy_split(runners[0].run, runners[1].run, halves, prompt, 1)
    ttft = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    greedy_split(runners[0].run, runners[1].run, halves, prompt, args.tokens)
    total = time.perf_counter() - t0
    out["all_on_device"] = {
        "sessions": 1,
        "ttft_ms": round(ttft, 2),
        "tok_s": round((args.tokens - 1) / max(total - ttft / 1000, 1e-9), 2),
    }

    # time to first token per network profile, one session
    from edgellm.bench.netem import missing_rights

    out["profiles"] = {}
    reason = missing_rights()
    if reason is None:
        out["network"] = "namespaces + tc tbf + RTT relay"
        out["profiles"] = netem_profiles(split, args.tokens)
    else:
        out["network"] = f"RTT relay on loopback, bandwidth not shaped ({reason})"
        with serve(split, 32) as srv:
            for i, (prof, (bw, rtt)) in enumerate(PROFILES.items()):
                port = 9100 + i
                threading.Thread(
                    target=relay, args=(port, ("127.0.0.1", srv.config.port), rtt / 2), daemon=True
                ).start()
                time.sleep(0.2)
                rows = bench_generation(split, f"http://127.0.0.1:{port}", [1], tokens=args.tokens)
                out["profiles"][prof] = {"rtt_ms": rtt, "bandwidth": bw, **rows[0]}
    out["command"] = "python benchmarks/split_generation.py " + " ".join(sys.argv[1:])
    write_json(out, args.output)
    print(json.dumps(out, indent=2, default=str))
    return 0


def netem_profiles(split: Path, tokens: int) -> dict:
    """Each profile for real: the server half in one namespace, the phone in another, a shaped link."""
    import os
    import subprocess

    from edgellm.bench.netem import EmulatedLink, wait_port
    from edgellm.partition.network import parse_bandwidth

    py, env, res = sys.executable, {**os.environ, "OMP_NUM_THREADS": "1"}, {}
    with EmulatedLink() as link:
        srv_cmd = [py, "-m", "edgellm.cli", "serve", str(split / "server"), "--host", link.server_ip]
        srv_cmd += ["--port", "8000", "--grpc-port", "-1", "--log-level", "warning"]
        server = subprocess.Popen(link.in_server(srv_cmd), env=env)
        try:
            wait_port(link.in_server([]), link.server_ip, 8000, timeout_s=300)
            for i, (prof, (bw, rtt)) in enumerate(PROFILES.items()):
                rate = parse_bandwidth(bw)
                link.shape(rate, rate)
                port = 9200 + i
                relay = subprocess.Popen(
                    link.in_phone(
                        [
                            py,
                            "-m",
                            "edgellm.bench.netem",
                            "relay",
                            str(port),
                            link.server_ip,
                            "8000",
                            str(rtt / 2),
                        ]
                    ),
                    env=env,
                )
                try:
                    time.sleep(1.0)
                    done = subprocess.run(
                        link.in_phone([py, __file__, "--worker", str(split), "--url", f"http://127.0.0.1:{port}", "--tokens", str(tokens)]),
                        env=env, capture_output=True, text=True, check=True, timeout=600,
                    )  # fmt: skip
                    res[prof] = {
                        "rtt_ms": rtt,
                        "bandwidth": bw,
                        **json.loads(done.stdout.strip().splitlines()[-1]),
                    }
                finally:
                    relay.terminate()
                    relay.wait(10)
        finally:
            server.terminate()
            server.wait(30)
    return res


if __name__ == "__main__":
    sys.exit(main())
