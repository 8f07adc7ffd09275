"""Accuracy of a compressed model against its fp32 reference on held-out data.

Encoders: embedding cosine (mean, min) and the Spearman correlation of all pairwise similarities
(does the compressed model rank sentence pairs the same way?). Causal LMs: perplexity of both and
next-token top-1 agreement. Classifiers: agreement of the predicted labels and the cosine of the logits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgellm import plugins


def _rank(a: np.ndarray) -> np.ndarray:
    order = a.argsort(kind="stable")
    r = np.empty(len(a), dtype=np.float64)
    r[order] = np.arange(len(a), dtype=np.float64)
    # average ranks of ties
    vals, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
    if len(vals) < len(a):
        sums = np.bincount(inv, weights=r)
        r = (sums / counts)[inv]
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _rank(np.asarray(a, np.float64)), _rank(np.asarray(b, np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def embedding_accuracy(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Cosine per sentence and Spearman of the pairwise cosine-similarity matrices."""

    def norm(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    r, g = norm(ref.astype(np.float64)), norm(got.astype(np.float64))
    cos = (r * g).sum(1)
    iu = np.triu_indices(len(r), k=1)
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "spearman_pairwise": spearman((r @ r.T)[iu], (g @ g.T)[iu]),
        "sentences": len(r),
    }


def lm_stats(
    logits: np.ndarray, input_ids: np.ndarray, mask: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Summed next-token NLL, the mask of scored positions, and argmax predictions of one batch."""
    x = logits[:, :-1].astype(np.float64)
    y = input_ids[:, 1:]
    valid = (mask[:, 1:] * mask[:, :-1]).astype(bool)
    m = x.max(-1, keepdims=True)
    logz = m[..., 0] + np.log(np.exp(x - m).sum(-1))
    tgt = np.take_along_axis(x, y[..., None], axis=-1)[..., 0]
    nll = (logz - tgt)[valid]
    return float(nll.sum()), valid, x.argmax(-1)


class CachedRunner:
    """Wraps a reference runner so that repeated evaluations on the same batches run it once."""

    def __init__(self, runner: Any) -> None:
        self.runner, self.inputs, self.outputs = runner, runner.inputs, runner.outputs
        self._memo: dict[int, tuple[Any, dict[str, np.ndarray]]] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        first = next(iter(feeds.values()))
        hit = self._memo.get(id(first))
        if hit is None or hit[0] is not first:  # keep the array itself: ids are reused once freed
            hit = (first, self.runner.run(feeds))
            self._memo[id(first)] = hit
        return hit[1]


def evaluate(
    reference: Any, candidate: Any, model: Any, batches: list[dict[str, np.ndarray]]
) -> dict[str, Any]:
    """Run both runners on held-out batches and compare (see module docstring)."""

    def feed(runner: Any, f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return runner.run({s.name: f[s.name] for s in runner.inputs})

    if model.task == "causal-lm":
        nll_ref = nll = 0.0
        agree = n = 0
        for f in batches:
            nr, valid, pr = lm_stats(feed(reference, f)["logits"], f["input_ids"], f["attention_mask"])
            nc, _, pc = lm_stats(feed(candidate, f)["logits"], f["input_ids"], f["attention_mask"])
            nll_ref, nll = nll_ref + nr, nll + nc
            agree += int((pr == pc)[valid].sum())
            n += int(valid.sum())
        ppl_ref = float(np.exp(nll_ref / max(n, 1)))
        ppl = float(np.exp(nll / max(n, 1)))
        return {
            "metric": "perplexity",
            "perplexity_fp32": ppl_ref,
            "perplexity": ppl,
            "perplexity_increase": ppl / ppl_ref - 1.0,
            "top1_agreement": agree / max(n, 1),
            "tokens": n,
        }
    out_name = model.outputs[0].name
    if model.task == "classification":
        ref = np.concatenate([feed(reference, f)[out_name] for f in batches]).astype(np.float64)
        got = np.concatenate([feed(candidate, f)[out_name] for f in batches]).astype(np.float64)
        emb = embedding_accuracy(ref, got)
        return {
            "metric": "classification",
            "top1_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean()),
            "cosine_mean": emb["cosine_mean"],
            "cosine_min": emb["cosine_min"],
            "sentences": len(ref),
            **_plugin_metrics(ref, got),
        }
    ref = np.concatenate([feed(reference, f)[out_name] for f in batches])
    got = np.concatenate([feed(candidate, f)[out_name] for f in batches])
    if ref.ndim > 2:
        ref, got = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
    return {"metric": "embedding", **embedding_accuracy(ref, got), **_plugin_metrics(ref, got)}


# metrics of installed plugins (``edgellm.metrics`` entry points), by name
METRICS: dict[str, Any] = {}


@plugins.accepts("edgellm.metrics")
def _accept_plugin(name: str, obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"{obj!r} is not callable")
    METRICS[name] = obj


def _plugin_metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """Metrics of installed plugins (``edgellm.metrics`` entry points) on both outputs, under ``plugins``;
    a plugin that fails is reported with its error, the others still run."""
    out: dict[str, Any] = {}
    for name in plugins.names("edgellm.metrics"):
        try:
            plugins.load("edgellm.metrics", name)
            out[name] = float(METRICS[name](ref, got))
        except Exception as exc:  # a plugin failure is reported, not fatal
            out[name] = {"error": str(exc).splitlines()[0][:200]}
    return {"plugins": out} if out else {}


def accuracy_text(acc: dict[str, Any]) -> str:
    """One line for tables: perplexity vs fp32 and top-1 agreement, or embedding cosine and Spearman."""
    if not acc:
        return "-"
    if acc.get("metric") == "perplexity":
        return (
            f"ppl {acc['perplexity']:.2f} vs {acc['perplexity_fp32']:.2f} ({100 * acc['perplexity_increase']:+.2f} %), "
            f"top-1 {acc['top1_agreement']:.3f}"
        )
    if acc.get("metric") == "classification":
        return f"label agreement {acc['top1_agreement']:.3f}, logit cosine {acc['cosine_mean']:.4f}"
    return f"cosine {acc['cosine_mean']:.4f} (min {acc['cosine_min']:.3f}), spearman {acc['spearman_pairwise']:.4f}"
