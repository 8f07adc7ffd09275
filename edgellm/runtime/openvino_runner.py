"""OpenVINO runner: edgellm's ONNX artifacts through OpenVINO's ONNX front end, or its own IR.

OpenVINO reads edgellm's ONNX files unchanged (fp32 fused graphs with ``com.microsoft`` ops, INT8
QDQ, INT4 ``MatMulNBits``, the key/value-cache step graphs) and ``--format openvino`` artifacts
(``model.xml`` + ``model.bin``). Threads, streams and the inference precision (``f32``; ``bf16`` where
the CPU has AVX-512 BF16 or AMX; ``f16`` on GPUs) are compile options; a precision the device lacks
falls back to ``f32`` with a warning, and :attr:`OpenVinoRunner.precision` says what ran.

Example:
    >>> r = OpenVinoRunner("out/minilm/model.onnx", threads=2, precision="bf16")   # doctest: +SKIP
    >>> r.run(feeds)["sentence_embedding"].shape                                   # doctest: +SKIP
    (8, 384)
"""

from __future__ import annotations

import functools
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError, require
from edgellm.runtime.base import Runner, register_runner
from edgellm.utils.specs import TensorSpec

INFERENCE_PRECISIONS = ("auto", "f32", "bf16", "f16")
_CAPABILITY = {"bf16": "BF16", "f16": "FP16", "f32": "FP32"}
_OV_DTYPES = {
    "f32": "float32",
    "f16": "float16",
    "i64": "int64",
    "i32": "int32",
    "i8": "int8",
    "u8": "uint8",
    "boolean": "bool",
    "f64": "float64",
}


def openvino() -> Any:
    """The ``openvino`` module, or a clear error naming the extra that installs it."""
    return require("openvino", "openvino", "the OpenVINO runner")


@functools.cache
def core() -> Any:
    """One OpenVINO ``Core`` per process (it holds the plugins and their thread pools)."""
    return openvino().Core()


@functools.cache
def device_precisions(device: str = "CPU") -> tuple[str, ...]:
    """Inference precisions ``device`` runs natively here (``f32`` always; ``bf16`` on CPUs with AVX-512
    BF16 or AMX; ``f16`` on GPUs and on CPUs with AMX-FP16), from OpenVINO's optimization capabilities."""
    caps = set(core().get_property(device, "OPTIMIZATION_CAPABILITIES"))
    return tuple(p for p, cap in _CAPABILITY.items() if cap in caps or p == "f32")


def resolve_precision(precision: str, device: str = "CPU") -> tuple[str, str | None]:
    """``(precision that will run, note)``: ``auto`` is the device's fastest native precision (bf16,
    else f16 on a GPU, else f32); a precision the device lacks becomes f32, and ``note`` says so."""
    if precision not in INFERENCE_PRECISIONS:
        raise EdgeLLMError(
            f"unknown OpenVINO inference precision '{precision}'",
            f"use one of: {', '.join(INFERENCE_PRECISIONS)}",
        )
    have = device_precisions(device)
    if precision == "auto":
        order = ("f16", "bf16", "f32") if device.startswith("GPU") else ("bf16", "f32")
        return next(p for p in order if p in have), None
    if precision in have:
        return precision, None
    return "f32", f"{device} has no native {precision} (capabilities: {', '.join(have)}): running f32"


def unconverted_ops(exc: BaseException) -> list[str]:
    """The op types OpenVINO's ONNX front end named as unconvertible in ``exc`` (empty if none)."""
    m = re.search(r"No conversion rule found for operations:\s*([^\n]+)", str(exc))
    return [op.strip() for op in m.group(1).split(",") if op.strip()] if m else []


def read_model(path: str | Path) -> Any:
    """Read an ONNX file or an OpenVINO IR, naming the ops the ONNX front end cannot convert."""
    path = Path(path)
    if not path.is_file():
        raise EdgeLLMError(f"model file '{path}' does not exist", "export one with: edgellm export")
    try:
        return core().read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line reports
        ops = unconverted_ops(exc)
        if ops:
            raise EdgeLLMError(
                f"OpenVINO cannot convert {', '.join(ops)} in '{path}' (no conversion rule in its ONNX front end)",
                "run this artifact in ONNX Runtime (--runtime onnxruntime), or export another recipe "
                "(e.g. int8-static instead of int8-dynamic)",
            ) from None
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:300]
        raise EdgeLLMError(
            f"OpenVINO cannot read '{path}' ({first})",
            "the file is not a model OpenVINO reads: re-export the artifact, or run it in ONNX Runtime",
        ) from None


def validated_precision(manifest: dict[str, Any]) -> str:
    """The inference precision an artifact passed parity at in OpenVINO, fastest first: its
    ``runtimes`` records, else the generation check's or the IR exporter's (f32); ``auto`` if none."""
    from edgellm.runtime import recorded_candidates

    passed = [c for c in recorded_candidates(manifest, "openvino") if c.get("passed")]
    if passed:
        return (passed[0].get("options") or {}).get("precision") or "auto"
    gen = (manifest.get("generation") or {}).get("runtime") or {}
    if gen.get("precision"):
        return gen["precision"]
    return (manifest.get("recipe") or {}).get("openvino", {}).get("validated_at") or "auto"


def compile_options(
    *, threads: int | None, streams: int, precision: str, hint: str, cache_dir: str | Path | None
) -> dict[str, Any]:
    """OpenVINO compile properties for the given settings (``precision`` already resolved)."""
    opts: dict[str, Any] = {
        "PERFORMANCE_HINT": hint,
        "NUM_STREAMS": int(streams),
        "INFERENCE_PRECISION_HINT": precision,
    }
    if threads:
        opts["INFERENCE_NUM_THREADS"] = int(threads)
    if cache_dir:
        opts["CACHE_DIR"] = str(cache_dir)
    return opts


def default_cache_dir() -> Path:
    """Where compiled blobs of ``--format openvino`` artifacts are cached: ``$EDGELLM_OPENVINO_CACHE``,
    else ``$XDG_CACHE_HOME/edgellm/openvino`` (``~/.cache/...``)."""
    env = os.environ.get("EDGELLM_OPENVINO_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgellm" / "openvino"


@register_runner("openvino")
class OpenVinoRunner(Runner):
    """Run an ONNX file, an OpenVINO IR (``.xml``) or an artifact of either in OpenVINO.

    Args:
        model: artifact, or path to a ``.onnx`` / ``.xml`` file (or an ``ov.Model``).
        threads: inference threads (``intra_op_threads`` is taken as a synonym, as for ONNX Runtime).
        streams: parallel inference streams (1: latency; more for throughput under concurrency).
        precision: ``auto`` (the artifact's recorded OpenVINO precision, else the device's fastest),
            ``f32``, ``bf16`` or ``f16``; one the device lacks falls back to f32 with a warning.
        device: OpenVINO device (``CPU``, ``GPU``...).
        hint: ``LATENCY`` or ``THROUGHPUT``.
        cache_dir: compiled-blob cache; ``auto``: :func:`default_cache_dir` for IR files, none for ONNX.
        inputs / outputs: specs to use instead of the artifact's or the file's.
    """

    def __init__(
        self,
        model: Any,
        *,
        threads: int | None = None,
        intra_op_threads: int | None = None,
        streams: int = 1,
        precision: str = "auto",
        device: str = "CPU",
        hint: str = "LATENCY",
        cache_dir: str | Path | None = "auto",
        inputs: list[TensorSpec] | None = None,
        outputs: list[TensorSpec] | None = None,
        **_: Any,
    ) -> None:
        ov = openvino()
        manifest = getattr(model, "manifest", None)
        if precision == "auto" and manifest:
            precision = validated_precision(manifest)
        self.requested_precision = precision
        self.precision, self.note = resolve_precision(precision, device)
        if self.note:
            warnings.warn(f"OpenVINO: {self.note}", RuntimeWarning, stacklevel=2)
        if isinstance(model, ov.Model):
            self.path, ovm = None, model
        else:
            self.path = Path(getattr(model, "model_path", model))
            ovm = read_model(self.path)
        if cache_dir == "auto":
            cache_dir = default_cache_dir() if self.path is not None and self.path.suffix == ".xml" else None
        if cache_dir:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
        self.device, self.threads, self.streams = device, threads or intra_op_threads, int(streams)
        self.options = compile_options(
            threads=self.threads,
            streams=self.streams,
            precision=self.precision,
            hint=hint,
            cache_dir=cache_dir,
        )
        try:
            self.compiled = core().compile_model(ovm, device, self.options)
        except Exception as exc:
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:300]
            raise EdgeLLMError(
                f"OpenVINO cannot compile '{self.path or 'model'}' for {device} ({first})",
                "run it in ONNX Runtime (--runtime onnxruntime)",
            ) from None
        graph_in = {p.get_any_name(): p for p in self.compiled.inputs}
        named = _onnx_dims(self.path) if self.path is not None and self.path.suffix == ".onnx" else {}
        declared_in = inputs or (
            [TensorSpec(**d) for d in manifest["inputs"]]
            if manifest
            else [_spec(p, named.get(p.get_any_name())) for p in self.compiled.inputs]
        )
        for spec in declared_in:
            if spec.name not in graph_in:
                raise EdgeLLMError(
                    f"'{self.path}' has no input '{spec.name}' (it has {', '.join(graph_in)})",
                    "the manifest was edited or belongs to another model: re-export the artifact",
                )
        self.inputs = list(declared_in)
        declared_out = outputs or (
            [TensorSpec(**d) for d in manifest["outputs"]]
            if manifest
            else [_spec(p, named.get(p.get_any_name())) for p in self.compiled.outputs]
        )
        self.outputs = list(declared_out)
        self._ports = [self._output_port(s.name, i) for i, s in enumerate(self.outputs)]
        self._local = threading.local()

    def _output_port(self, name: str, index: int) -> Any:
        for port in self.compiled.outputs:
            if name in port.get_names():
                return port
        if index < len(self.compiled.outputs):  # an IR written by another tool may rename outputs
            return self.compiled.outputs[index]
        raise EdgeLLMError(f"'{self.path}' has no output '{name}'", "re-export the artifact")

    def _request(self) -> Any:
        req = getattr(self._local, "request", None)
        if req is None:  # one infer request per calling thread: the server runs batches in a pool
            req = self._local.request = self.compiled.create_infer_request()
        return req

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self._request().infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return {s.name: np.asarray(res[p]) for s, p in zip(self.outputs, self._ports)}

    def describe(self) -> dict[str, Any]:
        """What ran: device, precision (and the fallback note), threads, streams."""
        return {
            "runtime": "openvino",
            "device": self.device,
            "precision": self.precision,
            "requested_precision": self.requested_precision,
            "note": self.note,
            "threads": self.threads,
            "streams": self.streams,
        }

    def close(self) -> None:
        self._local = threading.local()
        self.compiled = None


def _onnx_dims(path: Path) -> dict[str, list[Any]]:
    """The named dimensions (``batch``, ``sequence``) of an ONNX file's inputs and outputs, which
    OpenVINO's shapes do not keep; empty when the ``onnx`` package is absent."""
    try:
        import onnx
    except ImportError:
        return {}
    graph = onnx.load(str(path), load_external_data=False).graph
    return {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(graph.input) + list(graph.output)
    }


def _spec(port: Any, dims: list[Any] | None = None) -> TensorSpec:
    shape = [d.get_length() if d.is_static else f"d{i}" for i, d in enumerate(port.get_partial_shape())]
    if dims is not None and len(dims) == len(shape):
        shape = [d if d else s for d, s in zip(dims, shape)]
    dtype = _OV_DTYPES.get(port.get_element_type().get_type_name(), "float32")
    return TensorSpec(port.get_any_name(), dtype, shape)
