"""``edgellm split``: export the two halves of a split model, run the phone half against a server, bench it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgellm.cli._common import console, emit_json

app = typer.Typer(
    help="Split inference: the phone runs the first blocks, the server the rest.\n\n"
    "Example: edgellm split export minilm --plan edgellm-out/partition/plan.json -o out/minilm-split",
    no_args_is_help=True,
)

PARTS = ("device_ms", "encode_ms", "network_ms", "server_ms", "decode_ms", "total_ms")


@app.command("export")
def export_cmd(
    model: str = typer.Argument(
        ..., help="A bundled model (minilm, tiny-llama, resnet18...) or HF directory."
    ),
    plan: Optional[Path] = typer.Option(
        None, "--plan", help="plan.json from edgellm partition (its best cut)."
    ),
    cut: Optional[int] = typer.Option(None, "--cut", min=0, help="Blocks on the device (instead of --plan)."),
    codec: str = typer.Option(
        "fp16", "--codec", help="Activation codec with --cut: fp32, fp16, int8[+zstd|+lz4]."
    ),
    device: str = typer.Option("snapdragon-865", "--device", help="The phone's target profile."),
    server: str = typer.Option("x86-server", "--server", help="The server's target profile."),
    device_format: Optional[str] = typer.Option(
        None, "--device-format", help="tflite or ort (default: the target's first)."
    ),
    device_precision: str = typer.Option(
        "fp32", "--device-precision", help="fp32, or fp16 for TFLite; --generate: fp32, int8 or int4."
    ),
    server_precision: str = typer.Option(
        "fp32", "--server-precision", help="--generate: the server half's fp32, int8 or int4."
    ),
    recipe: Optional[str] = typer.Option(
        None,
        "--recipe",
        help="--generate: method of the quantized halves (w4a16-gptq, w4a16-awq, int8-dynamic...).",
    ),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="--generate: INT4 group size."),
    seq_len: Optional[int] = typer.Option(
        None, "--seq-len", min=1, help="Static sequence length of a TFLite half."
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Folder for split.json, device/ and server/."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    json_out: bool = typer.Option(False, "--json", help="Print split.json instead of a summary."),
    server_runtimes: str = typer.Option(
        "auto",
        "--server-runtimes",
        help="Validate the server half in the server target's other runtimes too (auto, a comma list, none) "
        "and record the fastest; serve runs it there.",
    ),
    generate: bool = typer.Option(
        False,
        "--generate",
        help="Causal LMs: halves with key/value caches for token generation (--cut = decoder layers on the phone).",
    ),
    device_cache: int = typer.Option(
        256,
        "--device-cache",
        min=2,
        help="--generate with --device-format tflite: positions the phone's fixed cache holds.",
    ),
) -> None:
    """Cut MODEL where a plan (or --cut/--codec) says; export both halves, linked, and check the chain.

    Example: edgellm split export minilm --cut 4 --codec int8 -o out/minilm-split

    Compressed halves: edgellm split export tiny-llama --generate --cut 2 --device-precision int4 -o out/tl-gen-q4

    Generation: edgellm split export tiny-llama --generate --cut 2 -o out/tl-gen (then edgellm serve
    out/tl-gen/server and edgellm split chat --device-artifact out/tl-gen --server http://127.0.0.1:8000)
    """
    from edgellm.errors import EdgeLLMError

    if generate:
        from edgellm.pipeline.generation import export_generation

        if cut is None:
            raise EdgeLLMError("--generate needs --cut N (decoder layers on the phone)", "e.g. --cut 2")
        info = export_generation(
            model,
            cut,
            output or Path("edgellm-out") / f"{Path(model).name}-gen-cut{cut}",
            codec=codec,
            device=device,
            server=server,
            device_format=device_format or "ort",
            device_cache=device_cache,
            device_precision=device_precision,
            server_precision=server_precision,
            recipe=recipe,
            group_size=group_size,
            force=force,
        )
        if json_out:
            emit_json(info)
            return
        console().print(
            f"{info['layers_on_device']} decoder layers on the phone, the rest on the server, {info['codec']} between; "
            f"greedy check: {info['check']['agreement']:.0%} of {info['check']['tokens']} tokens equal the unsplit model's\n"
            f"serve: edgellm serve {info['output']}/server\n"
            f"chat:  edgellm split chat --device-artifact {info['output']} --server http://127.0.0.1:8000",
            markup=False,
        )
        return
    from edgellm.partition.split_export import export_split

    if plan is None and cut is None:
        raise EdgeLLMError("give --plan plan.json or --cut N", "see: edgellm split export --help")
    s = export_split(
        model,
        cut=cut,
        codec=codec,
        plan=plan,
        device=device,
        server=server,
        output=output,
        device_format=device_format,
        device_precision=device_precision,
        seq_len=seq_len,
        force=force,
        server_runtimes=None if server_runtimes == "none" else server_runtimes,
    )
    if json_out:
        emit_json(s.link)
        return
    link = s.link
    console().print(
        f"plan {link['plan_id']}: cut after {link['after_block'] or '(input)'} with {link['codec']}; "
        f"chain cosine {link['parity']['cosine_min']:.5f} (needs {link['parity']['min_cosine_required']})\n"
        + (
            f"device half: {s.device.path} ({link['device']['runtime']})\n"
            if s.device
            else "device half: none\n"
        )
        + (
            f"server half: {s.server.path} -> edgellm serve {s.server.path}"
            if s.server
            else "server half: none"
        )
    )


def _feeds(client, inputs: list[str], random: bool, batch: int, seq: int):
    import numpy as np

    from edgellm.errors import EdgeLLMError
    from edgellm.models.adapter import make_inputs

    if random or not inputs:
        if not random and client.tokenizer is None:
            raise EdgeLLMError(
                "no --input given", "pass --input TEXT (text models), --input FILE.npz, or --random"
            )
        if not random:
            return client.encode_text(["The quick brown fox jumps over the lazy dog."])
        return make_inputs(client.inputs, batch, seq, seed=0, int_high={"input_ids": 100}, padded=False)
    if len(inputs) == 1 and Path(inputs[0]).suffix in (".npz", ".npy") and Path(inputs[0]).is_file():
        data = np.load(inputs[0])
        if isinstance(data, np.ndarray):
            if len(client.inputs) != 1:
                raise EdgeLLMError(
                    f"{inputs[0]} holds one array; the model takes {', '.join(s.name for s in client.inputs)}",
                    "save a .npz with one array per input name",
                )
            return {client.inputs[0].name: data}
        return {k: data[k] for k in data.files}
    return client.encode_text(inputs)


def _client(
    device_artifact: Path, server: Optional[str], timeout: float, retries: int, threads: Optional[int]
):
    from edgellm.split.client import SplitClient

    return SplitClient.from_path(device_artifact, server, timeout_s=timeout, retries=retries, threads=threads)


@app.command("run")
def run_cmd(
    device_artifact: Path = typer.Option(
        ..., "--device-artifact", help="OUT/device (or OUT) of edgellm split export."
    ),
    server: Optional[str] = typer.Option(None, "--server", help="URL of edgellm serve running OUT/server."),
    inputs: list[str] = typer.Option(
        [], "--input", "-i", help="Text (repeat for a batch), or FILE.npz / FILE.npy."
    ),
    random: bool = typer.Option(False, "--random", help="Random inputs (batch 1) instead of --input."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.001, help="Per-request timeout in seconds."),
    retries: int = typer.Option(2, "--retries", min=0, help="Retries on connection errors and 502-504."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads of the device runtime."),
    json_out: bool = typer.Option(False, "--json", help="Print outputs and timing as JSON."),
) -> None:
    """Run the phone half locally, send the encoded activation to the server half, print the result.

    Example: edgellm split run --device-artifact out/minilm-split/device --server http://127.0.0.1:8000 --input "hello world"
    """
    import numpy as np

    c = _client(device_artifact, server, timeout, retries, threads)
    feeds = _feeds(c, inputs, random, 1, 16)
    out, t = c.infer(feeds)
    c.close()
    if json_out:
        emit_json({"outputs": {k: v.tolist() for k, v in out.items()}, "timing": t})
        return
    for name, arr in out.items():
        flat = np.asarray(arr).reshape(-1)
        console().print(
            f"{name} {list(arr.shape)}: {np.array2string(flat[:6], precision=4)}{' ...' if flat.size > 6 else ''}"
        )
    console().print(
        "time (ms): "
        + ", ".join(f"{k.removesuffix('_ms')} {t[k]:.1f}" for k in PARTS)
        + f"; uploaded {t['upload_bytes']} B, downloaded {t['download_bytes']} B"
    )


@app.command("bench")
def bench_cmd(
    device_artifact: Path = typer.Option(
        ..., "--device-artifact", help="OUT/device (or OUT) of edgellm split export."
    ),
    server: Optional[str] = typer.Option(None, "--server", help="URL of edgellm serve running OUT/server."),
    inputs: list[str] = typer.Option([], "--input", "-i", help="Text, or FILE.npz (default: random inputs)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Batch of the random inputs."),
    seq: int = typer.Option(128, "--seq", min=1, help="Sequence length of the random inputs."),
    runs: int = typer.Option(30, "--runs", min=1, help="Timed runs."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed runs first."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.001, help="Per-request timeout in seconds."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads of the device runtime."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report as JSON here."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    sessions: Optional[str] = typer.Option(
        None, "--sessions", help="Split generation: concurrent sessions to measure, e.g. 1,4,16,32."
    ),
    tokens: int = typer.Option(32, "--tokens", min=2, help="Split generation: tokens per session."),
) -> None:
    """End-to-end latency of the split model with its breakdown: device, encode, network, server, decode.

    Example: edgellm split bench --device-artifact out/minilm-split/device --server http://127.0.0.1:8000 --runs 50

    Generation: edgellm split bench --device-artifact out/tl-gen --server http://127.0.0.1:8000 --sessions 1,4,16
    (time to first token, tokens/s per session and in aggregate)
    """
    import json

    from rich.table import Table

    from edgellm.split.bench import bench_split
    from edgellm.utils.fs import atomic_write_text

    if sessions is not None:
        from edgellm.errors import EdgeLLMError
        from edgellm.pipeline.generation import bench_generation

        try:
            counts = [int(x) for x in sessions.split(",") if x.strip()]
        except ValueError:
            raise EdgeLLMError(
                f"--sessions '{sessions}' is not a list of counts", "e.g. --sessions 1,4,16,32"
            ) from None
        if server is None or not counts or min(counts) < 1:
            raise EdgeLLMError(
                "--sessions needs --server URL and counts >= 1",
                "e.g. --sessions 1,4 --server http://127.0.0.1:8000",
            )
        rows = bench_generation(device_artifact, server, counts, tokens=tokens)
        if output is not None:
            atomic_write_text(output, json.dumps(rows, indent=2) + "\n")
        if json_out:
            emit_json(rows)
            return
        t = Table(title=f"split generation, {tokens} tokens per session")
        for col in ("sessions", "completed", "TTFT p50 ms", "tok/s per session", "tok/s aggregate"):
            t.add_column(col)
        for r in rows:
            t.add_row(
                str(r["sessions"]),
                str(r["completed"]),
                f"{r['ttft_ms_p50']}",
                f"{r['tok_s_per_session_p50']}",
                f"{r['tok_s_aggregate']}",
            )
        console().print(t)
        return

    c = _client(device_artifact, server, timeout, 0, threads)
    feeds = _feeds(c, inputs, not inputs, batch, seq)
    report = bench_split(c, feeds, runs=runs, warmup=warmup)
    c.close()
    if output is not None:
        atomic_write_text(output, json.dumps(report, indent=2) + "\n")
    if json_out:
        emit_json(report)
        return
    t = Table(
        title=f"split plan {report['plan_id']} (cut after {report['after_block'] or '(input)'}, {report['codec']}), {runs} runs; ms"
    )
    for col in ("part", "p50", "p90", "mean"):
        t.add_column(col)
    for k in PARTS:
        s = report["ms"][k]
        t.add_row(k.removesuffix("_ms"), f"{s['p50']:.2f}", f"{s['p90']:.2f}", f"{s['mean']:.2f}")
    console().print(t)
    console().print(
        f"uploaded {report['upload_bytes']} B and downloaded {report['download_bytes']} B per call"
    )


@app.command("chat")
def chat_cmd(
    device_artifact: Path = typer.Option(
        ..., "--device-artifact", help="OUT of edgellm split export --generate."
    ),
    server: str = typer.Option(..., "--server", help="URL of edgellm serve running OUT/server."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The text to continue."),
    max_new_tokens: int = typer.Option(
        64, "--max-new-tokens", "-n", min=1, help="Tokens to generate at most."
    ),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0: greedy; else sampled."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="Sample among the K likeliest tokens (0: all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling (same seed, same tokens)."),
    codec: Optional[str] = typer.Option(None, "--codec", help="fp16 or int8 (default: the export's)."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.001, help="Per-request timeout in seconds."),
) -> None:
    """Generate with the phone half here and the server half on SERVER, streaming the tokens.

    Example: edgellm split chat --device-artifact out/tl-gen --server http://127.0.0.1:8000 -p "The with statement"
    """
    import sys

    from edgellm.errors import EdgeLLMError
    from edgellm.split.generation_client import GenerationClient, GenerationError

    c = GenerationClient(device_artifact, server, codec=codec, timeout_s=timeout)
    ids = c.encode(prompt)
    out: list[int] = []
    times: list[float] = []
    shown = ""
    try:
        for t in c.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed):
            out.append(t["token"])
            times.append(t["ms"])
            text = c.decode(out)
            sys.stdout.write(text[len(shown) :])
            sys.stdout.flush()
            shown = text
    except GenerationError as exc:
        raise EdgeLLMError(str(exc), "check the server (edgellm serve OUT/server) and its limits") from exc
    finally:
        c.close()
    sys.stdout.write("\n")
    if times:
        rest = times[1:] or times
        console().print(
            f"{len(out)} tokens; time to first token {times[0]:.1f} ms, then {1000 / (sum(rest) / len(rest)):.1f} tokens/s",
            markup=False,
        )
