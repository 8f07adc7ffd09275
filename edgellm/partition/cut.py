"""Cutting a model in two: the device half (the first ``cut`` blocks) and the server half (the rest).

Each half is an ordinary :class:`~edgellm.models.ModelAdapter`, so every exporter, runner and the server
take it unchanged. The halves share the parent's parameters (nothing is copied).

- Hugging Face encoders (BERT family): the device half runs the embeddings and the first layers and
  returns the hidden states; the server half takes ``hidden`` and ``attention_mask``, runs the remaining
  layers (the embeddings module passes ``hidden`` through) and the pooling head.
- Hugging Face decoders (Llama, Qwen2, Mistral, Phi-3, Gemma, GPT-2): the device half runs the token
  embeddings and the first layers (the final norm is left to the server); the server half feeds
  ``hidden`` as ``inputs_embeds`` (position embeddings that a family adds on top are zeroed, and an
  embedding scale that its base model applies to ``inputs_embeds`` (Gemma) is divided out: the device
  half already applied them), runs the remaining layers, the final norm and the LM head. Rotary positions
  and the causal mask are recomputed from ``attention_mask`` on each side, so they agree.
- Plain torch modules whose children run in order (an ``nn.Sequential``, such as the bundled CNNs): the
  device half is the first ``cut`` children, the server half the rest. A module whose ``forward`` is not
  its children in order is refused, since cutting it would change what it computes.

Example:
    >>> halves = split_model(load("minilm"), cut=3)          # doctest: +SKIP
    >>> halves.device.outputs[0].shape, [s.name for s in halves.server.inputs]  # doctest: +SKIP
    (['batch', 'sequence', 384], ['hidden', 'attention_mask'])
"""

from __future__ import annotations

import copy
import inspect
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgellm.errors import EdgeLLMError
from edgellm.models.adapter import Block, ModelAdapter, TensorSpec
from edgellm.models.families import FAMILIES

ACTIVATION = "hidden"


@dataclass
class Halves:
    """The two halves of a model cut after ``cut`` blocks (``device`` is None at 0, ``server`` at n)."""

    cut: int
    after_block: str | None
    device: ModelAdapter | None
    server: ModelAdapter | None
    activation: TensorSpec | None  # what crosses the network (None when nothing does)
    side_inputs: list[str]  # model inputs the server half also needs (e.g. attention_mask)


def _replaced(root: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """A shallow copy of ``root`` whose module at dotted ``path`` is ``new`` (parameters shared)."""
    head, _, rest = path.partition(".")
    clone = copy.copy(root)
    clone._modules = dict(root._modules)
    clone._modules[head] = new if not rest else _replaced(root._modules[head], rest, new)
    return clone


class _Inject(nn.Module):
    """Stands in for an encoder's embeddings module: returns the hidden states it is given as embeddings.

    Families call their embeddings differently (BERT by keyword ``inputs_embeds=``, DistilBERT
    positionally as ``(input_ids, input_embeds)``), so the call is bound to the replaced module's own
    signature and the argument that parameter names (``*embeds``) is returned.
    """

    def __init__(self, replaced: nn.Module) -> None:
        super().__init__()
        self._signature = inspect.signature(replaced.forward)
        names = [n for n in self._signature.parameters if n.endswith("embeds")]
        if len(names) != 1:
            raise EdgeLLMError(
                f"cannot cut: the embeddings module {type(replaced).__name__} takes no single '*embeds' "
                f"argument (its parameters: {', '.join(self._signature.parameters)})",
                "cut a model whose embeddings accept precomputed embeddings (inputs_embeds)",
            )
        self._embeds = names[0]

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._signature.bind(*args, **kwargs).arguments[self._embeds]


class _Zeros(nn.Module):
    """Stands in for an added position embedding: the device half already added it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros((*ids.shape, self.dim), dtype=torch.float32, device=ids.device)


class EncoderDevice(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.base(input_ids=input_ids, attention_mask=attention_mask, **kw)[0]


class EncoderServer(nn.Module):
    def __init__(self, base: nn.Module, pooling: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.pooling = pooling

    def forward(self, hidden, attention_mask):
        out = self.base(inputs_embeds=hidden, attention_mask=attention_mask)[0]
        return self.pooling(out, attention_mask)


class DecoderDevice(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, input_ids, attention_mask):
        return self.base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0]


class DecoderServer(nn.Module):
    """The rest of a causal LM on ``hidden``. ``embed_scale``: the factor the family's base model multiplies
    its input embeddings by (Gemma's ``sqrt(hidden_size)``), divided out first: the device half applied it."""

    def __init__(self, lm: nn.Module, embed_scale: float | None = None) -> None:
        super().__init__()
        self.lm = lm
        self.embed_scale = embed_scale

    def forward(self, hidden, attention_mask):
        if self.embed_scale is not None:
            hidden = hidden / torch.tensor(self.embed_scale, dtype=hidden.dtype)
        return self.lm(inputs_embeds=hidden, attention_mask=attention_mask, use_cache=False).logits


def _layers(adapter: ModelAdapter) -> tuple[str, int]:
    """Dotted path (inside adapter.module) of the layer list, and the number of layers."""
    path = adapter.blocks[1].paths[0].rsplit(".", 1)[0]
    return path, len(adapter.submodule(path))


def _sequential_children(adapter: ModelAdapter) -> list[tuple[str, nn.Module]]:
    children = list(adapter.module.named_children())
    names = [b.name for b in adapter.blocks]
    if [n for n, _ in children] != names or not adapter.example:
        raise EdgeLLMError(
            f"cannot cut '{adapter.name}': its blocks are not the module's children in order",
            "build the model as an nn.Sequential of its blocks (see edgellm.models.vision)",
        )
    args = [torch.as_tensor(adapter.example[s.name]) for s in adapter.inputs]
    if len(args) != 1:
        raise EdgeLLMError(
            f"cannot cut '{adapter.name}': it takes {len(args)} inputs; a plain module is cut only when "
            "one tensor flows from child to child",
            "wrap the model so it takes one tensor, as an nn.Sequential of its blocks",
        )
    with torch.inference_mode():
        want = adapter.module(*args)
        x = args[0]
        for _, m in children:
            x = m(x)
    if not isinstance(want, torch.Tensor) or want.shape != x.shape or not torch.allclose(want, x, atol=1e-5):
        raise EdgeLLMError(
            f"cannot cut '{adapter.name}': running its children in order does not give its output "
            "(its forward does more than chain them)",
            "build the model as an nn.Sequential of its blocks, with any glue inside a block",
        )
    return children


def split_model(adapter: ModelAdapter, cut: int) -> Halves:
    """Cut ``adapter`` after its first ``cut`` blocks (0: all on the server; n: all on the device)."""
    n = len(adapter.blocks)
    if not 0 <= cut <= n:
        raise EdgeLLMError(
            f"cut {cut} is outside 0..{n}",
            f"'{adapter.name}' has {n} blocks: 0 runs all on the server, {n} all on the device",
        )
    after = adapter.blocks[cut - 1].name if cut else None
    if cut == 0:
        return Halves(0, None, None, adapter, None, [])
    if cut == n:
        return Halves(n, after, adapter, None, None, [])
    if adapter.family == "torch":
        return _split_sequential(adapter, cut, after)
    family = FAMILIES.get(adapter.family)
    if family is None:
        raise EdgeLLMError(
            f"cannot cut a '{adapter.family}' model", "supported: Hugging Face families, nn.Sequential"
        )
    return _split_hf(adapter, family, cut, after)


def _half(
    adapter: ModelAdapter,
    module: nn.Module,
    role: str,
    cut: int,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    blocks: list[Block],
    example: dict[str, np.ndarray] | None,
) -> ModelAdapter:
    name = f"{adapter.name}-{role}-cut{cut}"
    return ModelAdapter(
        name=name,
        module=module.eval(),
        task="custom",
        family=adapter.family,
        inputs=inputs,
        outputs=outputs,
        blocks=blocks,
        source={**adapter.source, "name": name, "split": {"parent": adapter.name, "role": role, "cut": cut}},
        config=adapter.config,
        tokenizer=adapter.tokenizer if role == "device" else None,
        example=example,
        int_high=dict(adapter.int_high),
    )


def _activation_spec(adapter: ModelAdapter, sample: torch.Tensor, seq_axis: bool) -> TensorSpec:
    shape: list[int | str] = ["batch", *sample.shape[1:]]
    if seq_axis:
        shape[1] = "sequence"
    mask = "attention_mask" if adapter.task == "causal-lm" else None
    return TensorSpec(ACTIVATION, "float32", shape, valid_mask=mask)


def _split_sequential(adapter: ModelAdapter, cut: int, after: str | None) -> Halves:
    children = _sequential_children(adapter)
    dev = nn.Sequential(OrderedDict(children[:cut]))
    srv = nn.Sequential(OrderedDict(children[cut:]))
    x = torch.as_tensor(adapter.example[adapter.inputs[0].name])  # type: ignore[index]
    with torch.inference_mode():
        act = dev(x)
    spec = _activation_spec(adapter, act, seq_axis=False)
    if adapter.inputs[0].shape[0] != "batch":
        spec.shape[0] = int(act.shape[0])
    device = _half(adapter, dev, "device", cut, adapter.inputs, [spec], adapter.blocks[:cut], adapter.example)
    server = _half(
        adapter, srv, "server", cut, [spec], adapter.outputs, adapter.blocks[cut:], {ACTIVATION: act.numpy()}
    )
    return Halves(cut, after, device, server, spec, [])


def _split_hf(adapter: ModelAdapter, family: Any, cut: int, after: str | None) -> Halves:
    layers_path, n_layers = _layers(adapter)
    layers = adapter.submodule(layers_path)
    k = cut - 1  # layers on the device (block 0 is the embeddings)
    if k > n_layers:  # a cut after the last layer leaves only the head on the server
        k = n_layers
    module = adapter.module
    if adapter.task == "embedding":
        base_path = "encoder"
        rel = layers_path.removeprefix(base_path + ".")
        base = module.get_submodule(base_path)
        dev_base = _replaced(base, rel, nn.ModuleList(list(layers)[:k]))
        srv_base = _replaced(base, rel, nn.ModuleList(list(layers)[k:]))
        for p in family.embeddings:
            srv_base = _replaced(srv_base, p, _Inject(base.get_submodule(p)))
        if hasattr(srv_base, "embeddings_project"):  # ELECTRA: the device half already projected them
            srv_base = _replaced(srv_base, "embeddings_project", nn.Identity())
        dev_mod: nn.Module = EncoderDevice(dev_base)
        srv_mod: nn.Module = EncoderServer(srv_base, module.get_submodule("pooling"))
    elif adapter.task == "causal-lm":
        lm = module.get_submodule("lm")
        rel = layers_path.removeprefix("lm.")
        base_rel = rel.rsplit(".", 1)[0]  # "model" (Llama) or "transformer" (GPT-2)
        base = lm.get_submodule(base_rel)
        dev_base = _replaced(base, rel.removeprefix(base_rel + "."), nn.ModuleList(list(layers)[:k]))
        norm = family.final[0].removeprefix(base_rel + ".")
        dev_base = _replaced(dev_base, norm, nn.Identity())
        srv_lm = _replaced(lm, rel, nn.ModuleList(list(layers)[k:]))
        for p in family.embeddings[1:]:  # added position embeddings (GPT-2's wpe)
            emb = lm.get_submodule(p)
            srv_lm = _replaced(srv_lm, p, _Zeros(int(emb.embedding_dim)))
        dev_mod = DecoderDevice(dev_base)
        scale = float(adapter.config.hidden_size) ** 0.5 if family.scales_embeds else None
        srv_mod = DecoderServer(srv_lm, scale)
    else:
        raise EdgeLLMError(
            f"cannot cut a model with task '{adapter.task}'", "use an embedding or causal-lm model"
        )
    fixed = adapter.fixed_inputs()
    with torch.inference_mode():
        act = dev_mod(*[torch.as_tensor(fixed[s.name]) for s in adapter.inputs])
    spec = _activation_spec(adapter, act, seq_axis=True)
    mask_spec = next(s for s in adapter.inputs if s.name == "attention_mask")
    device = _half(adapter, dev_mod, "device", cut, adapter.inputs, [spec], adapter.blocks[:cut], fixed)
    server = _half(
        adapter,
        srv_mod,
        "server",
        cut,
        [spec, mask_spec],
        adapter.outputs,
        adapter.blocks[cut:],
        {ACTIVATION: act.numpy(), "attention_mask": fixed["attention_mask"]},
    )
    return Halves(cut, after, device, server, spec, ["attention_mask"])
