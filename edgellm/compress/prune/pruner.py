"""The pruning verbs: :func:`prune` (pure: a pruned copy and its record), :func:`prune_` (in place),
:func:`save_pruned` (an ordinary model directory) and :func:`prune_model` (prune, save, reload).

Transformers go through :mod:`~edgellm.compress.prune.transformer` (heads, FFN channels, blocks), plain
torch modules through the dependency graph (:mod:`~edgellm.compress.prune.surgery`, ``channels``).
Heavy imports stay inside the functions: ``edgellm.compress`` exports :func:`prune` without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgellm.compress.prune.config import PruneConfig, PruneRecord

if TYPE_CHECKING:
    from edgellm.models import ModelAdapter


def prune(
    model: Any,
    config: PruneConfig,
    calib: list[dict[str, Any]] | None = None,
    *,
    scores: dict[str, Any] | None = None,
) -> tuple[ModelAdapter, PruneRecord]:
    """Prune a copy of ``model`` as ``config`` says; ``model`` itself is left as it was.

    Args:
        model: a bundled name, a model directory or a loaded adapter.
        config: what to remove and by which importance score.
        calib: calibration batches (feeds), for the scores that need data (``taylor``, ``wanda``).
        scores: a transformer's importance given instead of computed (see :func:`prune_`).

    Returns:
        The pruned adapter (in memory; :func:`save_pruned` writes it as a model directory) and the record
        of what was removed.

    Example:
        >>> from edgellm.compress import PruneConfig, prune
        >>> pruned, record = prune("tiny-llama", PruneConfig(heads=0.5, ffn=0.5))  # doctest: +SKIP
        >>> record.to_dict()["params_ratio"]  # doctest: +SKIP
        0.572
    """
    import copy

    from edgellm.models import ModelAdapter, load

    adapter = copy.deepcopy(model) if isinstance(model, ModelAdapter) else load(model)
    record = prune_(adapter, config, calib, scores=scores)
    if record.removed_blocks:  # the kept layers are renumbered from 0: the last block names are gone
        n = int(adapter.config.num_hidden_layers)
        adapter.blocks = [b for b in adapter.blocks if not _layer_at_or_after(b.name, n)]
    return adapter, record


def _layer_at_or_after(name: str, n: int) -> bool:
    head, _, idx = name.partition(".")
    return head == "layers" and idx.isdigit() and int(idx) >= n


def prune_(
    adapter: Any,
    config: PruneConfig,
    calib: list[dict[str, Any]] | None = None,
    *,
    scores: dict[str, Any] | None = None,
) -> PruneRecord:
    """Prune ``adapter`` in place (the trailing ``_``): a Hugging Face transformer by heads, FFN channels
    and blocks, a plain torch module by coupled channels.

    ``scores`` (transformers) replaces the computed importance (``{"heads": [per layer: a score per
    unit], "ffn": [per layer: a score per channel], "blocks": a score per layer}``): another tool's
    selection, removed the same way.

    The adapter's own bookkeeping (its block list, its source) is stale afterwards: save the model with
    :func:`save_pruned` and load that directory (what :func:`prune_model` does), or use :func:`prune`.

    Raises:
        EdgeLLMError: an unknown layout, a score that needs calibration data without it, or a ratio
            that would remove every head of a layer.
    """
    if adapter.family == "torch":
        from edgellm.compress.prune.surgery import prune_channels

        return prune_channels(adapter, config, calib)
    from edgellm.compress.prune.transformer import prune_transformer

    return prune_transformer(adapter, config, calib, scores=scores)


def save_pruned(adapter: Any, record: PruneRecord, dest: Any) -> Path:
    """The pruned model as an ordinary model directory (config, safetensors, tokenizer, ``pruning.json``)."""
    import json

    from edgellm.compress.prune.layout import hf_model
    from edgellm.models.loader import copy_sentence_transformers_files
    from edgellm.utils.fs import atomic_dir

    if adapter.family == "torch":  # a plain module: its own directory format (edgellm.models.loader)
        from edgellm.models.loader import save_module

        with atomic_dir(dest, force=True) as tmp:
            save_module(adapter, tmp)
            (tmp / "pruning.json").write_text(json.dumps(record.to_dict(), indent=2) + "\n")
        return Path(dest)
    hf = hf_model(adapter)
    with atomic_dir(dest, force=True) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        if adapter.tokenizer is not None:
            adapter.tokenizer.save_pretrained(tmp)
        if adapter.source.get("path") and adapter.task == "embedding":
            copy_sentence_transformers_files(adapter.source["path"], tmp)
        (tmp / "pruning.json").write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    return Path(dest)


def prune_model(
    model: Any,
    config: PruneConfig,
    dest: Any,
    calib: list[dict[str, Any]] | None = None,
    *,
    scores: dict[str, Any] | None = None,
) -> tuple[Any, PruneRecord]:
    """Load ``model`` (name, directory or adapter), prune it, save it to ``dest``; returns the reloaded
    pruned adapter and the record (``scores``: see :func:`prune_`)."""
    from edgellm.models import load

    adapter, record = prune(model, config, calib, scores=scores)
    save_pruned(adapter, record, dest)
    return load(dest, task=adapter.task), record
