"""The recipe's split check: the exported split pair served on loopback and driven by real requests,
each answer compared with the unsplit model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def split_check(arts: Any, adapter: Any, *, requests: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Serve the server half on loopback, send ``requests`` real requests through the split model, compare
    each answer with the unsplit model's; the cosine, and the time breakdown of the calls."""
    import numpy as np

    from edgellm.export.validate import compare
    from edgellm.serve import ModelConfig, serve_in_background
    from edgellm.split.bench import summarize
    from edgellm.split.client import SplitClient

    feeds_list = _check_inputs(adapter, requests)
    results: list[dict[str, Any]] = []
    timings: list[dict[str, float]] = []

    def drive(url: str | None) -> None:
        client = SplitClient.from_path(arts.path, url)
        try:
            for feeds in feeds_list:
                out, t = client.infer(feeds)
                timings.append(t)
                results.append(compare(adapter.run(feeds), out, adapter.outputs, feeds))
        finally:
            client.close()

    if arts.server is None:
        drive(None)
    else:
        with serve_in_background(
            [ModelConfig(arts.server.path)], max_batch_size=8, max_queue_delay_ms=2.0, warmup=True
        ) as srv:
            url = f"http://127.0.0.1:{srv.config.port}"
            log(f"    serving the server half at {url}; {requests} requests through the split model")
            drive(url)
    worst = [min(v["cosine_min"] for v in r.values()) for r in results]
    return {
        "served": arts.server is not None,
        "requests": len(results),
        "cosine_min": float(np.min(worst)),
        "ms": summarize(timings),
        "upload_bytes": int(timings[-1]["upload_bytes"]),
        "download_bytes": int(timings[-1]["download_bytes"]),
    }


def _check_inputs(adapter: Any, n: int) -> list[dict[str, Any]]:
    """``n`` single requests: held-out sentences of the bundled text for text models, seeded inputs else."""
    if adapter.tokenizer is not None:
        from edgellm.data import read_corpus, split
        from edgellm.data.corpus import sentences

        held = split(read_corpus(None))[1]
        texts = sentences(held)[:n]
        feeds = []
        names = [s.name for s in adapter.inputs]
        for t in texts:
            enc = adapter.tokenizer([t], truncation=True, max_length=128, return_tensors="np")
            feeds.append(
                {
                    k: enc[k].astype("int64") if k in enc else (enc["input_ids"] * 0).astype("int64")
                    for k in names
                }
            )
        return feeds
    return [adapter.example_inputs(batch=1, seq=16, seed=i) for i in range(n)]
