"""Plugins: a small third-party package (tests/plugins/example) is installed into a folder on the test's
PYTHONPATH; edgellm discovers its entry points, lists them, and uses each one (a cleaning step, a pruning
score, a quantization method, a metric); its broken plugin is named and the others keep working."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent

SCRIPT = r"""
import json, sys
import numpy as np, torch
from edgellm import plugins
from edgellm.compress.evaluate import evaluate
from edgellm.compress.prune import PruneConfig, prune
from edgellm.compress.quant.config import config_for
from edgellm.data.steps import parse_steps
from edgellm.errors import EdgeLLMError
from edgellm.models import load
from edgellm.runtime import make_runner

res = {}
step = parse_steps([{"shout": {"min_chars": 3}}])[0]
texts, dropped, _, counts = step.run(["hello", "ab", None])
res["shout"] = [texts, dropped.tolist(), dict(counts)]
res["quant"] = type(config_for("int8-example")).__name__
def kept_energy(score):
    m, _ = prune(load(sys.argv[1]), PruneConfig(ffn=0.5, score=score))
    return float(sum(l.mlp.gate_proj.weight.pow(2).sum() for l in m.module.lm.model.layers))
res["energy"] = {"l2": kept_energy("l2"), "reverse_l2": kept_energy("reverse_l2")}
lin = load(torch.nn.Linear(4, 3), example_inputs=torch.randn(5, 4))
r = make_runner(lin)
res["metric"] = evaluate(r, r, lin, [lin.example])["plugins"]
try:
    make_runner(lin, "broken")
except EdgeLLMError as exc:
    res["broken"] = str(exc)
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(HERE / "plugins" / "example")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return target


def run(plugin_path, *argv):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=300)


def test_plugins_are_listed_with_their_status(plugin_path):
    p = run(plugin_path, "-m", "edgellm.cli", "plugins", "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert {"shout", "reverse_l2", "int8-example", "max_abs_diff", "broken"} <= set(rows)
    assert all(rows[n]["status"] == "ok" for n in ("shout", "reverse_l2", "int8-example", "max_abs_diff"))
    assert rows["broken"]["status"].startswith("failed: ModuleNotFoundError")
    assert (
        rows["shout"]["package"] == "edgellm-example-plugin"
        and rows["shout"]["group"] == "edgellm.cleaning_steps"
    )


def test_every_kind_of_plugin_is_used_where_edgellm_looks_it_up(plugin_path, small_lm):
    p = run(plugin_path, "-c", SCRIPT, str(small_lm))
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["shout"] == [["HELLO", None, None], [False, True, False], {"shouted": 1}]
    assert res["quant"] == "Int8Dynamic"
    assert res["energy"]["reverse_l2"] < res["energy"]["l2"]  # it kept the weakest channels: its own order
    assert res["metric"] == {"max_abs_diff": 0.0}
    assert (
        "plugin 'broken' (edgellm.runners, package edgellm-example-plugin) failed: ModuleNotFoundError"
        in res["broken"]
    )


def test_without_the_package_nothing_is_listed_and_names_stay_unknown(capsys):
    from edgellm.cli import main
    from edgellm.compress.prune import PruneConfig
    from edgellm.errors import EdgeLLMError

    assert main(["plugins", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    with pytest.raises(EdgeLLMError, match="unknown importance score 'reverse_l2'"):
        PruneConfig(ffn=0.5, score="reverse_l2")
