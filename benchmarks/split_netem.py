"""Split inference measured for real under emulated networks: predicted vs measured latency per cut.

    sudo .venv/bin/python benchmarks/split_netem.py --model resnet18 --runs 5

What it does:
1. Exports the model cut at every block boundary (all-server and all-device included): the phone half as
   an ORT-mobile artifact, the server half as ONNX (``edgellm split export``).
2. Builds two network namespaces joined by a veth pair; ``tc tbf`` shapes the link to each profile's
   bandwidth, and a user-space relay adds its RTT (this kernel has no ``netem``).
3. The server (``edgellm serve``, one thread, every server half loaded) runs in one namespace on core 1;
   the phone half runs in the other on core 0, slowed by a cgroup CPU quota to the speed the cost model
   predicts for the phone relative to the server (``--device`` vs ``--server`` profiles). The server
   stands in for its profile at this host's speed, the phone at the predicted ratio below it.
4. The planner predicts every (cut, codec) for that emulated pair from a one-thread torch profile of
   this host; each cut is then measured with its predicted-best codec.

Reports, per profile: predicted and measured ms per cut with the measured breakdown, the planner's
choice, the measured best, whether the choice is within 10 % of the best, and whether a middle cut beats
both all-device and all-server. Prints JSON; writes it with a PNG plot to ``--output``. Needs root (it is
skipped with a clear message otherwise) and cleans up its namespaces and cgroup.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PROFILES = {  # name: (uplink, downlink, RTT)
    "3g": ("1mbit", "1mbit", "100ms"),
    "4g": ("10mbit", "10mbit", "50ms"),
    "wifi": ("50mbit", "50mbit", "10ms"),
}
PARTS = ("device_ms", "encode_ms", "network_ms", "server_ms", "decode_ms")
PORT, RELAY_PORT = 8000, 9000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the phone worker (runs inside the phone namespace and the CPU-limited cgroup) ----------------------
def worker(root: Path, url: str, feeds_path: Path, slowdown: float) -> None:
    import numpy as np

    from edgellm.runtime.codecs import Codec
    from edgellm.split.client import SplitClient

    feeds = dict(np.load(feeds_path))
    clients = {}
    for d in sorted(root.glob("cut*")):
        clients[int(d.name[3:])] = SplitClient.from_path(
            d, url, threads=1, retries=3, timeout_s=120, slowdown=slowdown
        )
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        c = clients[cmd["cut"]]
        if cmd["codec"] not in ("none", "raw"):
            c.codec = Codec(cmd["codec"])
        c.close()  # a fresh connection per measurement (the relay may have been restarted)
        samples = []
        for i in range(cmd["warmup"] + cmd["runs"]):
            _, t = c.infer(feeds)
            if i >= cmd["warmup"]:
                samples.append(t)
        print(json.dumps(samples), flush=True)


# -- orchestration --------------------------------------------------------------------------------------
def predict(model, root: Path, feeds, device: str, server: str, runs: int):
    """The emulated pair's cost table: server = this host (ONNX Runtime, one thread), phone = host x the
    cost model's predicted device/server ratio. Per-block host times come from the exported device halves
    themselves (prefix k minus prefix k-1, interleaved), i.e. from the runtime that runs them."""
    from edgellm.export import Artifact
    from edgellm.partition.cost import cost_table
    from edgellm.partition.planner import CostTable
    from edgellm.partition.profile import profile_blocks, profile_prefixes
    from edgellm.runtime import make_runner
    from edgellm.targets import load_target

    prof = profile_blocks(model, batch=1, seq=128, runs=3)  # shapes, weights, codec bytes; torch times unused
    real, basis = cost_table(model, prof, load_target(device), load_target(server))
    ratio = sum(real.device_ms) / sum(real.server_ms)
    n = len(model.blocks)
    runners = {
        k: make_runner(Artifact.load(root / f"cut{k}" / "device"), intra_op_threads=1)
        for k in range(1, n + 1)
    }
    host = profile_prefixes(runners, feeds, runs=runs)
    table = CostTable(
        blocks=real.blocks,
        device_ms=[h * ratio for h in host],
        server_ms=host,
        weight_bytes=real.weight_bytes,
        input_bytes=real.input_bytes,
        cut_shapes=real.cut_shapes,
        output_bytes=real.output_bytes,
        cut_codecs=real.cut_codecs,
        codec_scale={"device": ratio, "server": 1.0},
        side_bytes=real.side_bytes,
    )
    return table, ratio, {**basis, "host_block_ms_onnxruntime": dict(zip(real.blocks, host))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--profiles", default="3g,4g,wifi", help=f"comma-separated: {', '.join(PROFILES)}")
    ap.add_argument("--device", default="snapdragon-865")
    ap.add_argument("--server", default="x86-server")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--output", default="edgellm-out/split-netem")
    ap.add_argument(
        "--phone-cpu",
        choices=("cgroup", "dilate"),
        default="cgroup",
        help="slow the phone with a cgroup CPU quota (bursts shorter than a scheduler tick escape it), "
        "or by waiting (ratio - 1) x the CPU time of each device step (exact)",
    )
    ap.add_argument("--slowdown", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--feeds", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(Path(args.root), args.url, Path(args.feeds), args.slowdown)
        return 0

    from edgellm.bench.netem import missing_rights

    reason = missing_rights()
    if reason is not None:
        print(json.dumps({"skipped": True, "reason": reason}))
        log(
            f"split_netem skipped: {reason}. Run it as root on Linux with iproute2 and a cgroup v1 cpu controller."
        )
        return 0
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        ap.error(f"unknown profile {unknown[0]}; use {', '.join(PROFILES)}")

    import numpy as np

    from edgellm.models import load
    from edgellm.partition import Network
    from edgellm.partition.planner import make_plan
    from edgellm.partition.split_export import export_split
    from edgellm.runtime.codecs import ALL_CODECS

    out = Path(args.output).absolute()
    out.mkdir(parents=True, exist_ok=True)
    model = load(args.model)
    n = len(model.blocks)
    root = out / "halves"
    for k in range(n + 1):
        d = root / f"cut{k}"
        if not (d / "split.json").is_file():
            log(f"exporting cut {k}/{n}")
            export_split(model, cut=k, codec="fp16", output=d, device_format="ort", force=True)
    feeds = model.example_inputs(batch=1, seq=128, seed=0, padded=False)
    np.savez(out / "feeds.npz", **feeds)
    log(f"profiling {model.name} ({n} blocks) on this host, ONNX Runtime, one thread")
    table, ratio, basis = predict(model, root, feeds, args.device, args.server, 10)
    log(
        f"the cost model puts {args.device} at {ratio:.1f}x the time of {args.server}: phone slowed {ratio:.1f}x ({args.phone_cpu})"
    )

    from edgellm.bench.netem import CpuLimit, EmulatedLink, wait_port

    report = {
        "model": model.name,
        "blocks": [b.name for b in model.blocks],
        "device": args.device,
        "server": args.server,
        "phone_slowdown": ratio,
        "runs": args.runs,
        "phone_cpu": args.phone_cpu,
        "basis": {
            k: v
            for k, v in basis.items()
            if k in ("host_peak_gflops", "host_efficiency", "host_block_ms_onnxruntime")
        },
        "profiles": {},
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    py = sys.executable
    import contextlib

    dilate = args.phone_cpu == "dilate"
    with EmulatedLink() as link, contextlib.nullcontext() if dilate else CpuLimit(1.0 / ratio) as cpu:
        procs: list[subprocess.Popen] = []
        try:
            srv_cmd = [
                py,
                "-m",
                "edgellm.cli",
                "serve",
                *[str(root / f"cut{k}" / "server") for k in range(n)],
                "--host",
                link.server_ip,
                "--port",
                str(PORT),
                "--grpc-port",
                "-1",
                "--threads",
                "1",
                "--max-batch-size",
                "1",
                "--timeout",
                "120",
                "--max-body-mb",
                "256",
                "--log-level",
                "warning",
            ]
            procs.append(subprocess.Popen(link.in_server(["taskset", "-c", "1", *srv_cmd]), env=env))
            wait_port(link.in_server([]), link.server_ip, PORT, timeout_s=300)
            log("server half up in its namespace")
            wk = subprocess.Popen(
                link.in_phone(
                    [
                        "taskset",
                        "-c",
                        "0",
                        py,
                        __file__,
                        "--worker",
                        "--root",
                        str(root),
                        "--url",
                        f"http://127.0.0.1:{RELAY_PORT}",
                        "--feeds",
                        str(out / "feeds.npz"),
                        "--slowdown",
                        str(ratio if dilate else 1.0),
                    ]
                ),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            procs.append(wk)
            if wk.stdout.readline().strip() != "ready":
                raise RuntimeError("the phone worker did not start")
            if cpu is not None:
                cpu.add(wk.pid)
            for name in profiles:
                up, down, rtt = PROFILES[name]
                net = Network.parse(up, rtt, down)
                link.shape(net.up_bps, net.down_bps)
                relay = subprocess.Popen(
                    link.in_phone(
                        [
                            "taskset",
                            "-c",
                            "1",
                            py,
                            "-m",
                            "edgellm.bench.netem",
                            "relay",
                            str(RELAY_PORT),
                            link.server_ip,
                            str(PORT),
                            str(net.rtt_ms / 2),
                        ]
                    )
                )
                try:
                    wait_port(link.in_phone([]), "127.0.0.1", RELAY_PORT)
                    report["profiles"][name] = measure(wk, table, net, ALL_CODECS, args, make_plan, name)
                finally:
                    relay.kill()
                    relay.wait()
        finally:
            for p in procs:
                p.kill()
                p.wait()
    summary = {
        name: {
            k: r[k]
            for k in ("choice", "measured_best", "choice_over_best", "within_10pct", "middle_cut_wins")
        }
        for name, r in report["profiles"].items()
    }
    report["summary"] = summary
    stem = f"split_netem-{model.name}-{args.phone_cpu}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out / f"{stem}.png")
    print(json.dumps(report, indent=2))
    log(f"wrote {out / stem}.json and .png")
    return 0


def measure(wk, table, net, codecs, args, make_plan, name: str) -> dict:
    import numpy as np

    plan = make_plan(table, net, codecs=codecs)
    best_per_cut: dict[int, dict] = {}
    for c in plan.candidates:
        if c["cut"] not in best_per_cut or c["total_ms"] < best_per_cut[c["cut"]]["total_ms"]:
            best_per_cut[c["cut"]] = c
    rows = []
    for k in sorted(best_per_cut):
        cand = best_per_cut[k]
        wk.stdin.write(
            json.dumps({"cut": k, "codec": cand["codec"], "runs": args.runs, "warmup": args.warmup}) + "\n"
        )
        wk.stdin.flush()
        samples = json.loads(wk.stdout.readline())
        meas = {p: float(np.median([s[p] for s in samples])) for p in (*PARTS, "total_ms")}
        rows.append(
            {
                "cut": k,
                "after_block": cand["after_block"],
                "codec": cand["codec"],
                "predicted_ms": cand["total_ms"],
                "predicted": {
                    p: cand[p]
                    for p in ("device_ms", "codec_ms", "upload_ms", "rtt_ms", "server_ms", "download_ms")
                },
                "measured_ms": meas["total_ms"],
                "measured": {p: meas[p] for p in PARTS},
                "upload_bytes": int(samples[-1]["upload_bytes"]),
                "error_pct": 100.0 * (cand["total_ms"] - meas["total_ms"]) / meas["total_ms"],
            }
        )
        log(
            f"{name}: cut {k:2d} ({cand['after_block'] or 'input'}, {cand['codec']}): predicted {cand['total_ms']:8.1f} ms, measured {meas['total_ms']:8.1f} ms"
        )
    by_cut = {r["cut"]: r for r in rows}
    choice = plan.best["cut"]
    best = min(rows, key=lambda r: r["measured_ms"])
    n = len(table.blocks)
    middle = [r for r in rows if 0 < r["cut"] < n]
    best_middle = min(middle, key=lambda r: r["measured_ms"]) if middle else None
    ends = min(by_cut[0]["measured_ms"], by_cut[n]["measured_ms"])
    return {
        "network": {"up_bps": net.up_bps, "down_bps": net.down_bps, "rtt_ms": net.rtt_ms},
        "rows": rows,
        "choice": {
            "cut": choice,
            "after_block": plan.best["after_block"],
            "codec": plan.best["codec"],
            "predicted_ms": plan.best["total_ms"],
            "measured_ms": by_cut[choice]["measured_ms"],
        },
        "measured_best": {
            "cut": best["cut"],
            "after_block": best["after_block"],
            "codec": best["codec"],
            "measured_ms": best["measured_ms"],
        },
        "choice_over_best": by_cut[choice]["measured_ms"] / best["measured_ms"],
        "within_10pct": by_cut[choice]["measured_ms"] <= 1.10 * best["measured_ms"],
        "middle_cut_wins": bool(best_middle and best_middle["measured_ms"] < ends),
        "best_middle": None
        if best_middle is None
        else {"cut": best_middle["cut"], "measured_ms": best_middle["measured_ms"]},
        "all_device_ms": by_cut[n]["measured_ms"],
        "all_server_ms": by_cut[0]["measured_ms"],
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgellm.utils.plots import save_figure

    names = list(report["profiles"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = report["profiles"][name]["rows"]
        x = list(range(len(rows)))
        ax.plot(x, [r["predicted_ms"] for r in rows], "o--", label="predicted")
        ax.plot(x, [r["measured_ms"] for r in rows], "s-", label="measured")
        ch = report["profiles"][name]["choice"]["cut"]
        ax.axvline(ch, color="grey", lw=0.8, ls=":", label="planner's choice")
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels(
            [f"{r['after_block'] or 'input'}\n{r['codec']}" for r in rows], fontsize=6, rotation=60
        )
        ax.set_title(f"{report['model']}, {name}", fontsize=9)
        ax.set_ylabel("end-to-end ms")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
