"""The batching server: its models and lifecycle (load, warm up, start, drain on SIGTERM, stop) and the
inference both protocols share (routing over canary releases, batching, timeouts). KServe v2 over REST is
:mod:`edgellm.serve.rest`, over gRPC :mod:`edgellm.serve.grpc`; the settings :mod:`edgellm.serve.config`.

Example:
    >>> srv = Server([ModelConfig("edgellm-out/minilm-x86-server")], ServerConfig(port=8000))  # doctest: +SKIP
    >>> asyncio.run(srv.serve_forever())                                                      # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.serve.batcher import SEQ, Batcher, Draining, Overloaded
from edgellm.serve.config import ModelConfig, ServerConfig
from edgellm.serve.grpc import start_grpc
from edgellm.serve.metrics import Metrics
from edgellm.serve.protocol import InputBounds, ProtocolError, v2_datatype
from edgellm.serve.rest import RestApi

log = logging.getLogger("edgellm.serve")


@dataclass
class Model:
    name: str
    version: str
    artifact: Any
    batcher: Batcher
    ready: bool = False
    warmup: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, int | None] = field(default_factory=dict)  # per request: rows, seq, elements

    @property
    def inputs(self):
        return self.batcher.inputs

    @functools.cached_property
    def bounds(self) -> InputBounds:
        """The token-id ranges and longest sequence of its manifest: requests are checked against them."""
        return InputBounds.from_manifest(self.artifact.manifest)

    @property
    def outputs(self):
        return self.batcher.outputs

    def metadata(self) -> dict[str, Any]:
        def t(s):
            return {
                "name": s.name,
                "datatype": v2_datatype(s.dtype),
                "shape": [d if isinstance(d, int) else -1 for d in s.shape],
            }

        meta = {
            "name": self.name,
            "versions": [self.version],
            "platform": getattr(self.batcher.runners[0], "runtime", "")
            or self.artifact.manifest["target"]["runtime"],
            "inputs": [t(s) for s in self.inputs],
            "outputs": [t(s) for s in self.outputs],
        }
        split = self.artifact.manifest.get("split")
        if split:  # the server half of a split model: which plan it belongs to, so a phone half can check
            meta["parameters"] = {"split_plan_id": split["plan_id"], "split_codec": split["codec"]}
        return meta


class Server:
    """Load the models, warm them up, then serve REST and gRPC until stopped."""

    def __init__(
        self, models: list[ModelConfig], config: ServerConfig | None = None, *, replica_id: int | None = None
    ) -> None:
        from edgellm.export import Artifact
        from edgellm.runtime import make_runner, preferred_runtime
        from edgellm.serve.replicas import replica_ordinal

        self.config = cfg = config or ServerConfig()
        self.metrics = Metrics()
        self.models: dict[str, Model] = {}
        self.generators: dict[str, Any] = {}  # split-generation services, by model name
        self.llms: dict[str, Any] = {}  # whole-model generation behind the OpenAI routes, by model name
        self.started_at = time.time()
        self.versions: dict[str, dict[str, Model]] = {}  # every served version, by model name
        self.releases: dict[str, Any] = {}  # models with a traffic split
        self.live = True
        self.draining = False
        self.replica_id = replica_ordinal(replica_id)  # names this replica in session URLs (or None)
        threads = cfg.threads or max(1, (os.cpu_count() or 1) // max(1, cfg.instances))
        for mc in models:
            art = Artifact.load(mc.artifact)
            name = mc.name or art.manifest["model"]["name"]
            if mc.version in self.versions.get(name, {}):
                raise EdgeLLMError(
                    f"two models are named '{name}' with version {mc.version}",
                    "rename one with NAME=ARTIFACT, or serve versions as NAME@VERSION=ARTIFACT",
                )
            runtime, opts = (cfg.runtime, {}) if cfg.runtime else preferred_runtime(art.manifest)
            opts = {**opts, "intra_op_threads": threads}
            if runtime in ("onnxruntime", "onnxruntime-mobile") and not cfg.spin_wait:
                opts["session_options"] = {
                    "session.intra_op.allow_spinning": "0",
                    "session.inter_op.allow_spinning": "0",
                }
            gen = art.manifest.get("generation") or {}
            if gen.get("role") == "server":
                self._add_generator(name, art, make_runner(art, runtime, **opts))
                continue
            if gen.get("kind") == "decoder":
                # generation passes run back to back: ONNX Runtime's threads spin between the operators of a
                # pass (2x faster decode passes here than waking threads per operator)
                self._add_llm(name, art, threads)
                continue
            if runtime in ("onnxruntime", "onnxruntime-mobile"):  # give back what a batch of long rows grew
                opts["shrink_arena_above"] = cfg.batching.max_batch_size * 128 * len(art.manifest["inputs"])
            runners = [make_runner(art, runtime, **opts) for _ in range(max(1, cfg.instances))]
            batcher = Batcher(
                name,
                runners,
                runners[0].inputs,
                art.outputs,
                cfg.batching,
                metrics=self.metrics,
                version=mc.version,
            )
            m = Model(
                name, mc.version, art, batcher, limits=request_limits(art.manifest, batcher.inputs, cfg)
            )
            self.versions.setdefault(name, {})[mc.version] = m
            self.models.setdefault(name, m)  # the first version answers metadata and unpinned requests
        self._setup_releases()
        self._stop: asyncio.Event | None = None
        self._listener: Any = None
        self._grpc: Any = None

    def _setup_releases(self) -> None:
        from edgellm.serve.release import Release

        traffic = self.config.canary.traffic  # each split sums to 100 (CanaryConfig checks)
        for name, vs in self.versions.items():
            if len(vs) > 1 and name not in traffic:
                raise EdgeLLMError(
                    f"'{name}' is served in versions {', '.join(sorted(vs))} without a traffic split",
                    f"give --traffic {name}=VERSION:PERCENT,... (summing to 100)",
                )
        for name, weights in traffic.items():
            if name not in self.versions:
                raise EdgeLLMError(
                    f"--traffic names '{name}', which is not served", f"served: {', '.join(self.versions)}"
                )
            rel = Release(name, self.versions[name], weights, self.config.canary, self.metrics)
            self.releases[name] = rel
            self.models[name] = self.versions[name][rel.stable]

    def _add_generator(self, name: str, art: Any, runner: Any) -> None:
        from edgellm.serve.generation import GenerationService

        if name in self.generators:
            raise EdgeLLMError(f"two models are named '{name}'", "rename one with NAME=ARTIFACT")
        svc = GenerationService(name, art, runner, self.config.generation, self.metrics)
        self.generators[name] = svc
        self.metrics.sessions_open.labels(name).set_function(lambda g=svc: len(g.sessions))

    def _add_llm(self, name: str, art: Any, threads: int) -> None:
        from edgellm.models.loader import load_tokenizer
        from edgellm.runtime.batch_engines import open_batch_engine
        from edgellm.serve.llm import LLMService

        if name in self.llms or name in self.generators:
            raise EdgeLLMError(f"two models are named '{name}'", "rename one with NAME=ARTIFACT")
        tok = load_tokenizer(art.path / "tokenizer") if (art.path / "tokenizer").is_dir() else None
        if tok is None:
            raise EdgeLLMError(
                f"'{art.path}' has no tokenizer/, and the OpenAI routes take and answer text",
                "re-export from a model directory that has its tokenizer (edgellm export MODEL --generate)",
            )
        c = self.config.llm
        engine = open_batch_engine(art, c.max_batch_size, threads=threads)
        svc = LLMService(name, art, engine, c, self.metrics)
        svc.attach_tokenizer(tok)
        self.llms[name] = svc

    @property
    def ready(self) -> bool:
        return (
            self.live
            and not self.draining
            and all(m.ready for m in self._all_models())
            and all(svc.ready for svc in self.llms.values())
        )

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._stop = asyncio.Event()
        for m in self._all_models():
            m.batcher.start()
        for g in self.generators.values():
            g.start()
        for svc in self.llms.values():
            svc.start()
        self._listener = await RestApi(self).start()
        if self.config.grpc_port is not None:
            self._grpc = await start_grpc(self)
        for m in self._all_models():
            if self.config.warmup:
                m.warmup = await self._warmup(m)
            m.ready = True
        for svc in self.llms.values():
            if self.config.warmup:
                svc.warmup_info = await svc.warmup()
            svc.ready = True
        log.info("ready: %s", ", ".join([*self.models, *self.generators, *self.llms]))

    async def _warmup(self, m: Model) -> dict[str, Any]:
        """Run each instance once per batch-size bucket (1, 2, 4 ... max) before readiness turns true."""
        from edgellm.models.adapter import make_inputs

        ranges = m.artifact.manifest.get("value_ranges", {})
        sizes, b = [], 1
        while b < m.batcher.max_batch_size:
            sizes.append(b)
            b *= 2
        sizes.append(m.batcher.max_batch_size)
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        for size in sizes:
            feeds = make_inputs(m.inputs, size, 16, seed=0, int_high=ranges, padded=False)
            for r in m.batcher.runners:
                await loop.run_in_executor(m.batcher.pool, r.run, feeds)
        return {"batch_sizes": sizes, "seconds": round(time.perf_counter() - t0, 3)}

    async def shutdown(self) -> None:
        """Drain: readiness turns 503 and new work gets 503 with ``Retry-After``; open sessions finish
        (:meth:`_wait_for_sessions`); then stop accepting connections, answer every request received, and
        close the listeners and the models."""
        self.draining = True
        for svc in self.llms.values():
            svc.draining = True  # new generation requests: 503; running streams go on
        await self._wait_for_sessions(time.monotonic() + self.config.http.drain_timeout_s)
        if self._listener is not None:
            await self._listener.stop_accepting()
        for m in self._all_models():
            await m.batcher.drain()
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
        if self._listener is not None:
            await self._listener.close()
        for m in self._all_models():
            await m.batcher.stop()
        for g in self.generators.values():
            await g.stop()
        for svc in self.llms.values():
            await svc.stop()
        self.live = False

    async def _wait_for_sessions(self, deadline: float) -> None:
        """While draining, wait until no generator holds a session (each closed by its client, or freed
        after the idle timeout) and no generation request runs or waits, or ``deadline``
        (``time.monotonic()``) passes. The listener still accepts
        meanwhile, so a session's next step reaches it on a new connection."""

        def held() -> int:  # split sessions, and the generation requests running or waiting
            llm = sum(len(s.running) + len(s.waiting) for s in self.llms.values())
            return sum(len(g.sessions) for g in self.generators.values()) + llm

        if held():
            log.info(
                "draining: waiting for %d open sessions (%.0f s at most)", held(), deadline - time.monotonic()
            )
        while held() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if held():
            log.warning("drain timeout: %d sessions still open are dropped", held())

    async def serve_forever(self) -> None:
        await self.start()
        await self.wait_and_drain()

    async def wait_and_drain(self) -> None:
        """Block until SIGTERM/SIGINT (or :meth:`stop`), then drain and close."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        await self._stop.wait()
        log.info("stopping: draining accepted requests")
        await self.shutdown()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    # -- inference shared by REST and gRPC --------------------------------------------------------
    def _all_models(self) -> list[Model]:
        return [m for vs in self.versions.values() for m in vs.values()]

    def model(self, name: str, version: str | None) -> Model:
        m = self.models.get(name)
        if m is None:
            raise ProtocolError(f"unknown model '{name}'; served: {', '.join(self.models)}", 404)
        if version in (None, ""):
            return m
        vs = self.versions[name]
        if version not in vs:
            raise ProtocolError(
                f"model '{name}' has no version '{version}' (served: {', '.join(sorted(vs))})", 404
            )
        return vs[version]

    async def route(
        self, m: Model, feeds: dict[str, np.ndarray], pinned: bool
    ) -> tuple[dict[str, np.ndarray], Model]:
        """Run ``feeds`` on ``m``, or, for an unpinned request to a model with a traffic split, on the version
        the split draws; a canary that fails (error, or outputs that are not finite) is recorded and the
        stable version answers instead."""
        rel = self.releases.get(m.name)
        if rel is None or pinned:
            return await self.infer(m, feeds), m
        v = rel.pick()
        chosen = rel.versions[v]
        t0 = time.perf_counter()
        try:
            out = await self.infer(chosen, feeds)
            ok = all(
                np.isfinite(a).all() for a in out.values() if np.issubdtype(np.asarray(a).dtype, np.floating)
            )
        except ProtocolError as exc:
            if exc.status in (503, 504) and v == rel.stable:
                raise
            out, ok = None, False
        rel.record(v, ok, (time.perf_counter() - t0) * 1000.0)
        if ok:
            return out, chosen
        if v == rel.stable:
            raise ProtocolError(f"model '{m.name}' version {v} produced outputs that are not finite", 500)
        rel.counts[v]["fallbacks"] += 1
        stable = rel.versions[rel.stable]
        return await self.infer(stable, feeds), stable

    async def infer(
        self, m: Model, feeds: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], float | None]:
        if self.draining:
            raise ProtocolError("the server is shutting down; retry on another replica", 503)
        check_limits(m, feeds)
        t0 = time.perf_counter()
        try:
            out = await asyncio.wait_for(m.batcher.submit(feeds), self.config.request_timeout_s)
        except Overloaded as exc:
            self.metrics.request(m.name, m.version, False, time.perf_counter() - t0, "overloaded")
            raise ProtocolError(f"model '{m.name}' is overloaded (queue full); retry shortly", 503) from exc
        except Draining as exc:
            raise ProtocolError("the server is shutting down; retry on another replica", 503) from exc
        except asyncio.CancelledError:  # the caller went away; the batcher skips the withdrawn request
            self.metrics.request(m.name, m.version, False, time.perf_counter() - t0, "cancelled")
            raise
        except asyncio.TimeoutError as exc:
            self.metrics.request(m.name, m.version, False, time.perf_counter() - t0, "timeout")
            raise ProtocolError(
                f"request timed out after {self.config.request_timeout_s:g} s in model '{m.name}'", 504
            ) from exc
        except ProtocolError:
            raise
        except Exception as exc:
            self.metrics.request(m.name, m.version, False, time.perf_counter() - t0, "runtime")
            log.exception("model %s failed", m.name)
            raise ProtocolError(f"model '{m.name}' failed to run: {type(exc).__name__}: {exc}", 500) from exc
        self.metrics.request(m.name, m.version, True, time.perf_counter() - t0)
        return out


def request_limits(manifest: dict[str, Any], inputs: list[Any], cfg: ServerConfig) -> dict[str, int | None]:
    """One request's limits on a model (:class:`~edgellm.serve.config.LimitsConfig`, defaults filled in):
    rows from the batch size, the sequence from the model's positions, elements from both."""
    lim = cfg.limits
    rows = lim.rows(cfg.batching.max_batch_size)
    positions = manifest.get("max_sequence")
    seq = lim.max_request_seq or (positions if isinstance(positions, int) and positions > 0 else None)
    if not any(SEQ in s.shape for s in inputs):
        seq = None
    elements = lim.max_request_elements
    if elements is None:  # a request at the rows and sequence limits: per row, each input's other dims
        per_row: int | None = 0
        for s in inputs:
            dims = [d if isinstance(d, int) else seq if d == SEQ else None for d in s.shape[1:]]
            if per_row is None or None in dims:
                per_row = None
                break
            per_row += int(np.prod(dims)) if dims else 1
        elements = rows * per_row if per_row else None
    return {"rows": rows, "seq": seq, "elements": elements}


def check_limits(m: Model, feeds: dict[str, np.ndarray]) -> None:
    """413 when a request is over one of ``m.limits``, naming the limit and the flag that sets it."""
    lim = m.limits
    rows = int(next(iter(feeds.values())).shape[0]) if feeds else 0
    if lim.get("rows") and rows > lim["rows"]:
        raise ProtocolError(
            f"the request has {rows} rows; model '{m.name}' takes at most {lim['rows']} rows per request "
            "(--max-request-rows): send them in several requests",
            413,
        )
    seq = max((feeds[s.name].shape[s.shape.index(SEQ)] for s in m.inputs if SEQ in s.shape), default=0)
    if lim.get("seq") and seq > lim["seq"]:
        raise ProtocolError(
            f"the request's sequence length is {seq}; model '{m.name}' takes at most {lim['seq']} "
            "(--max-request-seq): truncate or split the text",
            413,
        )
    elements = sum(int(a.size) for a in feeds.values())
    if lim.get("elements") and elements > lim["elements"]:
        raise ProtocolError(
            f"the request has {elements} elements; model '{m.name}' takes at most {lim['elements']} per "
            "request (--max-request-elements): send fewer rows or shorter sequences",
            413,
        )


@contextlib.contextmanager
def serve_in_background(models: list[ModelConfig], **config: Any) -> Iterator[Server]:
    """A real server in a background thread with its own event loop, for scripts and tests.

    ``config`` are :class:`ServerConfig`'s fields by flat name (``max_batch_size=4``, ``max_sessions=8``,
    ``traffic={...}``: :meth:`ServerConfig.from_flat`), or whole sections (``canary=CanaryConfig(...)``).
    ``replica_id`` is :class:`Server`'s. ``port`` defaults to 0 (an ephemeral port; read it from
    ``srv.config.port``) and ``grpc_port`` to None (REST only). The server is stopped and drained when the
    block ends.

    Example:
        >>> with serve_in_background([ModelConfig("out/minilm-split/server")]) as srv:  # doctest: +SKIP
        ...     url = f"http://127.0.0.1:{srv.config.port}"
    """
    import threading

    replica_id = config.pop("replica_id", None)
    srv = Server(
        models, ServerConfig.from_flat(**{"port": 0, "grpc_port": None, **config}), replica_id=replica_id
    )
    loop = asyncio.new_event_loop()
    started, failed = threading.Event(), []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(srv.start())
        except Exception as exc:  # raised in the caller's thread below
            failed.append(exc)
            started.set()
            return
        started.set()
        loop.run_until_complete(srv._stop.wait())
        loop.run_until_complete(srv.shutdown())

    t = threading.Thread(target=run, name="edgellm-serve", daemon=True)
    t.start()
    if not started.wait(120):
        raise EdgeLLMError("the server did not start within 120 s", "see the log for what it was loading")
    if failed:
        loop.close()
        raise failed[0]
    try:
        yield srv
    finally:
        loop.call_soon_threadsafe(srv.stop)
        t.join(60)
        loop.close()
