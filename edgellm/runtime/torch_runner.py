"""The torch reference runner: the model adapter's module in eval mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgellm.runtime.base import Runner, register_runner

if TYPE_CHECKING:  # torch is imported only when a torch runner is made
    from edgellm.models.adapter import ModelAdapter


@register_runner("torch")
class TorchRunner(Runner):
    """Run a :class:`ModelAdapter` in torch.

    Args:
        model: the loaded model.
        threads: ``torch.set_num_threads`` value (process-wide in torch); None keeps torch's default.
    """

    def __init__(self, model: ModelAdapter, *, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.model = model
        self.inputs = model.inputs
        self.outputs = model.outputs

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.model.run(feeds)
