"""Compression core (stage 3): ``quant/`` (INT8, INT4) and ``prune/`` (structured pruning). Compress once in
torch, producing a framework-neutral result that each exporter lowers. Built in later issues."""
