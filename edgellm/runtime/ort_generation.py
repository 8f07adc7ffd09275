"""Step a generation graph in ONNX Runtime with one key/value cache that never moves.

The graph (``edgellm.export.decoder_graph``) takes ``input_ids`` [1, new], ``attention_mask`` [1, past + new]
and per layer ``past_key_{i}`` / ``past_value_{i}`` [1, kv_heads, context, head_dim], and writes the new
keys and values into ``present_key_{i}`` / ``present_value_{i}`` of the same shape. The engine allocates
those buffers once, binds each past and its present to the SAME ``OrtValue`` with IOBinding
(GroupQueryAttention then appends in place), and binds the decode logits to a preallocated buffer, so a
decode step copies neither the cache nor the logits.

Example:
    >>> eng = SharedCacheEngine("out/decoder.onnx", threads=2)          # doctest: +SKIP
    >>> logits = eng.step(prompt_ids)                                    # prefill -> [vocab]  # doctest: +SKIP
    >>> logits = eng.step([int(logits.argmax())])                        # one decode step   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError, require


class SharedGraph:
    """A shared-cache generation graph opened in ONNX Runtime and checked: its session, its cache inputs
    (``past``: ``past_key_i``, ``past_value_i`` in layer order), their shape and the logits it returns."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
        session_options: dict[str, str] | None = None,
    ) -> None:
        ort = self.ort = require("onnxruntime", "onnx", "the ONNX Runtime generation engine")
        path = Path(model_path)
        if not path.is_file():
            raise EdgeLLMError(
                f"generation graph '{path}' does not exist",
                "build one with edgellm.export.decoder_graph.build_decoder_graph",
            )
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = int(threads)
        for k, v in (session_options or {}).items():
            so.add_session_config_entry(k, str(v))
        self.session = ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])
        names = {i.name: i for i in self.session.get_inputs()}
        keys = sorted((n for n in names if n.startswith("past_key_")), key=lambda n: int(n.rsplit("_", 1)[1]))
        if "input_ids" not in names or "attention_mask" not in names or not keys:
            raise EdgeLLMError(
                f"'{path}' is not a shared-cache generation graph",
                "build one with edgellm.export.decoder_graph.build_decoder_graph",
            )
        shape = names[keys[0]].shape
        if not all(isinstance(d, int) for d in shape[1:]):
            raise EdgeLLMError(
                f"'{path}' has a dynamic cache length {shape}", "build it with a fixed context"
            )
        _, self.kv_heads, self.context, self.head_dim = shape
        self.past = [n for k in keys for n in (k, k.replace("past_key_", "past_value_", 1))]
        self.vocab = int(self.session.get_outputs()[0].shape[-1])
        self.last_only = self.session.get_outputs()[0].shape[1] == 1


class SharedCacheEngine:
    """Batch-1 prefill/decode over a shared-buffer generation graph.

    Args:
        model_path: the ``.onnx`` file (external data beside it is found by ONNX Runtime).
        threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
        providers: execution providers, default CPU.
        session_options: ONNX Runtime session config entries (``session.intra_op.allow_spinning``: ``0``).

    Attributes:
        context: positions the cache holds. length: positions now in the cache.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
        session_options: dict[str, str] | None = None,
    ) -> None:
        g = SharedGraph(model_path, threads=threads, providers=providers, session_options=session_options)
        ort, self.session, self.context, self.vocab, self.last_only = (
            g.ort,
            g.session,
            g.context,
            g.vocab,
            g.last_only,
        )
        kv_heads, head_dim = g.kv_heads, g.head_dim
        self.length = 0
        ov = ort.OrtValue
        self._ort = ort
        self.caches: list[Any] = []
        self.binding = self.session.io_binding()
        for n in g.past:  # past and present share one buffer
            buf = ov.ortvalue_from_shape_and_type([1, kv_heads, self.context, head_dim], np.float32, "cpu", 0)
            self.binding.bind_ortvalue_input(n, buf)
            self.binding.bind_ortvalue_output(n.replace("past_", "present_", 1), buf)
            self.caches.append(buf)
        self._mask = np.ones((1, self.context), np.int64)
        self._ids1 = np.zeros((1, 1), np.int64)
        self._ids1_ov = ov.ortvalue_from_numpy(self._ids1)
        self._logits1 = np.zeros((1, 1, self.vocab), np.float32)
        self._logits1_ov = ov.ortvalue_from_numpy(self._logits1)
        self._bound_single = False

    def reset(self) -> None:
        """Forget the cache (its buffers are reused; positions past ``length`` are never read)."""
        self.length = 0

    def step(self, ids: list[int]) -> np.ndarray:
        """Feed ``ids`` (prefill: many, decode: one); float32 logits [vocab] of the last one.

        The returned array is the engine's own buffer, overwritten by the next step: copy it to keep it."""
        n = len(ids)
        if n == 0:
            raise EdgeLLMError("step() got no token ids", "pass at least one id")
        total = self.length + n
        if total > self.context:
            raise EdgeLLMError(
                f"{self.length} cached + {n} new positions exceed the context of {self.context}",
                "shorten the prompt or the generation, or build the graph with a larger context",
            )
        bind = self.binding
        single = n == 1 or self.last_only
        if n == 1:
            self._ids1[0, 0] = ids[0]
            bind.bind_ortvalue_input("input_ids", self._ids1_ov)
        else:
            bind.bind_cpu_input("input_ids", np.asarray([ids], dtype=np.int64))
        bind.bind_cpu_input("attention_mask", self._mask[:, :total])
        if single and not self._bound_single:
            bind.bind_ortvalue_output("logits", self._logits1_ov)
            self._bound_single = True
        elif not single:  # prefill of a graph with every position's logits
            out = np.empty((1, n, self.vocab), np.float32)
            bind.bind_ortvalue_output("logits", self._ort.OrtValue.ortvalue_from_numpy(out))
            self._bound_single = False
        self.session.run_with_iobinding(bind)
        self.length = total
        return self._logits1[0, 0] if single else out[0, -1]
