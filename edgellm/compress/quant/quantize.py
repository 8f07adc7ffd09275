"""``quantize``: a model + a typed config (+ calibration batches) -> ``QuantSpec``; and the torch
fake-quantized model that every lowered artifact is checked against."""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
from typing import Any

import numpy as np
import torch
from torch import nn

from edgellm.compress.quant.config import QuantConfig
from edgellm.compress.quant.methods import method_for
from edgellm.compress.quant.spec import QuantLinear, QuantSpec
from edgellm.errors import EdgeLLMError

Feeds = list[dict[str, np.ndarray]]


def quantizable_layers(model: Any) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` inside the model's transformer blocks and head, by name in ``model.module``."""
    out: dict[str, nn.Linear] = {}
    for block in model.blocks:
        if block.kind == "embeddings":
            continue
        for path in block.paths:
            root = model.submodule(path) if path else model.module
            if isinstance(root, nn.Linear):
                out[path] = root
            for sub, mod in root.named_modules():
                if isinstance(mod, nn.Linear) and sub:
                    out[f"{path}.{sub}" if path else sub] = mod
    return out


def matches(name: str, patterns: tuple[str, ...]) -> str | None:
    """The first pattern that ``name`` matches (``lm_head`` also matches ``lm.lm_head``)."""
    for p in patterns:
        if fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, f"*.{p}"):
            return p
    return None


def quantize(
    model: Any, config: QuantConfig, calib: Feeds | None = None, *, calib_info: dict | None = None
) -> QuantSpec:
    """Quantize the linear layers of ``model`` (not in place) into a framework-neutral spec.

    Args:
        model: a :class:`~edgellm.models.ModelAdapter` (fp32).
        config: :class:`Int8Dynamic`, :class:`Int8Static`/:class:`SmoothQuant` or :class:`Int4WeightOnly`.
        calib: batches of feeds; needed by static INT8, SmoothQuant, GPTQ, AWQ and ``auto_keep``.

    Example:
        >>> spec = quantize(model, Int4WeightOnly(method="gptq", group_size=128), calib.feeds)  # doctest: +SKIP
    """
    if config.needs_calibration and not calib:
        raise EdgeLLMError(
            f"recipe '{config.recipe}' needs calibration data", "pass calibration batches (--calib)"
        )
    layers = quantizable_layers(model)
    if not layers:
        raise EdgeLLMError(
            f"model '{model.name}' has no linear layers to quantize", "nothing to do for this model"
        )
    kept = {n: f"keep pattern '{p}'" for n in layers if (p := matches(n, config.keep))}
    targets = {n: m for n, m in layers.items() if n not in kept}
    qlayers = method_for(config)(model, targets, config, calib or [])
    cal: dict[str, Any] = {}
    if calib and config.needs_calibration:
        masks = [f.get("attention_mask") for f in calib]
        cal = {
            "batches": len(calib),
            "sequences": sum(len(f["input_ids"]) for f in calib if "input_ids" in f),
            "tokens": int(sum(m.sum() for m in masks if m is not None)),
            **(calib_info or {}),
        }
    spec = QuantSpec(config.recipe, config.to_dict(), qlayers, kept, cal)
    if config.auto_keep:
        spec = keep_most_sensitive(model, spec, calib or [], config.auto_keep)
    return spec


def quantize_cached(
    model: Any, config: QuantConfig, calib: Feeds | None, cache: dict, **kw: Any
) -> QuantSpec:
    """:func:`quantize`, reusing the spec (and sensitivities) of an earlier try that differed only in
    ``auto_keep``: the layers are quantized the same way, only fewer of them are kept."""
    key = repr(dataclasses.replace(config, auto_keep=0))
    if key not in cache:
        cache[key] = quantize(model, dataclasses.replace(config, auto_keep=0), calib, **kw)
    base = cache[key]
    if not config.auto_keep:
        return base
    if "sensitivity" not in base.calibration:
        sens = layer_sensitivity(model, base, calib or [])
        base.calibration["sensitivity"] = {n: float(f"{v:.4g}") for n, v in sens.items()}
    spec = keep_most_sensitive(model, base, calib or [], config.auto_keep)
    return dataclasses.replace(spec, config=config.to_dict(), recipe=config.recipe)


def apply_quant(model: Any, spec: QuantSpec, only: set[str] | None = None) -> Any:
    """A copy of ``model`` whose quantized layers are :class:`QuantLinear` (the torch reference)."""
    module = copy.deepcopy(model.module)
    for name, lq in spec.layers.items():
        if only is not None and name not in only:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        old = getattr(parent, child)
        setattr(parent, child, QuantLinear(lq, old.bias))
    module.eval()
    return dataclasses.replace(model, module=module, name=f"{model.name}-{spec.recipe}")


@torch.inference_mode()
def keep_most_sensitive(model: Any, spec: QuantSpec, calib: Feeds, k: int) -> QuantSpec:
    """Leave the ``k`` layers whose quantization alone hurts the output most in fp32.

    Each layer is quantized on its own and the model's output error (1 - cosine, over calibration
    batches) is recorded in ``spec.calibration['sensitivity']`` (reused if already there).
    """
    sens = spec.calibration.get("sensitivity") or layer_sensitivity(model, spec, calib)
    ranked = sorted(sens, key=sens.get, reverse=True)
    layers = dict(spec.layers)
    kept = dict(spec.kept)
    for n in ranked[:k]:
        layers.pop(n, None)
        kept[n] = f"sensitivity rank {ranked.index(n) + 1} (output error {sens[n]:.2e})"
    cal = {**spec.calibration, "sensitivity": {n: float(f"{sens[n]:.4g}") for n in ranked}}
    return dataclasses.replace(spec, layers=layers, kept=kept, calibration=cal)


@torch.inference_mode()
def layer_sensitivity(model: Any, spec: QuantSpec, calib: Feeds, batches: int = 2) -> dict[str, float]:
    """Output error (1 - mean cosine) of the model with only one layer quantized, per layer."""
    feeds = calib[:batches]
    ref = [model.run(f) for f in feeds]
    module = copy.deepcopy(model.module)
    probe = dataclasses.replace(model, module=module)
    out: dict[str, float] = {}
    for name, lq in spec.layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        old = getattr(parent, child)
        setattr(parent, child, QuantLinear(lq, old.bias))
        errs = []
        for f, r in zip(feeds, ref):
            got = probe.run(f)
            for o in model.outputs:
                a, b = r[o.name].reshape(r[o.name].shape[0], -1), got[o.name].reshape(r[o.name].shape[0], -1)
                cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
                errs.append(float(1 - cos.mean()))
        out[name] = float(np.mean(errs))
        setattr(parent, child, old)
    return out
