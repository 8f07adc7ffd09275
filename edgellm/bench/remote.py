"""Benchmarks on an Android device over adb, with the runtime's own benchmark tool.

``edgellm bench ARTIFACT --remote adb:SERIAL --tool CMD`` pushes the artifact's model file to
``/data/local/tmp/edgellm/``, runs the tool the user names (LiteRT's ``benchmark_model`` or
``benchmark_litert_model``, ONNX Runtime's ``onnxruntime_perf_test``, llama.cpp's ``llama-bench`` for a
GGUF artifact, ExecuTorch's ``executor_runner`` / ``xnn_executor_runner`` for a ``.pte``) with ``adb shell``,
and parses its output into the same result rows ``edgellm bench`` prints for local runs (for
``llama-bench``: the token rows of ``edgellm bench --generate``; see :mod:`edgellm.bench.remote_llm`).

Example:
    >>> rep = remote_bench("edgellm-out/minilm-snapdragon-865", "adb:R58M123",
    ...                    tool="/data/local/tmp/benchmark_model")   # doctest: +SKIP
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError

DEVICE_DIR = "/data/local/tmp/edgellm"


@dataclass
class Adb:
    """One device, addressed by serial, through the ``adb`` executable."""

    serial: str
    adb: str = "adb"
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if shutil.which(self.adb) is None and not Path(self.adb).is_file():
            raise EdgeLLMError(
                f"adb executable '{self.adb}' was not found",
                "install Android platform-tools and put adb on PATH, or pass --adb /path/to/adb",
            )

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [self.adb, "-s", self.serial, *args],
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
            )
        except subprocess.TimeoutExpired as exc:
            raise EdgeLLMError(
                f"adb {' '.join(args[:2])} on {self.serial} did not finish in {self.timeout_s:.0f} s",
                "check the device, or lower --runs",
            ) from exc

    def check(self) -> None:
        p = self._run("get-state")
        if p.returncode != 0 or p.stdout.strip() != "device":
            listing = subprocess.run([self.adb, "devices"], capture_output=True, text=True).stdout.strip()
            listing = "; ".join(ln.strip() for ln in listing.splitlines()[1:] if ln.strip())
            raise EdgeLLMError(
                f"Android device '{self.serial}' is not attached ({(p.stderr or p.stdout).strip() or 'no answer'})",
                f"connect it and authorise USB debugging; 'adb devices' lists: {listing or 'nothing'}",
            )

    def push(self, local: Path, remote: str) -> None:
        self.shell(f"mkdir -p {shlex.quote(str(Path(remote).parent))}")
        p = self._run("push", str(local), remote)
        if p.returncode != 0:
            raise EdgeLLMError(
                f"adb push of {local.name} to {self.serial} failed: {(p.stderr or p.stdout).strip()}",
                "check free space in /data/local/tmp on the device",
            )

    def shell(self, command: str) -> str:
        p = self._run("shell", command)
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
            raise EdgeLLMError(
                f"'{command.split()[0]}' failed on {self.serial} (exit {p.returncode}): {' | '.join(tail)}",
                "check the --tool path on the device and that the tool matches the artifact's format",
            )
        return p.stdout


def parse_remote(spec: str) -> str:
    """``adb:SERIAL`` -> ``SERIAL``."""
    kind, _, serial = spec.partition(":")
    if kind != "adb" or not serial:
        raise EdgeLLMError(f"remote '{spec}' is not of the form adb:SERIAL", "e.g. --remote adb:R58M123ABC")
    return serial


def tool_flavor(tool: str) -> str:
    """Which benchmark tool a command is, from its executable's name."""
    names = [Path(w).name for w in shlex.split(tool)]
    for name in names:
        if name.startswith("llama-bench"):
            return "llama-bench"
        if name.startswith(("executor_runner", "xnn_executor_runner")):
            return "executor_runner"
        if name.startswith("onnxruntime_perf_test"):
            return "ort-perf-test"
        if name.startswith("benchmark_litert_model"):
            return "litert-python" if name.endswith(".py") else "litert"
        if name.startswith("benchmark_model"):
            return "tflite"
    raise EdgeLLMError(
        f"cannot tell which benchmark tool '{tool}' is",
        "give LiteRT's benchmark_model / benchmark_litert_model, ONNX Runtime's onnxruntime_perf_test, "
        "llama.cpp's llama-bench or ExecuTorch's executor_runner",
    )


def tool_command(
    tool: str,
    flavor: str,
    model: str,
    runs: int,
    warmup: int,
    threads: int,
    value_ranges: dict[str, tuple[int, int]] | None = None,
) -> str:
    """The device command line. ``value_ranges`` bounds integer inputs (token ids must stay inside the
    vocabulary or the embedding lookup fails); only LiteRT's C++ tools take it."""
    q = shlex.quote(model)
    if flavor == "ort-perf-test":  # token inputs: test_data_set_0/ beside the model; else -I (random)
        return f"{tool} -m times -r {runs} -x {threads} -e cpu {'' if value_ranges else '-I '}{q}"
    if flavor == "litert-python":
        return f"{tool} --model={q} --num_runs={runs} --warmup_runs={warmup} --num_threads={threads}"
    cmd = f"{tool} --graph={q} --num_runs={runs} --warmup_runs={warmup} --num_threads={threads}"
    if value_ranges:
        spec = ":".join(f"{n},{lo},{hi}" for n, (lo, hi) in value_ranges.items())
        cmd += f" --input_layer_value_range={shlex.quote(spec)}"
    return cmd


_MS = r"([0-9.]+)\s*ms"
# LiteRT's statistic names -> ours (both tools print the same set)
_STATS = (
    ("avg", "mean"),
    ("median", "median"),
    ("min", "min"),
    ("max", "max"),
    ("std", "std"),
    ("p5", "p5"),
    ("p95", "p95"),
)


def parse_tool_output(text: str, flavor: str) -> dict[str, float]:
    """Latency statistics in milliseconds from the tool's own output (keys: mean, median, min, max, ...)."""
    out: dict[str, float] = {}
    if flavor == "litert-python":
        for key, name in _STATS:
            m = re.search(rf"Inference \({key}\):\s*{_MS}", text)
            if m:
                out[name] = float(m.group(1))
        m = re.search(r"Inference \(avg\):\s*[0-9.]+\s*ms\s*\((\d+) runs\)", text)
        if m:
            out["runs"] = float(m.group(1))
    elif flavor in ("tflite", "litert"):
        # the last "count=... avg=..." line is the timed run (microseconds); earlier ones are warm-up
        lines = [ln for ln in text.splitlines() if re.search(r"\bcount=\d+", ln) and "avg=" in ln]
        if lines:
            fields = dict(re.findall(r"(\w+)=([0-9.eE+-]+)", lines[-1]))
            for key, name in _STATS:
                if key in fields:
                    out[name] = float(fields[key]) / 1000.0
            out["runs"] = float(fields["count"])
        m = re.search(r"overall=([0-9.]+)", text)  # "Memory footprint delta ... init=X overall=Y" (MB)
        if m:
            out["memory_mb"] = float(m.group(1))
    elif flavor == "ort-perf-test":
        m = re.search(r"Average inference time cost:\s*" + _MS, text)
        if m:
            out["mean"] = float(m.group(1))
        for key, name in (
            ("Min", "min"),
            ("Max", "max"),
            ("P50", "median"),
            ("P90", "p90"),
            ("P95", "p95"),
            ("P99", "p99"),
        ):
            m = re.search(rf"{key} Latency:\s*([0-9.eE+-]+)\s*s\b", text)
            if m:
                out[name] = float(m.group(1)) * 1000.0
        m = re.search(r"Total inference requests:\s*(\d+)", text)
        if m:
            out["runs"] = float(m.group(1))
        m = re.search(r"Peak working set size:\s*(\d+)\s*bytes", text)
        if m:
            out["memory_mb"] = int(m.group(1)) / 2**20
    if "mean" not in out and "median" not in out:
        head = " | ".join(text.strip().splitlines()[-4:])
        raise EdgeLLMError(
            f"no latency figures found in the {flavor} output: {head[:300]}",
            "check that --tool is the benchmark tool for this artifact's format",
        )
    return out


FORMAT_TOOLS = {
    "tflite": ("tflite", "litert", "litert-python"),
    "ort": ("ort-perf-test",),
    "onnx": ("ort-perf-test",),
    "gguf": ("llama-bench",),
    "pte": ("executor_runner",),
}


def remote_bench(
    artifact: Any,
    remote: str,
    *,
    tool: str,
    runs: int = 50,
    warmup: int = 5,
    threads: int = 4,
    adb: str = "adb",
    prompts: Sequence[int] = (128,),
    new: int = 128,
) -> dict[str, Any]:
    """Run ``tool`` on the device behind ``remote`` (``adb:SERIAL``) on the artifact's model file.

    Returns a report with the same ``results`` rows as :func:`edgellm.bench.bench_artifact`, plus the
    tool's raw output tail and the exact command. A GGUF artifact (``llama-bench``) gets the ``rows`` of
    :func:`edgellm.bench.generation.bench_generate` instead, for each of ``prompts`` with ``new`` decoded
    tokens, ``runs`` repetitions; a generation ``.pte`` gets both (its rows timed per step).
    """
    from edgellm.export import Artifact

    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    fmt = art.manifest["target"]["format"]
    flavor = tool_flavor(tool)
    if flavor not in FORMAT_TOOLS.get(fmt, ()):
        raise EdgeLLMError(
            f"a {flavor} tool cannot run a '{fmt}' artifact",
            "use LiteRT's benchmark_model for .tflite, onnxruntime_perf_test for .ort/.onnx, "
            "llama.cpp's llama-bench for .gguf and ExecuTorch's executor_runner for .pte",
        )
    serial = parse_remote(remote)
    dev = Adb(serial, adb)
    dev.check()
    remote_model = f"{DEVICE_DIR}/{art.path.name}/{art.model_path.name}"
    dev.push(art.model_path, remote_model)
    config = {
        "artifact": str(art.path),
        "remote": remote,
        "tool": tool,
        "tool_flavor": flavor,
        "runs": runs,
        "warmup": warmup,
        "threads": threads,
        "measured_on": "device",
    }
    if flavor == "llama-bench":
        from edgellm.bench.remote_llm import bench_llama

        got = bench_llama(
            dev, art, remote_model, tool=tool, prompts=list(prompts), new=new, runs=runs,
            warmup=warmup, threads=threads,
        )  # fmt: skip
        cmds = got.pop("commands")
        return {
            "schema_version": 1,
            "config": {
                **config,
                "command": " && ".join(cmds),
                "commands": cmds,
                "prompts": list(prompts),
                "new": new,
            },
            "host": {"device": serial},
            "artifact": str(art.path),
            "size_bytes": art.size_bytes,
            "peak_rss_mb": None,  # llama-bench does not report the process's memory
            "threads": threads,
            "runs": runs,
            **got,
        }
    if flavor == "executor_runner":
        return _bench_pte(dev, art, remote_model, serial, config)
    ranges = {n: (0, int(high) - 1) for n, high in art.manifest.get("value_ranges", {}).items()}
    ranges.update({s.name: (1, 1) for s in art.inputs if "mask" in s.name and s.dtype.startswith("int")})
    if flavor == "ort-perf-test" and ranges:  # real inputs in the model-zoo layout the tool reads
        _push_test_data(dev, art, remote_model)
    if flavor == "litert-python" and ranges:
        raise EdgeLLMError(
            f"{flavor} feeds random integers in [-128, 127], which are not valid token ids for "
            f"'{art.manifest['model']['name']}' (inputs {', '.join(sorted(ranges))})",
            "use LiteRT's C++ benchmark_model, which takes --input_layer_value_range (edgellm passes it)",
        )
    cmd = tool_command(tool, flavor, remote_model, runs, warmup, threads, ranges)
    text = dev.shell(cmd)
    stats = parse_tool_output(text, flavor)
    static = art.manifest["recipe"].get("tflite", {}).get("file_inputs")
    first = next(iter(static.values()))["shape"] if static else [1]
    batch = int(first[0]) if first else 1
    seq = int(first[1]) if len(first) > 1 else 0
    return _report(config, cmd, serial, _result(art, serial, flavor, stats, runs, batch, seq), stats, text)


def _result(art: Any, serial: str, flavor: str, stats: dict, runs: int, batch: int, seq: int) -> dict:
    from edgellm.bench.harness import BenchResult

    p50 = stats.get("median", stats.get("mean"))
    return BenchResult(
        name=f"{art.manifest['target']['runtime']}@{serial}",
        runtime=f"{flavor} over adb",
        batch=batch,
        seq=seq,
        runs=int(stats.get("runs", runs)),
        p50_ms=p50,
        p90_ms=stats.get("p90", stats.get("p95")),
        p99_ms=stats.get("p99"),
        mean_ms=stats.get("mean", p50),
        std_ms=stats.get("std"),
        min_ms=stats.get("min"),
        throughput_per_s=batch * 1000.0 / p50 if p50 else None,
        peak_rss_mb=stats.get("memory_mb"),
        model_size_mb=art.size_bytes / 2**20,
    ).to_dict()


def _report(config: dict, cmd: str, serial: str, result: dict, stats: dict, text: str) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "config": {**config, "command": cmd},
        "host": {"device": serial},
        "baseline": None,
        "results": [result],
        "ratios_p50": {},
        "tool_stats_ms": stats,
        "tool_output_tail": text.strip().splitlines()[-15:],
    }


def _bench_pte(dev: Adb, art: Any, remote_model: str, serial: str, config: dict) -> dict[str, Any]:
    """``executor_runner`` on a ``.pte``: one latency row at the program's static input shape, plus
    per-step token rows for a generation program (with its ``.ptd`` weights file pushed beside it)."""
    from edgellm.bench.remote_llm import bench_executorch

    data = next((r for r in art.manifest["files"] if r.endswith(".ptd")), None)
    remote_data = f"{DEVICE_DIR}/{art.path.name}/{Path(data).name}" if data else None
    if data:
        dev.push(art.path / data, remote_data)
    got = bench_executorch(
        dev, art, remote_model, tool=config["tool"], runs=config["runs"], warmup=config["warmup"],
        threads=config["threads"], data_path=remote_data,
    )  # fmt: skip
    first = art.inputs[0].shape if art.inputs else [1]
    batch = first[0] if first and type(first[0]) is int else 1
    seq = first[1] if len(first) > 1 and type(first[1]) is int else 0
    stats = got["stats"]
    result = _result(art, serial, "executor_runner", stats, config["runs"], batch, seq)
    rep = _report(config, got["commands"][0], serial, result, stats, "\n".join(got["tool_output_tail"]))
    if not stats.get("per_iteration"):
        rep["note"] = "the runner printed only its total time: the mean includes the cold first execution"
    for key in ("precision", "cache_layout", "context", "decode_weight_bytes", "rows"):
        if key in got:
            rep[key] = got[key]
    return rep


def print_remote(rep: dict[str, Any], title: str) -> None:
    """The terminal table of a remote report: latency rows (``results``) and token rows (``rows``)."""
    from rich.table import Table

    from edgellm.bench.report import print_table
    from edgellm.utils.console import console

    if rep.get("results"):
        print_table(rep, title=title)
    if not rep.get("rows"):
        return
    t = Table(title=f"{title}: tokens ({rep.get('precision')}, cache {rep.get('cache_layout')})")
    cols = (
        "prompt",
        "new",
        "ttft_ms",
        "prefill_tok_s",
        "decode_tok_s",
        "decode_ms_per_token",
        "weight_gb_per_s",
    )
    heads = ("prompt", "new", "TTFT ms", "prefill tok/s", "decode tok/s", "ms/token", "weights GB/s")
    for head in heads:
        t.add_column(head, justify="right")
    for r in rep["rows"]:
        t.add_row(*("-" if r.get(c) is None else f"{r[c]:g}" for c in cols))
    out = console()
    out.print(t)
    for r in rep["rows"][:1]:
        if r.get("timed"):
            out.print(r["timed"])
        elif "decode_depth" in r:
            out.print(
                "decode timed after the prompt's tokens are in the cache (llama-bench -d); medians of its samples"
            )


def _push_test_data(dev: Adb, art: Any, remote_model: str, seq: int = 128) -> None:
    """Push one real input (batch 1, ``seq`` tokens, in-vocabulary ids) as ``test_data_set_0/input_N.pb``."""
    import tempfile

    from onnx import numpy_helper

    from edgellm.models.adapter import make_inputs

    feeds = make_inputs(
        art.inputs, 1, seq, seed=0, int_high=art.manifest.get("value_ranges", {}), padded=False
    )
    remote_dir = str(Path(remote_model).parent / "test_data_set_0")
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(art.inputs):
            f = Path(tmp) / f"input_{i}.pb"
            f.write_bytes(numpy_helper.from_array(feeds[spec.name], spec.name).SerializeToString())
            dev.push(f, f"{remote_dir}/{f.name}")
