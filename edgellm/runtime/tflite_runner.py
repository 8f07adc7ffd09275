"""LiteRT (TFLite) runner: the ``ai-edge-litert`` interpreter with XNNPACK, as on an Android CPU.

A ``.tflite`` file has static shapes. Given the model's dynamic input specs, the runner pads each
request to the file's sequence length (padded positions are masked: ``attention_mask`` is 0 there),
runs one row at a time when the file's batch is 1, and cuts the outputs back to the request's shape.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.runtime.base import Runner, register_runner
from edgellm.runtime.litert import quiet_litert, require_litert
from edgellm.utils.specs import TensorSpec

_SEQ = "sequence"


def _interpreter(path: Path, num_threads: int, xnnpack: bool, preserve: bool = False) -> Any:
    require_litert("running TFLite models", interpreter_only=True)
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with quiet_litert():
            it = Interpreter(
                model_path=str(path),
                num_threads=num_threads,
                experimental_op_resolver_type=resolver,
                experimental_preserve_all_tensors=preserve,
            )
            it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:  # not a FlatBuffer model, or ops it cannot prepare
        first = (str(exc).splitlines() or [""])[0][:300]
        raise EdgeLLMError(
            f"LiteRT cannot load '{path}' ({first})",
            "the file is not a valid TFLite model for this runtime: re-export the artifact",
        ) from None
    return it


@register_runner("litert")
class TFLiteRunner(Runner):
    """Run a ``.tflite`` file or a TFLite artifact.

    Args:
        model: artifact, or path to a ``.tflite`` file.
        inputs / outputs: the model's (dynamic) specs; default: the artifact's manifest, else the file's.
        num_threads: XNNPACK/interpreter threads (default 4, as on a phone's big cores).
        xnnpack: apply the XNNPACK delegate (the default of the Android interpreter).
    """

    def __init__(
        self,
        model: Any,
        *,
        inputs: list[TensorSpec] | None = None,
        outputs: list[TensorSpec] | None = None,
        num_threads: int = 4,
        xnnpack: bool = True,
        intra_op_threads: int | None = None,
        **_: Any,
    ) -> None:
        if hasattr(model, "manifest"):
            inputs = inputs or model.inputs
            outputs = outputs or model.outputs
            path = model.model_path
        else:
            path = Path(model)
        if not Path(path).is_file():
            raise EdgeLLMError(f"TFLite model '{path}' does not exist", "export one with: edgellm export")
        self.path = Path(path)
        self.num_threads = intra_op_threads or num_threads
        self.xnnpack = xnnpack
        self.it = _interpreter(self.path, self.num_threads, xnnpack)
        self.sig = self.it.get_signature_runner()
        details = self.sig.get_input_details()
        self.static = {name: [int(x) for x in d["shape"]] for name, d in details.items()}
        self.file_dtypes = {name: np.dtype(d["dtype"]) for name, d in details.items()}
        # a float input the converter folded into int8 (the first layer quantizes it) is quantized here
        self.in_quant = {
            n: (float(d["quantization"][0]), int(d["quantization"][1]))
            for n, d in details.items()
            if d["quantization"][0] and np.dtype(d["dtype"]).kind in "iu"
        }
        # the signature's outputs are output_0, output_1...: in numeric order (output_10 after output_9)
        out_details = dict(sorted(self.sig.get_output_details().items(), key=lambda kv: _natural(kv[0])))
        if inputs is None:
            inputs = [
                TensorSpec(n, self.file_dtypes[n].name, list(self.static[n])) for n in sorted(self.static)
            ]
        if outputs is None:
            outputs = [
                TensorSpec(n, np.dtype(d["dtype"]).name, [int(x) for x in d["shape"]])
                for n, d in out_details.items()
            ]
        missing = [s.name for s in inputs if s.name not in self.static]
        if missing:
            raise EdgeLLMError(
                f"the TFLite file has no input named '{missing[0]}' (it has {sorted(self.static)})",
                "re-export the artifact",
            )
        self.inputs, self.outputs = inputs, outputs
        seq_dims = [self.static[s.name][s.shape.index(_SEQ)] for s in inputs if _SEQ in s.shape]
        self.max_seq = min(seq_dims) if seq_dims else None  # longest request the file takes
        self._out_names = list(out_details)
        # an int8 graph output (a quantized last layer) is handed back dequantized, as float32
        self.out_quant = {
            n: (float(d["quantization"][0]), int(d["quantization"][1]))
            for n, d in out_details.items()
            if d["quantization"][0] and np.dtype(d["dtype"]).kind in "iu"
        }

    def describe(self) -> dict[str, Any]:
        """The runtime, its version, and which kernels run: ``xnnpack`` when the delegate took nodes of
        the graph, else ``builtin`` (asked for, or XNNPACK not applied, e.g. when cpuinfo fails)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("ai-edge-litert")
        except PackageNotFoundError:
            ver = None
        delegated = sum(d["op_name"] == "DELEGATE" for d in self.it._get_ops_details())
        return {
            "runtime": "litert",
            "version": ver,
            "kernels": "xnnpack" if delegated else "builtin",
            "xnnpack_requested": self.xnnpack,
            "threads": self.num_threads,
        }

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        specs = {s.name: s for s in self.inputs}
        batch = next(iter(feeds.values())).shape[0] if feeds else 1
        seq = None
        for name, arr in feeds.items():
            shape = specs[name].shape
            if _SEQ in shape:
                seq = arr.shape[shape.index(_SEQ)]
                limit = self.static[name][shape.index(_SEQ)]
                if seq > limit:
                    raise EdgeLLMError(
                        f"input '{name}' has {seq} positions; this TFLite file takes at most {limit}",
                        f"truncate the input, or re-export with a longer sequence (seq_len={seq})",
                    )
        file_batch = self.static[self.inputs[0].name][0]
        rows = range(0, batch, file_batch)
        parts: list[dict[str, np.ndarray]] = []
        for r in rows:
            fed = {}
            for name, arr in feeds.items():
                chunk = arr[r : r + file_batch]
                target = self.static[name]
                pad = [(0, t - c) for c, t in zip(chunk.shape, target)]
                if any(p[1] < 0 for p in pad):
                    raise EdgeLLMError(
                        f"input '{name}' has shape {list(arr.shape)}, which does not fit the file's {target}",
                        "feed the shape in the artifact's manifest (recipe.tflite.static_shapes)",
                    )
                chunk = np.pad(chunk, pad) if any(p[1] for p in pad) else chunk
                if name in self.in_quant:
                    scale, zp = self.in_quant[name]
                    info = np.iinfo(self.file_dtypes[name])
                    chunk = np.clip(np.round(chunk / scale) + zp, info.min, info.max)
                fed[name] = np.ascontiguousarray(chunk.astype(self.file_dtypes[name], copy=False))
            out = self.sig(**fed)
            for n, (scale, zp) in self.out_quant.items():
                out[n] = ((out[n].astype(np.float32) - zp) * scale).astype(np.float32)
            parts.append({n: out[n] for n in self._out_names})
        result = {}
        for spec, name in zip(self.outputs, self._out_names):
            y = np.concatenate([p[name] for p in parts], axis=0)[:batch]
            if seq is not None and _SEQ in spec.shape:
                ax = spec.shape.index(_SEQ)
                y = np.take(y, np.arange(seq), axis=ax)
            result[spec.name] = y
        return result


def inspect_ops(path: str | Path, interpreter: Any = None) -> dict[str, Any]:
    """Op counts, Flex/custom ops, int8 ops and the ops XNNPACK leaves to TFLite's reference kernels.

    The op list comes from the flatbuffer alone; the fallback set needs an interpreter with XNNPACK
    applied (``interpreter``, e.g. a :class:`TFLiteRunner`'s, or a new one). It is found from the
    delegated graph: every node whose output feeds a delegate node or the graph output without going
    through one ran outside XNNPACK.
    """
    ops = read_ops(path)
    it = interpreter if interpreter is not None else _interpreter(Path(path), 1, True)

    return {**ops, **_fallback(it)}


def read_ops(path: str | Path) -> dict[str, Any]:
    """From the flatbuffer, without running anything: op counts, Flex and custom ops, int8 ops."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model(str(path))
    graph = model.subgraphs[0]
    names = []
    flex, custom = [], []
    for op in graph.operators:
        name = fbu.opcode_to_name(model, op.opcodeIndex) or "UNKNOWN"
        if isinstance(name, bytes):
            name = name.decode()
        names.append(name)
        layer = _layer_name(graph.tensors[op.outputs[0]].name) if len(op.outputs) else "?"
        if name.startswith("Flex"):
            flex.append({"op": name, "layer": layer})
        elif model.operatorCodes[op.opcodeIndex].customCode:
            custom.append({"op": name, "layer": layer})
    int8_ops = Counter()
    for op, name in zip(graph.operators, names):
        types = {graph.tensors[i].type for i in op.inputs if i >= 0}
        if 9 in types:  # TensorType.INT8
            int8_ops[name] += 1
    return {
        "counts": dict(Counter(names).most_common()),
        "flex": flex,
        "custom": custom,
        "int8_ops": dict(int8_ops),
    }


def _fallback(it: Any) -> dict[str, Any]:
    details = it._get_ops_details()
    delegates = [d for d in details if d["op_name"] == "DELEGATE"]
    produced_by = {int(t): d for d in details if d["op_name"] != "DELEGATE" for t in d["outputs"]}
    delegate_outputs = {int(t) for d in delegates for t in d["outputs"]}
    frontier = [int(t) for d in delegates for t in d["inputs"]]
    frontier += [int(t) for t in it._interpreter.OutputIndices()]
    seen_tensors, fallback = set(), {}
    while frontier:
        t = frontier.pop()
        if t in seen_tensors or t in delegate_outputs:
            continue
        seen_tensors.add(t)
        d = produced_by.get(t)
        if d is None or d["index"] in fallback:
            continue
        fallback[d["index"]] = d
        frontier.extend(int(x) for x in d["inputs"] if x >= 0)
    if not delegates:  # nothing delegated: every op runs on the reference kernels
        fallback = {d["index"]: d for d in details}
    tensor_names = {d["index"]: d["name"] for d in it.get_tensor_details()}
    fb = [
        {
            "op": d["op_name"],
            "node": int(d["index"]),
            "layer": _layer_name(tensor_names.get(int(d["outputs"][0]), "?")) if len(d["outputs"]) else "?",
        }
        for d in sorted(fallback.values(), key=lambda d: d["index"])
    ]
    return {
        "fallback": fb,
        "delegate_partitions": len(delegates),
    }


def _natural(name: str) -> tuple[str, int]:
    m = re.match(r"(.*?)(\d+)$", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


def _layer_name(tensor_name: str | bytes) -> str:
    """``pkg.Class_attr/pkg.Class_attr2;3`` (converter scope) -> ``attr.attr2`` (the torch module path)."""
    if isinstance(tensor_name, bytes):
        tensor_name = tensor_name.decode(errors="replace")
    scope = tensor_name.split(";")[0]
    parts = [p.rsplit(".", 1)[-1] for p in scope.split("/") if p]
    attrs = [p.split("_", 1)[1] if "_" in p else p for p in parts[1:]]
    return ".".join(attrs) or scope
