"""ExecuTorch runner: a ``.pte`` program (XNNPACK-delegated) run in ``executorch.runtime``, as on a phone.

The program's ``forward`` takes the model's inputs positionally, in the order of the manifest's input
specs, and returns its outputs in the order of the output specs. Its shapes are static (batch 1,
sequence ``seq_len``: XNNPACK delegates a static graph in far fewer partitions than a dynamic one, and a
phone runs one request at a time): the runner pads a shorter request (padded positions are masked by
``attention_mask`` = 0, or come after every real one in a causal model), runs a batch row by row and cuts
the outputs back to the request's shape; a longer sequence is refused with the limit.

Threads: XNNPACK runs on ExecuTorch's one process-wide thread pool; ``num_threads`` resizes it
(``portable_lib._unsafe_reset_threadpool``, the only setting the Python runtime exposes): every program
in the process then runs on that many threads.

Example:
    >>> r = ExecuTorchRunner("out/minilm-pte", num_threads=2)    # doctest: +SKIP
    >>> r.run(feeds)["sentence_embedding"].shape                  # doctest: +SKIP
    (2, 384)
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError, MissingDependencyError
from edgellm.runtime.base import Runner, register_runner
from edgellm.utils.specs import TensorSpec

PTE_FILE = "model.pte"
_SEQ = "sequence"
# torch's ScalarType codes as MethodMeta reports them
_DTYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 11: "bool"}


@contextlib.contextmanager
def quiet_executorch() -> Iterator[None]:
    """Silence what importing ExecuTorch and torchao prints: torchao's "Failed to load _C_mxfp8..."
    (CUDA kernels this CPU build cannot load), torch's pytree deprecation lines, deprecation warnings and
    the C++ cpuinfo lines written straight to the stderr file descriptor. Exceptions pass through, and
    what the C++ side printed is written back to stderr when the block raises (never hidden then)."""
    from edgellm.utils.quiet import quiet

    with _quiet_fd(2), quiet("torchao", "torch", "executorch", "root"):
        yield


@contextlib.contextmanager
def _quiet_fd(fd: int) -> Iterator[None]:
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (embedded interpreters): nothing to silence
        yield
        return
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        os.dup2(sink.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            sink.seek(0)
            os.write(fd, sink.read())
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def require_executorch(purpose: str) -> None:
    """Raise :class:`MissingDependencyError` (extra ``executorch``) unless ExecuTorch imports."""
    try:
        with quiet_executorch():
            import executorch.runtime  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("executorch", "executorch", purpose) from exc


def set_threads(num_threads: int | None) -> int:
    """Resize ExecuTorch's process-wide thread pool (None: leave it); returns the threads it has."""
    with quiet_executorch():
        from executorch.extension.pybindings import portable_lib as pl

        if num_threads and num_threads != pl._threadpool_get_thread_count():
            pl._unsafe_reset_threadpool(int(num_threads))
        return int(pl._threadpool_get_thread_count())


def load_program(path: str | Path) -> Any:
    """The ``forward`` method of the program at ``path`` (or a clear error if it is not one)."""
    require_executorch("running ExecuTorch programs")
    with quiet_executorch():
        from executorch.runtime import Runtime

        try:
            program = Runtime.get().load_program(Path(path))
            method = program.load_method("forward")
        except (RuntimeError, ValueError) as exc:
            first = (str(exc).splitlines() or [""])[0][:300]
            raise EdgeLLMError(
                f"ExecuTorch cannot load '{path}' ({first})",
                "the file is not a valid .pte program for this runtime: re-export the artifact",
            ) from None
    return program, method


@register_runner("executorch")
class ExecuTorchRunner(Runner):
    """Run a ``.pte`` file or an ExecuTorch artifact.

    Args:
        model: artifact, or path to a ``.pte`` file.
        inputs / outputs: the model's specs; default: the artifact's manifest, else the program's own.
        num_threads: size of ExecuTorch's thread pool (process-wide; None: its default, one per core).
        threads / intra_op_threads: synonyms of ``num_threads`` (the names other runners take).
    """

    def __init__(
        self,
        model: Any,
        *,
        inputs: list[TensorSpec] | None = None,
        outputs: list[TensorSpec] | None = None,
        num_threads: int | None = None,
        threads: int | None = None,
        intra_op_threads: int | None = None,
        **_: Any,
    ) -> None:
        if hasattr(model, "manifest"):
            inputs = inputs or model.inputs
            outputs = outputs or model.outputs
            path = Path(model.model_path)
        else:
            path = Path(model)
        if not path.is_file():
            raise EdgeLLMError(
                f"ExecuTorch program '{path}' does not exist", "export one with: edgellm export"
            )
        self.path = path
        self.num_threads = set_threads(num_threads or threads or intra_op_threads)
        self.program, self.method = load_program(path)
        meta = self.method.metadata
        if inputs is None:
            inputs = [_spec(f"input_{i}", meta.input_tensor_meta(i)) for i in range(meta.num_inputs())]
        if outputs is None:
            outputs = [_spec(f"output_{i}", meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]
        if len(inputs) != meta.num_inputs():
            raise EdgeLLMError(
                f"the program takes {meta.num_inputs()} inputs, the specs name {len(inputs)}",
                "re-export the artifact",
            )
        self.inputs, self.outputs = list(inputs), list(outputs)
        # the program's static shapes: shorter inputs are padded up to them, a larger batch runs in rows
        self.static = {
            s.name: [int(x) for x in meta.input_tensor_meta(i).sizes()] for i, s in enumerate(self.inputs)
        }
        seq_dims = [self.static[s.name][s.shape.index(_SEQ)] for s in self.inputs if _SEQ in s.shape]
        self.max_seq = min(seq_dims) if seq_dims else None  # the longest request the program takes

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        batch = next(iter(feeds.values())).shape[0] if feeds else 1
        seq = None
        for spec in self.inputs:
            if _SEQ in spec.shape:
                ax = spec.shape.index(_SEQ)
                seq, limit = feeds[spec.name].shape[ax], self.static[spec.name][ax]
                if seq > limit:
                    raise EdgeLLMError(
                        f"input '{spec.name}' has {seq} positions; this program takes at most {limit}",
                        f"truncate the input, or re-export with a longer sequence (seq_len={seq})",
                    )
        file_batch = (
            self.static[self.inputs[0].name][0] if self.inputs and self.static[self.inputs[0].name] else 1
        )
        parts: list[list[np.ndarray]] = []
        for r in range(0, max(batch, 1), max(file_batch, 1)):
            args = []
            for spec in self.inputs:
                arr = feeds[spec.name]
                chunk = arr[r : r + file_batch] if arr.ndim else arr
                target = self.static[spec.name]
                pad = [(0, t - c) for c, t in zip(chunk.shape, target)]
                if any(p[1] < 0 for p in pad):
                    raise EdgeLLMError(
                        f"input '{spec.name}' has shape {list(arr.shape)}, which does not fit the program's {target}",
                        "feed the shapes in the artifact's manifest (recipe.executorch.file_inputs)",
                    )
                chunk = np.pad(chunk, pad) if any(p[1] for p in pad) else chunk
                args.append(torch.from_numpy(np.ascontiguousarray(chunk)))
            out = self.method.execute(args)
            parts.append([np.asarray(o.numpy()) if hasattr(o, "numpy") else np.asarray(o) for o in out])
        result = {}
        for i, spec in enumerate(self.outputs):
            y = parts[0][i] if len(parts) == 1 else np.concatenate([p[i] for p in parts], axis=0)
            y = y[:batch] if y.ndim and spec.shape and isinstance(spec.shape[0], str) else y
            if seq is not None and _SEQ in spec.shape:
                y = np.take(y, np.arange(seq), axis=spec.shape.index(_SEQ))
            result[spec.name] = y
        return result


def _spec(name: str, info: Any) -> TensorSpec:
    return TensorSpec(name, _DTYPES.get(int(info.dtype()), "float32"), [int(x) for x in info.sizes()])


__all__ = [
    "PTE_FILE",
    "ExecuTorchRunner",
    "load_program",
    "quiet_executorch",
    "require_executorch",
    "set_threads",
]
