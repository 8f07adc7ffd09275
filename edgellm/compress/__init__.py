"""Compression core (stage 3): ``quant/`` (INT8, INT4) now, ``prune/`` (structured pruning) later.

Compress once in torch into a framework-neutral result; each exporter lowers it to its runtime.

Example:
    >>> from edgellm.compress import compress
    >>> res = compress("minilm", "int8-static", output="edgellm-out/minilm-int8", max_accuracy_drop="cosine>=0.99")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any


def compress(*args: Any, **kwargs: Any) -> Any:
    from edgellm.compress.api import compress as _compress

    return _compress(*args, **kwargs)


compress.__doc__ = "See :func:`edgellm.compress.api.compress`."
