"""The cleaning pipeline: stream a corpus through the steps in parallel worker processes, write the
cleaned shards, and report what each step did.

``run_steps`` is a plain function over one Arrow record batch (what a worker, or Ray Data's
``map_batches``, runs); :class:`Deduplicator` makes the order-dependent decisions in the main process.

Example:
    >>> report = clean("corpus.jsonl", "out/clean", CleanConfig(steps=["normalize", "quality"]))  # doctest: +SKIP
    >>> report["documents_out"], report["steps"][1]["reasons"]                                    # doctest: +SKIP
    >>> dry_run("corpus.jsonl")["quality"]["preset"]  # what ``quality`` (preset auto) would pick   # doctest: +SKIP
    'docs'
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgellm.data import profile as prof
from edgellm.data.steps import ALIVE, Step, parse_steps
from edgellm.errors import EdgeLLMError, first_error

REPORT_DIR = "_report"  # beside the shards; readers skip folders starting with "_" or "."
DEFAULT_STEPS = ["normalize", "quality", "language", "pii", "exact_dedup", "near_dedup"]


class CleanConfig(BaseModel):
    """``clean.yaml``: what to read, which steps in which order, how to write."""

    model_config = ConfigDict(extra="forbid")
    text_field: str = "text"
    id_field: str = "id"
    steps: list[Any] = Field(default_factory=lambda: list(DEFAULT_STEPS))
    batch_size: int = Field(1024, ge=1)
    workers: int = Field(0, ge=0, description="worker processes; 0: one per core")
    shard_size: int = Field(100_000, ge=1)
    format: str = "jsonl"
    on_error: str = "skip"
    encoding: str = "utf-8"
    profile_docs: int = Field(
        5000, ge=100, description="the first documents a quality preset 'auto' is chosen on"
    )

    @classmethod
    def load(cls, path: str | Path | None, **over: Any) -> CleanConfig:
        import yaml
        from pydantic import ValidationError

        data: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise EdgeLLMError(
                    f"config '{path}' does not exist", "write a clean.yaml (see edgellm data clean --help)"
                )
            try:
                data = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError as exc:
                raise EdgeLLMError(f"{path} is not valid YAML: {exc}", "fix the file") from exc
            if not isinstance(data, dict):
                raise EdgeLLMError(f"{path} must be a mapping of settings", "see edgellm data clean --help")
        data.update({k: v for k, v in over.items() if v is not None})
        try:
            cfg = cls(**data)
        except ValidationError as exc:
            raise EdgeLLMError(
                f"{path or 'config'}: {first_error(exc)}", "fix that key (unknown keys are errors)"
            ) from exc
        cfg.parsed()  # step errors surface before any reading
        return cfg

    @model_validator(mode="after")
    def _internal_field_names(self) -> CleanConfig:
        """The text and id are ``text`` and ``id`` inside the pipeline (and in its output): a pii step may
        name them by their input names too."""
        rename = {self.text_field: "text", self.id_field: "id"}
        steps = []
        for item in self.steps:
            cfg = item.get("pii") if isinstance(item, dict) and len(item) == 1 else None
            if isinstance(cfg, dict) and isinstance(cfg.get("fields"), list):
                fields = list(dict.fromkeys(rename.get(f, f) for f in cfg["fields"]))
                item = {"pii": {**cfg, "fields": fields}}
            steps.append(item)
        self.steps = steps
        return self

    def parsed(self) -> list[Step]:
        return parse_steps(self.steps)


# -- per batch (worker) ---------------------------------------------------------------------------------
class _Fields(Mapping):
    """A batch's fields other than the text, as Python lists read on first use; the columns a step
    returns replace them for the steps after it."""

    def __init__(self, batch: Any) -> None:
        self._batch, self._lists = batch, {}

    def __getitem__(self, name: str) -> list[Any]:
        if name not in self._lists:
            if name == "text" or name not in self._batch.schema.names:
                raise KeyError(name)
            self._lists[name] = self._batch.column(name).to_pylist()
        return self._lists[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*(n for n in self._batch.schema.names if n != "text"), *self._lists]))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def replace(self, cols: dict[str, Any]) -> None:
        self._lists.update(cols)


def _column(values: Any, like: Any) -> Any:
    """``values`` as an Arrow array, of the type of the column it replaces where they still fit it."""
    import pyarrow as pa

    if like is not None:
        try:
            return pa.array(values, like.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    return pa.array(values)


def run_steps(batch: Any, steps: list[Step]) -> tuple[Any, dict[int, Any], list[Counter]]:
    """Run ``steps`` on one record batch.

    Returns the batch with the final texts, extra columns and ``_drop_at`` (index of the step that dropped
    each document, or ``ALIVE``), the stateful steps' keys by step index, and one counter per step.
    """
    import pyarrow as pa

    texts: list[str | None] = batch.column("text").to_pylist()
    drop_at = np.full(len(texts), ALIVE, np.int32)
    payload: dict[int, Any] = {}
    counters: list[Counter] = []
    extra: dict[str, Any] = {}
    fields = _Fields(batch)
    for i, step in enumerate(steps):
        new, drop, cols, count = step.run_fields(texts, fields)
        drop_at[(drop_at == ALIVE) & drop] = i
        texts = [None if d != ALIVE else t for t, d in zip(new, drop_at)]
        if step.stateful:
            payload[i] = cols.get("key", cols.get("sig"))
        else:
            extra.update(cols)
            fields.replace(cols)
        counters.append(count)
    final = batch.column("text").to_pylist()
    out_text = [t if t is not None else f for t, f in zip(texts, final)]
    cols = {n: batch.column(n) for n in batch.schema.names if n != "text"}
    cols["text"] = pa.array(out_text, pa.string())
    for k, v in extra.items():
        cols[k] = _column(v, cols.get(k))
    cols["_drop_at"] = pa.array(drop_at)
    return pa.RecordBatch.from_pydict(cols), payload, counters


def _worker(args: tuple[Any, list[Any]]) -> tuple[Any, dict[int, Any], list[Counter]]:
    batch, spec = args
    return run_steps(batch, parse_steps(spec))


class Deduplicator:
    """The order-dependent decisions: exact and near duplicates, the first document of each kept."""

    def __init__(self, steps: list[Step]) -> None:
        from edgellm.data.minhash import LSHIndex

        self.seen: dict[int, set[bytes]] = {}
        self.lsh: dict[int, LSHIndex] = {}
        self.rep_ids: dict[int, list[str]] = {}
        self.clusters: dict[int, dict[str, list[str]]] = {}
        for i, s in enumerate(steps):
            if s.kind == "exact_dedup":
                self.seen[i] = set()
            elif s.kind == "near_dedup":
                self.lsh[i] = LSHIndex(s.threshold, s.num_perm, s.bands, s.rows, s.fp_weight)
                self.rep_ids[i] = []
                self.clusters[i] = {}

    def decide(self, ids: list[str], drop_at: np.ndarray, payload: dict[int, Any]) -> np.ndarray:
        drop_at = drop_at.copy()
        for i in sorted(payload):
            keys = payload[i]
            for j in np.flatnonzero(drop_at > i):
                if i in self.seen:
                    k = keys[j]
                    if k in self.seen[i]:
                        drop_at[j] = i
                    else:
                        self.seen[i].add(k)
                else:
                    rep = self.lsh[i].query_insert(keys[j])
                    if rep is None:
                        self.rep_ids[i].append(ids[j])
                    else:
                        drop_at[j] = i
                        self.clusters[i].setdefault(self.rep_ids[i][rep], []).append(ids[j])
        return drop_at


def _results(batches: Iterator[Any], spec: list[Any], steps: list[Step], workers: int) -> Iterator[tuple]:
    if workers <= 1:
        for b in batches:
            yield run_steps(b, steps)
        return
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        window: list[Future] = []
        for b in batches:  # at most 2 x workers batches in flight: memory stays flat
            window.append(pool.submit(_worker, (b, spec)))
            if len(window) >= 2 * workers:
                yield window.pop(0).result()
        for f in window:
            yield f.result()


def clean(
    source: str | Path, output: str | Path, config: CleanConfig | None = None, *, force: bool = False
) -> dict[str, Any]:
    """Clean ``source`` into sharded files under ``output``, with ``_report/report.json``, ``report.md``
    and ``clusters.jsonl`` (near-duplicate clusters); returns the report."""
    from edgellm.data.io import CorpusReader, ShardWriter

    cfg = config or CleanConfig()
    cfg.parsed()  # step errors before the first pass
    spec, profile = _resolve(source, cfg)
    cfg = cfg.model_copy(update={"steps": spec})
    steps = cfg.parsed()
    for s in steps:  # configuration errors (a missing salt) before any work
        if s.kind == "pii":
            s.scanner()
    workers = cfg.workers or (os.cpu_count() or 1)
    reader = CorpusReader(source, cfg.text_field, cfg.id_field, cfg.batch_size, cfg.on_error, cfg.encoding)
    dedup = Deduplicator(steps)
    t0 = time.perf_counter()
    n_in = 0
    dropped = Counter()
    reasons: list[Counter] = [Counter() for _ in steps]
    with ShardWriter(output, cfg.format, cfg.shard_size, force=force) as w:
        for batch, payload, counters in _results(reader.batches(), cfg.steps, steps, workers):
            n_in += batch.num_rows
            ids = batch.column("id").to_pylist()
            drop_at = dedup.decide(ids, batch.column("_drop_at").to_numpy(), payload)
            dropped.update(int(x) for x in drop_at[drop_at != ALIVE])
            for r, c in zip(reasons, counters):
                r.update(c)
            keep = np.flatnonzero(drop_at == ALIVE)
            if len(keep):
                kept = batch.take(keep)
                w.write(kept.select([n for n in kept.schema.names if n != "_drop_at"]))
        seconds = time.perf_counter() - t0
        report = _report(
            source, output, cfg, steps, n_in, dropped, reasons, dedup, reader, w, seconds, workers
        )
        report["quality"] = prof.summary(cfg.steps, profile)
        meta = w.tmp / REPORT_DIR
        meta.mkdir()
        with open(meta / "clusters.jsonl", "w", encoding="utf-8") as f:
            for i, cl in dedup.clusters.items():
                for keep_id, dups in cl.items():
                    f.write(json.dumps({"step": i, "keep": keep_id, "duplicates": dups}) + "\n")
        (meta / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (meta / "report.md").write_text(report_markdown(report))
    return report


def _sample(source: str | Path, cfg: CleanConfig, n: int | None) -> tuple[list[str], list[str]]:
    """The texts and ids of the first ``n`` documents (all with None), read as ``clean`` reads them."""
    from edgellm.data.io import CorpusReader

    reader = CorpusReader(source, cfg.text_field, cfg.id_field, cfg.batch_size, cfg.on_error, cfg.encoding)
    texts: list[str] = []
    ids: list[str] = []
    for batch in reader.batches():
        texts += batch.column("text").to_pylist()
        ids += [str(i) for i in batch.column("id").to_pylist()]
        if n is not None and len(texts) >= n:
            break
    if n is not None:
        texts, ids = texts[:n], ids[:n]
    return [t or "" for t in texts], ids


def _resolve(source: str | Path, cfg: CleanConfig) -> tuple[list[Any], dict[str, Any] | None]:
    """The steps with every quality preset ``auto`` chosen on the first ``profile_docs`` documents, once,
    in this process (the workers get the resolved spec), and the profile it was chosen on."""
    if not prof.needs_sample(cfg.steps):
        return list(cfg.steps), None
    texts, ids = _sample(source, cfg, cfg.profile_docs)
    return prof.resolve(cfg.steps, texts, ids)


def dry_run(
    source: str | Path, config: CleanConfig | None = None, *, all_docs: bool = False
) -> dict[str, Any]:
    """What the quality rules would drop from ``source`` under each preset, and the preset ``auto`` picks
    (or the one the config names), from the first ``profile_docs`` documents (every one with
    ``all_docs``). Nothing is written. Returns ``{"input", "quality": {preset, auto, why, profile}}``.
    """
    cfg = config or CleanConfig()
    cfg.parsed()
    spec = list(cfg.steps)
    items = prof.quality_items(spec)
    if not items:  # profile the default quality step after the steps given
        spec = [*spec, "quality"]
        items = prof.quality_items(spec)
    i, options = items[0]
    texts, ids = _sample(source, cfg, None if all_docs else cfg.profile_docs)
    p = prof.profile(texts, parse_steps(spec[:i]), ids=ids, options=options)
    named = options.get("preset", "auto")
    if named == "auto":
        p["chosen"], p["why"] = prof.choose_preset(p)
    else:
        p["chosen"], p["why"] = named, "named in the config"
    return {
        "input": str(source),
        "quality": {"preset": p["chosen"], "auto": named == "auto", "why": p["why"], "profile": p},
    }


def _report(
    source, output, cfg, steps, n_in, dropped, reasons, dedup, reader, w, seconds, workers
) -> dict[str, Any]:
    rows, alive = [], n_in
    pii: Counter = Counter()
    scanned: Counter = Counter()
    unscanned: Counter = Counter()
    named: list[str] = []
    for i, s in enumerate(steps):
        d = dropped.get(i, 0)
        r = dict(reasons[i])
        for k in [k for k in r if k.startswith("pii_")]:
            pii[k[4:]] += r.pop(k)
        for k in [k for k in r if k.startswith(("scanned:", "unscanned:"))]:
            kind, name = k.split(":", 1)
            (scanned if kind == "scanned" else unscanned)[name] += r.pop(k)
        if s.kind == "pii":
            named += s.named()
        rows.append({"step": s.kind, "in": alive, "out": alive - d, "dropped": d, "reasons": r})
        alive -= d
    near = {str(i): len(c) for i, c in dedup.clusters.items()}
    by_kind = {s.kind: dropped.get(i, 0) for i, s in enumerate(steps) if s.stateful}
    return {
        "input": str(source),
        "output": str(output),
        "documents_in": n_in,
        "documents_out": alive,
        "malformed_lines": {"count": len(reader.errors), "first": reader.errors[:20]},
        "steps": rows,
        "duplicates": {
            "exact": by_kind.get("exact_dedup", 0),
            "near": by_kind.get("near_dedup", 0),
            "near_clusters": sum(near.values()),
        },
        "pii": dict(pii),
        "pii_fields": None
        if not any(s.kind == "pii" for s in steps)
        else {  # documents whose field held a string, by field; named fields no document had
            "scanned": dict(sorted(scanned.items())),
            "not_scanned": {k: v for k, v in sorted(unscanned.items()) if k not in scanned},
            "not_found": [n for n in dict.fromkeys(named) if not scanned.get(n)],
        },
        "throughput": {
            "seconds": round(seconds, 3),
            "docs_per_s": round(n_in / max(seconds, 1e-9), 1),
            "workers": workers,
            "docs_per_s_per_core": round(
                n_in / max(seconds, 1e-9) / max(1, min(workers, os.cpu_count() or 1)), 1
            ),
        },
        "shards": [str(s) for s in w.shards],
        "config": cfg.model_dump(),
    }


def report_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Cleaning report: {r['input']}",
        "",
        f"{r['documents_in']} documents in, {r['documents_out']} out; "
        f"{r['throughput']['docs_per_s']} documents/s with {r['throughput']['workers']} workers "
        f"({r['throughput']['seconds']} s).",
        "",
        "| step | in | out | dropped | reasons |",
        "|---|---|---|---|---|",
    ]
    for s in r["steps"]:
        why = ", ".join(f"{k} {v}" for k, v in sorted(s["reasons"].items())) or ""
        lines.append(f"| {s['step']} | {s['in']} | {s['out']} | {s['dropped']} | {why} |")
    d = r["duplicates"]
    lines += [
        "",
        f"Duplicates: {d['exact']} exact, {d['near']} near ({d['near_clusters']} clusters, see clusters.jsonl).",
        "",
    ]
    if r["pii"]:
        lines += (
            ["| PII type | entities |", "|---|---|"]
            + [f"| {k} | {v} |" for k, v in sorted(r["pii"].items())]
            + [""]
        )
    f = r.get("pii_fields")
    if f:
        docs = ", ".join(f"{k} ({v})" for k, v in f["scanned"].items()) or "none"
        lines += [f"PII scanned in (documents): {docs}.", ""]
        if f["not_scanned"]:
            skipped = ", ".join(f"{k} ({v})" for k, v in f["not_scanned"].items())
            lines += [
                f"Not scanned for PII (documents with strings there): {skipped}; "
                "add them to pii.fields, or set pii.all_strings.",
                "",
            ]
        if f["not_found"]:
            lines += [f"PII fields no document had: {', '.join(f['not_found'])}.", ""]
    q = r.get("quality")
    if q:
        how = "chosen by the first pass" if q["auto"] else "named"
        lines += [f"Quality preset: {q['preset']} ({how}: {q['why']}).", ""]
        if q["profile"]:
            lines += [prof.profile_markdown(q["profile"]), ""]
    m = r["malformed_lines"]
    if m["count"]:
        where = ", ".join(f"{e['file']}:{e['line']}" for e in m["first"])
        lines += [
            f"Malformed lines skipped: {m['count']} ({where}{' ...' if m['count'] > len(m['first']) else ''}).",
            "",
        ]
    return "\n".join(lines) + "\n"
