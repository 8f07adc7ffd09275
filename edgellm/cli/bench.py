"""``edgellm bench``: latency percentiles, throughput, memory and size of an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgellm.cli._common import emit_json


def bench(
    artifact: Path = typer.Argument(..., help="Artifact directory written by 'edgellm export'."),
    batch: str = typer.Option("1,8", "--batch", "-b", help="Comma-separated batch sizes."),
    seq: str = typer.Option("128", "--seq", "-s", help="Comma-separated sequence lengths."),
    runs: int = typer.Option(50, "--runs", "-n", min=1, help="Timed runs per shape."),
    warmup: int = typer.Option(5, "--warmup", "-w", min=0, help="Untimed warm-up runs per shape."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="Intra-op threads (default: runtime's)."
    ),
    reference: bool = typer.Option(
        False, "--reference", help="Also time the torch fp32 source model, interleaved."
    ),
    remote: Optional[str] = typer.Option(
        None, "--remote", help="Run on an Android device: adb:SERIAL (with --tool)."
    ),
    tool: Optional[str] = typer.Option(
        None,
        "--tool",
        help="The runtime's benchmark tool on the device, as a command: LiteRT's benchmark_model / "
        "benchmark_litert_model, onnxruntime_perf_test, llama.cpp's llama-bench (GGUF; also on this host "
        "without --remote) or ExecuTorch's executor_runner (.pte).",
    ),
    adb: str = typer.Option("adb", "--adb", help="The adb executable."),
    estimate: bool = typer.Option(
        False, "--estimate", help="No device: the cost-model latency on the target profile (an estimate)."
    ),
    target: Optional[str] = typer.Option(
        None, "--target", "-t", help="With --estimate: the profile (default: the artifact's target)."
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the JSON report here."),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON report to stdout."),
    generate: bool = typer.Option(
        False, "--generate", help="Token rate of a generation artifact: TTFT, prefill and decode tokens/s."
    ),
    prompt: str = typer.Option("128", "--prompt", help="--generate: comma-separated prompt lengths."),
    new: int = typer.Option(128, "--new", min=1, help="--generate: tokens decoded per run."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="--generate: write a PNG plot here."),
    runtime: str = typer.Option(
        "all",
        "--runtime",
        help="'all': every runtime (and precision) the artifact passed parity in, each in its own process; "
        "or one: onnxruntime, openvino...",
    ),
) -> None:
    """Measure p50/p90/p99 latency, throughput, peak memory and model size of ARTIFACT.

    Example: edgellm bench edgellm-out/minilm-x86-server --batch 1,8 --seq 128 --runs 50 --warmup 5 --reference

    Example: edgellm bench edgellm-out/minilm-x86-server --runtime openvino

    Example: edgellm bench edgellm-out/minilm-snapdragon-865 --remote adb:R58M123 --tool /data/local/tmp/benchmark_model

    Example: edgellm bench edgellm-out/minilm-snapdragon-865 --estimate --batch 1 --seq 128

    Example: edgellm bench edgellm-out/tl-gen-int4 --generate --prompt 128,512 --new 128 --plot tl.png

    Example: edgellm bench edgellm-out/tl-gguf-q4 --prompt 128 --new 64   (llama-bench where built)

    Example: edgellm bench edgellm-out/tl-gguf-q4 --remote adb:R58M123 --tool /data/local/tmp/llama-bench
    """
    from edgellm.bench import bench_artifact, parse_int_list
    from edgellm.bench.report import print_table
    from edgellm.errors import EdgeLLMError

    fmt = _artifact_format(artifact)
    if fmt == "gguf" and remote is None:  # llama.cpp's own llama-bench where one is built, else its bindings
        from edgellm.bench.remote_llm import find_llama_bench

        found = tool or find_llama_bench()
        if found is not None:
            return _bench_gguf_here(
                artifact,
                found,
                parse_int_list(prompt, "--prompt"),
                new,
                runs,
                warmup,
                threads,
                output,
                json_out,
            )
        generate = True
    if generate:
        return _bench_generate(
            artifact,
            parse_int_list(prompt, "--prompt"),
            new,
            runs if runs != 50 else 1,
            threads,
            output,
            json_out,
            plot,
            None if runtime == "all" else runtime,
        )
    batches = parse_int_list(batch, "--batch")
    seqs = parse_int_list(seq, "--seq")
    if remote and estimate:
        raise EdgeLLMError("--remote and --estimate exclude each other", "measure on the device, or estimate")
    if (tool is not None) != (remote is not None):
        raise EdgeLLMError(
            "--remote and --tool go together",
            "e.g. --remote adb:SERIAL --tool /data/local/tmp/benchmark_model",
        )
    if target is not None and not estimate:
        raise EdgeLLMError("--target only applies to --estimate", "drop --target, or add --estimate")
    if remote is not None:
        from edgellm.bench.remote import print_remote, remote_bench

        llm = fmt in ("gguf", "pte")
        rep = remote_bench(
            artifact,
            remote,
            tool=tool,
            runs=runs if runs != 50 or not llm else 5,  # llama-bench's own default repetitions
            warmup=warmup,
            threads=threads or 4,
            adb=adb,
            prompts=parse_int_list(prompt, "--prompt"),
            new=new,
        )
        title = f"bench {artifact} on {remote} ({rep['config']['tool_flavor']})"
        return _emit(rep, output, json_out, lambda r: print_remote(r, title=title))
    from edgellm.export import Artifact

    art = Artifact.load(artifact)  # refused here, before any runtime opens a file, if it is not intact
    _check_seqs(art, seqs)
    if estimate:
        from edgellm.bench.estimate import estimate_latency

        rows = [estimate_latency(art, target, batch=b, seq=s) for b in batches for s in seqs]
        rep = {"schema_version": 1, "estimate": True, "results": rows}
        return _emit(rep, output, json_out, lambda r: _estimate_table(r["results"]))
    try:
        rep = bench_artifact(
            art,
            batches=batches,
            seqs=seqs,
            runs=runs,
            warmup=warmup,
            threads=threads,
            reference=reference,
            progress=not json_out,
            runtime=runtime,
        ).to_dict()
    except Exception as exc:
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        first = (str(exc).splitlines() or [""])[0][:300]  # e.g. an allocation past the machine's memory
        raise EdgeLLMError(
            f"ONNX Runtime failed to run '{artifact}' ({type(exc).__name__}: {first})",
            "try smaller --batch / --seq values, or re-export the artifact",
        ) from None
    _emit(rep, output, json_out, lambda r: print_table(r, title=f"bench {artifact}"))


def _artifact_format(artifact: Path) -> str | None:
    import json

    try:
        return json.loads((artifact / "manifest.json").read_text())["target"]["format"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # Artifact.load names what is wrong


def _bench_gguf_here(artifact, tool, prompts, new, runs, warmup, threads, output, json_out) -> None:
    """A GGUF artifact timed on this host by llama.cpp's ``llama-bench`` (the commands --remote runs)."""
    import os

    from edgellm.bench.remote import print_remote
    from edgellm.bench.remote_llm import LocalShell, bench_llama
    from edgellm.export import Artifact

    art = Artifact.load(artifact)
    threads = threads or os.cpu_count() or 1
    runs = runs if runs != 50 else 5
    body = bench_llama(
        LocalShell(),
        art,
        str(art.model_path),
        tool=tool,
        prompts=prompts,
        new=new,
        runs=runs,
        warmup=warmup,
        threads=threads,
    )
    rep = {
        "schema_version": 1,
        "artifact": str(artifact),
        "config": {
            "tool": tool,
            "tool_flavor": "llama-bench",
            "where": "this host",
            "threads": threads,
            "runs": runs,
        },
        **body,
    }
    _emit(
        rep, output, json_out, lambda r: print_remote(r, title=f"bench {artifact} (llama-bench, this host)")
    )


def _bench_generate(artifact, prompts, new, runs, threads, output, json_out, plot, runtime=None) -> None:
    from edgellm.bench.generation import bench_generate, plot_generate
    from edgellm.targets.host import memory_bandwidth_gbs

    rep = bench_generate(
        artifact,
        prompts=prompts,
        new=new,
        runs=runs,
        threads=threads,
        bandwidth_gbs=memory_bandwidth_gbs(),
        runtime=runtime,
    )
    if plot is not None:
        rep["plot"] = str(plot_generate([rep], plot))
    _emit(rep, output, json_out, _generate_table)


def _generate_table(rep: dict) -> None:
    from rich.table import Table

    from edgellm.cli._common import console

    t = Table(title=f"bench --generate {rep['artifact']} ({rep['precision']}, cache {rep['cache_layout']})")
    for col in ("prompt", "new", "TTFT ms", "prefill tok/s", "decode tok/s", "weights GB/s", "of bandwidth"):
        t.add_column(col)
    for r in rep["rows"]:
        frac = r.get("bandwidth_fraction")
        t.add_row(
            str(r["prompt"]),
            str(r["new"]),
            f"{r['ttft_ms']:.1f}",
            f"{r['prefill_tok_s']:.0f}",
            f"{r['decode_tok_s']:.1f}",
            f"{r['weight_gb_per_s']:.1f}",
            f"{frac:.0%}" if frac else "-",
        )
    console().print(t)
    console().print(
        f"size {rep['size_bytes'] / 2**20:.1f} MB, {rep['decode_weight_bytes'] / 2**20:.1f} MB read per "
        f"decoded token, peak RSS {rep['peak_rss_mb']:.0f} MB"
        + (f"; plot {rep['plot']}" if rep.get("plot") else "")
    )


def _check_seqs(art, seqs: list[int]) -> None:
    """Refuse a sequence length past the positions the artifact's model has (the runtime would index
    past its position table, or take memory quadratic in it)."""
    from edgellm.errors import EdgeLLMError

    if not any("sequence" in s.shape for s in art.inputs):
        return
    limit = max_positions(art.manifest)
    over = [s for s in seqs if limit is not None and s > limit]
    if over:
        raise EdgeLLMError(
            f"--seq {over[0]} is past the positions the model of '{art.path}' has ({limit})",
            f"give sequence lengths of at most {limit}",
        )


def max_positions(manifest: dict) -> Optional[int]:
    """Positions the artifact's model takes: the manifest's own figure, else its source model's config
    (``max_position_embeddings`` / ``n_positions``); None where neither says."""
    import json

    from edgellm.models import bundled_path

    for key in ("max_sequence", "max_sequence_length", "max_positions"):
        v = manifest.get(key)
        if type(v) is int and v > 0:
            return v
    src = (manifest.get("model") or {}).get("source") or {}
    folder = src.get("path") or (bundled_path(src["name"]) if isinstance(src.get("name"), str) else None)
    cfg = Path(folder) / "config.json" if folder else None
    if cfg is None or not cfg.is_file():
        return None
    try:
        config = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions"):
        v = config.get(key) if isinstance(config, dict) else None
        if type(v) is int and v > 0:
            return v
    return None


def _emit(rep: dict, output: Optional[Path], json_out: bool, show) -> None:
    """Write the report to ``output`` if given; print it as JSON or through ``show``."""
    from edgellm.bench.report import write_json

    if output is not None:
        write_json(rep, output)
    if json_out:
        emit_json(rep)
    else:
        show(rep)


def _estimate_table(rows: list[dict]) -> None:
    from rich.table import Table

    from edgellm.cli._common import console

    t = Table(title=rows[0]["label"])
    for col in (
        "target",
        "precision",
        "batch",
        "seq",
        "est. ms",
        "bound",
        "GFLOP",
        "weights MB",
        "fits budget",
    ):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["target"],
            r["precision"]
            + ("" if r["peak_precision"] == r["precision"] else f" (at {r['peak_precision']} peak)"),
            str(r["batch"]),
            str(r["seq"]),
            f"{r['latency_ms']:.2f}",
            r["bound"],
            f"{r['flops'] / 1e9:.2f}",
            f"{r['weight_bytes'] / 2**20:.1f}",
            "yes" if r["fits_memory_budget"] else "no",
        )
    console().print(t)
    console().print(
        f"efficiencies assumed: compute {rows[0]['efficiency']['compute']}, memory {rows[0]['efficiency']['memory']}"
        f" of the profile's peaks; FLOPs: {rows[0]['flops_source']}"
    )
