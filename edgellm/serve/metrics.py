"""Prometheus metrics with Triton's names where they fit (``nv_inference_*``; counters carry the
``_total`` suffix Prometheus clients add), plus the batch-size and queue-time histograms. Average batch
size = ``nv_inference_count_total / nv_inference_exec_count_total``.

Text generation (the OpenAI-compatible routes) uses the names LLM servers use (vLLM's, ``edgellm:`` for
``vllm:``), labelled by ``model``: histograms ``edgellm:time_to_first_token_seconds``,
``edgellm:time_per_output_token_seconds`` (the gap between two tokens of a request),
``edgellm:e2e_request_latency_seconds`` and ``edgellm:batch_occupancy`` (running requests of a pass over the
batch's slots); counters ``edgellm:prompt_tokens_total``, ``edgellm:generation_tokens_total``,
``edgellm:request_success_total{finished_reason}`` and ``edgellm:request_aborted_total{reason}``
(``disconnect``, ``shutdown``, ``error``); gauges ``edgellm:num_requests_running`` and
``edgellm:num_requests_waiting`` (the autoscaling signal of ``edgellm deploy k8s``), and for split generation
``edgellm:num_sessions_open``."""

from __future__ import annotations


class Metrics:
    """One registry per server (tests run several servers in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        labels = ["model", "version"]
        self.success = Counter(
            "nv_inference_request_success", "Successful inference requests", labels, registry=r
        )
        self.failure = Counter(
            "nv_inference_request_failure", "Failed inference requests", [*labels, "reason"], registry=r
        )
        self.count = Counter(
            "nv_inference_count", "Inferences performed (rows; a batch of N counts N)", labels, registry=r
        )
        self.exec_count = Counter("nv_inference_exec_count", "Model executions (batches)", labels, registry=r)
        self.queue_us = Counter(
            "nv_inference_queue_duration_us",
            "Cumulative time requests waited in the queue",
            labels,
            registry=r,
        )
        self.compute_us = Counter(
            "nv_inference_compute_infer_duration_us",
            "Cumulative time spent executing the model",
            labels,
            registry=r,
        )
        self.request_us = Counter(
            "nv_inference_request_duration_us",
            "Cumulative end-to-end request time in the server",
            labels,
            registry=r,
        )
        self.pending = Gauge(
            "nv_inference_pending_request_count", "Requests waiting in the queue", labels, registry=r
        )
        self.batch_size = Histogram(
            "edgellm_batch_size",
            "Rows per executed batch",
            labels,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.traffic_percent = Gauge(
            "edgellm_traffic_percent", "Traffic split of a model's versions", labels, registry=r
        )
        self.decisions = Counter(
            "edgellm_release_decisions",
            "Automatic release decisions (rollback, promote)",
            [*labels, "action"],
            registry=r,
        )
        self.queue_seconds = Histogram(
            "edgellm_queue_seconds",
            "Time a request waited before its batch ran",
            labels,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )

        self._llm_metrics(r)

    def _llm_metrics(self, r) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        lat = (
            0.001,
            0.005,
            0.01,
            0.02,
            0.04,
            0.06,
            0.08,
            0.1,
            0.25,
            0.5,
            0.75,
            1.0,
            2.5,
            5.0,
            7.5,
            10.0,
            20.0,
        )
        m = ["model"]
        self.ttft = Histogram(
            "edgellm:time_to_first_token_seconds", "Time to first token", m, buckets=lat, registry=r
        )
        self.tpot = Histogram(
            "edgellm:time_per_output_token_seconds",
            "Time between two output tokens of a request",
            m,
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.015,
                0.02,
                0.025,
                0.03,
                0.04,
                0.05,
                0.075,
                0.1,
                0.15,
                0.2,
                0.3,
                0.5,
                1.0,
            ),
            registry=r,
        )
        self.e2e = Histogram(
            "edgellm:e2e_request_latency_seconds",
            "Request latency, arrival to last token",
            m,
            buckets=lat,
            registry=r,
        )
        self.occupancy = Histogram(
            "edgellm:batch_occupancy",
            "Running requests of a decode pass over the batch's slots",
            m,
            buckets=(0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0),
            registry=r,
        )
        self.prompt_tokens = Counter("edgellm:prompt_tokens", "Prompt tokens prefilled", m, registry=r)
        self.generation_tokens = Counter("edgellm:generation_tokens", "Tokens generated", m, registry=r)
        self.llm_success = Counter(
            "edgellm:request_success", "Finished generation requests", [*m, "finished_reason"], registry=r
        )
        self.llm_aborted = Counter(
            "edgellm:request_aborted",
            "Generation requests withdrawn before they finished",
            [*m, "reason"],
            registry=r,
        )
        self.running = Gauge("edgellm:num_requests_running", "Requests in the decode batch", m, registry=r)
        self.waiting = Gauge("edgellm:num_requests_waiting", "Requests waiting for a slot", m, registry=r)
        self.sessions_open = Gauge(
            "edgellm:num_sessions_open", "Open split-generation sessions (each holds a cache)", m, registry=r
        )

    def llm_first_token(self, model: str, seconds: float) -> None:
        self.ttft.labels(model).observe(seconds)

    def llm_token(self, model: str, seconds: float) -> None:
        self.tpot.labels(model).observe(seconds)

    def llm_pass(self, model: str, decoding: int, slots: int) -> None:
        if decoding:
            self.occupancy.labels(model).observe(decoding / max(1, slots))

    def llm_queue(self, model: str, running: int, waiting: int) -> None:
        self.running.labels(model).set(running)
        self.waiting.labels(model).set(waiting)

    def llm_finished(
        self, model: str, reason: str | None, aborted: str | None, prompt: int, generated: int, seconds: float
    ) -> None:
        """One request left: ``reason`` (stop|length) when it finished, ``aborted`` when withdrawn."""
        self.prompt_tokens.labels(model).inc(prompt)
        self.generation_tokens.labels(model).inc(generated)
        if reason is not None:
            self.llm_success.labels(model, reason).inc()
            self.e2e.labels(model).observe(seconds)
        else:
            self.llm_aborted.labels(model, aborted or "error").inc()

    def traffic(self, model: str, version: str, percent: float) -> None:
        """The share of a model's unpinned requests a version gets (canary releases)."""
        self.traffic_percent.labels(model, version).set(percent)

    def decision(self, model: str, version: str, action: str) -> None:
        self.decisions.labels(model, version, action).inc()

    def batch(self, model: str, version: str, rows: int, requests: int, compute_s: float) -> None:
        self.exec_count.labels(model, version).inc()
        self.count.labels(model, version).inc(rows)
        self.batch_size.labels(model, version).observe(rows)
        self.compute_us.labels(model, version).inc(compute_s * 1e6)

    def request(self, model: str, version: str, ok: bool, total_s: float, reason: str = "") -> None:
        if ok:
            self.success.labels(model, version).inc()
        else:
            self.failure.labels(model, version, reason or "error").inc()
        self.request_us.labels(model, version).inc(total_s * 1e6)

    def queued(self, model: str, version: str, seconds: float) -> None:
        """How long one request waited before its batch started."""
        self.queue_us.labels(model, version).inc(seconds * 1e6)
        self.queue_seconds.labels(model, version).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def parse(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, summed over label sets (for tests and the load benchmark)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        name = key.split("{", 1)[0]
        if name.endswith("_created"):  # prometheus_client's creation timestamps
            continue
        name = name.removesuffix("_total")  # counters are exposed as <name>_total
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out
