"""Partitioning (stage 3): where to cut a model between a phone and a server, and cutting it.

The verb: :func:`plan` (model, device, server, :class:`Network`) -> :class:`SplitPlan`.

- :func:`~edgellm.partition.profile.profile_blocks` (torch) and
  :func:`~edgellm.partition.profile.profile_prefixes` (any runtime): per-block latency, weights, the
  activation at every cut and what each codec makes of it.
- :mod:`~edgellm.partition.cost`: the cost model over target profiles (the roofline of
  :mod:`edgellm.targets.roofline`, calibrated on this host).
- :class:`~edgellm.runtime.codecs.Codec`: fp32 / fp16 / int8 (per token or channel), +zstd / +lz4.
- :class:`Network` (:mod:`~edgellm.partition.network`): the link, from strings or a named profile.
- :func:`~edgellm.partition.planner.make_plan`: every cut x codec under the constraints -> ``SplitPlan``.
- :func:`~edgellm.partition.report.write_plan`: ``plan.json`` and ``plan.png``.
- :func:`~edgellm.partition.cut.split_model`: the device half and the server half, as model adapters
  (exported, linked, by :func:`edgellm.partition.split_export.export_split`).

Example:
    >>> from edgellm.partition import Network, plan
    >>> p = plan("minilm", "snapdragon-865", "x86-server", Network.named("4g"), device_memory="512MB")  # doctest: +SKIP
    >>> p.best["after_block"], p.best["codec"], p.to_dict()["basis"]["host_efficiency"]               # doctest: +SKIP
"""

from edgellm.partition.api import plan
from edgellm.partition.network import NETWORKS, Network
from edgellm.partition.planner import SplitPlan

__all__ = ["NETWORKS", "Network", "SplitPlan", "plan"]
