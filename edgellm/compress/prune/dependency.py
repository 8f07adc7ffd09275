"""The dependency graph of a plain torch module: which channels must be removed together.

The module is traced with ``torch.fx`` and run once on its example inputs (shapes). Every tensor's
channel axis (dim 1 of an NCHW feature map, the last dim of a ``Linear``'s input/output) carries, per
channel, the id of the output channel that produced it. Ops then couple channels:

- ``Conv2d`` / ``Linear`` *produce* new channels (their output rows) and *consume* their input's
  (weight columns); a depthwise ``Conv2d`` passes channels through (its filters follow them).
- ``BatchNorm`` / ``LayerNorm`` (over the channels), activations, dropout and pooling pass them through.
- ``add`` / ``sub`` / ``mul`` of two feature maps (a residual, a gate) tie channel ``i`` of one to
  channel ``i`` of the other: they can only be removed together.
- ``cat`` along channels concatenates the two channel lists; ``flatten`` of an NCHW map repeats each
  channel's id over its ``H x W`` features, so the ``Linear`` after it loses all of them together.

Channels tied (union-find) into one *unit* are removed together; a unit that reaches a model input or
output is never removed. Units with the same producers form a *group* (a layer, or a residual stage).
Any other op on a feature map stops the analysis with its name: the graph never guesses. Scoring the
units is :func:`edgellm.compress.prune.importance.channel_scores`; choosing and removing them,
:mod:`edgellm.compress.prune.surgery`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgellm.errors import EdgeLLMError

_PASS_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_F = nn.functional
_PASS_FUNCTIONS = {
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    _F.relu,
    _F.relu6,
    _F.gelu,
    _F.silu,
    _F.sigmoid,
    _F.hardswish,
    _F.hardtanh,
    _F.leaky_relu,
    _F.elu,
    _F.dropout,
    _F.max_pool2d,
    _F.avg_pool2d,
    _F.adaptive_avg_pool2d,
    _F.adaptive_max_pool2d,
    operator.neg,
}
_PASS_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "float", "detach"}
_BINARY = {operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul}
_BINARY_METHODS = {"add", "sub", "mul"}


@dataclass
class _Val:
    """A traced tensor: its shape and, along its channel axis, one element id per channel."""

    shape: tuple[int, ...]
    dim: int  # the channel axis (non-negative)
    ids: np.ndarray  # element ids, len == shape[dim]


@dataclass
class Use:
    """One place a module's weights follow channel ids: ``role`` out (rows), in (columns), dw, norm."""

    path: str
    role: str
    ids: np.ndarray


@dataclass
class Graph:
    """The coupled channels of a module."""

    uses: list[Use]
    unit_of: dict[int, int]  # element id -> unit id (union-find root)
    fixed: set[int]  # units that reach an input or output
    groups: dict[tuple[str, ...], list[int]] = field(default_factory=dict)  # producers -> prunable units

    def prunable_units(self) -> list[int]:
        return [u for units in self.groups.values() for u in units]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent += list(range(start, start + n))
        return np.arange(start, start + n)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _cannot(what: str, node: Any) -> EdgeLLMError:
    return EdgeLLMError(
        f"the pruning dependency graph cannot follow {what} (node '{node.name}'): it does not know how "
        "that op maps channels",
        "build the model from Conv2d/Linear/BatchNorm/LayerNorm, activations, pooling, add/mul, cat and "
        "flatten, or prune a Hugging Face transformer (heads/ffn/blocks) instead",
    )


def trace(module: nn.Module, example: dict[str, np.ndarray]) -> Graph:
    """Trace ``module`` on ``example`` inputs and find its coupled channels."""
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:  # fx raises many types on data-dependent control flow
        raise EdgeLLMError(
            f"torch.fx cannot trace {type(module).__name__}: {str(exc).splitlines()[0][:200]}",
            "pruning a plain module needs a forward without data-dependent Python control flow",
        ) from exc
    args = [torch.as_tensor(a) for a in example.values()]
    with torch.no_grad():
        ShapeProp(gm).propagate(*args)
    uf = _UnionFind()
    vals: dict[str, _Val | None] = {}
    uses: list[Use] = []
    fixed_el: list[int] = []
    called: set[str] = set()
    mods = dict(gm.named_modules())

    def shape(node: Any) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def arg_val(a: Any) -> _Val | None:
        return vals.get(a.name) if isinstance(a, fx.Node) else None

    def tensor_args(node: Any) -> list[_Val]:
        found = []
        for a in node.all_input_nodes:
            v = vals.get(a.name)
            if v is not None:
                found.append(v)
        return found

    def same(node: Any, v: _Val) -> _Val:
        s = shape(node)
        if s is None or len(s) <= v.dim or s[v.dim] != len(v.ids):
            raise _cannot(f"'{node.target}' (it changes the channel axis)", node)
        return _Val(s, v.dim, v.ids)

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            s = shape(node)
            if s is None:
                vals[node.name] = None
                continue
            dim = 1 if len(s) == 4 else len(s) - 1
            ids = uf.new(s[dim])
            fixed_el += ids.tolist()
            vals[node.name] = _Val(s, dim, ids)
        elif node.op == "get_attr":
            vals[node.name] = None
        elif node.op == "output":
            for a in node.all_input_nodes:
                v = vals.get(a.name)
                if v is not None:
                    fixed_el += v.ids.tolist()
        elif node.op == "call_module":
            mod = mods[node.target]
            v = arg_val(node.args[0]) if node.args else None
            if v is None:
                raise _cannot(f"module '{node.target}' ({type(mod).__name__}) without a traced input", node)
            if node.target in called and isinstance(
                mod, (nn.Conv2d, nn.Conv1d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm)
            ):
                raise _cannot(f"module '{node.target}' called twice (shared weights)", node)
            called.add(node.target)
            s = shape(node)
            if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
                if v.dim != 1:
                    raise _cannot(f"'{node.target}' on a tensor whose channels are not on axis 1", node)
                if mod.groups == 1:
                    uses.append(Use(node.target, "in", v.ids))
                    out = uf.new(mod.out_channels)
                    uses.append(Use(node.target, "out", out))
                    vals[node.name] = _Val(s, 1, out)
                elif mod.groups == mod.in_channels == mod.out_channels:  # depthwise: follows its input
                    uses.append(Use(node.target, "dw", v.ids))
                    vals[node.name] = _Val(s, 1, v.ids)
                else:
                    raise _cannot(f"'{node.target}', a grouped convolution (groups={mod.groups})", node)
            elif isinstance(mod, nn.Linear):
                if v.dim != len(v.shape) - 1:
                    raise _cannot(f"'{node.target}' on a tensor whose channels are not last", node)
                uses.append(Use(node.target, "in", v.ids))
                out = uf.new(mod.out_features)
                uses.append(Use(node.target, "out", out))
                vals[node.name] = _Val(s, len(s) - 1, out)
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                if v.dim != 1:
                    raise _cannot(f"'{node.target}' ({type(mod).__name__}) not over axis 1", node)
                uses.append(Use(node.target, "norm", v.ids))
                vals[node.name] = same(node, v)
            elif isinstance(mod, nn.LayerNorm):
                if tuple(mod.normalized_shape) != (len(v.ids),) or v.dim != len(v.shape) - 1:
                    raise _cannot(f"'{node.target}' (LayerNorm over more than the channel axis)", node)
                uses.append(Use(node.target, "norm", v.ids))
                vals[node.name] = same(node, v)
            elif isinstance(mod, _PASS_MODULES):
                vals[node.name] = same(node, v)
            elif isinstance(mod, nn.Flatten):
                vals[node.name] = _flatten(node, v, mod.start_dim, mod.end_dim, s)
            else:
                raise _cannot(f"module '{node.target}' ({type(mod).__name__})", node)
        elif node.op in ("call_function", "call_method"):
            t = node.target
            ins = tensor_args(node)
            s = shape(node)
            if not ins:
                vals[node.name] = None  # shapes, sizes, constants
            elif t in _PASS_FUNCTIONS or (node.op == "call_method" and t in _PASS_METHODS):
                vals[node.name] = same(node, arg_val(node.args[0]) or ins[0])
            elif t in _BINARY or (node.op == "call_method" and t in _BINARY_METHODS):
                vals[node.name] = _binary(node, ins, s, uf)
            elif t in (torch.cat, torch.concat):
                vals[node.name] = _cat(node, [arg_val(a) for a in node.args[0]], s, uf)
            elif t is torch.flatten or (node.op == "call_method" and t == "flatten"):
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
                vals[node.name] = _flatten(node, ins[0], start, end, s)
            elif (node.op == "call_method" and t in ("view", "reshape")) or t is torch.reshape:
                vals[node.name] = _flatten(node, ins[0], 1, -1, s)
            elif (node.op == "call_method" and t == "mean") or t is torch.mean:
                vals[node.name] = _mean(node, ins[0], s)
            elif node.op == "call_method" and t in ("size", "dim"):
                vals[node.name] = None
            else:
                name = getattr(t, "__name__", str(t))
                raise _cannot(f"'{name}'", node)
    return _finish(uf, uses, fixed_el)


def _flatten(node: Any, v: _Val, start: int, end: int, s: tuple[int, ...] | None) -> _Val:
    """Flattening everything from the channel axis on: each channel's id repeats over its features."""
    n = len(v.shape)
    start, end = start % n, end % n
    if s is None or start != v.dim or end != n - 1 or len(s) != start + 1:
        if s is not None and s == v.shape:
            return _Val(s, v.dim, v.ids)
        raise _cannot(f"'{getattr(node.target, '__name__', node.target)}' reshaping the channel axis", node)
    per = int(np.prod(v.shape[v.dim + 1 :])) if v.dim + 1 < n else 1
    return _Val(s, start, np.repeat(v.ids, per))


def _mean(node: Any, v: _Val, s: tuple[int, ...] | None) -> _Val:
    if s is None:
        raise _cannot("'mean' to a scalar", node)
    if v.shape[v.dim] in s and len(s) in (len(v.shape), v.dim + 1, 2):
        dim = v.dim if len(s) > v.dim and s[v.dim] == v.shape[v.dim] else None
        if dim is not None:
            return _Val(s, dim, v.ids)
    raise _cannot("'mean' over the channel axis", node)


def _binary(node: Any, ins: list[_Val], s: tuple[int, ...] | None, uf: _UnionFind) -> _Val:
    if len(ins) == 1:
        return _Val(s or ins[0].shape, ins[0].dim, ins[0].ids)
    a, b = ins[0], ins[1]
    if s is None or len(a.ids) != len(b.ids) or a.dim - len(a.shape) != b.dim - len(b.shape):
        # a broadcast one-channel operand (a scale) couples nothing
        if len(b.ids) == 1 and len(a.ids) > 1:
            return _Val(s or a.shape, a.dim, a.ids)
        if len(a.ids) == 1 and len(b.ids) > 1:
            return _Val(s or b.shape, b.dim, b.ids)
        raise _cannot(f"'{getattr(node.target, '__name__', node.target)}' of unaligned channels", node)
    for x, y in zip(a.ids.tolist(), b.ids.tolist()):
        uf.union(x, y)
    big = a if len(a.shape) >= len(b.shape) else b
    return _Val(s, big.dim, big.ids)


def _cat(node: Any, parts: list[_Val | None], s: tuple[int, ...] | None, uf: _UnionFind) -> _Val:
    if any(p is None for p in parts) or s is None:
        raise _cannot("'cat' of untraced tensors", node)
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    first = parts[0]
    dim = dim % len(first.shape)
    if dim == first.dim:
        return _Val(s, dim, np.concatenate([p.ids for p in parts]))
    for p in parts[1:]:  # concatenated along another axis: the channels line up
        if len(p.ids) != len(first.ids):
            raise _cannot("'cat' of unaligned channels", node)
        for x, y in zip(first.ids.tolist(), p.ids.tolist()):
            uf.union(x, y)
    return _Val(s, first.dim, first.ids)


def _finish(uf: _UnionFind, uses: list[Use], fixed_el: list[int]) -> Graph:
    unit_of = {e: uf.find(e) for e in range(len(uf.parent))}
    fixed = {unit_of[e] for e in fixed_el}
    producers: dict[int, set[str]] = {}
    for u in uses:
        if u.role == "out":
            for e in u.ids.tolist():
                producers.setdefault(unit_of[e], set()).add(u.path)
    g = Graph(uses, unit_of, fixed)
    for unit, paths in producers.items():
        if unit not in fixed:
            g.groups.setdefault(tuple(sorted(paths)), []).append(unit)
    for k in g.groups:
        g.groups[k].sort()
    return g
