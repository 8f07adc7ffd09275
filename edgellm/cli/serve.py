"""``edgellm serve``: the batching server (KServe v2 REST + gRPC) for one or more artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def serve(
    artifacts: list[str] = typer.Argument(
        ...,
        help="[NAME=]ARTIFACT_DIR or [NAME=]HUB_REF (minilm:int8@3), one or more (NAME renames the model).",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind (0.0.0.0 to listen on every interface)."
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="REST port (0: any free port)."),
    grpc_port: int = typer.Option(8001, "--grpc-port", min=-1, max=65535, help="gRPC port (-1: no gRPC)."),
    max_batch_size: int = typer.Option(
        8, "--max-batch-size", min=1, help="Rows per batch at most (1: no batching)."
    ),
    max_queue_delay_ms: float = typer.Option(
        2.0, "--max-queue-delay-ms", min=0.0, help="How long a request waits for others to batch with."
    ),
    max_queue_size: int = typer.Option(256, "--max-queue-size", min=1, help="Pending requests before 503."),
    instances: int = typer.Option(
        1, "--instances", min=1, help="Runtime sessions per model (worker threads)."
    ),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="Threads per instance (default: cores / instances)."
    ),
    timeout_s: float = typer.Option(
        30.0, "--timeout", min=0.001, help="Per-request timeout in seconds (then 504)."
    ),
    max_body_mb: float = typer.Option(
        64.0, "--max-body-mb", min=0.001, help="Largest request body accepted."
    ),
    max_request_rows: Optional[int] = typer.Option(
        None,
        "--max-request-rows",
        min=1,
        help="Rows one request may hold (default: 8 x --max-batch-size; it runs in batches of that size); more: 413.",
    ),
    max_request_seq: Optional[int] = typer.Option(
        None, "--max-request-seq", min=1, help="Longest sequence one request may hold (default: the model's)."
    ),
    max_request_elements: Optional[int] = typer.Option(
        None,
        "--max-request-elements",
        min=1,
        help="Elements one request may hold over all inputs (default: rows x sequence limits).",
    ),
    header_timeout: float = typer.Option(
        10.0, "--header-timeout", min=0.001, help="Seconds a client has to send a request's headers."
    ),
    body_timeout: float = typer.Option(
        30.0, "--body-timeout", min=0.001, help="Seconds a client has to send a request's body (then 408)."
    ),
    keepalive_timeout: float = typer.Option(
        75.0, "--keepalive-timeout", min=0.001, help="Seconds an idle kept-alive connection stays open."
    ),
    max_connections: int = typer.Option(
        512, "--max-connections", min=1, help="Open REST connections at most (a new one beyond: 503)."
    ),
    drain_timeout: float = typer.Option(
        30.0, "--drain-timeout", min=0.001, help="On SIGTERM, seconds to finish the requests received."
    ),
    api_key_file: Optional[Path] = typer.Option(
        None, "--api-key-file", help="File holding a bearer token every request must carry."
    ),
    spin_wait: bool = typer.Option(
        False,
        "--spin-wait/--no-spin-wait",
        help="Let ONNX Runtime's threads spin-wait for work: ~1 ms less latency unloaded, less throughput under load.",
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    runtime: Optional[str] = typer.Option(
        None,
        "--runtime",
        help="onnxruntime or openvino for every model (default: each artifact's preferred runtime, measured "
        "by edgellm export; an artifact must have passed parity in the one named).",
    ),
    max_sessions: int = typer.Option(
        64, "--max-sessions", min=1, help="Split generation: sessions held at once (each holds a cache)."
    ),
    max_length: int = typer.Option(
        512, "--max-length", min=2, help="Split generation: positions a session's cache may hold."
    ),
    idle_timeout: float = typer.Option(
        60.0, "--idle-timeout", min=0.01, help="Split generation: seconds before an idle session is freed."
    ),
    max_concurrent_requests: Optional[int] = typer.Option(
        None,
        "--max-concurrent-requests",
        min=1,
        help="Text generation: running + waiting requests at most (beyond: 429 with Retry-After; default: "
        "no limit but --max-queue-size).",
    ),
    prefill_chunk: int = typer.Option(
        256, "--prefill-chunk", min=1, help="Text generation: prompt tokens prefilled per pass between decode steps."
    ),
    max_batch_tokens: Optional[int] = typer.Option(
        None,
        "--max-batch-tokens",
        min=1,
        help="Text generation: cache positions (prompt + max_tokens) of the running requests at most "
        "(default: --max-batch-size x the context).",
    ),
    traffic: list[str] = typer.Option(
        [],
        "--traffic",
        help="Canary: NAME=VERSION:PERCENT,... over versions served as NAME@VERSION=DIR (sums to 100).",
    ),
    max_error_rate: float = typer.Option(
        0.05, "--max-error-rate", min=0.0, max=1.0, help="Canary: roll back over this error rate."
    ),
    max_p90_ms: Optional[float] = typer.Option(
        None, "--max-p90-ms", min=0.0, help="Canary: roll back over this p90 latency."
    ),
    min_requests: int = typer.Option(
        20, "--min-requests", min=1, help="Canary: requests seen before judging."
    ),
    promote_after: Optional[int] = typer.Option(
        None, "--promote-after", min=1, help="Canary: healthy requests before it becomes the only version."
    ),
    replica_id: Optional[int] = typer.Option(
        None,
        "--replica-id",
        min=0,
        help="Split generation: this replica's ordinal, named in session URLs (/v2/generate/MODEL/replicas/N/"
        "sessions/ID); default: POD_NAME's trailing number (a StatefulSet pod), else none.",
    ),
) -> None:
    """Serve ARTIFACTs over KServe v2 (REST and gRPC) with dynamic batching and Prometheus /metrics.

    Example: edgellm serve edgellm-out/minilm-x86-server --port 8000 --grpc-port 8001 --max-batch-size 16

    Example: edgellm serve embed=edgellm-out/minilm-x86-server --api-key-file key.txt --instances 2 --threads 1

    Canary: edgellm serve minilm@1=out/v1 minilm@2=out/v2 --traffic minilm=1:90,2:10 --max-p90-ms 50
    --max-error-rate 0.02 (version 2 is rolled back automatically if it breaks either; GET
    /v2/models/minilm/release shows every decision)

    Split generation (the server half of edgellm split export --generate): edgellm serve out/tl-gen/server
    --max-sessions 32 --max-length 512 (the cache memory bound is sessions x length; see GET /v2/generate/MODEL)

    Text generation (edgellm export MODEL --generate): edgellm serve out/tl-int4 --max-batch-size 16 serves the
    OpenAI API (/v1/models, /v1/completions, /v1/chat/completions, stream: true) with continuous batching of
    up to 16 requests; --max-batch-size 1 turns batching off.
    """
    import asyncio
    import logging

    from edgellm.errors import EdgeLLMError
    from edgellm.serve import (
        BatchingConfig,
        CanaryConfig,
        GenerationConfig,
        HttpConfig,
        LimitsConfig,
        LLMConfig,
        ModelConfig,
        Server,
        ServerConfig,
    )

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    models = []
    from edgellm.hub import resolve_path
    from edgellm.serve.release import parse_traffic

    for spec in artifacts:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = None, spec
        elif not name:
            raise EdgeLLMError(f"'{spec}' has an empty NAME", "write NAME=ARTIFACT_DIR, or just ARTIFACT_DIR")
        version = "1"
        if name and "@" in name:
            name, _, version = name.partition("@")
        models.append(ModelConfig(resolve_path(path), name, version))  # a directory, or a hub reference
    splits = dict(parse_traffic(t) for t in traffic)
    key = None
    if api_key_file is not None:
        if not api_key_file.is_file():
            raise EdgeLLMError(
                f"API key file '{api_key_file}' does not exist", "write the token into it, one line"
            )
        key = api_key_file.read_text().strip()
        if not key:
            raise EdgeLLMError(f"API key file '{api_key_file}' is empty", "write the token into it, one line")
    cfg = ServerConfig(
        host=host,
        port=port,
        grpc_port=None if grpc_port < 0 else grpc_port,
        instances=instances,
        threads=threads,
        request_timeout_s=timeout_s,
        max_body_mb=max_body_mb,
        api_key=key,
        spin_wait=spin_wait,
        runtime=runtime,
        batching=BatchingConfig(
            max_batch_size=max_batch_size,
            max_queue_delay_ms=max_queue_delay_ms,
            max_queue_size=max_queue_size,
        ),
        generation=GenerationConfig(
            max_sessions=max_sessions,
            max_length=max_length,
            idle_timeout_s=idle_timeout,
            max_batch_size=max_batch_size,  # --max-batch-size and --max-queue-size bound the decode batch too
            max_queue_size=max_queue_size,
        ),
        llm=LLMConfig(
            max_batch_size=max_batch_size,
            max_queue_size=max_queue_size,
            max_concurrent=max_concurrent_requests,
            max_batch_tokens=max_batch_tokens,
            prefill_chunk=prefill_chunk,
        ),
        limits=LimitsConfig(
            max_request_rows=max_request_rows,
            max_request_seq=max_request_seq,
            max_request_elements=max_request_elements,
        ),
        http=HttpConfig(
            header_timeout_s=header_timeout,
            body_timeout_s=body_timeout,
            keepalive_timeout_s=keepalive_timeout,
            max_connections=max_connections,
            drain_timeout_s=drain_timeout,
        ),
        canary=CanaryConfig(
            traffic=splits,
            max_error_rate=max_error_rate,
            max_p90_ms=max_p90_ms,
            min_requests=min_requests,
            promote_after=promote_after,
        ),
    )
    server = Server(models, cfg, replica_id=replica_id)

    async def main() -> None:
        try:
            await server.start()
        except (OSError, RuntimeError) as exc:  # a port in use (aiohttp: OSError; grpc: RuntimeError)
            err = _bind_error(exc, cfg)
            if err is exc:
                raise
            await server.shutdown()  # the batchers (and a REST listener) that did start
            raise err from None
        print(
            f"serving {', '.join([*server.models, *server.generators, *server.llms])} on http://{cfg.host}:{cfg.port}"
            + (f" and grpc {cfg.host}:{cfg.grpc_port}" if cfg.grpc_port is not None else ""),
            flush=True,
        )
        await server.wait_and_drain()

    asyncio.run(main())


def _bind_error(exc: Exception, cfg) -> Exception:
    """A listener that could not bind, as one line naming the port; anything else as it was."""
    import errno
    import os

    from edgellm.errors import EdgeLLMError

    if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
        what, port, flag = "REST", cfg.port, "--port"
    elif isinstance(exc, RuntimeError) and "bind" in str(exc).lower():
        what, port, flag = "gRPC", cfg.grpc_port, "--grpc-port"
    else:
        return exc
    reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else "address already in use"
    return EdgeLLMError(
        f"cannot listen for {what} on {cfg.host}:{port}: {reason.lower()}",
        f"stop what listens there, or give another {flag}; 0 takes any free port",
    )
