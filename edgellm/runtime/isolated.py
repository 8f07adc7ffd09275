"""A runner whose session lives in a process of its own, and runtimes timed side by side that way.

Two runtimes in one process disturb each other (ONNX Runtime sessions run 10-50 % slower in a process
that also holds OpenVINO models, measured on this project's x86 host), so runtimes are compared each in
its own process: :class:`IsolatedRunner` is the :class:`~edgellm.runtime.Runner` interface over a child
process (parity checks run through it unchanged), and :func:`time_interleaved` times several of them in
rounds, one process at a time, rotating the order, so that drift on a noisy machine hits all alike.

Example:
    >>> with IsolatedRunner("openvino", "out/minilm/model.onnx", precision="bf16") as r:   # doctest: +SKIP
    ...     r.run(feeds)["sentence_embedding"].shape
    (8, 384)
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.runtime.base import Runner
from edgellm.utils.specs import TensorSpec

START_TIMEOUT_S = 600.0  # compiling a large model in a runtime can take minutes


def _child(conn: Any, runtime: str, model: Any, options: dict[str, Any]) -> None:
    """The child's loop: open the runner, then answer ``run`` / ``time`` / ``stop``."""
    import warnings

    warnings.simplefilter("ignore")
    try:
        from pathlib import Path

        from edgellm.runtime import make_runner

        if isinstance(model, (str, Path)) and (Path(model) / "manifest.json").is_file():
            from edgellm.runtime.artifact import Artifact

            model = Artifact.load(model)
        runner = make_runner(model, runtime, **options)
        about = runner.describe() if hasattr(runner, "describe") else {"runtime": runtime}
        if getattr(runner, "max_seq", None):  # a static-shape file: the longest request it takes
            about = {**about, "max_seq": runner.max_seq}
        conn.send(
            ("ok", ([s.to_dict() for s in runner.inputs], [s.to_dict() for s in runner.outputs], about))
        )
    except Exception as exc:
        conn.send(("error", (getattr(exc, "message", str(exc)), getattr(exc, "hint", ""))))
        return
    while True:
        try:
            cmd, args = conn.recv()
        except EOFError:
            return
        if cmd == "stop":
            runner.close()
            conn.send(("ok", None))
            return
        try:
            if cmd == "run":
                conn.send(("ok", runner.run(args)))
            elif cmd == "rss":
                conn.send(("ok", _peak_rss_mb()))
            elif cmd == "time":
                feeds, runs = args
                times = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    runner.run(feeds)
                    times.append((time.perf_counter() - t0) * 1000.0)
                conn.send(("ok", times))
        except Exception as exc:
            conn.send(("error", (getattr(exc, "message", str(exc)), getattr(exc, "hint", ""))))


def _stderr_fd() -> Any:
    """This process's stderr as a file descriptor for a child's stdout (DEVNULL if it has none)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return subprocess.DEVNULL


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory (VmHWM), MB; None where /proc is absent."""
    try:
        for line in open("/proc/self/status"):  # noqa: SIM115 - small, read once
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class IsolatedRunner(Runner):
    """``make_runner(model, runtime, **options)`` in a child interpreter (none of this process's state).

    Args:
        runtime: runner name (``onnxruntime``, ``openvino``...).
        model: artifact directory (loaded and verified in the child), model file, or anything else the
            child's :func:`make_runner` takes that pickles.
        **options: the runner's options.
    """

    def __init__(self, runtime: str, model: Any, **options: Any) -> None:
        # a fresh interpreter running only this module (multiprocessing's spawn would import the
        # caller's __main__ again, e.g. a script that imports torch, in every child)
        ours, theirs = socket.socketpair()
        self.runtime_name = self.runtime = runtime
        self._proc = subprocess.Popen(
            self.command(theirs.fileno()),
            pass_fds=[theirs.fileno()],
            env=self.environment(),
            stdout=_stderr_fd(),  # a runtime's chatter never lands in this process's stdout (--json)
        )
        theirs.close()
        self._conn = Connection(ours.detach())
        self._pending = True
        try:
            self._conn.send((runtime, model, options))
        except OSError:  # the child is gone already (its interpreter could not start)
            try:
                code = self._proc.wait(10)
            except subprocess.TimeoutExpired:
                code = None
            self.close()
            raise EdgeLLMError(
                f"the {runtime} process ended before it started (exit code {code})",
                "check the runtime's install (its message is above)",
            ) from None

    def command(self, fd: int) -> list[str]:
        """The child's command line (a subclass runs it elsewhere, e.g. under an emulator)."""
        return [sys.executable, "-m", __name__, str(fd)]

    def environment(self) -> dict[str, str] | None:
        """The child's environment (None: this process's)."""
        return None

    def _ready(self) -> None:
        if not self._pending:
            return
        self._pending = False
        if not self._conn.poll(START_TIMEOUT_S):
            self.close()
            raise EdgeLLMError(
                f"the {self.runtime_name} process did not start", "check the runtime's install"
            )
        ins, outs, about = self._reply()
        self._inputs = [TensorSpec(**d) for d in ins]
        self._outputs = [TensorSpec(**d) for d in outs]
        self.about = about

    @property  # type: ignore[override]
    def inputs(self) -> list[TensorSpec]:
        self._ready()
        return self._inputs

    @property  # type: ignore[override]
    def outputs(self) -> list[TensorSpec]:
        self._ready()
        return self._outputs

    def start(self) -> IsolatedRunner:
        """Wait for the child's runner (raises the child's error); returns ``self``."""
        self._ready()
        return self

    def _reply(self) -> Any:
        try:
            status, payload = self._conn.recv()
        except (EOFError, OSError):  # the child died: the socket is closed or reset
            code = self._proc.poll()
            raise EdgeLLMError(
                f"the {self.runtime_name} process ended unexpectedly (exit code {code})",
                "the runtime crashed on this model: run it in another runtime",
            ) from None
        if status == "error":
            message, hint = payload
            raise EdgeLLMError(message, hint or "see the runtime's message")
        return payload

    def describe(self) -> dict[str, Any]:
        self._ready()
        return dict(self.about)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._ready()
        return super().run(feeds)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._conn.send(("run", feeds))
        return self._reply()

    def time(self, feeds: Mapping[str, np.ndarray], runs: int) -> list[float]:
        """Milliseconds of ``runs`` calls on ``feeds``, timed inside the child."""
        self._ready()
        self._conn.send(("time", ({s.name: feeds[s.name] for s in self.inputs}, int(runs))))
        return self._reply()

    def peak_rss_mb(self) -> float | None:
        """The child's peak resident memory so far (the model, the runtime and its buffers), MB."""
        self._ready()
        self._conn.send(("rss", None))
        return self._reply()

    def close(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self._conn.send(("stop", None))
                self._conn.poll(10)
            except OSError:
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._conn.close()
        self._proc = None

    def __del__(self) -> None:  # a forgotten runner must not leave its process behind
        with contextlib.suppress(Exception):
            self.close()


def time_interleaved(
    runners: Mapping[str, IsolatedRunner],
    feeds: Mapping[str, np.ndarray],
    *,
    rounds: int = 5,
    runs: int = 5,
    warmup: int = 2,
    budget_s: float | None = 30.0,
) -> dict[str, dict[str, Any]]:
    """Time each runner (each in its own process) on ``feeds``: ``warmup`` calls each, then ``rounds``
    rounds of ``runs`` calls, one runner at a time, the order rotating every round. ``budget_s``: fewer
    calls per round (at least one) when the warm-up says the rounds would take longer than that.

    Returns:
        ``{name: {"p50_ms", "mean_ms", "min_ms", "samples"}}``.
    """
    names = list(runners)
    per_call = 0.0
    for n in names:
        per_call += min(runners[n].time(feeds, max(1, warmup))) / 1000.0
    if budget_s is not None and per_call * rounds * runs > budget_s:
        runs = max(1, int(budget_s / (per_call * rounds)))
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            samples[n] += runners[n].time(feeds, runs)
    return {
        n: {
            "p50_ms": round(statistics.median(s), 3),
            "mean_ms": round(statistics.fmean(s), 3),
            "min_ms": round(min(s), 3),
            "samples": len(s),
        }
        for n, s in samples.items()
    }


if __name__ == "__main__":  # the child: python -m edgellm.runtime.isolated FD
    _conn = Connection(int(sys.argv[1]))
    _child(_conn, *_conn.recv())
