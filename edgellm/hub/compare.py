"""Regression check of a new artifact against a release: accuracy and speed as each recorded them.

Both artifacts carry an ``evaluation`` section (written by ``edgellm compress``): accuracy against the
fp32 model on held-out data and latency as a ratio to fp32 measured in the same run. Ratios travel
between machines (a CI runner and a release host differ in speed, not in how much faster int8 is than
fp32 on the same host), so speed is compared by that ratio; accuracy by the metric both share:

- embedding: ``cosine_mean`` (and ``spearman_pairwise``), a drop is ``release - candidate``;
- causal LM: ``perplexity_increase`` (relative to fp32), a drop is ``candidate - release``;
- classification: ``top1_agreement`` (label agreement with fp32), a drop is ``release - candidate``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError

HIGHER_IS_BETTER = {"embedding": ("cosine_mean", "spearman_pairwise"), "classification": ("top1_agreement",)}
LOWER_IS_BETTER = {"perplexity": ("perplexity_increase",)}


def _evaluation(path: Path, role: str) -> dict[str, Any]:
    man = path / "manifest.json"
    if not man.is_file():
        raise EdgeLLMError(
            f"the {role} '{path}' is not an artifact (no manifest.json)", "give an artifact directory"
        )
    ev = json.loads(man.read_text()).get("evaluation")
    if not ev or "accuracy" not in ev or "speed" not in ev:
        raise EdgeLLMError(
            f"the {role} '{path}' has no evaluation (accuracy and speed) in its manifest",
            "make it with edgellm compress, which measures both against fp32",
        )
    return ev


def compare(
    candidate: str | Path,
    release: str | Path,
    *,
    max_accuracy_drop: float = 0.01,
    max_latency_increase: float = 0.10,
    hub: str | Path | None = None,
) -> dict[str, Any]:
    """Compare ``candidate`` with ``release`` (directories or hub references); ``passed`` is False when
    accuracy fell by more than ``max_accuracy_drop`` or the latency ratio to fp32 grew by more than
    ``max_latency_increase`` (a fraction: 0.10 = 10 %)."""
    from edgellm.hub.registry import resolve_path

    c_path, r_path = resolve_path(candidate, hub), resolve_path(release, hub)
    c, r = _evaluation(c_path, "candidate"), _evaluation(r_path, "release")
    metric = c["accuracy"].get("metric")
    if metric != r["accuracy"].get("metric"):
        raise EdgeLLMError(
            f"the candidate is measured by {metric}, the release by {r['accuracy'].get('metric')}",
            "compare artifacts of the same model and task",
        )
    checks = []
    keys = [(k, 1.0) for k in HIGHER_IS_BETTER.get(metric, ())] + [
        (k, -1.0) for k in LOWER_IS_BETTER.get(metric, ())
    ]
    for key, sign in keys:  # sign: +1 when higher is better, -1 when lower is
        if key in c["accuracy"] and key in r["accuracy"]:
            drop = sign * (float(r["accuracy"][key]) - float(c["accuracy"][key]))
            checks.append(
                {
                    "check": key,
                    "release": r["accuracy"][key],
                    "candidate": c["accuracy"][key],
                    "change": float(c["accuracy"][key]) - float(r["accuracy"][key]),
                    "ok": drop <= max_accuracy_drop,
                }
            )
    if not checks:
        raise EdgeLLMError(
            f"no accuracy figure both artifacts share (metric {metric})", "re-run edgellm compress on both"
        )
    rc, rr = float(c["speed"]["ratio_vs_fp32"]), float(r["speed"]["ratio_vs_fp32"])
    growth = rc / rr - 1.0
    checks.append(
        {
            "check": "latency ratio vs fp32",
            "release": rr,
            "candidate": rc,
            "change": growth,
            "ok": growth <= max_latency_increase,
        }
    )
    return {
        "candidate": str(candidate),
        "release": str(release),
        "metric": metric,
        "budgets": {"max_accuracy_drop": max_accuracy_drop, "max_latency_increase": max_latency_increase},
        "checks": checks,
        "passed": all(ch["ok"] for ch in checks),
    }


WORKFLOW = """# Written by `edgellm init ci`: on every push and pull request, run the recipe, then compare the new
# artifact with the last release in the hub; the job fails on a regression beyond the budgets.
name: edgellm
on:
  push:
  pull_request:
jobs:
  model:
    runs-on: ubuntu-latest
    timeout-minutes: 60
    env:
      EDGELLM_HUB: {hub}
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - name: Install (torch CPU wheel first, pinned constraints)
        run: make setup
      - name: Run the recipe
        run: .venv/bin/edgellm run {recipe} -o edgellm-out --force
      - name: Compare with the last release ({release})
        run: >-
          .venv/bin/edgellm hub compare edgellm-out/{artifact} --against {release}
          --max-accuracy-drop {max_accuracy_drop} --max-latency-increase {max_latency_increase}
"""


def ci_workflow(settings: dict[str, Any]) -> str:
    """The GitHub Actions workflow ``edgellm init ci`` writes: ``settings`` holds recipe, artifact,
    release, hub, max_accuracy_drop and max_latency_increase."""
    return WORKFLOW.format(**settings)
