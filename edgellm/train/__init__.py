"""Training front end (stage 2): the ``accelerate`` trainer (one process or ``accelerate launch``),
gradient monitoring, checkpoints with exact resume. Hands on a model directory (safetensors + config)."""
