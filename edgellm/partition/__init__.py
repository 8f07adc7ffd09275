"""Partitioning (stage 3): per-block profiling, activation codecs at the cut, the split planner.

Built so far (issue 6, part 1): :func:`~edgellm.partition.profile.profile_blocks`,
:class:`~edgellm.partition.codecs.Codec` and :func:`~edgellm.partition.planner.make_plan` over a
:class:`~edgellm.partition.planner.CostTable`. The cost model over target profiles, cutting the model
into two artifacts and the ``edgellm partition`` command follow.
"""
