"""Training front end (stage 2): the ``accelerate`` trainer (one process or ``accelerate launch``),
gradient monitoring, checkpoints with exact resume. Hands on a model directory (safetensors + config).

- :mod:`~edgellm.train.config`: ``train.yaml`` as :class:`TrainConfig`.
- :mod:`~edgellm.train.data`: the corpus as seeded batches (token windows, labelled examples).
- :mod:`~edgellm.train.losses`: task losses, distillation, evaluation metrics.
- :mod:`~edgellm.train.model`: from-scratch models, the teacher, the saved result.
- :mod:`~edgellm.train.loop`: the training loop, :func:`train`.
- :mod:`~edgellm.train.qat`, :mod:`~edgellm.train.hpo`: quantization-aware training, hyper-parameter search.

Example:
    >>> from edgellm.train import TrainConfig, train
    >>> summary = train(TrainConfig(model="tiny-llama", output="out/ft", max_steps=100))  # doctest: +SKIP
"""

from edgellm.train.config import TrainConfig
from edgellm.train.loop import TrainingStopped, train

__all__ = ["TrainConfig", "TrainingStopped", "train"]
