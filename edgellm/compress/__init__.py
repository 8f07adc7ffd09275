"""Compression core (stage 3): ``quant/`` (INT8, INT4) now, ``prune/`` (structured pruning) later.

Compress once in torch into a framework-neutral result; each exporter lowers it to its runtime.

Example:
    >>> from edgellm.compress import compress
    >>> res = compress("minilm", "int8-static", output="edgellm-out/minilm-int8", max_accuracy_drop="cosine>=0.99")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

# The verb ``prune`` is bound over the subpackage of the same name (its modules stay importable as
# ``from edgellm.compress.prune.<module> import ...``). Light: no torch until a verb runs.
from edgellm.compress.prune import PruneConfig, PruneRecord, PruningRecord, prune

__all__ = ["PruneConfig", "PruneRecord", "PruningRecord", "compress", "prune"]


def compress(*args: Any, **kwargs: Any) -> Any:
    from edgellm.compress.api import compress as _compress

    return _compress(*args, **kwargs)


compress.__doc__ = "See :func:`edgellm.compress.api.compress`."
