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
    device_precision: str = typer.Option("fp32", "--device-precision", help="fp32, or fp16 for TFLite."),
    seq_len: Optional[int] = typer.Option(
        None, "--seq-len", min=1, help="Static sequence length of a TFLite half."
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Folder for split.json, device/ and server/."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    json_out: bool = typer.Option(False, "--json", help="Print split.json instead of a summary."),
) -> None:
    """Cut MODEL where a plan (or --cut/--codec) says; export both halves, linked, and check the chain.

    Example: edgellm split export minilm --cut 4 --codec int8 -o out/minilm-split
    """
    from edgellm.export.split import export_split

    if plan is None and cut is None:
        from edgellm.errors import EdgeLLMError

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
) -> None:
    """End-to-end latency of the split model with its breakdown: device, encode, network, server, decode.

    Example: edgellm split bench --device-artifact out/minilm-split/device --server http://127.0.0.1:8000 --runs 50
    """
    from rich.table import Table

    from edgellm.split.bench import bench_split
    from edgellm.utils.fs import atomic_write_text

    c = _client(device_artifact, server, timeout, 0, threads)
    feeds = _feeds(c, inputs, not inputs, batch, seq)
    report = bench_split(c, feeds, runs=runs, warmup=warmup)
    c.close()
    if output is not None:
        import json

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
