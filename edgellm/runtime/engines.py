"""Step engines: one generation artifact (or a split pair) run one step at a time, holding its cache.

Every engine has the same small protocol, so :class:`~edgellm.runtime.generator.Generator` is written
once: ``context`` (positions the cache holds), ``length`` (positions in it now), ``reset()``, and
``step(ids) -> logits`` which feeds new token ids (a prompt, or one token) and returns the float32 logits
``[vocab]`` of the last one. What differs is the artifact's cache layout (``manifest["generation"]
["cache"]["layout"]``):

- ``shared``: ONNX Runtime graph whose past and present caches are one preallocated buffer
  (:class:`~edgellm.runtime.ort_generation.SharedCacheEngine`): decode copies no cache.
- ``concat``: a step graph that returns past + new keys/values (any runtime with dynamic shapes).
- ``slots``: a static-shape graph (TFLite) with a cache of ``context`` slots, one token per call.
- ``static``: an ExecuTorch program holding its cache as mutable buffers
  (:class:`~edgellm.runtime.executorch_generation.StaticCacheEngine`): a step passes only the new ids.
- a split pair (``edgellm split export --generate``): the phone half then the server half, both here,
  the hidden states crossing through the pair's codec.

Example:
    >>> eng = open_engine("out/tl-int4")          # doctest: +SKIP
    >>> logits = eng.step([0, 17, 94]); eng.length # doctest: +SKIP
    3
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgellm.errors import ArtifactError
from edgellm.runtime.base import context_full

MAKE_ONE = "make one with: edgellm export MODEL --generate -o DIR (or edgellm compress MODEL --generate ...)"


class StepEngine(Protocol):
    context: int
    length: int

    def reset(self) -> None: ...

    def step(self, ids: list[int]) -> np.ndarray: ...


class ConcatEngine:
    """A ``concat`` step graph: feeds past keys/values and keeps the presents it returns. ``first`` and
    ``out`` name its first input and output (``input_ids``/``logits`` for a whole decoder; a split
    pair's halves read or return ``hidden``)."""

    def __init__(
        self, runner: Any, gen: dict[str, Any], *, first: str = "input_ids", out: str = "logits"
    ) -> None:
        self.runner, self.gen, self.first, self.out = runner, gen, first, out
        cache = gen["cache"]
        self.past_names, self.present_names = cache["past_inputs"], cache["present_outputs"]
        self.context = int(gen["context"])
        self.shape = (1, int(gen["kv_heads"]), 0, int(gen["head_dim"]))
        self.reset()

    def reset(self) -> None:
        z = np.zeros(self.shape, np.float32)
        self.past = {p: z for p in self.past_names}
        self.length = 0

    def feed(self, x: np.ndarray) -> np.ndarray:
        """Run the new positions ``x`` (``[1, new]`` ids or ``[1, new, hidden]``); their outputs."""
        new = int(x.shape[1])
        if self.length + new > self.context:
            raise context_full(self.context, self.length, new)
        res = self.runner.run(
            {
                self.first: x,
                "attention_mask": np.ones((1, self.length + new), np.int64),
                "position_ids": np.arange(self.length, self.length + new, dtype=np.int64)[None],
                **self.past,
            }
        )
        self.past = {p: res[q] for p, q in zip(self.past_names, self.present_names)}
        self.length += new
        return res[self.out]

    def step(self, ids: list[int]) -> np.ndarray:
        return np.asarray(self.feed(np.asarray([ids], np.int64))[0, -1], np.float32)


class SlotEngine(ConcatEngine):
    """A ``slots`` graph (static shapes): one position per call into a cache of ``context`` slots."""

    def reset(self) -> None:
        z = np.zeros((self.shape[0], self.shape[1], self.context, self.shape[3]), np.float32)
        self.past = {p: z for p in self.past_names}
        self.length = 0

    def feed(self, x: np.ndarray) -> np.ndarray:
        new = int(x.shape[1])
        if self.length + new > self.context:
            raise context_full(self.context, self.length, new)
        outs = []
        for i in range(new):
            write = np.zeros((1, self.context), np.float32)
            write[0, self.length] = 1.0
            mask = np.zeros((1, self.context), np.int64)
            mask[0, : self.length + 1] = 1
            res = self.runner.run(
                {
                    self.first: x[:, i : i + 1],
                    "position_ids": np.asarray([[self.length]], np.int64),
                    "cache_mask": mask,
                    "write": write,
                    **self.past,
                }
            )
            self.past = {p: res[q] for p, q in zip(self.past_names, self.present_names)}
            self.length += 1
            outs.append(res[self.out])
        return np.concatenate(outs, axis=1)


class SplitPairEngine:
    """A split pair (``edgellm split export --generate``) run here: the phone half, the pair's codec,
    then the server half, each holding the cache of its own layers."""

    def __init__(self, folder: Path, link: dict[str, Any], *, threads: int | None = None) -> None:
        from edgellm.runtime.codecs import Codec

        arts = {role: _load_half(folder / role) for role in ("device", "server")}
        self.codec = Codec(link["codec"])
        slots = (link.get("device_cache") or {}).get("slots")
        context = int(link.get("context") or 1 << 30)
        engines = {}
        for role, (art, gen) in arts.items():
            g = {
                **link,
                "cache": {"past_inputs": gen["past_inputs"], "present_outputs": gen["present_outputs"]},
                "context": slots if role == "device" and slots else context,
            }
            runner = _runner(art, threads)
            cls = SlotEngine if role == "device" and slots else ConcatEngine
            first, out = ("input_ids", "hidden") if role == "device" else ("hidden", "logits")
            engines[role] = cls(runner, g, first=first, out=out)
        self.device, self.server = engines["device"], engines["server"]
        self.context = min(self.device.context, self.server.context)
        self.gen = link

    @property
    def length(self) -> int:
        return self.server.length

    def reset(self) -> None:
        self.device.reset()
        self.server.reset()

    def step(self, ids: list[int]) -> np.ndarray:
        if self.length + len(ids) > self.context:
            raise context_full(self.context, self.length, len(ids))
        hidden = self.device.feed(np.asarray([ids], np.int64))
        hidden = self.codec.decode(*self.codec.encode(hidden)).astype(np.float32)
        return np.asarray(self.server.feed(hidden)[0, -1], np.float32)


def _load_half(path: Path) -> tuple[Any, dict[str, Any]]:
    from edgellm.runtime.artifact import Artifact

    art = Artifact.load(path)
    gen = art.manifest.get("generation") or {}
    if "past_inputs" not in gen:
        raise ArtifactError(f"'{path}' is not a half of a split generation pair", MAKE_ONE)
    return art, gen


def _runner(art: Any, threads: int | None) -> Any:
    from edgellm.runtime import make_runner

    runtime = art.manifest["target"]["runtime"]
    opts: dict[str, Any] = {}
    if runtime == "tensorrt" and not (Path(art.path) / "model.plan").is_file():
        # no engine built here: the Q/DQ ONNX in ONNX Runtime, dequantizing to float as TensorRT does
        # (not ORT's own int8-activation MatMulNBits fusion of DequantizeLinear + MatMul)
        runtime = "onnxruntime"
        opts["session_options"] = {"session.qdq_matmulnbits_accuracy_level": "0"}
    if threads:
        key = "num_threads" if runtime in ("tflite", "litert") else "intra_op_threads"
        opts[key] = threads
    return make_runner(art, runtime, **opts)


def load_generation_artifact(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """The verified artifact at ``path`` and its ``generation`` section, or a clear error when it is not
    a generation artifact (naming the command that makes one)."""
    from edgellm.runtime.artifact import Artifact

    art = path if hasattr(path, "manifest") else Artifact.load(path)
    gen = art.manifest.get("generation")
    if not isinstance(gen, dict) or gen.get("kind") != "decoder":
        what = (
            f"a half of a split pair (give the pair's folder {Path(art.path).parent})"
            if isinstance(gen, dict) and gen.get("role")
            else "not a generation artifact: it has no key/value-cache decoder"
        )
        raise ArtifactError(f"'{art.path}' is {what}", MAKE_ONE)
    return art, gen


def open_engine(
    source: Any, *, threads: int | None = None, runtime: str | None = None, precision: str = "auto"
) -> Any:
    """The step engine of a generation artifact (path or loaded artifact) or of a split pair's folder.

    ``runtime``: ``openvino`` runs a ``concat`` artifact validated in OpenVINO (``--format openvino``)
    with its cache as OpenVINO state (:class:`~edgellm.runtime.openvino_generation.StatefulEngine`);
    default: the artifact's own runtime. ``precision``: OpenVINO's inference precision."""
    if not hasattr(source, "manifest"):
        folder = Path(source)
        link_file = folder / "generation.json"
        if link_file.is_file() and (folder / "device").is_dir():
            try:
                link = json.loads(link_file.read_text())
            except ValueError as exc:
                raise ArtifactError(f"{link_file} is not valid JSON: {exc}", "re-export the pair") from exc
            return SplitPairEngine(folder, link, threads=threads)
    art, gen = load_generation_artifact(source)
    layout = gen["cache"]["layout"]
    runtime = runtime or art.manifest["target"]["runtime"]
    if runtime == "openvino":
        from edgellm.runtime import check_validated
        from edgellm.runtime.openvino_generation import StatefulEngine

        check_validated(art.manifest, runtime, {})
        return StatefulEngine(art, gen, threads=threads, precision=precision)
    if layout == "llama.cpp":  # a GGUF file: llama.cpp keeps the cache itself
        from edgellm.runtime.llama_cpp_engine import LlamaCppEngine

        if runtime != "llama.cpp":
            raise ArtifactError(f"a GGUF artifact runs in llama.cpp, not '{runtime}'", "drop --runtime")
        eng = LlamaCppEngine(art.model_path, context=int(gen["context"]), threads=threads)
        eng.gen = gen
        return eng
    if runtime not in (art.manifest["target"]["runtime"], "onnxruntime"):
        raise ArtifactError(
            f"generation artifacts run in onnxruntime, openvino or their own runtime, not '{runtime}'",
            f"use --runtime {art.manifest['target']['runtime']}",
        )
    if layout == "shared":
        from edgellm.runtime.ort_generation import SharedCacheEngine

        eng = SharedCacheEngine(art.model_path, threads=threads)
        eng.gen = gen
        return eng
    if layout == "static":  # an ExecuTorch program that keeps its cache inside
        from edgellm.runtime.executorch_generation import StaticCacheEngine

        return StaticCacheEngine(art.model_path, gen, threads=threads)
    runner = _runner(art, threads)
    if layout == "concat":
        return ConcatEngine(runner, gen)
    if layout == "slots":
        return SlotEngine(runner, gen)
    raise ArtifactError(
        f"'{art.path}' has cache layout '{layout}', which this edgellm does not run",
        "upgrade edgellm, or re-export the artifact",
    )
