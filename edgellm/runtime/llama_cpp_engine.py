"""llama.cpp as a step engine: a GGUF generation artifact run by llama.cpp itself (llama-cpp-python).

:class:`LlamaCppEngine` has the interface of every edgellm step engine (``reset``, ``step(ids) ->
logits of the last position``, ``length``, ``context``), so :class:`~edgellm.runtime.Generator`,
``edgellm generate`` and ``edgellm bench --generate`` run GGUF artifacts as they run the others; the
key/value cache lives inside llama.cpp (float16, llama.cpp's default).

llama-cpp-python builds llama.cpp from its sdist at install time (several minutes with cmake and gcc),
so it is its own extra, ``llamacpp`` (``make setup-llama``). ``$LLAMA_CPP_LIB_PATH`` points the bindings
at a llama.cpp built elsewhere (a folder with ``libllama.so``), as llama-cpp-python documents.

Example:
    >>> eng = LlamaCppEngine("out/tl-q4/model.gguf", context=256)      # doctest: +SKIP
    >>> eng.step([0, 17, 42]).shape                                     # doctest: +SKIP
    (4096,)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError, MissingDependencyError
from edgellm.runtime.base import context_full

PURPOSE = (
    "running GGUF files in llama.cpp (llama-cpp-python builds llama.cpp when installed: make setup-llama)"
)


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python can be imported here (nothing is imported)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _llama_cpp() -> Any:
    if not llama_cpp_available():
        raise MissingDependencyError("llama-cpp-python", "llamacpp", PURPOSE)
    with _quiet_native():
        import llama_cpp

    return llama_cpp


@contextlib.contextmanager
def _quiet_native():
    """Send llama.cpp's own stderr chatter (model loading, context setup) to /dev/null for the block."""
    try:
        fd = os.dup(2)
    except OSError:  # no stderr to redirect
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)


class LlamaCppEngine:
    """A GGUF file in llama.cpp, one sequence, logits of the last fed position per :meth:`step`."""

    def __init__(
        self, path: str | Path, *, context: int, threads: int | None = None, batch: int = 512
    ) -> None:
        llama_cpp = _llama_cpp()
        path = Path(path)
        if not path.is_file():
            raise EdgeLLMError(f"GGUF file {path} does not exist", "give the artifact folder's model.gguf")
        self.context = int(context)
        threads = int(threads or os.cpu_count() or 1)
        try:
            with _quiet_native():
                self.llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self.context,
                    n_batch=min(batch, self.context),
                    n_threads=threads,
                    n_threads_batch=threads,
                    logits_all=False,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            raise EdgeLLMError(
                f"llama.cpp could not load {path}: {exc}",
                "re-export the GGUF file with this edgellm; llama.cpp's own log: set EDGELLM_LLAMA_VERBOSE=1",
            ) from exc
        self.n_vocab = int(self.llm.n_vocab())
        self.threads = threads
        self.length = 0
        with _quiet_native():  # llama.cpp sizes its compute buffers on the first decode: not the user's TTFT
            self.llm.eval([int(self.llm.token_bos()) if self.llm.token_bos() >= 0 else 0])
        self.reset()

    def reset(self) -> None:
        self.llm.reset()
        self.length = 0

    def step(self, ids: list[int]) -> np.ndarray:
        """Feed ``ids`` after the current cache; return the logits after the last of them (float32)."""
        ids = [int(i) for i in ids]
        if not ids:
            raise EdgeLLMError("step() needs at least one token id", "pass the prompt's ids")
        if self.length + len(ids) > self.context:
            raise context_full(self.context, self.length, len(ids))
        bad = [i for i in ids if not 0 <= i < self.n_vocab]
        if bad:
            raise EdgeLLMError(
                f"token id {bad[0]} is outside the vocabulary (0..{self.n_vocab - 1})", "check the ids"
            )
        self.llm.eval(ids)
        self.length += len(ids)
        ptr = self.llm._ctx.get_logits()  # the last position's row (logits_all is off)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float32, copy=True)

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's own tokens of ``text`` (no BOS, special tokens as text)."""
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def detokenize(self, ids: list[int]) -> str:
        return self.llm.detokenize([int(i) for i in ids]).decode("utf-8", errors="replace")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llm.close()
