"""Structured pruning: heads (GQA-aware), FFN channels, dependency graph, importance scores, removal."""
