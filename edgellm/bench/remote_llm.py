"""The phone LLM runtimes' own benchmark tools over adb: llama.cpp's ``llama-bench`` on a GGUF artifact and
ExecuTorch's ``executor_runner`` (or ``xnn_executor_runner``) on a ``.pte`` artifact.

``llama-bench`` runs twice per call: once for prefill (``-p P1,P2 -n 0``: a ``P``-token prompt from an
empty cache, so its time is the time to the first token) and once for decode (``-p 0 -n N -d P1,P2``:
``N`` tokens decoded after a cache already filled with ``P`` tokens, the depth run untimed), so each row
means what a local ``edgellm bench --generate`` row means: prefill ``P`` tokens, then decode ``N``. Rates and
times are medians of the tool's own samples (``samples_ns``); its averages and deviations stay in
``tool_stats``. ``executor_runner`` times ``--num_executions`` runs of one method with every input set to
ones; the first ``warmup`` iterations it prints are dropped where it prints each iteration.

Example:
    >>> from edgellm.bench.remote import remote_bench
    >>> rep = remote_bench("out/tl-gguf-q4_0", "adb:R58M123", tool="/data/local/tmp/llama-bench",
    ...                    prompts=[128], new=128, runs=5)                   # doctest: +SKIP
    >>> rep["rows"][0]["decode_tok_s"]                                    # doctest: +SKIP
    48.1
"""

from __future__ import annotations

import json
import re
import shlex
import statistics
from collections.abc import Sequence
from typing import Any

from edgellm.errors import EdgeLLMError

_HINT_TOOL = "check that --tool is the benchmark tool for this artifact's format"


def llama_bench_commands(
    tool: str, model: str, prompts: Sequence[int], new: int, runs: int, warmup: int, threads: int
) -> list[str]:
    """The two ``llama-bench`` command lines: prefill at each prompt length, decode after each.

    Flags (tools/llama-bench/llama-bench.cpp, ``print_usage``): ``-m`` model, ``-p`` prompt tokens,
    ``-n`` generated tokens, ``-d`` depth (tokens already in the cache, not timed), ``-t`` threads,
    ``-r`` repetitions, ``-o json`` (the JSON printer on stdout), ``--no-warmup``. llama-bench runs one
    untimed warm-up per test whatever ``warmup`` is, unless it is 0 (``--no-warmup``).
    """
    plist = ",".join(str(int(p)) for p in prompts)
    common = f"-t {threads} -r {runs} -o json" + (" --no-warmup" if warmup == 0 else "")
    q = shlex.quote(model)
    return [
        f"{tool} -m {q} -p {plist} -n 0 {common}",
        f"{tool} -m {q} -p 0 -n {int(new)} -d {plist} {common}",
    ]


def parse_llama_bench(text: str) -> list[dict[str, Any]]:
    """The test entries of ``llama-bench -o json`` output (a JSON array, one object per test with
    ``n_prompt``, ``n_gen``, ``n_depth``, ``avg_ns``, ``avg_ts``, ``samples_ns``, ...)."""
    start, end = text.find("["), text.rfind("]")
    entries: Any = None
    if 0 <= start < end:
        try:
            entries = json.loads(text[start : end + 1])
        except ValueError:
            entries = None
    ok = (
        isinstance(entries, list)
        and entries
        and all(isinstance(e, dict) and {"n_prompt", "n_gen", "samples_ns"} <= set(e) for e in entries)
    )
    if not ok:
        tail = " | ".join(text.strip().splitlines()[-4:])
        raise EdgeLLMError(
            f"no llama-bench results found in the tool's output: {tail[:300] or '(empty)'}",
            f"{_HINT_TOOL} (llama.cpp's llama-bench prints a JSON array with -o json)",
        )
    return entries


def _median_ns(entry: dict[str, Any]) -> float:
    return float(statistics.median(entry["samples_ns"]))


def llama_bench_rows(
    prefill: list[dict[str, Any]], decode: list[dict[str, Any]], prompts: Sequence[int], new: int
) -> list[dict[str, Any]]:
    """One row per prompt length, with the keys of :func:`edgellm.bench.generation.bench_generate`'s rows."""
    rows = []
    for p in prompts:
        pp = next((e for e in prefill if e["n_prompt"] == p and e["n_gen"] == 0), None)
        tg = next((e for e in decode if e["n_gen"] == new and e.get("n_depth", 0) == p), None)
        if pp is None or tg is None:
            what = f"pp{p}" if pp is None else f"tg{new}@d{p}"
            raise EdgeLLMError(
                f"llama-bench printed no {what} test (its output has "
                f"{', '.join(_test_name(e) for e in prefill + decode) or 'none'})",
                _HINT_TOOL,
            )
        ttft_ms = _median_ns(pp) / 1e6
        dec_ms = _median_ns(tg) / 1e6 / new
        rows.append(
            {
                "prompt": p,
                "new": new,
                "ttft_ms": round(ttft_ms, 2),
                "prefill_tok_s": round(p * 1000.0 / ttft_ms, 1),
                "decode_tok_s": round(1000.0 / dec_ms, 2),
                "decode_ms_per_token": round(dec_ms, 3),
                "decode_depth": p,
                "runs": len(tg["samples_ns"]),
            }
        )
    return rows


def _test_name(e: dict[str, Any]) -> str:
    name = f"pp{e['n_prompt']}" if e["n_prompt"] else f"tg{e['n_gen']}"
    return name + (f"@d{e['n_depth']}" if e.get("n_depth") else "")


def executor_runner_command(
    tool: str,
    model: str,
    runs: int,
    warmup: int,
    threads: int,
    *,
    method: str | None = None,
    data_path: str | None = None,
) -> str:
    """The ``executor_runner`` command line. Its gflags (examples/portable/executor_runner/
    executor_runner.cpp; ``xnn_executor_runner`` is the same source linked with the XNNPACK delegate):
    ``--model_path``, ``--num_executions``, ``--cpu_threads``, ``--method_name`` (default: the program's
    first method), ``--data_path`` (a ``.ptd`` weights file). Its timings go through ``ET_LOG``, which the
    default POSIX platform layer writes to stderr, hence ``2>&1``."""
    cmd = f"{tool} --model_path={shlex.quote(model)} --num_executions={runs + warmup} --cpu_threads={threads}"
    if method:
        cmd += f" --method_name={shlex.quote(method)}"
    if data_path:
        cmd += f" --data_path={shlex.quote(data_path)}"
    return cmd + " 2>&1"


# executor_runner.cpp prints, through ET_LOG ("I 00:00:01.234567 executorch:executor_runner.cpp:LINE] MSG"):
#   "Model loaded in %f ms."                                   (after program->load_method)
#   "Iteration %u of %u: %f ms"                                (each execution; newer sources)
#   "Model executed successfully %u time(s) in %f ms."         (the sum over all executions)
_ITER = re.compile(r"Iteration (\d+) of (\d+): ([0-9.]+) ms")
_TOTAL = re.compile(r"Model executed successfully (\d+) time\(s\) in ([0-9.]+) ms")
_LOAD = re.compile(r"Model loaded in ([0-9.]+) ms")


def parse_executor_runner(text: str, warmup: int = 0) -> dict[str, float]:
    """Latency statistics (ms) from ``executor_runner``'s log: mean, median, min, max, std over the
    per-iteration lines after the first ``warmup``; where the runner prints only its total, the mean
    over every execution (``per_iteration`` 0: the cold first one included)."""
    out: dict[str, float] = {}
    m = _LOAD.search(text)
    if m:
        out["load_ms"] = float(m.group(1))
    times = [float(t) for _, _, t in _ITER.findall(text)]
    if times:
        timed = times[warmup:] if len(times) > warmup else times
        out.update(
            mean=statistics.fmean(timed),
            median=statistics.median(timed),
            min=min(timed),
            max=max(timed),
            std=statistics.pstdev(timed),
            runs=float(len(timed)),
            per_iteration=1.0,
        )
    else:
        m = _TOTAL.search(text)
        if m and int(m.group(1)) > 0:
            n = int(m.group(1))
            out.update(mean=float(m.group(2)) / n, runs=float(n), per_iteration=0.0)
    if "mean" not in out:
        tail = " | ".join(text.strip().splitlines()[-4:])
        raise EdgeLLMError(
            f"no latency figures found in the executor_runner output: {tail[:300] or '(empty)'}",
            _HINT_TOOL,
        )
    return out


def step_rows(art: Any, stats: dict[str, float], wbytes: int) -> list[dict[str, Any]]:
    """Token rows of a generation ``.pte`` timed per execution of its step program: a program that takes
    one token per execution times one decode step, a longer static input times a prefill chunk. The
    runner feeds ones (token id 1, position 1, a cache of ones): one step's cost, no sampling."""
    ms = stats.get("median", stats["mean"])
    ids = next((s for s in art.inputs if s.dtype.startswith("int") and len(s.shape) >= 2), None)
    k = ids.shape[1] if ids is not None else None
    if type(k) is not int or k < 1:
        return []
    what = "one decode step" if k == 1 else f"a prefill chunk of {k} tokens"
    note = f"one execution of the step program = {what}, all-ones inputs; executor_runner times no sampling"
    if k == 1:
        return [
            {
                "prompt": 0,
                "new": 1,
                "ttft_ms": None,
                "prefill_tok_s": None,
                "decode_tok_s": round(1000.0 / ms, 2),
                "decode_ms_per_token": round(ms, 3),
                "weight_gb_per_s": round(wbytes * 1000.0 / ms / 1e9, 2),
                "timed": note,
            }
        ]
    return [
        {
            "prompt": k,
            "new": 0,
            "ttft_ms": round(ms, 2),
            "prefill_tok_s": round(k * 1000.0 / ms, 1),
            "decode_tok_s": None,
            "decode_ms_per_token": None,
            "timed": note,
        }
    ]


def bench_llama(
    dev: Any,
    art: Any,
    remote_model: str,
    *,
    tool: str,
    prompts: Sequence[int],
    new: int,
    runs: int,
    warmup: int,
    threads: int,
) -> dict[str, Any]:
    """Run ``llama-bench`` on the pushed GGUF file; the report carries ``rows`` like ``bench --generate``."""
    from edgellm.bench.generation import decode_weight_bytes

    gen = art.manifest.get("generation") or {}
    ctx = gen.get("context")
    if isinstance(ctx, int) and max(prompts) + new > ctx:
        raise EdgeLLMError(
            f"prompt {max(prompts)} + {new} new tokens exceed the artifact's context of {ctx}",
            "use shorter --prompt/--new, or export with a larger --context",
        )
    cmds = llama_bench_commands(tool, remote_model, prompts, new, runs, warmup, threads)
    texts = [dev.shell(c) for c in cmds]
    prefill, decode = (parse_llama_bench(t) for t in texts)
    rows = llama_bench_rows(prefill, decode, prompts, new)
    wbytes = decode_weight_bytes(gen, art.size_bytes)
    for r in rows:
        r["weight_gb_per_s"] = round(wbytes * r["decode_tok_s"] / 1e9, 2)
    first = prefill[0]
    return {
        "precision": gen.get("precision") or art.manifest.get("precision"),
        "cache_layout": f"llama.cpp K {first.get('type_k', '?')} / V {first.get('type_v', '?')}",
        "context": ctx,
        "decode_weight_bytes": wbytes,
        "rows": rows,
        "commands": cmds,
        "tool_stats": prefill + decode,
        "tool_output_tail": "\n".join(texts).strip().splitlines()[-15:],
        "tool_info": {k: first.get(k) for k in ("build_commit", "cpu_info", "backends", "model_type")},
    }


def bench_executorch(
    dev: Any,
    art: Any,
    remote_model: str,
    *,
    tool: str,
    runs: int,
    warmup: int,
    threads: int,
    data_path: str | None = None,
) -> dict[str, Any]:
    """Run ``executor_runner`` on the pushed ``.pte``; latency ``stats`` and, for a generation program,
    per-step token ``rows``."""
    from edgellm.bench.generation import decode_weight_bytes

    gen = art.manifest.get("generation")
    method = (gen or {}).get("decode_method") or (art.manifest.get("recipe") or {}).get("method_name")
    cmd = executor_runner_command(
        tool, remote_model, runs, warmup, threads, method=method, data_path=data_path
    )
    text = dev.shell(cmd)
    stats = parse_executor_runner(text, warmup)
    out: dict[str, Any] = {
        "stats": stats,
        "commands": [cmd],
        "tool_output_tail": text.strip().splitlines()[-15:],
    }
    if gen is not None:
        wbytes = decode_weight_bytes(gen, art.size_bytes)
        out.update(
            precision=gen.get("precision") or art.manifest.get("precision"),
            cache_layout=(gen.get("cache") or {}).get("layout", "static"),
            context=gen.get("context"),
            decode_weight_bytes=wbytes,
            rows=step_rows(art, stats, wbytes),
        )
    return out


class LocalShell:
    """Runs a tool's command line on this host, with the interface of :class:`~edgellm.bench.remote.Adb`'s
    ``shell``: ``edgellm bench`` times a GGUF artifact here with the same ``llama-bench`` commands."""

    def shell(self, command: str) -> str:
        import subprocess

        p = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
            raise EdgeLLMError(
                f"'{shlex.split(command)[0]}' failed here (exit {p.returncode}): {' | '.join(tail)}",
                "check that EDGELLM_LLAMA_BENCH names a llama-bench built from llama.cpp",
            )
        return p.stdout


def find_llama_bench() -> str | None:
    """A ``llama-bench`` on this host: ``$EDGELLM_LLAMA_BENCH``, then PATH, then the benchmarks' build of
    llama.cpp under ``./.peers/llama.cpp/build/bin`` (``benchmarks/peers.py --build-only``)."""
    import os
    import shutil
    from pathlib import Path

    env = os.environ.get("EDGELLM_LLAMA_BENCH")
    if env:
        if not Path(env).is_file():
            raise EdgeLLMError(f"EDGELLM_LLAMA_BENCH={env} does not exist", "point it at a built llama-bench")
        return env
    found = shutil.which("llama-bench")
    if found:
        return found
    peer = Path.cwd() / ".peers" / "llama.cpp" / "build" / "bin" / "llama-bench"
    return str(peer) if peer.is_file() else None
