"""Training throughput of the bundled ``tiny-llama`` with 1 and 2 processes (``accelerate launch``), the
same global batch, one after the other on this machine.

    .venv/bin/python benchmarks/train_throughput.py --steps 20 --batch 16 --seq 128

Each process gets ``cores / processes`` threads. Prints JSON: tokens/s per configuration (after the first
two steps, which warm up), the final loss of each (they must agree: same global batch), and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(processes: int, steps: int, batch: int, seq: int, root: Path) -> dict:
    import yaml

    out = root / f"p{processes}"
    cfg = {
        "model": "tiny-llama",
        "output": str(out),
        "seq_len": seq,
        "batch_size": batch,
        "max_steps": steps,
        "eval_every": steps,
        "eval_batches": 1,
        "save_every": 10_000,
        "progress": False,
        "lr": 1e-4,
    }
    (root / f"p{processes}.yaml").write_text(yaml.safe_dump(cfg))
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu" if processes > 1 else "--cpu",
           "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--num_cpu_threads_per_process", str(threads),
           "-m", "edgellm.train", str(root / f"p{processes}.yaml")]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    log = [json.loads(x) for x in (out / "train_log.jsonl").open() if "loss" in x]
    a, b = log[1], log[-1]  # from the end of step 2 to the end: warm-up excluded
    tps = (b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"])
    return {
        "processes": processes,
        "threads_per_process": threads,
        "tokens_per_s": round(tps, 1),
        "final_loss": b["loss"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--output", default="edgellm-out/train_throughput.json")
    a = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="edgellm-train-bench-"))
    rows = [run(p, a.steps, a.batch, a.seq, root) for p in (1, 2)]
    report = {
        "model": "tiny-llama",
        "global_batch": a.batch,
        "seq_len": a.seq,
        "steps": a.steps,
        "runs": rows,
        "speedup_2_over_1": round(rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"], 3),
        "loss_difference": abs(rows[0]["final_loss"] - rows[1]["final_loss"]),
    }
    from edgellm.bench.report import write_json

    write_json(report, a.output)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
