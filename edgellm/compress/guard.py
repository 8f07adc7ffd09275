"""Accuracy guards: ``--max-accuracy-drop`` parsed into a check on the accuracy report.

Forms: ``cosine>=0.99`` (encoders: mean embedding cosine), ``ppl+3%`` (causal LMs: perplexity at most
3 % above fp32), ``top1>=0.9`` (causal LMs: next-token agreement), or a bare fraction ``0.01``
(cosine >= 0.99 for encoders, perplexity +1 % for causal LMs, label agreement >= 0.99 for classifiers:
``top1>=0.99``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgellm.errors import EdgeLLMError


@dataclass(frozen=True)
class Guard:
    metric: str  # key in the accuracy report
    op: str  # ">=" or "<="
    value: float
    text: str

    def check(self, acc: dict[str, Any]) -> tuple[bool, str]:
        if self.metric not in acc:
            raise EdgeLLMError(
                f"guard '{self.text}' does not apply to a {acc.get('metric')} report",
                "use cosine>=X for encoders, ppl+X% or top1>=X for causal LMs, top1>=X for classifiers",
            )
        v = float(acc[self.metric])
        ok = v >= self.value if self.op == ">=" else v <= self.value
        return ok, f"{self.metric} {v:.5g} {'meets' if ok else 'misses'} {self.op} {self.value:g}"


def parse_guard(text: str | None, task: str) -> Guard | None:
    """Parse a ``--max-accuracy-drop`` value for a model of ``task``."""
    if text is None or str(text).strip() == "":
        return None
    t = str(text).strip().lower().replace(" ", "")
    try:
        if m := re.fullmatch(r"cos(?:ine)?>=([0-9.]+)", t):
            return Guard("cosine_mean", ">=", float(m.group(1)), text)
        if m := re.fullmatch(r"(?:ppl|perplexity)\+([0-9.]+)%", t):
            return Guard("perplexity_increase", "<=", float(m.group(1)) / 100.0, text)
        if m := re.fullmatch(r"top1>=([0-9.]+)", t):
            return Guard("top1_agreement", ">=", float(m.group(1)), text)
        x = float(t)
    except ValueError:
        x = None
    if x is None or not 0 <= x < 1:
        raise EdgeLLMError(
            f"--max-accuracy-drop '{text}' is not understood",
            "write e.g. cosine>=0.99, ppl+3%, top1>=0.9 or a fraction such as 0.01",
        )
    if task == "causal-lm":
        return Guard("perplexity_increase", "<=", x, text)
    if task == "classification":
        return Guard("top1_agreement", ">=", 1.0 - x, text)
    return Guard("cosine_mean", ">=", 1.0 - x, text)
