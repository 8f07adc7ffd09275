"""Prometheus metrics with Triton's names where they fit (``nv_inference_*``; counters carry the
``_total`` suffix Prometheus clients add), plus the batch-size and queue-time histograms. Average batch
size = ``nv_inference_count_total / nv_inference_exec_count_total``."""

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
