"""An example edgellm plugin: a cleaning step, a pruning score, a quantization method and a metric."""

from collections import Counter
from typing import Literal

import numpy as np

from edgellm.data.steps import Step


class Shout(Step):
    """Upper-cases every text (and drops texts shorter than ``min_chars``)."""

    kind: Literal["shout"] = "shout"
    min_chars: int = 0

    def run(self, texts):
        out = [None if t is None or len(t) < self.min_chars else t.upper() for t in texts]
        dropped = np.asarray([t is not None and o is None for t, o in zip(texts, out)])
        return out, dropped, {}, Counter(shouted=sum(o is not None for o in out))


def reverse_l2(adapter, layout, units, calib):
    """The built-in l2 importance, negated: prunes the largest units first (a real, if silly, score)."""
    from edgellm.compress.prune.importance import unit_scores

    s = unit_scores(adapter, layout, units, "l2", calib)
    return {"heads": [-h for h in s["heads"]], "ffn": [-f for f in s["ffn"]], "blocks": -s["blocks"]}


def int8_example(**options):
    """int8-dynamic under another name, with this plugin's defaults."""
    from edgellm.compress.quant.config import Int8Dynamic

    return Int8Dynamic(**options)


def max_abs_diff(reference, candidate):
    return float(np.abs(np.asarray(reference) - np.asarray(candidate)).max())
