"""The model adapter: one object that every later stage takes, whatever the model came from.

It holds the task-headed ``nn.Module``, the names, dtypes and shapes of its inputs and outputs (with
dynamic axes as names), the blocks later stages profile, prune and cut by, and the source's hash.
Inputs and outputs cross stage boundaries as ``dict[str, numpy.ndarray]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgellm.errors import EdgeLLMError
from edgellm.utils.specs import TensorSpec

FIXED_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Edge deployment trades a little accuracy for a lot of latency.",
    "Quantization maps floating-point weights to small integers.",
    "A phone runs the first blocks; the server runs the rest.",
)


@dataclass
class Block:
    """A unit later stages profile, prune and cut by: ``embeddings``, ``layers.N`` or ``head``.

    ``paths`` are dotted module paths inside :attr:`ModelAdapter.module` (a head may be parameter-free,
    e.g. mean pooling, and still has a module).
    """

    name: str
    kind: str  # "embeddings" | "block" | "head"
    paths: tuple[str, ...]


@dataclass
class ModelAdapter:
    """A loaded model with its task head, I/O specs and named blocks. Build it with :func:`edgellm.models.load`."""

    name: str
    module: nn.Module
    task: str  # "embedding" | "causal-lm" | "classification" | "custom"
    family: str  # Hugging Face model_type, or "torch" for a plain module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    blocks: list[Block]
    source: dict[str, Any]
    config: Any = None
    tokenizer: Any = None
    example: dict[str, np.ndarray] | None = None
    int_high: dict[str, int] = field(default_factory=dict)  # exclusive upper bound of integer inputs

    # -- blocks ---------------------------------------------------------------------------------
    def submodule(self, path: str) -> nn.Module:
        """The module at a dotted ``path`` inside :attr:`module`."""
        return self.module.get_submodule(path)

    def block_modules(self, block: Block | str) -> list[nn.Module]:
        """The modules that make up ``block`` (a :class:`Block` or its name)."""
        if isinstance(block, str):
            block = next(b for b in self.blocks if b.name == block)
        return [self.submodule(p) for p in block.paths]

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    # -- inputs ---------------------------------------------------------------------------------
    def example_inputs(
        self, batch: int = 2, seq: int = 16, *, seed: int = 0, padded: bool = True
    ) -> dict[str, np.ndarray]:
        """Random inputs of the given batch and sequence length; with ``padded`` later rows are right-padded."""
        return make_inputs(
            self.inputs, batch, seq, seed=seed, int_high=self.int_high, example=self.example, padded=padded
        )

    def fixed_inputs(self) -> dict[str, np.ndarray]:
        """Deterministic inputs: real sentences through the tokenizer, else the user's example."""
        if self.tokenizer is not None and self.task in ("embedding", "causal-lm", "classification"):
            tok = self.tokenizer
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token or tok.unk_token
            enc = tok(list(FIXED_TEXTS), padding=True, truncation=True, max_length=64, return_tensors="np")
            return {
                s.name: np.asarray(enc[s.name], dtype=s.dtype)
                if s.name in enc
                else np.zeros(enc["input_ids"].shape, dtype=s.dtype)
                for s in self.inputs
            }
        if self.example is not None:
            return {k: v.copy() for k, v in self.example.items()}
        return self.example_inputs(batch=2, seq=8, seed=1234)

    # -- reference execution ----------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, inputs: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, np.ndarray]:
        """Run the torch reference on named inputs; returns named numpy outputs."""
        args = [torch.as_tensor(np.asarray(inputs[s.name])) for s in self.inputs]
        return outputs_to_dict(self.module(*args), [o.name for o in self.outputs])


def outputs_to_dict(out: Any, names: list[str]) -> dict[str, np.ndarray]:
    """Name a module's output(s): a tensor, a tuple/list of tensors, or a mapping."""
    if isinstance(out, torch.Tensor):
        out = (out,)
    elif isinstance(out, Mapping):
        out = tuple(out.values())
    elif hasattr(out, "to_tuple"):
        out = out.to_tuple()
    return {n: t.detach().cpu().numpy() for n, t in zip(names, out)}


def make_inputs(
    specs: list[TensorSpec],
    batch: int,
    seq: int,
    *,
    seed: int = 0,
    int_high: Mapping[str, int] | None = None,
    example: Mapping[str, np.ndarray] | None = None,
    padded: bool = True,
) -> dict[str, np.ndarray]:
    """Synthetic inputs for ``specs``: axis 0 is ``batch``, axes named ``sequence`` are ``seq``.

    ``attention_mask`` is all ones, or with ``padded`` row r loses r quarter-sequences of tail tokens
    (keeping at least one); ``token_type_ids`` are zeros; other integers are uniform in
    ``[0, int_high[name])``; floats are standard normal. Other dynamic axes take the example's size.
    """
    rng = np.random.default_rng(seed)
    int_high = int_high or {}
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = []
        for i, s in enumerate(spec.shape):
            if isinstance(s, int):
                shape.append(s)
            elif i == 0:
                shape.append(batch)
            elif s == "sequence":
                shape.append(seq)
            elif example is not None and spec.name in example:
                shape.append(int(example[spec.name].shape[i]))
            else:
                raise EdgeLLMError(
                    f"input '{spec.name}' has a dynamic axis '{s}' that cannot be sized here "
                    "(only 'batch' and 'sequence' are known)",
                    "export with a fixed size for that axis, or pass example inputs",
                )
        dtype = np.dtype(spec.dtype)
        if spec.name == "attention_mask":
            arr = np.ones(shape, dtype=dtype)
            if padded:
                step = max(1, shape[1] // 4)
                for row in range(1, shape[0]):
                    arr[row, max(1, shape[1] - row * step) :] = 0
        elif spec.name == "token_type_ids":
            arr = np.zeros(shape, dtype=dtype)
        elif dtype == np.bool_:
            arr = rng.integers(0, 2, size=shape).astype(bool)
        elif np.issubdtype(dtype, np.integer):
            arr = rng.integers(0, int_high.get(spec.name, 2), size=shape).astype(dtype)
        else:
            arr = rng.standard_normal(shape).astype(dtype)
        out[spec.name] = arr
    return out
