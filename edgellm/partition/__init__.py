"""Partitioning (stage 3): where to cut a model between a phone and a server, and cutting it.

- :func:`~edgellm.partition.profile.profile_blocks` (torch) and
  :func:`~edgellm.partition.profile.profile_prefixes` (any runtime): per-block latency, weights, the
  activation at every cut and what each codec makes of it.
- :mod:`~edgellm.partition.cost`: the roofline cost model over target profiles.
- :class:`~edgellm.partition.codecs.Codec`: fp32 / fp16 / int8 (per token or channel), +zstd / +lz4.
- :func:`~edgellm.partition.planner.make_plan`: every cut x codec under the constraints -> ``SplitPlan``.
- :func:`~edgellm.partition.cut.split_model`: the device half and the server half, as model adapters
  (exported, linked, by :func:`edgellm.partition.split_export.export_split`).
"""
