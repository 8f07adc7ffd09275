"""The same cleaning steps on Ray Data in local mode give the same documents as the local pipeline."""

import json

import pytest

ray = pytest.importorskip("ray", reason="pip install 'edgellm[ray]'")
pa = pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # Ray's default group-by shuffle (hash, 200 partitions, aggregator actors) is sized for a cluster and
    # spends ~30 s here starting actors on 2 CPUs; the task-based sort shuffle runs the same group-bys in
    # seconds (the adapter does not choose a strategy: that is the cluster's DataContext)
    ctx.default_hash_shuffle_parallelism = 4
    ctx.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    yield
    ray.shutdown()


def test_ray_adapter_matches_the_local_pipeline(local_ray, tmp_path):
    from pydoc_data.topics import topics

    from test_clean import steps

    from edgellm.data.clean import CleanConfig, clean
    from edgellm.data.io import CorpusReader
    from edgellm.data.ray_data import clean_ray

    rows = []
    for i, (k, v) in enumerate(sorted(topics.items())[:40]):
        if len(v.split()) < 60:
            continue
        rows.append({"id": k, "text": v})
        if i % 4 == 0:
            rows.append({"id": k + "#copy", "text": v + " "})
        if i % 5 == 0:
            w = v.split()
            w[len(w) // 2] = "edited"
            rows.append({"id": k + "#near", "text": " ".join(w)})
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = steps()
    local = clean(src, tmp_path / "local", CleanConfig(steps=spec, workers=1))
    want = {json.loads(x)["id"] for f in (tmp_path / "local").glob("part-*.jsonl") for x in f.open()}

    table = pa.concat_tables([pa.Table.from_batches([b]) for b in CorpusReader(src).batches()])
    table = table.append_column("_seq", pa.array(range(table.num_rows), pa.int64()))
    kept, stats = clean_ray(ray.data.from_arrow(table), spec)
    got = {r["id"] for r in kept.take_all()}
    assert got == want and len(got) < len(rows)
    assert sum(stats["dropped"].values()) == local["documents_in"] - local["documents_out"]
    assert any(k.startswith("near_dedup") for k in stats["dropped"])


def test_ray_resolves_the_auto_preset_and_runs_the_model_filter_like_the_local_pipeline(local_ray, tmp_path):
    from pydoc_data.topics import topics

    from edgellm.data.clean import CleanConfig, clean
    from edgellm.data.io import CorpusReader
    from edgellm.data.ray_data import clean_ray

    rows = [{"id": k, "text": v} for k, v in sorted(topics.items())[:60]]
    rows += [{"id": "salad", "text": "the of sorted whereas lambda is to returns nothing " * 3}]
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = ["normalize", {"quality": {}}, "exact_dedup", "near_dedup", {"model_quality": {}}]
    local = clean(src, tmp_path / "local", CleanConfig(steps=spec, workers=1))
    want = {json.loads(x)["id"] for f in (tmp_path / "local").glob("part-*.jsonl") for x in f.open()}
    table = pa.concat_tables([pa.Table.from_batches([b]) for b in CorpusReader(src).batches()])
    table = table.append_column("_seq", pa.array(range(table.num_rows), pa.int64()))
    kept, stats = clean_ray(ray.data.from_arrow(table), spec)
    got = {r["id"]: r for r in kept.take_all()}
    assert set(got) == want and 0 < len(want) < len(rows)
    assert stats["quality"]["preset"] == local["quality"]["preset"] != "auto"
    assert all(0.0 <= r["quality_score"] <= 1.0 for r in got.values())  # the model's column, on Ray
