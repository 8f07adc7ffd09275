"""The partition verb: plan(model, device, server, Network) -> SplitPlan."""

import json

import pytest

from edgellm.errors import EdgeLLMError
from edgellm.partition import Network, SplitPlan, plan
from edgellm.targets import load_target


def test_plan_is_typed_and_says_how_it_was_derived(tiny_llama):
    net = Network.named("3g")
    p = plan(
        tiny_llama, "snapdragon-865", load_target("x86-server"), net, seq=16, runs=1, device_memory="1GB"
    )
    assert isinstance(p, SplitPlan) and p.network == net
    assert p.device == "snapdragon-865" and p.server == "x86-server"
    assert p.best["feasible"] and p.best in p.candidates
    assert p.basis["flops"] and 0 < p.basis["host_efficiency"] <= 1
    assert p.constraints["device_memory"] == 1e9 and p.constraints["min_device_blocks"] == 1
    d = json.loads(json.dumps(p.to_dict()))  # what plan.json holds
    assert list(d) == ["id", "candidates", "best", "network", "constraints", "basis"]
    assert d["network"] == {"up_bps": 1e6, "down_bps": 1e6, "rtt_ms": 100.0}


def test_bad_names_fail_before_profiling():
    with pytest.raises(EdgeLLMError, match="unknown activation codec 'int9'"):
        plan("no-such-model", codecs="fp16,int9")
    with pytest.raises(EdgeLLMError, match="unknown target 'no-such-phone'"):
        plan("no-such-model", "no-such-phone")
    with pytest.raises(EdgeLLMError, match="unknown network profile '5g'"):
        plan("no-such-model", network="5g")
