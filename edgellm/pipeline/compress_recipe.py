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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgellm.errors import EdgeLLMError, first_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuantSection(_Strict):
    recipe: str
    options: dict[str, Any] = Field(default_factory=dict)


class DataSection(_Strict):
    calib: str | None = None
    eval: str | None = None


class CompressRecipe(_Strict):
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

    from edgellm.compress.quant.config import config_for

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
    if r.quantization is not None and r.quantization.recipe != "auto":
        config_for(r.quantization.recipe, **r.quantization.options)  # unknown option -> clear error
    return r
