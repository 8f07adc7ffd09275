"""CI for users: a new artifact compared with the last release in the hub (accuracy and the latency ratio to
fp32, as edgellm compress measured them), failing on a regression beyond the budgets; and the GitHub
Actions workflow that runs it."""

import json
import shutil

import pytest
import yaml

from edgellm.cli import main
from edgellm.hub import Hub


@pytest.fixture(scope="module")
def int8(small_lm, tmp_path_factory):
    from edgellm.pipeline.compress_search import compress

    out = tmp_path_factory.mktemp("cmp") / "int8"
    return compress(
        str(small_lm), "int8-dynamic", output=out, runs=3, eval_sequences=16, progress=False
    ).artifact.path


def release_like(src, dest, **accuracy):
    """A copy of ``src`` whose recorded figures are those of another (older) release."""
    shutil.copytree(src, dest)
    m = json.loads((dest / "manifest.json").read_text())
    m["evaluation"]["accuracy"].update(accuracy.pop("accuracy", {}))
    m["evaluation"]["speed"].update(accuracy)
    (dest / "manifest.json").write_text(json.dumps(m))
    return dest


def test_compare_passes_within_budget_and_fails_on_a_regression(int8, tmp_path, capsys):
    hub = Hub(tmp_path / "hub")
    ev = json.loads((int8 / "manifest.json").read_text())["evaluation"]
    ppl = ev["accuracy"]["perplexity_increase"]
    ratio = ev["speed"]["ratio_vs_fp32"]
    hub.push(
        release_like(int8, tmp_path / "old", accuracy={"perplexity_increase": ppl + 0.005}),
        "lm:int8",
        tags=["prod"],
    )
    h = ["--hub", str(hub.root)]
    assert main(["hub", "compare", str(int8), "--against", "lm:int8@prod", "--json", *h]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert (
        rep["passed"]
        and rep["metric"] == "perplexity"
        and {c["check"] for c in rep["checks"]}
        == {
            "perplexity_increase",
            "latency ratio vs fp32",
        }
    )
    # a release that was more accurate and faster than this candidate: both budgets broken
    better = release_like(
        int8, tmp_path / "better", accuracy={"perplexity_increase": ppl - 0.05}, ratio_vs_fp32=ratio / 1.5
    )
    hub.push(better, "lm:int8", tags=["prod"])
    assert main(["hub", "compare", str(int8), "--against", "lm:int8@prod", "--json", *h]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert not rep["passed"] and [c["ok"] for c in rep["checks"]] == [False, False]
    assert (
        main(
            [
                "hub",
                "compare",
                str(int8),
                "--against",
                "lm:int8@prod",
                "--max-accuracy-drop",
                "0.1",
                "--max-latency-increase",
                "1",
                *h,
            ]
        )
        == 0
    )
    capsys.readouterr()
    fp32_only = tmp_path / "plain"
    shutil.copytree(int8, fp32_only)
    m = json.loads((fp32_only / "manifest.json").read_text())
    del m["evaluation"]
    (fp32_only / "manifest.json").write_text(json.dumps(m))
    assert main(["hub", "compare", str(fp32_only), "--against", "lm:int8@prod", *h]) == 2
    assert "has no evaluation" in capsys.readouterr().err


def test_init_ci_writes_a_workflow_that_runs_the_recipe_and_the_comparison(tmp_path, capsys):
    out = tmp_path / ".github" / "workflows" / "edgellm.yml"
    argv = [
        "init",
        "ci",
        "--release",
        "minilm:int8@prod",
        "--hub",
        "/mnt/hub",
        "--max-accuracy-drop",
        "0.02",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    wf = yaml.safe_load(out.read_text())
    steps = [s.get("run", "") for s in wf["jobs"]["model"]["steps"]]
    assert "make setup" in steps and any("edgellm run recipes/demo.yaml" in s for s in steps)
    assert any(
        "hub compare edgellm-out/compress/" in s and "--against minilm:int8@prod" in s and "0.02" in s
        for s in steps
    )
    assert wf["jobs"]["model"]["env"]["EDGELLM_HUB"] == "/mnt/hub"
    capsys.readouterr()
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
    assert main(["init", "ci", "--release", "bad ref!", "--hub", "h", "-o", str(tmp_path / "x.yml")]) == 2
