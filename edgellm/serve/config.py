"""What the server serves and how: :class:`ModelConfig` per model, one :class:`ServerConfig` with a
section per concern, each knob under one name from the CLI flag (``--max-batch-size``) to the code that
reads it (``config.batching.max_batch_size``).

- ``batching`` (:class:`BatchingConfig`): the dynamic batcher in front of every KServe v2 model.
- ``generation`` (:class:`GenerationConfig`): split-generation sessions and their continuous decode batch.
- ``llm`` (:class:`LLMConfig`): whole-model generation behind the OpenAI-compatible routes.
- ``canary`` (:class:`CanaryConfig`): traffic splits over the versions of a model and the watch that
  rolls a canary back or promotes it.
- ``limits`` (:class:`LimitsConfig`): what one KServe v2 request may ask (rows, sequence length, elements).
- ``http`` (:class:`HttpConfig`): the REST listener's timeouts for slow clients, its connection cap and
  the SIGTERM drain.

Every section validates itself when built, so a wrong value fails where it is written.

Example:
    >>> cfg = ServerConfig(port=8000, batching=BatchingConfig(max_batch_size=16))
    >>> cfg.batching.max_batch_size, cfg.generation.max_sessions
    (16, 64)
    >>> ServerConfig.from_flat(max_batch_size=4, max_sessions=8).generation.max_batch_size
    4
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError


def _check(ok: bool, what: str, fix: str) -> None:
    if not ok:
        raise EdgeLLMError(what, fix)


@dataclass
class ModelConfig:
    """One served model: an artifact directory, served under ``name`` (default: the manifest's)."""

    artifact: str | Path
    name: str | None = None
    version: str = "1"


@dataclass
class BatchingConfig:
    """The dynamic batcher of each KServe v2 model: a batch closes at ``max_batch_size`` rows or when its
    first request has waited ``max_queue_delay_ms``; beyond ``max_queue_size`` pending requests, 503."""

    max_batch_size: int = 8  # rows per batch at most (1: no batching)
    max_queue_delay_ms: float = 2.0  # how long the first request of a batch waits for company
    max_queue_size: int = 256  # pending requests at most

    def __post_init__(self) -> None:
        _check(self.max_batch_size >= 1, f"max_batch_size {self.max_batch_size} < 1", "use 1 for no batching")
        _check(self.max_queue_delay_ms >= 0, f"max_queue_delay_ms {self.max_queue_delay_ms} < 0", "use >= 0")
        _check(self.max_queue_size >= 1, f"max_queue_size {self.max_queue_size} < 1", "use >= 1")


@dataclass
class GenerationConfig:
    """Split generation (the server half of a decoder with per-session caches), per model: the cache
    memory bound is ``max_sessions`` x ``max_length`` positions. Decode steps of all sessions are batched
    continuously, ``max_batch_size`` sessions a pass; ``max_queue_size`` waiting steps, then 503."""

    max_sessions: int = 64
    max_length: int = 512  # prompt + generated positions a session's cache may hold
    idle_timeout_s: float = 60.0  # an idle session is freed after this
    max_batch_size: int = 8  # decode steps per pass of the server half
    max_queue_size: int = 256  # decode steps waiting for a pass

    def __post_init__(self) -> None:
        _check(self.max_sessions >= 1, f"max_sessions {self.max_sessions} < 1", "use >= 1")
        _check(self.max_length >= 1, f"max_length {self.max_length} < 1", "use >= 1")
        _check(self.idle_timeout_s > 0, f"idle_timeout_s {self.idle_timeout_s} <= 0", "use > 0")
        _check(self.max_batch_size >= 1, f"max_batch_size {self.max_batch_size} < 1", "use >= 1")
        _check(self.max_queue_size >= 1, f"max_queue_size {self.max_queue_size} < 1", "use >= 1")


@dataclass
class LLMConfig:
    """Whole-model generation behind the OpenAI-compatible routes (:mod:`edgellm.serve.llm`): at most
    ``max_batch_size`` requests run (decode together; 1 turns batching off), their prompt + ``max_tokens``
    within ``max_batch_tokens`` cache positions (default: ``max_batch_size`` x the
    context); prompts are prefilled ``prefill_chunk`` tokens a pass between decode steps. Beyond the free
    slots, ``max_queue_size`` requests wait (then 503); ``max_concurrent`` caps running + waiting (429)."""

    max_batch_size: int = 8  # running requests (slots) at most
    max_queue_size: int = 256
    max_concurrent: int | None = None
    max_batch_tokens: int | None = None
    prefill_chunk: int = 256

    def __post_init__(self) -> None:
        _check(self.max_batch_size >= 1, f"max_batch_size {self.max_batch_size} < 1", "use 1 for no batching")
        _check(self.max_queue_size >= 0, f"max_queue_size {self.max_queue_size} < 0", "use >= 0")
        for name in ("max_concurrent", "max_batch_tokens"):
            v = getattr(self, name)
            _check(v is None or v >= 1, f"{name} {v} < 1", "use >= 1, or None for no limit of its own")
        _check(self.prefill_chunk >= 1, f"prefill_chunk {self.prefill_chunk} < 1", "use >= 1 token")


@dataclass
class CanaryConfig:
    """Canary releases: ``traffic`` maps a model name to ``{version: percent}`` (summing to 100); a
    version that is not the stable one is rolled back once it has ``min_requests`` outcomes in its
    ``window`` and its error rate is over ``max_error_rate`` or its p90 latency over ``max_p90_ms``, and
    promoted after ``promote_after`` healthy requests (None: never)."""

    traffic: dict[str, dict[str, float]] = field(default_factory=dict)
    max_error_rate: float = 0.05
    max_p90_ms: float | None = None
    min_requests: int = 20
    window: int = 100
    promote_after: int | None = None

    def __post_init__(self) -> None:
        _check(
            0 <= self.max_error_rate <= 1,
            f"max_error_rate {self.max_error_rate} is outside 0..1",
            "e.g. 0.05",
        )
        _check(
            self.max_p90_ms is None or self.max_p90_ms >= 0, f"max_p90_ms {self.max_p90_ms} < 0", "use >= 0"
        )
        _check(self.min_requests >= 1, f"min_requests {self.min_requests} < 1", "use >= 1")
        _check(self.window >= 1, f"window {self.window} < 1", "use >= 1")
        _check(
            self.promote_after is None or self.promote_after >= 1,
            f"promote_after {self.promote_after} < 1",
            "use >= 1, or None to never promote",
        )
        for name, weights in self.traffic.items():
            total = sum(weights.values())
            _check(
                abs(total - 100.0) <= 1e-6,
                f"the traffic split of '{name}' sums to {total:g} %, not 100 %",
                "make the percentages add up to 100",
            )

    def thresholds(self) -> dict[str, Any]:
        """The watch policy (everything but the traffic split), as a release reports it."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "traffic"}


@dataclass
class LimitsConfig:
    """What one KServe v2 request may ask of a model; over a limit the answer is 413 naming it. A request of
    more rows than ``batching.max_batch_size`` runs as several batches of at most that many rows, so memory
    follows the batch size, not the request. None derives the limit per model:

    - ``max_request_rows``: 8 x ``max_batch_size`` (a request is at most 8 batches);
    - ``max_request_seq``: the model's positions (the manifest's ``max_sequence``), else unbounded;
    - ``max_request_elements``: the elements of a request at both limits (binding only when set lower)."""

    max_request_rows: int | None = None
    max_request_seq: int | None = None
    max_request_elements: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_request_rows", "max_request_seq", "max_request_elements"):
            v = getattr(self, name)
            _check(v is None or v >= 1, f"{name} {v} < 1", "use >= 1, or None for the model's default")

    def rows(self, max_batch_size: int) -> int:
        return self.max_request_rows or 8 * max_batch_size


@dataclass
class HttpConfig:
    """The REST listener against slow, stalled or too many clients, and its drain on SIGTERM: a request's
    headers must arrive within ``header_timeout_s`` of its first byte (or of the connection), its body
    within ``body_timeout_s`` of its headers (else 408); an idle kept-alive connection is closed after
    ``keepalive_timeout_s``; beyond ``max_connections`` open connections a new one gets 503 and is closed.
    On SIGTERM the listener stops accepting and waits up to ``drain_timeout_s`` for the requests it holds."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    max_connections: int = 512
    drain_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keepalive_timeout_s", "drain_timeout_s"):
            v = getattr(self, name)
            _check(v > 0, f"{name} {v} <= 0", "use > 0 seconds")
        _check(self.max_connections >= 1, f"max_connections {self.max_connections} < 1", "use >= 1")


SECTIONS = {
    "batching": BatchingConfig,
    "generation": GenerationConfig,
    "llm": LLMConfig,
    "canary": CanaryConfig,
    "limits": LimitsConfig,
    "http": HttpConfig,
}


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (the one bound is written back here)
    grpc_port: int | None = 8001  # None: no gRPC
    instances: int = 1  # runtime sessions per model, one worker each
    threads: int | None = None  # per instance; default: cores // instances
    request_timeout_s: float = 30.0
    max_body_mb: float = 64.0
    api_key: str | None = None
    warmup: bool = True
    # ONNX Runtime's worker threads spin-wait for work by default. A batching server under load does better
    # without (serve_load.py, MiniLM seq 16, concurrency 64: +1 % and +17 % throughput in two runs), at
    # ~1 ms more p50 at concurrency 1; --spin-wait turns it back on for latency-bound, unbatched serving
    spin_wait: bool = False
    # the runtime every model runs in: None = each artifact's preferred one (measured by edgellm export),
    # else "onnxruntime" or "openvino" (an artifact must have passed parity in it)
    runtime: str | None = None
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    canary: CanaryConfig = field(default_factory=CanaryConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, f"port {self.port} is outside 0..65535", "0 picks a free port")
        _check(
            self.grpc_port is None or 0 <= self.grpc_port <= 65535,
            f"grpc_port {self.grpc_port} is outside 0..65535",
            "None serves no gRPC, 0 picks a free port",
        )
        _check(self.instances >= 1, f"instances {self.instances} < 1", "use >= 1")
        _check(self.threads is None or self.threads >= 1, f"threads {self.threads} < 1", "use >= 1 or None")
        _check(self.request_timeout_s > 0, f"request_timeout_s {self.request_timeout_s} <= 0", "use > 0")
        _check(self.max_body_mb > 0, f"max_body_mb {self.max_body_mb} <= 0", "use > 0")
        for name, kind in SECTIONS.items():
            _check(
                isinstance(getattr(self, name), kind),
                f"ServerConfig.{name} is a {type(getattr(self, name)).__name__}, not a {kind.__name__}",
                f"pass {name}={kind.__name__}(...)",
            )

    @classmethod
    def from_flat(cls, **options: Any) -> ServerConfig:
        """A config from flat names (``max_batch_size=4, max_sessions=8, traffic={...}``): each name sets
        the field of that name at the top and in every section that has it (``max_batch_size`` and
        ``max_queue_size`` both batch KServe requests and decode steps, as ``edgellm serve`` sets them).
        A whole section may be given too (``canary=CanaryConfig(...)``); flat names apply over it."""
        top = {f.name for f in fields(cls)} - set(SECTIONS)
        sections = {n: options.pop(n) for n in list(options) if n in SECTIONS}
        per: dict[str, dict[str, Any]] = {n: {} for n in SECTIONS}
        for key, value in options.items():
            owners = [n for n, kind in SECTIONS.items() if key in {f.name for f in fields(kind)}]
            if key not in top and not owners:
                raise TypeError(f"unknown server option '{key}'")
            for n in owners:
                per[n][key] = value
        built = {
            n: replace(sections[n], **per[n]) if n in sections else SECTIONS[n](**per[n]) for n in SECTIONS
        }
        return cls(**{k: v for k, v in options.items() if k in top}, **built)
