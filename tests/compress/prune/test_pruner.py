"""The stage verb and its config: ``prune(model, config) -> (model, PruneRecord)`` leaves its input as it
was and returns the pruned copy (its block list follows removed layers); ``edgellm.compress`` exports it
without importing torch; a bad config is named before any work."""

import json
import re
import subprocess
import sys

import pytest

from edgellm.compress.prune import PruneConfig
from edgellm.errors import EdgeLLMError
from edgellm.models import load


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"heads": 1.0}, "outside (0, 1)"),
        ({"ffn": -0.1}, "outside (0, 1)"),
        ({}, "nothing to prune"),
        ({"heads": 0.2, "score": "fisher"}, "unknown importance score"),
    ],
)
def test_bad_ratios_and_scores(kw, needle):
    with pytest.raises(EdgeLLMError, match=re.escape(needle)):
        PruneConfig(**kw)


def test_the_verb_prunes_a_copy_and_returns_it_with_the_record(small_lm):
    from edgellm.compress import PruneRecord, PruningRecord, prune

    base = load(small_lm)
    before = base.num_parameters
    pruned, rec = prune(base, PruneConfig(blocks=0.5, ffn=0.25))
    assert isinstance(rec, PruneRecord) and PruningRecord is PruneRecord
    assert base.num_parameters == before and base.config.num_hidden_layers == 2  # the input is untouched
    assert pruned.num_parameters == rec.params_after < before and pruned.config.num_hidden_layers == 1
    assert [b.name for b in pruned.blocks if b.name.startswith("layers.")] == ["layers.0"]
    f = pruned.example_inputs(batch=1, seq=8, seed=0)
    assert pruned.run(f)["logits"].shape[:2] == (1, 8)


def test_importing_the_verb_stays_light():
    code = (
        "import sys, json\n"
        "from edgellm.compress import PruneConfig, PruneRecord, prune\n"
        "print(json.dumps([callable(prune), 'torch' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, False]
