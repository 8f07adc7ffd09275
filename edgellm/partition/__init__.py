"""Partitioning (stage 3): per-block profiling, the cost model over target profiles and a network, the
planner, cutting the model. Hands on a ``SplitPlan``. Built in a later issue."""
