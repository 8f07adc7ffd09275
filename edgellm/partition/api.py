"""The partition verb: from a model, two target profiles and a network to a :class:`SplitPlan`.

It profiles the model on this host, costs every cut on the two targets (:mod:`edgellm.partition.cost`)
and picks the fastest feasible cut and codec (:mod:`edgellm.partition.planner`).

Example:
    >>> from edgellm.partition import Network, plan
    >>> p = plan("minilm", "snapdragon-865", "x86-server", Network.parse("10mbit", "50ms"))  # doctest: +SKIP
    >>> p.best["after_block"], p.best["codec"], p.best["total_ms"]                          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgellm.errors import EdgeLLMError
from edgellm.partition.network import Network, parse_size
from edgellm.partition.planner import SplitPlan

if TYPE_CHECKING:
    from edgellm.targets import Target

DEFAULT_NETWORK = Network.parse("10mbit", "50ms")  # the CLI's default: a good 4G link


def parse_codecs(codecs: str | Sequence[str]) -> tuple[str, ...]:
    """A list of codec names, a comma-separated string, or ``"all"`` -> the checked codec names."""
    from edgellm.runtime.codecs import ALL_CODECS, Codec

    if isinstance(codecs, str):
        chosen = (
            ALL_CODECS
            if codecs.strip() == "all"
            else tuple(c.strip() for c in codecs.split(",") if c.strip())
        )
    else:
        chosen = tuple(codecs)
    for c in chosen:
        Codec(c)  # an unknown codec fails here, before any profiling
    return chosen


def plan(
    model: Any,
    device: str | Target = "snapdragon-865",
    server: str | Target = "x86-server",
    network: Network | str = DEFAULT_NETWORK,
    *,
    device_memory: float | str | None = None,
    min_device_blocks: int = 1,
    precision: str = "fp32",
    codecs: str | Sequence[str] = ("fp32", "fp16", "int8"),
    seq: int = 128,
    runs: int = 10,
    generate_tokens: int | None = None,
) -> SplitPlan:
    """Profile ``model`` on this host and plan its split between ``device`` and ``server`` over ``network``.

    Args:
        model: a :class:`~edgellm.models.ModelAdapter`, or a name/path :func:`edgellm.models.load` takes.
        device / server: target profiles (names, YAML paths or :class:`~edgellm.targets.Target`).
        network: the link: :meth:`Network.parse` from the CLI's strings, or a named profile (``"4g"``,
            see :data:`~edgellm.partition.network.NETWORKS`).
        device_memory: bytes of weights the phone may hold, or a size such as ``"512MB"`` (None: no limit).
        min_device_blocks: blocks that must run on the phone (1 keeps the raw input there).
        precision: what both halves run at (the targets' peaks and the weight bytes at it).
        codecs: activation codecs to consider: a list, a comma-separated string, or ``"all"``.
        seq / runs: the sequence length planned for, profiling runs per block.
        generate_tokens: causal LMs: plan split generation, a prefill of ``seq`` tokens then
            ``generate_tokens - 1`` one-token decode steps, each a round trip
            (:func:`~edgellm.partition.planner.make_generation_plan`; decode steps are profiled at one
            token without a cache, so attention over a long context is not counted).

    Returns:
        The :class:`SplitPlan`: every candidate, the chosen one, and in ``basis`` how the costs were derived.

    Bad codec, size or target names fail before any profiling.
    """
    from edgellm.models import ModelAdapter, load
    from edgellm.partition.cost import cost_table
    from edgellm.partition.planner import make_generation_plan, make_plan
    from edgellm.partition.profile import profile_blocks
    from edgellm.targets import Target, load_target

    chosen = parse_codecs(codecs)
    net = Network.named(network) if isinstance(network, str) else network
    budget = device_memory
    if isinstance(device_memory, str):
        budget = parse_size(device_memory) if device_memory else None
    dev = device if isinstance(device, Target) else load_target(device)
    srv = server if isinstance(server, Target) else load_target(server)
    adapter = model if isinstance(model, ModelAdapter) else load(model)
    prof = profile_blocks(adapter, batch=1, seq=seq, runs=runs, codecs=chosen)
    table, basis = cost_table(adapter, prof, dev, srv, device_precision=precision, server_precision=precision)
    kw: dict[str, Any] = dict(codecs=chosen, device_memory=budget, min_device_blocks=min_device_blocks)
    if generate_tokens is None:
        split = make_plan(table, net, **kw)
    else:
        if adapter.task != "causal-lm":
            raise EdgeLLMError(
                f"--generate-tokens plans token generation; '{adapter.name}' is a {adapter.task} model",
                "drop --generate-tokens, or plan a causal LM",
            )
        prof1 = profile_blocks(adapter, batch=1, seq=1, runs=runs, codecs=chosen)
        step, _ = cost_table(adapter, prof1, dev, srv, device_precision=precision, server_precision=precision)
        split = make_generation_plan(table, step, net, tokens=generate_tokens, **kw)
    split.basis = basis
    return split
