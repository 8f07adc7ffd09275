"""The cleaning steps on Ray Data, for corpora that outgrow one machine (optional extra ``ray``).

The per-document steps are the same plain function as locally (:func:`edgellm.data.clean.run_steps`),
applied with ``map_batches``. The deduplications become group-bys: exact dedup groups by the text key;
near dedup explodes each signature into its LSH band keys and groups by band, and within a band the
document that comes first (by the ``order`` column) is the candidate every other is verified against.
Only the duplicates' order numbers travel to the driver, which resolves chains so that, as locally, a
document is dropped only for a kept earlier one.

Example:
    >>> ds = ray.data.read_parquet("s3://bucket/corpus/").add_column("_seq", ...)       # doctest: +SKIP
    >>> kept, stats = clean_ray(ds, ["normalize", "quality", "exact_dedup", "near_dedup"])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgellm.data.steps import ALIVE, parse_steps
from edgellm.errors import EdgeLLMError


def _require_ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise EdgeLLMError("the Ray adapter needs Ray Data", "pip install 'edgellm[ray]'") from exc
    return ray


def _to_batch(table: Any) -> Any:
    import pyarrow as pa

    table = table.combine_chunks()
    batches = table.to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pydict({n: [] for n in table.schema.names})


def clean_ray(
    ds: Any, spec: list[Any], *, order: str = "_seq", profile_docs: int = 5000
) -> tuple[Any, dict[str, Any]]:
    """Clean a Ray Dataset with ``id``, ``text`` and an ``order`` column (which copy counts as first).

    A quality preset ``auto`` is chosen once, on the dataset's first ``profile_docs`` rows (as locally;
    a dataset whose order differs from the files' should name its preset).

    Returns the dataset of kept documents, and the number each step dropped with the ``quality`` choice.
    """
    _require_ray()
    import pyarrow as pa

    from edgellm.data.clean import run_steps
    from edgellm.data.minhash import SIG_DTYPE
    from edgellm.data.profile import needs_sample, resolve, summary

    parse_steps(spec)  # step errors before the first pass
    profile = None
    if needs_sample(spec):
        rows = ds.limit(profile_docs).take_all()
        spec, profile = resolve(spec, [r["text"] or "" for r in rows], [str(r["id"]) for r in rows])
    steps = parse_steps(spec)
    if order not in ds.schema().names:
        raise EdgeLLMError(
            f"the dataset has no '{order}' column to tell which copy comes first",
            "add one, e.g. the row's position in the source, or pass order='id'",
        )

    def per_batch(table: Any) -> Any:
        out, payload, _ = run_steps(_to_batch(table), parse_steps(spec))
        cols = {n: out.column(n) for n in out.schema.names}
        for i, p in payload.items():
            vals = [
                None if v is None else (v if isinstance(v, bytes) else np.asarray(v, SIG_DTYPE).tobytes())
                for v in p
            ]
            cols[f"_h{i}"] = pa.array(vals, pa.binary())
        return pa.Table.from_pydict(cols)

    ds = ds.map_batches(per_batch, batch_format="pyarrow")
    for i, step in enumerate(steps):
        if not step.stateful:
            continue
        key = f"_h{i}"
        alive = ds.filter(lambda r, i=i: r["_drop_at"] > i)
        if step.kind == "exact_dedup":
            dups = _exact_dups(alive, key, order)
        else:
            dups = _near_dups(alive, key, order, step)

        def mark(table: Any, i: int = i, dups: frozenset = frozenset(dups)) -> Any:
            drop = table.column("_drop_at").to_numpy(zero_copy_only=False).copy()
            seq = table.column(order).to_pylist()
            for j, s in enumerate(seq):
                if s in dups and drop[j] > i:
                    drop[j] = i
            return table.set_column(
                table.schema.get_field_index("_drop_at"), "_drop_at", pa.array(drop, pa.int32())
            )

        ds = ds.map_batches(mark, batch_format="pyarrow")
    ds = ds.materialize()
    counts = {int(k): v for k, v in _drop_counts(ds).items()}
    internal = ["_drop_at", *[f"_h{i}" for i, s in enumerate(steps) if s.stateful]]
    kept = ds.filter(lambda r: r["_drop_at"] == ALIVE).drop_columns(internal)
    dropped = {steps[k].kind + f"#{k}": v for k, v in sorted(counts.items()) if k != ALIVE}
    return kept, {"dropped": dropped, "quality": summary(spec, profile)}


def _drop_counts(ds: Any) -> dict[int, int]:
    out: dict[int, int] = {}
    for row in ds.groupby("_drop_at").count().take_all():
        out[int(row["_drop_at"])] = int(row["count()"])
    return out


def _exact_dups(alive: Any, key: str, order: str) -> set:
    import pyarrow as pa

    def firsts(table: Any) -> Any:
        seq = table.column(order).to_pylist()
        first = min(seq)
        return pa.table({"dup": [s for s in seq if s != first]})

    return {r["dup"] for r in alive.groupby(key).map_groups(firsts, batch_format="pyarrow").take_all()}


def _near_dups(alive: Any, key: str, order: str, step: Any) -> set:
    import pyarrow as pa

    from edgellm.data.minhash import EMPTY, SIG_DTYPE, optimal_bands

    if step.bands and step.rows:
        bands, rows = step.bands, step.rows
    else:
        bands, rows = optimal_bands(step.threshold, step.num_perm, step.fp_weight)
    width = rows * SIG_DTYPE.itemsize  # bytes per band
    skip = np.full(step.num_perm, EMPTY, SIG_DTYPE).tobytes()  # too short to index: in no band

    def explode(table: Any) -> Any:
        seq = table.column(order).to_pylist()
        sigs = table.column(key).to_pylist()
        keys, seqs, full = [], [], []
        for s, sig in zip(seq, sigs):
            if sig == skip:
                continue
            for b in range(bands):
                keys.append(b.to_bytes(2, "little") + sig[b * width : (b + 1) * width])
                seqs.append(s)
                full.append(sig)
        return pa.table(
            {"band": pa.array(keys, pa.binary()), order: seqs, "sig": pa.array(full, pa.binary())}
        )

    threshold = step.threshold

    def pairs(table: Any) -> Any:
        seq = table.column(order).to_pylist()
        if len(set(seq)) < 2:
            return pa.table({"dup": pa.array([], pa.int64()), "rep": pa.array([], pa.int64())})
        sigs = [np.frombuffer(s, SIG_DTYPE) for s in table.column("sig").to_pylist()]
        idx = sorted(range(len(seq)), key=lambda j: seq[j])
        rep = idx[0]
        dup, reps = [], []
        for j in idx[1:]:
            if seq[j] != seq[rep] and float(np.mean(sigs[j] == sigs[rep])) >= threshold:
                dup.append(seq[j])
                reps.append(seq[rep])
        return pa.table({"dup": pa.array(dup, pa.int64()), "rep": pa.array(reps, pa.int64())})

    found = (
        alive.map_batches(explode, batch_format="pyarrow")
        .groupby("band")
        .map_groups(pairs, batch_format="pyarrow")
        .take_all()
    )
    by_dup: dict[int, set[int]] = {}
    for r in found:
        by_dup.setdefault(r["dup"], set()).add(r["rep"])
    dropped: set[int] = set()
    for d in sorted(by_dup):  # in order: a document is a duplicate only of a kept earlier one
        if any(r not in dropped for r in by_dup[d]):
            dropped.add(d)
    return dropped
