"""``TensorSpec``: the name, dtype and shape of a model input or output, the contract between a model,
its artifact's manifest and every runtime (plain data: no framework is imported)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TensorSpec:
    """Name, numpy dtype name and shape of a model input or output; a str in ``shape`` is a dynamic axis.

    ``valid_mask`` names the input whose zeros mark positions of this output that carry no meaning
    (padded tokens of a causal LM); parity checks ignore them.
    """

    name: str
    dtype: str
    shape: list[int | str]
    valid_mask: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.valid_mask:
            d["valid_mask"] = self.valid_mask
        return d

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: s for i, s in enumerate(self.shape) if isinstance(s, str)}
