"""Canary releases: several versions of one model behind a traffic split, watched, rolled back or promoted
automatically, every decision recorded.

A request that does not name a version goes to one drawn by the traffic split. Each version keeps a
window of its recent outcomes: errors (the runtime failed, or the outputs were not finite) and latency in
the server. When a version that is not the stable one (the stable one carries the most traffic) has at
least ``min_requests`` outcomes and its error rate is over ``max_error_rate`` or its p90 latency over
``max_p90_ms``, it is rolled back: its traffic goes to the stable version at once. With
``promote_after``, a canary that stayed healthy that many requests becomes the only version. A canary
request that fails is answered by the stable version instead, so callers see no failure from a bad
canary. Every decision is kept (``GET /v2/models/{model}/release``) with the time from the canary's
first bad request to the decision, and exported as ``edgellm_release_decisions_total``; the split is
the ``edgellm_traffic_percent`` gauge. The split and the thresholds are
:class:`~edgellm.serve.config.CanaryConfig` (``ServerConfig.canary``).
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.serve.config import CanaryConfig


def parse_traffic(text: str) -> tuple[str, dict[str, float]]:
    """``minilm=1:90,2:10`` -> ("minilm", {"1": 90.0, "2": 10.0}); the percentages must sum to 100."""
    name, sep, rest = text.partition("=")
    pairs = [p for p in rest.split(",") if p]
    weights: dict[str, float] = {}
    try:
        for p in pairs:
            v, _, pct = p.partition(":")
            weights[v] = float(pct)
    except ValueError:
        weights = {}
    if not sep or not name or not weights or any(w < 0 for w in weights.values()):
        raise EdgeLLMError(
            f"--traffic '{text}' is not NAME=VERSION:PERCENT,...", "e.g. --traffic minilm=1:90,2:10"
        )
    total = sum(weights.values())
    if abs(total - 100.0) > 1e-6:
        raise EdgeLLMError(
            f"the traffic split of '{name}' sums to {total:g} %, not 100 %",
            "make the percentages add up to 100",
        )
    return name, weights


class Release:
    """The versions of one model, their traffic split and the canary controller."""

    def __init__(
        self,
        name: str,
        versions: dict[str, Any],
        weights: dict[str, float],
        policy: CanaryConfig,
        metrics: Any,
    ) -> None:
        unknown = sorted(set(weights) - set(versions))
        if unknown:
            raise EdgeLLMError(
                f"the traffic split of '{name}' names version(s) {unknown} that are not served",
                f"served versions: {', '.join(sorted(versions))}; serve each as {name}@VERSION=DIR",
            )
        names = {v: sorted(s.name for s in m.inputs) for v, m in versions.items()}
        if len({tuple(n) for n in names.values()}) > 1:
            raise EdgeLLMError(
                f"the versions of '{name}' take different inputs: {names}",
                "a traffic split needs the same inputs",
            )
        self.name, self.versions, self.policy, self.metrics = name, versions, policy, metrics
        self.weights = {v: float(weights.get(v, 0.0)) for v in versions}
        self.stable = max(self.weights, key=lambda v: self.weights[v])
        self.rng = random.Random(0)
        self.outcomes: dict[str, deque] = {v: deque(maxlen=policy.window) for v in versions}
        self.counts = {v: {"requests": 0, "errors": 0, "fallbacks": 0} for v in versions}
        self.first_bad: dict[str, float] = {}
        self.decisions: list[dict[str, Any]] = []
        self._publish()

    def pick(self) -> str:
        live = [(v, w) for v, w in self.weights.items() if w > 0]
        x = self.rng.uniform(0, sum(w for _, w in live))
        for v, w in live:
            x -= w
            if x <= 0:
                return v
        return live[-1][0]

    def record(self, version: str, ok: bool, ms: float) -> None:
        self.outcomes[version].append((ok, ms))
        c = self.counts[version]
        c["requests"] += 1
        c["errors"] += 0 if ok else 1
        budget = self.policy.max_p90_ms
        if (not ok or (budget is not None and ms > budget)) and version not in self.first_bad:
            self.first_bad[version] = time.monotonic()
        if version != self.stable and self.weights[version] > 0:
            self._evaluate(version)

    def _evaluate(self, version: str) -> None:
        p, outs = self.policy, self.outcomes[version]
        n = len(outs)
        if n < p.min_requests:
            return
        err = sum(1 for ok, _ in outs if not ok) / n
        lat = [ms for ok, ms in outs if ok]
        p90 = float(np.percentile(lat, 90)) if lat else 0.0
        reasons = []
        if err > p.max_error_rate:
            reasons.append(f"error rate {err:.1%} over {p.max_error_rate:.1%}")
        if p.max_p90_ms is not None and p90 > p.max_p90_ms:
            reasons.append(f"p90 {p90:.1f} ms over {p.max_p90_ms:g} ms")
        if reasons:
            self._decide("rollback", version, "; ".join(reasons), err, p90, n)
            self.weights[self.stable] += self.weights[version]
            self.weights[version] = 0.0
        elif p.promote_after is not None and self.counts[version]["requests"] >= p.promote_after:
            self._decide(
                "promote", version, f"healthy for {self.counts[version]['requests']} requests", err, p90, n
            )
            self.weights = {v: (100.0 if v == version else 0.0) for v in self.weights}
            self.stable = version
        self._publish()

    def _decide(self, action: str, version: str, reason: str, err: float, p90: float, n: int) -> None:
        now = time.monotonic()
        first = self.first_bad.get(version)
        self.decisions.append(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "action": action,
                "version": version,
                "stable": self.stable,
                "reason": reason,
                "error_rate": round(err, 4),
                "p90_ms": round(p90, 3),
                "window_requests": n,
                "requests": dict(self.counts[version]),
                "first_bad_to_decision_s": round(now - first, 4) if first is not None else None,
            }
        )
        if self.metrics is not None:
            self.metrics.decision(self.name, version, action)

    def _publish(self) -> None:
        if self.metrics is not None:
            for v, w in self.weights.items():
                self.metrics.traffic(self.name, v, w)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "stable": self.stable,
            "traffic_percent": self.weights,
            "policy": self.policy.thresholds(),
            "counts": self.counts,
            "decisions": self.decisions,
        }
