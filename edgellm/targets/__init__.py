"""Targets: devices and servers as data (``targets/*.yaml``), and what is known about a chip without
running on it: the roofline over its published peaks, and the facts of this host.

- :mod:`~edgellm.targets.profiles`: :class:`Target`, :func:`load_target`, :func:`list_targets`.
- :mod:`~edgellm.targets.roofline`: :func:`roofline`, the one latency bound that ``bench --estimate``
  and the partition cost model share.
- :mod:`~edgellm.targets.host`: this CPU's flags, model name and fp32 peak (from /proc/cpuinfo).

Example:
    >>> from edgellm.targets import load_target, roofline
    >>> roofline(load_target("snapdragon-865"), "int8", flops=3e9, nbytes=23e6).ms   # doctest: +SKIP
"""

from edgellm.targets.profiles import PRECISIONS, Precision, Target, list_targets, load_target, search_path
from edgellm.targets.roofline import COMPUTE_EFFICIENCY, MEMORY_EFFICIENCY, Roofline, peak_tops, roofline

__all__ = [
    "COMPUTE_EFFICIENCY",
    "MEMORY_EFFICIENCY",
    "PRECISIONS",
    "Precision",
    "Roofline",
    "Target",
    "list_targets",
    "load_target",
    "peak_tops",
    "roofline",
    "search_path",
]
