"""Compression recipes in YAML: unknown keys are errors (pydantic, ``extra="forbid"``).

Example recipe::

    model: minilm
    target: x86-server
    targets: [x86-server, snapdragon-865, nvidia-a100]   # edgellm export --target all
    output: edgellm-out/minilm-int8
    quantization:
      recipe: int8-static
      options: {calibration: entropy, keep: [pooler]}
    data: {calib: pydoc}
    max_accuracy_drop: cosine>=0.99
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from edgellm.compress.quant.config import config_for
from edgellm.errors import EdgeLLMError, first_error


class Strict(BaseModel):
    """A recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class TypedQuant(Strict):
    """A quantization recipe name and its options, which become the method's own config
    (:class:`~edgellm.compress.quant.Int8Static`, :class:`~edgellm.compress.quant.Int4WeightOnly`...) when the
    recipe is read: a wrong option fails there, and the value stays typed on its way to the lowering."""

    recipe: str = Field(..., description="int8-dynamic, int8-static, w4a16-gptq, ... or auto")
    options: dict[str, Any] = Field(
        default_factory=dict, description="the recipe's options (the fields of its config class)"
    )
    _config: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _typed(self) -> TypedQuant:
        if self.recipe == "auto":
            if self.options:
                raise ValueError("recipe auto takes no options (it tries the task's recipes with defaults)")
            return self
        try:
            self._config = config_for(self.recipe, **self.options)
        except EdgeLLMError as exc:
            raise ValueError(str(exc)) from exc
        return self

    @property
    def config(self) -> Any:
        """The typed :class:`~edgellm.compress.quant.QuantConfig`, or ``"auto"``."""
        return "auto" if self.recipe == "auto" else self._config


class QuantSection(TypedQuant):
    pass


class DataSection(Strict):
    calib: str | None = None
    eval: str | None = None


class CompressRecipe(Strict):
    model: str | None = None
    target: str | None = None
    targets: list[str] = Field(default_factory=list)  # what `edgellm export --target all` exports
    output: str | None = None
    quantization: QuantSection | None = None
    data: DataSection = Field(default_factory=DataSection)
    max_accuracy_drop: str | None = None


def load_recipe(path: str | Path) -> CompressRecipe:
    """Read and validate a recipe YAML; method options are checked by the method's config class."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise EdgeLLMError(f"recipe file '{path}' does not exist", "give the path of a YAML recipe")
    try:
        r = CompressRecipe.model_validate(yaml.safe_load(p.read_text()) or {})
    except yaml.YAMLError as exc:
        raise EdgeLLMError(
            f"recipe {p} is not valid YAML: {str(exc).splitlines()[0]}", "fix the YAML syntax"
        ) from exc
    except ValidationError as exc:
        raise EdgeLLMError(f"recipe {p}: {first_error(exc)}", "remove or correct that key") from exc
    return r
