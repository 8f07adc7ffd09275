"""LLM serving under load: edgellm's OpenAI API with continuous batching, the same with batching off, and
llama.cpp's ``llama-server``, on the same weights, at 1, 4, 16 and 32 concurrent streams.

Models: the bundled tiny-llama and the half-billion Qwen2.5-0.5B-shaped synthetic decoder of
``benchmarks/bench_generate.py`` (the same cached HF folder, or ``--qwen DIR``). Each arm is its own process:

- ``edgellm``: ``edgellm serve ART --max-batch-size 32 --threads T --grpc-port -1``, ART written by
  ``export_generate`` from the HF folder (fp32; ``--precisions fp32,int8`` adds INT8);
- ``edgellm-nobatch``: the same server with ``--max-batch-size 1``;
- ``llama-server``: ``llama-server -m X.gguf -c CTX*32 -np 32 -t T -tb T --no-cache-prompt --metrics``,
  the GGUF converted from the same HF folder (F32 against fp32, Q8_0 against int8) by ``peers_llama``,
  llama.cpp built from the llama-cpp-python sdist. Continuous batching is llama-server's default; its
  prompt cache is off, so every request prefills its prompt as it does in edgellm.

The load generator is a separate process (this script with ``--client URL``, see ``benchmarks/llm_load.py``):
C workers stream ``POST /v1/completions`` with a fixed ``--prompt-tokens`` text, ``max_tokens 64``,
``temperature 0``, ``ignore_eos``; warm-up requests are discarded. All arms of a model run at once (idle
but for the one under load); per round the arms take turns at each concurrency, the order rotating, and
the table keeps each point's best round (this host's cores are shared: the best is the least disturbed).
``usage.prompt_tokens`` of every arm is checked to be the same. Prints JSON, writes
``edgellm-out/serve_llm_load.json`` and ``edgellm-out/serve_llm_load.md``; the issue's goals are checked at
C=16 on tiny-llama: edgellm tok/s >= 1.0x llama-server's at a p99 TTFT <= its own, batching >= 2x off.

    .venv/bin/python benchmarks/serve_llm_load.py --seconds 20 --rounds 2           # the full run
    .venv/bin/python benchmarks/serve_llm_load.py --quick                           # a smoke run
    .venv/bin/python benchmarks/serve_llm_load.py --client http://127.0.0.1:8000 --concurrency 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import llm_load  # noqa: E402

ARMS = ("edgellm", "edgellm-nobatch", "llama-server")
FULL = {
    "models": "tiny-llama,qwen05",
    "concurrency": "1,4,16,32",
    "seconds": 20.0,
    "warmup_s": 3.0,
    "rounds": 2,
}
QUICK = {"models": "tiny-llama", "concurrency": "1,4", "seconds": 3.0, "warmup_s": 1.0, "rounds": 1}
COUNTERS = (
    "prompt_tokens_total",
    "generation_tokens_total",
    "tokens_predicted_total",
    "cached_total",
    "batch_occupancy_count",  # edgellm: passes with decodes
    "n_decode_total",  # llama-server: llama_decode() calls
)
PROMPT_NOTE = (
    "one token apart: edgellm prepends the tokenizer's BOS to a text prompt (Generator.encode) and "
    "llama-server does not (the GGUF says add_bos_token false); --prompt-ids sends both the same ids"
)
GGUF_OF = {"fp32": "f32", "int8": "q8_0"}  # edgellm precision -> the llama.cpp file of the same weights
TEXT = (
    "The standard library offers a wide range of facilities. It contains built-in modules, written in C, "
    "that provide access to system functionality such as file input and output that would otherwise be "
    "inaccessible to programmers, as well as modules written in Python that provide standardized solutions "
    "for many problems that occur in everyday programming. Some of these modules are explicitly designed to "
    "encourage and enhance the portability of programs by abstracting away platform specifics into neutral "
    "interfaces. A list of the functions, constants and exceptions of each module follows, with examples "
    "of how they are used, what they return, and which errors they raise when the arguments are wrong. "
)


# ------------------------------------------------------------------------------------------------- setup
def hf_folder(model: str, args: argparse.Namespace) -> Path:
    """The Hugging Face folder of ``model`` (tiny-llama: the bundled one; qwen05: bench_generate's)."""
    if model == "tiny-llama":
        from edgellm.models import bundled_path

        return Path(bundled_path("tiny-llama"))  # type: ignore[arg-type]
    if args.qwen is not None:
        return args.qwen
    import bench_generate

    return bench_generate.model_dir("qwen2.5-0.5b", None, ROOT / ".peers" / "bench-generate" / "models")


def make_prompt(hf: Path, n_tokens: int) -> tuple[str, list[int]]:
    """``TEXT`` (repeated) cut to ``n_tokens`` tokens of ``hf``'s tokenizer, and the ids it encodes to."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(hf / "tokenizer.json"))
    ids = tok.encode(TEXT * 8, add_special_tokens=False).ids[:n_tokens]
    text = tok.decode(ids).strip()
    return text, tok.encode(text, add_special_tokens=False).ids


def edgellm_artifact(hf: Path, precision: str, context: int, work: Path, rebuild: bool = False) -> Path:
    """The generation artifact of ``hf`` at ``precision`` (cached under ``work``; built when missing)."""
    from edgellm.pipeline.generate_export import export_generate

    out = work / "artifacts" / f"{hf.name}-ctx{context}" / precision
    if rebuild or not (out / "manifest.json").is_file():
        print(f"exporting {hf.name} {precision} (context {context}) -> {out}", file=sys.stderr)
        export_generate(
            str(hf),
            out,
            precision=precision,
            context=context,
            min_agreement=0.0,  # synthetic weights give near-ties: parity recorded, not enforced
            force=True,
            log=lambda m: print(f"  [{hf.name} {precision}] {m}", file=sys.stderr),
        )
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def arm_command(
    arm: str, model_file: Path, port: int, args: argparse.Namespace
) -> tuple[list[str], str, str]:
    """The command line of ``arm`` on ``port``, its base URL and its readiness path."""
    t = str(args.threads)
    if arm == "llama-server":
        import peers_llama

        cmd = [
            str(peers_llama.llama_server()),
            "-m",
            str(model_file),
            "-c",
            str(args.context * args.max_batch_size),  # split evenly across the -np slots
            "-np",
            str(args.max_batch_size),
            "-t",
            t,
            "-tb",
            t,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics",
            "--no-webui",
            *([] if args.llama_prompt_cache else ["--no-cache-prompt"]),
        ]
        return cmd, f"http://127.0.0.1:{port}", "/health"
    batch = str(args.max_batch_size if arm == "edgellm" else 1)
    cmd = [
        sys.executable,
        "-m",
        "edgellm.cli",
        "serve",
        str(model_file),
        "--max-batch-size",
        batch,
        "--threads",
        t,
        "--grpc-port",
        "-1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *args.serve_args.split(),
    ]
    return cmd, f"http://127.0.0.1:{port}", "/v2/health/ready"


class Arm:
    """One server process (its own process group, its output in a log file)."""

    def __init__(self, name: str, cmd: list[str], base: str, health: str, log: Path) -> None:
        self.name, self.cmd, self.base, self.health, self.log = name, cmd, base, base + health, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(log, "w")  # noqa: SIM115 (held for the life of the process)
        self._out.write("$ " + " ".join(cmd) + "\n")
        self._out.flush()
        # cwd: `python -m edgellm.cli` imports the edgellm of this checkout (sys.path[0] beats PYTHONPATH)
        self.proc = subprocess.Popen(
            cmd, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
        )

    def wait_ready(self, timeout: float = 600) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-6:]
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {' | '.join(tail)}")
            try:
                with urllib.request.urlopen(self.health, timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name}: {self.health} not ready after {timeout:.0f} s (log: {self.log})")

    def counters(self) -> dict[str, float]:
        """The token counters of the server's Prometheus ``/metrics`` (prompt, generated, cached)."""
        try:
            with urllib.request.urlopen(self.base + "/metrics", timeout=5) as r:
                text = r.read().decode()
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}"}  # type: ignore[dict-item]
        out: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if line.startswith("#") or not any(k in name for k in COUNTERS):
                continue
            with contextlib.suppress(ValueError):
                out[name] = float(value)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()


def git_commit() -> str | None:
    """This checkout's commit (``+dirty`` when tracked files changed), as the report's provenance."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "-uno"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else None


def tokens_per_pass(counters: dict[str, float]) -> float | None:
    """Generated tokens per decode pass from a server's counters: ~1 without batching, up to the number
    of streams with it (edgellm: passes with decodes; llama-server: llama_decode calls, prompts included)."""
    gen = sum(
        v for k, v in counters.items() if "generation_tokens_total" in k or "tokens_predicted_total" in k
    )
    passes = sum(v for k, v in counters.items() if "batch_occupancy_count" in k or "n_decode_total" in k)
    return round(gen / passes, 2) if passes else None


def run_client(base: str, prompt_file: Path, c: int, args: argparse.Namespace) -> dict[str, Any]:
    """This script with ``--client``, in a process of its own; its JSON."""
    cmd = [
        sys.executable,
        __file__,
        "--client",
        base,
        "--prompt-file",
        str(prompt_file),
        "--concurrency",
        str(c),
        "--seconds",
        str(args.seconds),
        "--warmup-s",
        str(args.warmup_s),
        "--max-tokens",
        str(args.max_tokens),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"load client failed on {base}: {res.stderr.strip()[-800:]}")
    return json.loads(res.stdout)


# ------------------------------------------------------------------------------------------------ report
def best_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, precision, arm, concurrency): the round with the highest tok/s."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        k = (r["model_name"], r["precision"], r["arm"], r["concurrency"])
        if k not in best or r["tok_s"] > best[k]["tok_s"]:
            best[k] = r
    return list(best.values())


def goal_checks(rows: list[dict[str, Any]], model: str = "tiny-llama", c: int = 16) -> dict[str, Any]:
    """The issue's goals at ``c`` streams on ``model`` (fp32), from the best rows. A goal is left out when a
    row is missing and is None when a p99 TTFT is NaN (no request of that point finished: a longer
    ``--seconds`` measures it)."""
    at = {r["arm"]: r for r in rows if r["model_name"] == model and r["concurrency"] == c}
    at = {k: v for k, v in at.items() if v["precision"] == "fp32"}
    ours, llama, off = at.get("edgellm"), at.get("llama-server"), at.get("edgellm-nobatch")
    out: dict[str, Any] = {"model": model, "concurrency": c}
    if ours and llama:
        ratio = ours["tok_s"] / max(llama["tok_s"], 1e-9)
        out["tok_s_vs_llama_server"] = round(ratio, 3)
        out["p99_ttft_ms"] = {"edgellm": ours["ttft_ms_p99"], "llama-server": llama["ttft_ms_p99"]}
        p99s = (ours["ttft_ms_p99"], llama["ttft_ms_p99"])
        out["goal_vs_llama_server"] = (
            None if any(math.isnan(x) for x in p99s) else bool(ratio >= 1.0 and p99s[0] <= p99s[1])
        )
    if ours and off:
        ratio = ours["tok_s"] / max(off["tok_s"], 1e-9)
        out["batching_speedup"] = round(ratio, 3)
        out["goal_batching_2x"] = bool(ratio >= 2.0)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = "| model | precision | server | streams | tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | requests | errors |"
    lines = [head, "|" + "---|" * 11]
    order = {a: i for i, a in enumerate(ARMS)}
    for r in sorted(rows, key=lambda r: (r["model_name"], r["precision"], r["concurrency"], order[r["arm"]])):
        lines.append(
            f"| {r['model_name']} | {r['precision']}/{r['gguf']} | {r['arm']} | {r['concurrency']} | "
            f"{r['tok_s']:.1f} | {r['ttft_ms_p50']:.1f} | {r['ttft_ms_p99']:.1f} | {r['itl_ms_p50']:.1f} | "
            f"{r['itl_ms_p99']:.1f} | {r['requests']} | {r['errors']} |"
        )
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- main
def bench_model(model: str, precision: str, args: argparse.Namespace, concs: list[int]) -> dict[str, Any]:
    import peers_llama

    hf = hf_folder(model, args)
    work = ROOT / ".peers" / "serve-llm-load"
    text, ids = make_prompt(hf, args.prompt_tokens)
    prompt_file = work / f"prompt-{model}.json"
    prompt_file.parent.mkdir(parents=True, exist_ok=True)
    prompt_file.write_text(json.dumps(ids if args.prompt_ids else text))
    files: dict[str, Path] = {}
    if "llama-server" in args.arms:
        files["llama-server"] = peers_llama.gguf_models(hf, (GGUF_OF[precision],))[GGUF_OF[precision]]
    if {"edgellm", "edgellm-nobatch"} & set(args.arms):
        art = edgellm_artifact(hf, precision, args.context, work, args.rebuild)
        files["edgellm"] = files["edgellm-nobatch"] = art
    arms: dict[str, Arm] = {}
    runs: list[dict[str, Any]] = []
    try:
        for name in args.arms:
            cmd, base, health = arm_command(name, files[name], free_port(), args)
            arms[name] = Arm(name, cmd, base, health, work / "logs" / f"{model}-{precision}-{name}.log")
        for a in arms.values():
            a.wait_ready()
        for rnd in range(args.rounds):
            for c in concs:
                names = list(arms)
                k = (rnd + concs.index(c)) % len(names)
                for name in names[k:] + names[:k]:
                    busy = peers_llama.wait_for_quiet(**peers_llama.QUIET)
                    row = run_client(arms[name].base, prompt_file, c, args)
                    row.update(
                        {
                            "model_name": model,
                            "precision": precision,
                            "gguf": peers_llama.GGUF_TYPES[GGUF_OF[precision]],
                            "arm": name,
                            "round": rnd,
                            "cpu_busy_before": busy,
                        }
                    )
                    runs.append(row)
                    print(
                        f"  {model} {precision} {name} c={c} r{rnd}: {row['tok_s']:.1f} tok/s, "
                        f"TTFT p50/p99 {row['ttft_ms_p50']:.0f}/{row['ttft_ms_p99']:.0f} ms, "
                        f"ITL p50 {row['itl_ms_p50']:.1f} ms, {row['requests']} req, {row['errors']} err"
                        + (f" ({row['first_error'][:120]})" if row["errors"] else ""),
                        file=sys.stderr,
                    )
        counters = {name: a.counters() for name, a in arms.items()}
        for c in counters.values():
            c["tokens_per_pass"] = tokens_per_pass(c)
    finally:
        for a in arms.values():
            a.stop()
    warnings = []
    off = counters.get("edgellm-nobatch", {}).get("tokens_per_pass")
    if off is not None and off > 1.2:
        warnings.append(
            f"edgellm-nobatch generated {off} tokens per pass (1 expected): --max-batch-size 1 did not "
            "reach the LLM service, so the batching-off figures are not batching off"
        )
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    seen = {r["arm"]: r["prompt_tokens"] for r in runs if r["prompt_tokens"]}
    counts = sorted({n for v in seen.values() for n in v})
    return {
        "model": model,
        "precision": precision,
        "hf_dir": str(hf),
        "files": {k: str(v) for k, v in files.items()},
        "prompt": "token ids" if args.prompt_ids else "text",
        "prompt_tokens_tokenizer": len(ids),
        "prompt_tokens_by_server": seen,
        "server_counters": counters,
        "warnings": warnings,
        "prompt_tokens_match": len(counts) <= 1,
        **(
            {"prompt_tokens_note": PROMPT_NOTE}
            if len(counts) == 2 and counts[1] - counts[0] == 1 and not args.prompt_ids
            else {}
        ),
        "runs": runs,
    }


def client_main(args: argparse.Namespace) -> int:
    prompt = json.loads(args.prompt_file.read_text()) if args.prompt_file else TEXT
    res = asyncio.run(
        llm_load.run_load(
            args.client.rstrip("/"),
            prompt,
            concurrency=args.concurrency,
            seconds=args.seconds,
            warmup_s=args.warmup_s,
            max_tokens=args.max_tokens,
            model=args.model_id,
        )
    )
    print(json.dumps(res))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None, help="tiny-llama and/or qwen05 (default: both)")
    ap.add_argument(
        "--qwen",
        type=Path,
        default=None,
        help="HF folder of the half-billion model (default: bench_generate's)",
    )
    ap.add_argument("--precisions", default="fp32", help="fp32 and/or int8 (Q8_0 in llama-server)")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--concurrency", default=None, help="streams per point (default: 1,4,16,32)")
    ap.add_argument("--seconds", type=float, default=None, help="measured window per point (default: 20)")
    ap.add_argument(
        "--warmup-s", type=float, default=None, help="requests sent before this are discarded (3)"
    )
    ap.add_argument("--rounds", type=int, default=None, help="rounds over all points (default: 2)")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--prompt-ids", action="store_true", help="send the prompt as token ids, not text")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument(
        "--context",
        type=int,
        default=256,
        help="positions per sequence (edgellm artifact, llama-server slot)",
    )
    ap.add_argument(
        "--max-batch-size", type=int, default=32, help="edgellm's running requests; llama-server's -np"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rebuild", action="store_true", help="export the edgellm artifacts again")
    ap.add_argument("--serve-args", default="", help="extra arguments for edgellm serve")
    ap.add_argument("--llama-prompt-cache", action="store_true", help="leave llama-server's prompt cache on")
    ap.add_argument(
        "--quiet-timeout", type=float, default=10.0, help="wait up to this for an idle CPU before each point"
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run defaults: tiny-llama, C=1,4, 3 s, 1 round"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "edgellm-out" / "serve_llm_load.json")
    ap.add_argument("--client", metavar="URL", help="run only the load generator against URL, print its JSON")
    ap.add_argument("--prompt-file", type=Path, default=None, help="JSON: the prompt, a string or token ids")
    ap.add_argument("--model-id", default=None, help="the model name sent (default: the first of /v1/models)")
    a = ap.parse_args(argv)
    if a.client and a.concurrency is None:
        a.concurrency = "1"
    for k, v in (QUICK if a.quick else FULL).items():  # what the command line leaves unset
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.client:
        a.concurrency = int(a.concurrency)
        return client_main(a)
    a.arms = a.arms.split(",")
    concs = [int(x) for x in a.concurrency.split(",")]
    import peers_llama

    peers_llama.QUIET.update(max_busy=0.3, timeout=a.quiet_timeout)
    from edgellm.bench import host_info

    models = []
    for m in a.models.split(","):
        for p in a.precisions.split(","):
            models.append(bench_model(m, p, a, concs))
    rows = best_rows([r for m in models for r in m["runs"]])
    out = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "host": host_info(),
        "edgellm_commit": git_commit(),
        "models": models,
        "best": rows,
        "goals": goal_checks(rows),
        "same_checks_other_models": [goal_checks(rows, m) for m in a.models.split(",") if m != "tiny-llama"],
        "warnings": [w for m in models for w in m["warnings"]],
    }
    md = table(rows)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    notes = "".join(f"\nWARNING: {w}\n" for w in out["warnings"])
    a.out.with_suffix(".md").write_text(md + "\n\ngoals: " + json.dumps(out["goals"]) + "\n" + notes)
    print(md, file=sys.stderr)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
