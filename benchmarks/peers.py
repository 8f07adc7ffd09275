"""The peers of edgellm's token-rate benchmark: llama.cpp and onnxruntime-genai on the same HF weights.

Given a Hugging Face model folder (e.g. one written by ``edgellm.models.synthetic.synthesize``), these
functions build each peer's model and time it at batch 1, returning one dict per (runtime, precision,
prompt) with stable keys: ``runtime, precision, prompt, new, threads, ttft_ms, prefill_tok_s,
decode_tok_s, size_bytes, bytes_per_token, peak_rss_mb`` plus how it was built (``build``). Rates and
TTFT are the best of ``--reps`` (this host's cores are shared, so the best run is the one least disturbed);
``*_median`` beside them, and ``cpu_busy_before`` says how busy the machine was before each peer ran.

Everything a peer needs is made here, under ``.peers/`` in the repository root (git-ignored), never in
the project's virtual environment; each step is cached (a rerun finds what exists):

- llama.cpp: the sources come from the ``llama-cpp-python`` sdist (``vendor/llama.cpp``), built with
  cmake (``llama-bench``, ``llama-quantize``; ``llama-server`` for ``serve_llm_load.py``);
  ``convert_hf_to_gguf.py`` runs with its own ``gguf-py`` through ``benchmarks/peers_convert.py`` (which
  answers the bundled tokenizer's unknown pre-tokenizer hash); F32 by the converter, Q8_0 and Q4_0 by
  ``llama-quantize``; timed by ``llama-bench`` (prefill ``-p P -n 0``, decode ``-p 0 -n N -d P``, i.e.
  decode after a P-token context).
- onnxruntime-genai: its model builder needs a newer transformers than edgellm pins, so it gets its own
  venv ``.peers/genai-venv``; INT4 CPU model (``block_size``, ``accuracy_level`` recorded); timed with
  ``og.Generator`` in that venv by ``benchmarks/peers_genai.py``.
- :func:`memory_bandwidth`: this machine's read bandwidth (numpy sums over a 1 GB array), so a decode
  rate can be stated as a fraction of it (``bandwidth_fraction = decode_tok_s * bytes_per_token / bw``).

    .venv/bin/python benchmarks/peers.py --model /work/models/qwen05 --prompt 128,512 --new 128 \\
        --threads 2 --json

Example:
    >>> rows = bench_llama_cpp("/work/models/qwen05", precisions=("q4_0",), prompts=(128,))  # doctest: +SKIP
    >>> rows[0]["decode_tok_s"] > 0                                                         # doctest: +SKIP
    True
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # peers_llama beside this file, however imported
from peers_llama import (  # noqa: F401  (re-exported: the peers' one entry point is this module)
    GGUF_TYPES,
    HERE,
    LLAMA_CPP_PYTHON,
    PEERS,
    QUIET,
    PeerError,
    bench_llama_cpp,
    check_model,
    gguf_models,
    llama_cpp,
    model_key,
    run_logged,
    wait_for_quiet,
)

GENAI_PACKAGES = ("onnxruntime-genai==0.18.0", "transformers==5.24.0", "onnx==1.23.2", "onnx-ir==1.1.0")
TORCH = "torch==2.13.0"  # installed first, from the local CPU wheel


# -------------------------------------------------------------------------------------- onnxruntime-genai
def genai_python(root: Path = PEERS) -> Path:
    """The interpreter of ``root/genai-venv``, made on first use: torch (local CPU wheel) first, then
    onnxruntime-genai and the transformers its model builder accepts (``GENAI_PACKAGES``)."""
    venv = root / "genai-venv"
    py = venv / "bin" / "python"
    stamp = venv / ".edgellm-packages"
    want = "\n".join((TORCH, *GENAI_PACKAGES))
    if py.is_file() and stamp.is_file() and stamp.read_text() == want:
        return py
    hint = f"make it by hand: python -m venv {venv}; {venv}/bin/pip install {TORCH}; pip install {' '.join(GENAI_PACKAGES)}"
    logs = root / "logs"
    if not py.is_file():
        base = getattr(sys, "_base_executable", sys.executable)
        run_logged(
            [base, "-m", "venv", venv], logs / "genai-venv.log", what="creating the genai venv", hint=hint
        )
    run_logged(
        [py, "-m", "pip", "install", TORCH], logs / "genai-torch.log", what=f"pip install {TORCH}", hint=hint
    )
    run_logged(
        [py, "-m", "pip", "install", *GENAI_PACKAGES],
        logs / "genai-pip.log",
        what="pip install onnxruntime-genai",
        hint=hint,
    )
    stamp.write_text(want)
    return py


def genai_model(
    hf_dir: str | Path, *, block_size: int = 32, accuracy_level: int = 4, root: Path = PEERS
) -> tuple[Path, dict[str, Any]]:
    """onnxruntime-genai's model builder INT4 CPU model of ``hf_dir`` (cached) and the options used.

    ``block_size`` 32 and ``accuracy_level`` 4 (int8 activations in MatMulNBits) are the builder's CPU
    defaults, passed explicitly so the record does not depend on a default changing.
    """
    path = check_model(hf_dir)
    py = genai_python(root)
    opts = {
        "precision": "int4",
        "execution_provider": "cpu",
        "block_size": block_size,
        "accuracy_level": accuracy_level,
        "builder": GENAI_PACKAGES[0],
    }
    out = root / "genai" / f"{model_key(path)}-int4-b{block_size}-a{accuracy_level}"
    if not (out / "genai_config.json").is_file():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        run_logged(
            [
                py,
                "-m",
                "onnxruntime_genai.models.builder",
                "-i",
                path,
                "-o",
                tmp,
                "-p",
                "int4",
                "-e",
                "cpu",
                "-c",
                root / "genai" / "cache",
                "--extra_options",
                f"block_size={block_size}",
                f"accuracy_level={accuracy_level}",
            ],
            root / "genai" / f"{out.name}.log",
            what="onnxruntime-genai model builder",
            hint="see the log",
        )
        tmp.rename(out)
    return out, opts


def _onnx_bytes_per_token(model_dir: Path) -> int | None:
    """Initializer bytes of the genai model a decode step reads: all, less tables only looked up (Gather)."""
    try:
        import onnx
    except ImportError:
        return None
    m = onnx.load(str(model_dir / "model.onnx"), load_external_data=False)
    sizes: dict[str, int] = {}
    for init in m.graph.initializer:
        ext = {e.key: e.value for e in init.external_data}
        sizes[init.name] = int(ext["length"]) if "length" in ext else len(init.raw_data)
    users: dict[str, set[str]] = {}
    for node in m.graph.node:
        for name in node.input:
            users.setdefault(name, set()).add(node.op_type)
    lookups = {"Gather", "GatherBlockQuantized"}  # read one row per token
    gathered = sum(s for n, s in sizes.items() if users.get(n) and users[n] <= lookups)
    return sum(sizes.values()) - gathered


def bench_genai(
    hf_dir: str | Path,
    *,
    prompts: Sequence[int] = (128, 512),
    new: int = 128,
    threads: int = 2,
    runs: int = 3,
    block_size: int = 32,
    accuracy_level: int = 4,
    root: Path = PEERS,
) -> list[dict[str, Any]]:
    """Time onnxruntime-genai INT4 (one subprocess per prompt, in its venv) per prompt length."""
    model_dir, opts = genai_model(hf_dir, block_size=block_size, accuracy_level=accuracy_level, root=root)
    py = genai_python(root)
    size = sum(f.stat().st_size for f in model_dir.iterdir() if f.name.startswith("model.onnx"))
    per_token = _onnx_bytes_per_token(model_dir)
    rows = []
    for prompt in prompts:
        busy = wait_for_quiet(**QUIET)
        out, _ = run_logged(
            [
                py,
                HERE / "peers_genai.py",
                "--model",
                model_dir,
                "--prompt",
                str(prompt),
                "--new",
                str(new),
                "--threads",
                str(threads),
                "--runs",
                str(runs),
            ],
            model_dir.parent / f"{model_dir.name}-bench-{prompt}.log",
            what="onnxruntime-genai timing",
            hint="see the log",
        )
        r = json.loads(out.strip().splitlines()[-1])
        rows.append(
            {
                "runtime": "onnxruntime-genai",
                "precision": "INT4",
                "prompt": prompt,
                "new": r["new"],
                "threads": threads,
                "batch": 1,
                "ttft_ms": r["ttft_ms"],
                "ttft_ms_median": r["ttft_ms_median"],
                "prefill_tok_s": r["prefill_tok_s"],
                "prefill_tok_s_median": r["prefill_tok_s_median"],
                "decode_tok_s": r["decode_tok_s"],
                "decode_tok_s_median": r["decode_tok_s_median"],
                "size_bytes": size,
                "bytes_per_token": per_token,
                "peak_rss_mb": r["peak_rss_mb"],
                "reps": runs,
                "cpu_busy_before": busy,
                "build": {
                    **opts,
                    "file": str(model_dir),
                    "load_s": r["load_s"],
                },
            }
        )
    return rows


# ------------------------------------------------------------------------------------------- bandwidth
def memory_bandwidth(
    size_gb: float = 1.0, threads: Sequence[int] = (1, 2), repeats: int = 5
) -> dict[str, Any]:
    """Read bandwidth of this machine in GB/s: numpy sums over a ``size_gb`` float64 array, split across
    each thread count (numpy releases the GIL in the reduction); best of ``repeats`` after a warm-up."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    a = np.ones(int(size_gb * 1e9) // 8, dtype=np.float64)  # written once: every page is resident
    out: dict[str, Any] = {"bytes": a.nbytes, "repeats": repeats, "method": "numpy float64 sum, best of"}
    for n in threads:
        parts = np.array_split(a, n)
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(np.sum, parts))  # warm-up
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                list(pool.map(np.sum, parts))
                best = min(best, time.perf_counter() - t0)
        out[f"gb_s_{n}t"] = round(a.nbytes / best / 1e9, 2)
    del a
    return out


def add_bandwidth_fraction(rows: list[dict[str, Any]], bandwidth: dict[str, Any]) -> None:
    """Add ``bandwidth_fraction`` (decode weight traffic / measured bandwidth at the row's thread count)."""
    for r in rows:
        bw = bandwidth.get(f"gb_s_{r['threads']}t") or max(
            v for k, v in bandwidth.items() if k.startswith("gb_s")
        )
        if r.get("bytes_per_token") and r.get("decode_tok_s"):
            r["bandwidth_gb_s"] = round(r["decode_tok_s"] * r["bytes_per_token"] / 1e9, 2)
            r["bandwidth_fraction"] = round(r["bandwidth_gb_s"] / bw, 3)


def table(rows: list[dict[str, Any]]) -> str:
    """A plain text table of the rows."""
    head = (
        f"{'runtime':<18}{'prec':<6}{'prompt':>7}{'new':>5}{'TTFT ms':>10}{'prefill t/s':>12}"
        f"{'decode t/s':>11}{'size MB':>9}{'RSS MB':>8}{'bw frac':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['runtime']:<18}{r['precision']:<6}{r['prompt']:>7}{r['new']:>5}{r['ttft_ms']:>10.1f}"
            f"{r['prefill_tok_s']:>12.1f}{r['decode_tok_s']:>11.1f}{r['size_bytes'] / 1e6:>9.1f}"
            f"{r['peak_rss_mb']:>8.0f}{r.get('bandwidth_fraction', float('nan')):>8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: build (cached) and time the peers on one model folder; print a table or ``--json``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="Hugging Face model folder (e.g. made by edgellm.models.synthetic)")
    ap.add_argument("--peers", default="llama.cpp,genai", help="comma list of llama.cpp, genai")
    ap.add_argument("--llama-precisions", default="f32,q8_0,q4_0")
    ap.add_argument("--prompt", default="128,512", help="prompt lengths, comma-separated")
    ap.add_argument("--new", type=int, default=128, help="new tokens per generation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="llama-bench repetitions / genai runs")
    ap.add_argument("--block-size", type=int, default=32, help="genai builder INT4 block size")
    ap.add_argument("--accuracy-level", type=int, default=4, help="genai builder MatMulNBits accuracy level")
    ap.add_argument(
        "--bandwidth",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure memory read bandwidth and state each decode's fraction of it",
    )
    ap.add_argument("--max-busy", type=float, default=0.15, help="CPU busy fraction counted as quiet")
    ap.add_argument(
        "--wait-quiet", type=float, default=0.0, help="seconds to wait for a quiet CPU before each timed run"
    )
    ap.add_argument("--build-only", action="store_true", help="build the peers' tools (and models) and stop")
    ap.add_argument("--json", action="store_true", help="print the JSON report to stdout")
    ap.add_argument("--output", type=Path, help="also write the JSON report here")
    args = ap.parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(peers) - {"llama.cpp", "genai"}
    if unknown:
        ap.error(f"unknown peers {sorted(unknown)}: use llama.cpp, genai")
    prompts = [int(p) for p in args.prompt.split(",")]
    precisions = [p.strip().lower() for p in args.llama_precisions.split(",")]
    try:
        if args.build_only:
            built: dict[str, Any] = {}
            if "llama.cpp" in peers:
                built["llama.cpp"] = {k: str(v) for k, v in llama_cpp().items()}
                if args.model:
                    built["gguf"] = {k: str(v) for k, v in gguf_models(args.model, precisions).items()}
            if "genai" in peers:
                built["genai_python"] = str(genai_python())
                if args.model:
                    built["genai_model"] = str(
                        genai_model(
                            args.model, block_size=args.block_size, accuracy_level=args.accuracy_level
                        )[0]
                    )
            print(json.dumps(built, indent=2))
            return 0
        if not args.model:
            ap.error("--model is required (unless --build-only)")
        rows: list[dict[str, Any]] = []
        # build everything first, so no build runs while anything is timed
        if "llama.cpp" in peers:
            gguf_models(args.model, precisions)
        if "genai" in peers:
            genai_model(args.model, block_size=args.block_size, accuracy_level=args.accuracy_level)
        QUIET.update(max_busy=args.max_busy, timeout=args.wait_quiet)
        busy = wait_for_quiet(**QUIET)
        if busy > args.max_busy:
            print(f"warning: the CPU is {busy:.0%} busy with other work; rates will be low", file=sys.stderr)
        if "llama.cpp" in peers:
            rows += bench_llama_cpp(
                args.model,
                precisions=precisions,
                prompts=prompts,
                new=args.new,
                threads=args.threads,
                reps=args.reps,
            )
        if "genai" in peers:
            rows += bench_genai(
                args.model,
                prompts=prompts,
                new=args.new,
                threads=args.threads,
                runs=args.reps,
                block_size=args.block_size,
                accuracy_level=args.accuracy_level,
            )
        bandwidth = memory_bandwidth(threads=sorted({1, args.threads})) if args.bandwidth else None
        if bandwidth:
            add_bandwidth_fraction(rows, bandwidth)
    except PeerError as exc:  # one clear line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {
        "model": str(Path(args.model).resolve()),
        "threads": args.threads,
        "new": args.new,
        "prompts": prompts,
        "bandwidth": bandwidth,
        "cpu_busy_before": busy,
        "rows": rows,
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
