"""``edgellm run``: the recipe pipeline end to end on real models, runtimes and a real server on loopback;
stages skipped when unchanged, resumed after an interruption; lineage in every manifest; bad recipes."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import SCRATCH_LLAMA

from edgellm.errors import EdgeLLMError
from edgellm.pipeline import Recipe, run_recipe

pytest.importorskip("accelerate")
pytest.importorskip("aiohttp")

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "name": "lifecycle",
    "data": {"source": "pydoc", "steps": ["normalize", "exact_dedup"], "tag": "v1"},
    "train": {
        "scratch": {
            "name": "tiny",
            "architecture": SCRATCH_LLAMA,
            "tokenizer": {"vocab_size": 512},
        },
        "seq_len": 32,
        "batch_size": 8,
        "max_steps": 6,
        "eval_every": 3,
        "eval_batches": 2,
        "save_every": 3,
        "lr": 3e-3,
        "progress": False,
    },
    "compress": {
        "runs": 3,
        "eval_sequences": 16,
        "artifacts": [{"model": "train", "recipe": "int8-dynamic"}],
    },
    "partition": {"model": "train", "runs": 3, "seq": 32},
    "export": {
        "models": ["train"],
        "cases": [["x86-server", "onnx", "fp32"], ["snapdragon-865", "ort", "fp32"]],
    },
    "bench": {"runs": 3, "warmup": 1, "batch": [1], "seq": [16]},
    "split": {"requests": 4, "cut": 1, "codec": "int8"},
}


def write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def statuses(summary):
    return {s["stage"]: s["status"] for s in summary["stages"]}


def test_a_recipe_runs_resumes_skips_and_records_lineage(tmp_path, monkeypatch):
    import edgellm.partition.split_export as split_export_mod

    out = tmp_path / "out"
    # 1. training stops at step 3 (as a killed run would): the pipeline says so and keeps the checkpoint
    r = {**TINY, "output": str(out), "train": {**TINY["train"], "stop_at": 3}}
    with pytest.raises(EdgeLLMError, match="stopped at step 3 of 6"):
        run_recipe(write(tmp_path / "r.yaml", r))
    assert (out / "train" / "checkpoints" / "step-3").is_dir()

    # 2. without stop_at (not part of the stage's key) training resumes at step 3; then the run is
    # interrupted as the split stage starts (before its export, so the halves are exported once)
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(split_export_mod, "export_split", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(write(tmp_path / "r.yaml", {**TINY, "output": str(out)}))
    train_summary = json.loads((out / "train" / "train_summary.json").read_text())
    assert train_summary["resumed_from"] == 3 and train_summary["steps"] == 6
    done = json.loads((out / ".edgellm-run" / "state.json").read_text())["stages"]
    assert "bench:train" in done and "split" not in done and not (out / "report.md").exists()

    # 3. the next run does only what had not finished
    monkeypatch.undo()
    s = run_recipe(tmp_path / "r.yaml")
    st = statuses(s)
    assert st.pop("split") == "ran"
    assert set(st.values()) == {"skipped"}, st

    # the split model answered through the real server, like the unsplit model
    check = s["results"]["split"]["check"]
    assert check["served"] and check["requests"] == 4 and check["upload_bytes"] > 0
    assert check["cosine_min"] >= 0.99 and check["ms"]["server_ms"]["p50"] > 0

    # lineage in every manifest: dataset version, recipe hash, source model hash
    data = s["results"]["data"]
    store, commit = data["ref"].rsplit("@", 1)
    from edgellm.data.store import Store
    from edgellm.models import load

    assert Store(store).resolve("v1") == commit
    model_sha = load(out / "train" / "model").source["sha256"]
    manifests = sorted(out.glob("compress/*/manifest.json")) + sorted(out.glob("targets/*/manifest.json"))
    manifests += [out / "split" / "device" / "manifest.json", out / "split" / "server" / "manifest.json"]
    assert len(manifests) == 5
    for m in manifests:
        lin = json.loads(m.read_text())["lineage"]
        assert lin["dataset"]["commit"] == commit, m
        assert lin["recipe"]["sha256"] == s["recipe"]["sha256"], m
        assert lin["source_model"]["sha256"] == model_sha, m
    tl = json.loads((out / "train" / "model" / "lineage.json").read_text())
    assert tl["dataset"]["commit"] == commit

    # the report: tables and the plots it names
    md = (out / "report.md").read_text()
    for needle in (
        "## Data",
        "## Training",
        "## Compressed artifacts",
        "every target",
        "## Split plan",
        "## Split check",
        "## Stages",
        commit,
    ):
        assert needle in md, needle
    for png in (
        "accuracy-size.png",
        "latency-train.png",
        "targets-train.png",
        "split.png",
        "partition/plan.png",
    ):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
        assert png in md

    # 4. a re-run changes nothing; editing one section re-runs that stage only (bench: the cheapest
    # stage to re-run; what it measures is the exported artifacts, which stay as they were)
    before = (out / "targets" / "tiny-x86-server-onnx-fp32" / "manifest.json").stat().st_mtime_ns
    assert set(statuses(run_recipe(tmp_path / "r.yaml")).values()) == {"skipped"}
    edited = {**TINY, "output": str(out), "bench": {**TINY["bench"], "runs": 4}}
    st = statuses(run_recipe(write(tmp_path / "r.yaml", edited)))
    assert st.pop("bench:train") == "ran" and set(st.values()) == {"skipped"}, st
    assert (out / "targets" / "tiny-x86-server-onnx-fp32" / "manifest.json").stat().st_mtime_ns == before


def test_the_demo_recipe_reduced_runs_on_the_bundled_models(tmp_path, capsys):
    """recipes/demo.yaml with fewer runs, one compression and three targets: the same code path (the phone
    artifact is ORT-mobile here: MiniLM's LiteRT conversion is tests/export/test_tflite.py's)."""
    from edgellm.cli import main

    r = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    r["output"] = str(tmp_path / "demo")
    r["compress"] = {
        "runs": 2,
        "eval_sequences": 16,
        "artifacts": [{"model": "tiny-llama", "recipe": "w4a16-rtn", "options": {"group_size": 64}}],
    }
    r["export"]["cases"] = [
        ["x86-server", "onnx", "fp32"],
        ["snapdragon-865", "ort", "fp32"],
        ["nvidia-a100", "tensorrt", "fp32"],
    ]
    r["bench"] = {"runs": 2, "warmup": 0, "batch": [1], "seq": [16]}
    r["partition"].update(runs=2, seq=32)
    r["split"] = {"requests": 3, "device_format": "ort"}  # the TFLite half is covered in tests/partition
    assert len(r["generate"]["artifacts"]) == 4  # server and phone, INT4 and INT8: one of them here
    r["generate"].update(max_new_tokens=8, check_tokens=8, bench_prompt=[16], bench_new=8)
    r["generate"]["artifacts"] = [{"model": "tiny-llama", "precision": "int4", "label": "tl-int4"}]
    rc = main(["run", str(write(tmp_path / "demo.yaml", r))])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rep = json.loads((tmp_path / "demo" / "report.json").read_text())
    res = rep["results"]
    host = res["bench:minilm"]["host"]
    assert {x["name"] for x in host["results"]} == {"torch", "onnxruntime"}
    tg = {(x["target"], x["format"]): x for x in res["bench:minilm"]["matrix"]}
    phone = tg[("snapdragon-865", "ort")]
    assert phone["error"] is None and phone["host_p50_ms"] > 0 and phone["cosine_vs_fp32"] > 0.9999
    assert tg[("nvidia-a100", "tensorrt")]["engine"] == "pending"
    gen = res["generate:tl-int4"]
    assert gen["precision"] == "int4" and gen["rate"]["rows"][0]["decode_tok_s"] > 0 and gen["text"]
    assert (tmp_path / "demo" / rep["plots"]["generation"]).is_file()
    assert "Generation artifacts" in (tmp_path / "demo" / "report.md").read_text()
    row = res["compress:tiny-llama-w4a16-rtn"]
    assert row["accuracy_detail"]["metric"] == "perplexity" and row["size_mb"] < 0.5 * row["fp32_size_mb"]
    # calibrated and evaluated on the cleaned dataset version, not the raw text
    cm = json.loads((Path(row["artifact"]) / "manifest.json").read_text())
    assert cm["lineage"]["dataset"]["commit"] in res["data"]["ref"]
    plan = res["partition"]
    assert plan["device"] == "snapdragon-865" and plan["best"]["total_ms"] > 0
    assert res["split"]["plan_id"] == plan["id"] and res["split"]["check"]["requests"] == 3
    assert "split check through the real server" in out and "stages" in out
    md = (tmp_path / "demo" / "report.md").read_text()
    assert "latency per target" in md and "accuracy vs size" in md and "latency per cut" in md


def test_prune_recover_then_quantize_in_one_recipe(tmp_path, small_lm):
    r = {
        "name": "prune",
        "output": str(tmp_path / "out"),
        "prune": {
            "model": str(small_lm),
            "heads": 0.5,
            "ffn": 0.5,
            "score": "wanda",
            "recover_steps": 3,
            "runs": 2,
        },
        "compress": {
            "runs": 2,
            "eval_sequences": 16,
            "calibration": "bundled",
            "artifacts": [{"model": "pruned", "recipe": "int8-dynamic"}],
        },
    }
    s = run_recipe(write(tmp_path / "p.yaml", r))
    pr = s["results"]["prune"]
    assert pr["record"]["params_ratio"] < 0.95 and set(pr["quality"]) == {"pruned", "recovered"}
    assert Path(pr["model"]).name == "pruned" and (Path(pr["model"]) / "pruning.json").is_file()
    fig = pr["report"]  # measured against the unpruned model in the same run
    assert fig["flops"]["ratio"] < 0.95 and fig["onnx_size_mb"]["pruned"] < fig["onnx_size_mb"]["unpruned"]
    assert fig["latency"]["p50_ms"]["pruned"] > 0 and fig["latency"]["ratio"] > 0
    row = s["results"]["compress:pruned-int8-dynamic"]
    m = json.loads((Path(row["artifact"]) / "manifest.json").read_text())
    assert m["pruning"]["removed_heads"] == pr["record"]["removed_heads"]  # the record travels
    assert m["lineage"]["source_model"]["name"] == "small-lm-pruned"
    assert "## Structured pruning" in (tmp_path / "out" / "report.md").read_text()


# -- bad input: the key's path in one line, exit 2, nothing run ---------------------------------------------
@pytest.mark.parametrize(
    "patch,needle",
    [
        (
            {"compress": {"artifacts": [{"model": "minilm", "recipe": "int8-dynamic", "colour": "red"}]}},
            "'compress.artifacts.0.colour'",
        ),
        ({"bench": {"runs": "many"}, "export": {}}, "'bench.runs'"),
        ({"train": {"model": "minilm", "lr": "fast"}}, "'train.lr'"),
        ({"partition": {"model": "train"}}, "no train section"),
        ({"split": {}}, "split needs a partition"),
        ({"flavour": 1}, "'flavour'"),
    ],
)
def test_a_bad_recipe_is_named_with_the_keys_path(tmp_path, capsys, patch, needle):
    from edgellm.cli import main

    rc = main(
        ["run", str(write(tmp_path / "bad.yaml", {"name": "bad", "output": str(tmp_path / "o"), **patch}))]
    )
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_a_dataset_version_that_does_not_exist(tmp_path):
    from edgellm.data.store import Store

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_text('{"id": "1", "text": "hello there"}\n')
    Store(tmp_path / "store", create=True).commit(data, "one")
    for version, needle in (
        (f"{tmp_path / 'store'}@nope", "dataset version 'nope' does not exist"),
        (f"{tmp_path / 'nostore'}@v1", "is not a dataset store"),
    ):
        r = write(
            tmp_path / "r.yaml", {"name": "x", "output": str(tmp_path / "o"), "data": {"version": version}}
        )
        with pytest.raises(EdgeLLMError, match=needle):
            run_recipe(r)


def test_shipped_recipes_are_valid_and_found_by_name(capsys):
    from edgellm.cli import main
    from edgellm.cli.run import recipe_path

    for name in ("demo", "tiny-llama"):
        assert Recipe.load(recipe_path(name)).name == name
    rc = main(["run", "no-such-recipe"])
    err = capsys.readouterr().err
    assert rc == 2 and "demo" in err and "tiny-llama" in err
