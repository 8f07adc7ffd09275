"""Training front end (stage 2): the ``accelerate`` trainer, distillation, hyper-parameter search and
checkpoints. Hands on a model directory (safetensors + config). Built in a later issue."""
