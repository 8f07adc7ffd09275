"""The batching server: KServe v2 over REST (aiohttp) and gRPC (``inference.GRPCInferenceService``),
one dynamic batcher per model, Prometheus metrics, bearer-token auth, graceful drain on SIGTERM.

Example:
    >>> srv = Server([ModelConfig("edgellm-out/minilm-x86-server")], ServerConfig(port=8000))  # doctest: +SKIP
    >>> asyncio.run(srv.serve_forever())                                                      # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgellm._version import __version__
from edgellm.errors import EdgeLLMError
from edgellm.serve.batcher import Batcher, Draining, Overloaded
from edgellm.serve.metrics import Metrics
from edgellm.serve.protocol import (
    ProtocolError,
    decode_tensor,
    encode_rest,
    parse_rest,
    v2_datatype,
    validate,
)

log = logging.getLogger("edgellm.serve")
access_log = logging.getLogger("edgellm.serve.access")
EXTENSIONS = ["binary_tensor_data", "statistics"]


@dataclass
class ModelConfig:
    """One served model: an artifact directory, served under ``name`` (default: the manifest's)."""

    artifact: str | Path
    name: str | None = None
    version: str = "1"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = 8001
    max_batch_size: int = 8
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 256
    instances: int = 1
    threads: int | None = None  # per instance; default: cores // instances
    request_timeout_s: float = 30.0
    max_body_mb: float = 64.0
    api_key: str | None = None
    warmup: bool = True
    # ONNX Runtime's worker threads spin-wait for work by default. A batching server under load does better
    # without (serve_load.py, MiniLM seq 16, concurrency 64: +1 % and +17 % throughput in two runs), at
    # ~1 ms more p50 at concurrency 1; --spin-wait turns it back on for latency-bound, unbatched serving
    spin_wait: bool = False
    # split generation (the server half of a decoder with per-session caches): limits per model
    max_sessions: int = 64
    max_length: int = 512
    idle_timeout_s: float = 60.0
    # canary releases: name -> {version: percent} (percentages sum to 100), and the watch policy
    traffic: dict[str, dict[str, float]] = field(default_factory=dict)
    canary: Any = None  # a release.CanaryPolicy (default thresholds when None)


@dataclass
class Model:
    name: str
    version: str
    artifact: Any
    batcher: Batcher
    ready: bool = False
    warmup: dict[str, Any] = field(default_factory=dict)

    @property
    def inputs(self):
        return self.batcher.inputs

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
            "platform": self.artifact.manifest["target"]["runtime"],
            "inputs": [t(s) for s in self.inputs],
            "outputs": [t(s) for s in self.outputs],
        }
        split = self.artifact.manifest.get("split")
        if split:  # the server half of a split model: which plan it belongs to, so a phone half can check
            meta["parameters"] = {"split_plan_id": split["plan_id"], "split_codec": split["codec"]}
        return meta


class Server:
    """Load the models, warm them up, then serve REST and gRPC until stopped."""

    def __init__(self, models: list[ModelConfig], config: ServerConfig | None = None) -> None:
        from edgellm.export import Artifact
        from edgellm.runtime import make_runner

        self.config = cfg = config or ServerConfig()
        self.metrics = Metrics()
        self.models: dict[str, Model] = {}
        self.generators: dict[str, Any] = {}  # split-generation services, by model name
        self.versions: dict[str, dict[str, Model]] = {}  # every served version, by model name
        self.releases: dict[str, Any] = {}  # models with a traffic split
        self.live = True
        self.draining = False
        threads = cfg.threads or max(1, (os.cpu_count() or 1) // max(1, cfg.instances))
        for mc in models:
            art = Artifact.load(mc.artifact)
            name = mc.name or art.manifest["model"]["name"]
            if mc.version in self.versions.get(name, {}):
                raise EdgeLLMError(
                    f"two models are named '{name}' with version {mc.version}",
                    "rename one with NAME=ARTIFACT, or serve versions as NAME@VERSION=ARTIFACT",
                )
            runtime = art.manifest["target"]["runtime"]
            opts: dict[str, Any] = {"intra_op_threads": threads}
            if runtime in ("onnxruntime", "onnxruntime-mobile") and not cfg.spin_wait:
                opts["session_options"] = {
                    "session.intra_op.allow_spinning": "0",
                    "session.inter_op.allow_spinning": "0",
                }
            if art.manifest.get("generation", {}).get("role") == "server":
                self._add_generator(name, art, make_runner(art, **opts))
                continue
            runners = [make_runner(art, **opts) for _ in range(max(1, cfg.instances))]
            batcher = Batcher(
                name,
                runners,
                runners[0].inputs,
                art.outputs,
                max_batch_size=cfg.max_batch_size,
                max_queue_delay_s=cfg.max_queue_delay_ms / 1000.0,
                max_queue_size=cfg.max_queue_size,
                metrics=self.metrics,
                version=mc.version,
            )
            m = Model(name, mc.version, art, batcher)
            self.versions.setdefault(name, {})[mc.version] = m
            self.models.setdefault(name, m)  # the first version answers metadata and unpinned requests
        self._setup_releases()
        self._stop: asyncio.Event | None = None
        self._rest_runner: Any = None
        self._grpc: Any = None

    def _setup_releases(self) -> None:
        from edgellm.serve.release import CanaryPolicy, Release

        for name, vs in self.versions.items():
            if len(vs) > 1 and name not in self.config.traffic:
                raise EdgeLLMError(
                    f"'{name}' is served in versions {', '.join(sorted(vs))} without a traffic split",
                    f"give --traffic {name}=VERSION:PERCENT,... (summing to 100)",
                )
        for name, weights in self.config.traffic.items():
            if name not in self.versions:
                raise EdgeLLMError(
                    f"--traffic names '{name}', which is not served", f"served: {', '.join(self.versions)}"
                )
            if abs(sum(weights.values()) - 100.0) > 1e-6:
                raise EdgeLLMError(
                    f"the traffic split of '{name}' sums to {sum(weights.values()):g} %, not 100 %",
                    "make the percentages add up to 100",
                )
            rel = Release(
                name, self.versions[name], weights, self.config.canary or CanaryPolicy(), self.metrics
            )
            self.releases[name] = rel
            self.models[name] = self.versions[name][rel.stable]

    def _add_generator(self, name: str, art: Any, runner: Any) -> None:
        from edgellm.split.generation import GenerationConfig, GenerationService

        if name in self.generators:
            raise EdgeLLMError(f"two models are named '{name}'", "rename one with NAME=ARTIFACT")
        cfg = self.config
        gc = GenerationConfig(
            max_sessions=cfg.max_sessions,
            max_length=cfg.max_length,
            idle_timeout_s=cfg.idle_timeout_s,
            max_batch=cfg.max_batch_size,
            max_queue=cfg.max_queue_size,
        )
        self.generators[name] = GenerationService(name, art, runner, gc, self.metrics)

    @property
    def ready(self) -> bool:
        return self.live and not self.draining and all(m.ready for m in self._all_models())

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._stop = asyncio.Event()
        for m in self._all_models():
            m.batcher.start()
        for g in self.generators.values():
            g.start()
        await self._start_rest()
        if self.config.grpc_port is not None:
            await self._start_grpc()
        for m in self._all_models():
            if self.config.warmup:
                m.warmup = await self._warmup(m)
            m.ready = True
        log.info("ready: %s", ", ".join(self.models))

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
        """Stop accepting, answer every accepted request, then close the listeners."""
        self.draining = True
        for m in self._all_models():
            await m.batcher.drain()
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
        if self._rest_runner is not None:
            await self._rest_runner.cleanup()
        for m in self._all_models():
            await m.batcher.stop()
        for g in self.generators.values():
            await g.stop()
        self.live = False

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

    # -- REST ----------------------------------------------------------------------------------------
    async def _start_rest(self) -> None:
        from aiohttp import web

        mws = [web.middleware(_bind(f)) for f in (self._errors, self._auth, self._access)]
        app = web.Application(client_max_size=int(self.config.max_body_mb * 2**20), middlewares=mws)
        r = app.router
        r.add_get("/v2/health/live", self._live)
        r.add_get("/v2/health/ready", self._ready)
        r.add_get("/v2", self._server_meta)
        r.add_get("/v2/models/{model}", self._model_meta)
        r.add_get("/v2/models/{model}/versions/{version}", self._model_meta)
        r.add_get("/v2/models/{model}/ready", self._model_ready)
        r.add_get("/v2/models/{model}/versions/{version}/ready", self._model_ready)
        r.add_post("/v2/models/{model}/infer", self._infer)
        r.add_post("/v2/models/{model}/versions/{version}/infer", self._infer)
        r.add_get("/metrics", self._metrics)
        r.add_get("/v2/models/{model}/release", self._release)
        r.add_get("/v2/generate/{model}", self._gen_meta)
        r.add_post("/v2/generate/{model}/sessions", self._gen_open)
        r.add_post("/v2/generate/{model}/sessions/{session}/steps", self._gen_step)
        r.add_delete("/v2/generate/{model}/sessions/{session}", self._gen_close)
        # handler_cancellation: a client that disconnects cancels its handler, which withdraws its request
        self._rest_runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=30.0, handler_cancellation=True
        )
        await self._rest_runner.setup()
        site = web.TCPSite(self._rest_runner, self.config.host, self.config.port)
        await site.start()
        if self.config.port == 0:  # an ephemeral port was asked for: record the one we got
            self.config.port = site._server.sockets[0].getsockname()[1]

    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict | None = None):
        from aiohttp import web

        return web.json_response(data, status=status, headers=headers)

    async def _errors(self, request, handler):
        from aiohttp import web

        try:
            return await handler(request)
        except ProtocolError as exc:
            headers = {"Retry-After": "1"} if exc.status == 503 else None
            return self._json({"error": str(exc)}, exc.status, headers)
        except web.HTTPRequestEntityTooLarge:
            return self._json({"error": f"request body is larger than {self.config.max_body_mb:g} MB"}, 413)
        except web.HTTPException as exc:
            return self._json({"error": exc.reason or str(exc)}, exc.status)

    async def _auth(self, request, handler):
        key = self.config.api_key
        open_path = request.path.startswith("/v2/health/")  # probes stay open
        if key and not open_path and not bearer_ok(request.headers.get("Authorization", ""), key):
            return self._json({"error": "missing or wrong bearer token (Authorization: Bearer <key>)"}, 401)
        return await handler(request)

    async def _access(self, request, handler):
        if not access_log.isEnabledFor(logging.INFO):
            return await handler(request)
        t0 = time.perf_counter()
        resp = await handler(request)
        access_log.info(
            json.dumps(
                {
                    "method": request.method,
                    "path": request.path,
                    "status": resp.status,
                    "ms": round((time.perf_counter() - t0) * 1000, 3),
                    "remote": request.remote,
                }
            )
        )
        return resp

    async def _live(self, request):
        return self._json({"live": self.live}, 200 if self.live else 503)

    async def _ready(self, request):
        return self._json({"ready": self.ready}, 200 if self.ready else 503)

    async def _server_meta(self, request):
        return self._json({"name": "edgellm", "version": __version__, "extensions": EXTENSIONS})

    async def _model_meta(self, request):
        m = self.model(request.match_info["model"], request.match_info.get("version"))
        return self._json(m.metadata())

    async def _model_ready(self, request):
        m = self.model(request.match_info["model"], request.match_info.get("version"))
        ok = m.ready and not self.draining
        return self._json({"name": m.name, "ready": ok}, 200 if ok else 503)

    async def _release(self, request):
        name = request.match_info["model"]
        rel = self.releases.get(name)
        if rel is None:
            raise ProtocolError(f"model '{name}' has no traffic split (serve versions with --traffic)", 404)
        return self._json(rel.describe())

    async def _metrics(self, request):
        from aiohttp import web

        body, ctype = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def _infer(self, request):
        from aiohttp import web

        m = self.model(request.match_info["model"], request.match_info.get("version"))
        if not m.ready:
            raise ProtocolError(f"model '{m.name}' is not ready yet", 503)
        body = await request.read()  # the upload: network time, not server time
        t_arrive = time.perf_counter()
        try:
            req = parse_rest(
                body,
                request.headers.get("Inference-Header-Content-Length"),
                m.inputs,
                [o.name for o in m.outputs],
            )
        except ProtocolError:
            self.metrics.request(m.name, m.version, False, 0.0, "invalid")
            raise
        t_parsed = time.perf_counter()
        out, m = await self.route(m, req.feeds, pinned=bool(request.match_info.get("version")))
        # time spent in this server (decode + queue + batch + run), so a client can tell network from server
        timing = {
            "server_ms": round((time.perf_counter() - t_arrive) * 1000.0, 3),
            "decode_ms": round((t_parsed - t_arrive) * 1000.0, 3),
        }
        payload, head_len = encode_rest(m.name, m.version, req, out, timing)
        if head_len is None:
            return web.Response(body=payload, content_type="application/json")
        return web.Response(
            body=payload,
            headers={
                "Inference-Header-Content-Length": str(head_len),
                "Content-Type": "application/octet-stream",
            },
        )

    # -- split generation -------------------------------------------------------------------------
    def _generator(self, request) -> Any:
        name = request.match_info["model"]
        g = self.generators.get(name)
        if g is None:
            served = ", ".join(self.generators) or "none"
            raise ProtocolError(f"'{name}' is not a split-generation model here (served: {served})", 404)
        if self.draining:
            raise ProtocolError("the server is shutting down; retry on another replica", 503)
        return g

    async def _gen_call(self, fn, *args):
        from edgellm.split.generation import GenerationError

        try:
            res = fn(*args)
            return await res if asyncio.iscoroutine(res) else res
        except GenerationError as exc:
            raise ProtocolError(str(exc), exc.status) from exc

    async def _gen_meta(self, request):
        return self._json(self._generator(request).describe())

    async def _gen_open(self, request):
        g = self._generator(request)
        try:
            options = json.loads(await request.read() or b"{}")
        except ValueError as exc:
            raise ProtocolError(f"session options are not JSON: {exc}", 400) from exc
        if not isinstance(options, dict):
            raise ProtocolError("session options must be a JSON object", 400)
        s = await self._gen_call(g.open, options)
        body = {"session": s.id, "max_length": g.config.max_length, "idle_timeout_s": g.config.idle_timeout_s}
        return self._json(body, 201)

    async def _gen_step(self, request):
        from edgellm.split.generation import ACT_HEADER, STEP_HEADER

        g = self._generator(request)
        try:
            step = int(request.headers.get(STEP_HEADER, ""))
            meta = json.loads(request.headers.get(ACT_HEADER, ""))
        except ValueError as exc:
            raise ProtocolError(
                f"a step needs the {STEP_HEADER} and {ACT_HEADER} headers ({exc})", 400
            ) from exc
        if not isinstance(meta, dict):
            raise ProtocolError(f"the {ACT_HEADER} header must be a JSON object (the codec's metadata)", 400)
        body = await request.read()
        out = await self._gen_call(g.step, request.match_info["session"], step, body, meta)
        return self._json(out)

    async def _gen_close(self, request):
        g = self._generator(request)
        await self._gen_call(g.close, request.match_info["session"])
        return self._json({"closed": request.match_info["session"]})

    # -- gRPC -------------------------------------------------------------------------------------
    async def _start_grpc(self) -> None:
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        self._grpc = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", int(self.config.max_body_mb * 2**20)),
                ("grpc.max_send_message_length", int(self.config.max_body_mb * 2**20)),
            ]
        )
        service = type("GrpcService", (_GrpcService, service_pb2_grpc.GRPCInferenceServiceServicer), {})
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(service(self), self._grpc)
        port = self._grpc.add_insecure_port(f"{self.config.host}:{self.config.grpc_port}")
        self.config.grpc_port = port
        await self._grpc.start()


def bearer_ok(header: str, key: str) -> bool:
    """``Authorization: Bearer <key>`` with the right key (constant-time compare)."""
    token = header[7:] if header.startswith("Bearer ") else ""
    return hmac.compare_digest(token.encode(), key.encode())


def _bind(method):
    """A plain function around a bound method (aiohttp marks middlewares with an attribute)."""

    async def mw(request, handler):
        return await method(request, handler)

    return mw


def _grpc_status(status: int):
    import grpc

    return {
        400: grpc.StatusCode.INVALID_ARGUMENT,
        401: grpc.StatusCode.UNAUTHENTICATED,
        404: grpc.StatusCode.NOT_FOUND,
        413: grpc.StatusCode.RESOURCE_EXHAUSTED,
        503: grpc.StatusCode.UNAVAILABLE,
        504: grpc.StatusCode.DEADLINE_EXCEEDED,
    }.get(status, grpc.StatusCode.INTERNAL)


class _GrpcService:
    """``inference.GRPCInferenceService`` on the same models and batchers as REST."""

    def __init__(self, server: Server) -> None:
        self.s = server

    async def _check(self, context) -> None:
        import grpc

        key = self.s.config.api_key
        if key:
            md = dict(context.invocation_metadata() or ())
            if not bearer_ok(md.get("authorization", ""), key):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    async def ServerLive(self, request, context):
        from tritonclient.grpc import service_pb2 as pb

        return pb.ServerLiveResponse(live=self.s.live)

    async def ServerReady(self, request, context):
        from tritonclient.grpc import service_pb2 as pb

        return pb.ServerReadyResponse(ready=self.s.ready)

    async def ModelReady(self, request, context):
        from tritonclient.grpc import service_pb2 as pb

        m = self.s.models.get(request.name)
        return pb.ModelReadyResponse(ready=bool(m and m.ready and not self.s.draining))

    async def ServerMetadata(self, request, context):
        from tritonclient.grpc import service_pb2 as pb

        await self._check(context)
        return pb.ServerMetadataResponse(name="edgellm", version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):
        from tritonclient.grpc import service_pb2 as pb

        await self._check(context)
        try:
            m = self.s.model(request.name, request.version)
        except ProtocolError as exc:
            await context.abort(_grpc_status(exc.status), str(exc))
        md = m.metadata()
        tm = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=md["name"],
            versions=md["versions"],
            platform=md["platform"],
            inputs=[tm(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in md["inputs"]],
            outputs=[tm(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in md["outputs"]],
        )

    async def ModelInfer(self, request, context):
        from tritonclient.grpc import service_pb2 as pb

        await self._check(context)
        try:
            m = self.s.model(request.model_name, request.model_version)
            if not m.ready:
                raise ProtocolError(f"model '{m.name}' is not ready yet", 503)
            feeds, params = {}, {}
            raw = list(request.raw_input_contents)
            if raw and len(raw) != len(request.inputs):
                raise ProtocolError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
            for i, t in enumerate(request.inputs):
                if t.name in feeds:
                    raise ProtocolError(f"input '{t.name}' is given twice")
                p = {k: _param(v) for k, v in t.parameters.items()}
                if raw:
                    arr = decode_tensor(t.name, t.datatype, list(t.shape), raw=raw[i])
                else:
                    arr = decode_tensor(t.name, t.datatype, list(t.shape), data=_contents(t))
                feeds[t.name], params[t.name] = arr, p
            try:
                feeds = validate(feeds, m.inputs, params)
            except ProtocolError:
                self.s.metrics.request(m.name, m.version, False, 0.0, "invalid")
                raise
            out, m = await self.s.route(m, feeds, pinned=bool(request.model_version))
        except ProtocolError as exc:
            code = _overload() if "overloaded" in str(exc) else _grpc_status(exc.status)
            await context.abort(code, str(exc))
        wanted = [o.name for o in request.outputs] or [o.name for o in m.outputs]
        unknown = [n for n in wanted if n not in out]
        if unknown:
            await context.abort(_grpc_status(400), f"unknown output '{unknown[0]}'")
        resp = pb.ModelInferResponse(model_name=m.name, model_version=m.version, id=request.id)
        for n in wanted:
            arr = np.ascontiguousarray(out[n])
            resp.outputs.append(
                pb.ModelInferResponse.InferOutputTensor(
                    name=n, datatype=v2_datatype(arr.dtype), shape=list(arr.shape)
                )
            )
            resp.raw_output_contents.append(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        return resp


def _overload():
    import grpc

    return grpc.StatusCode.RESOURCE_EXHAUSTED


def _param(v) -> Any:
    which = v.WhichOneof("parameter_choice")
    return getattr(v, which) if which else None


def _contents(t) -> list:
    c = t.contents
    for f in (
        "fp32_contents",
        "int64_contents",
        "int_contents",
        "fp64_contents",
        "uint_contents",
        "uint64_contents",
        "bool_contents",
    ):
        vals = list(getattr(c, f))
        if vals:
            return vals
    return []


@contextlib.contextmanager
def serve_in_background(models: list[ModelConfig], **config: Any) -> Iterator[Server]:
    """A real server in a background thread with its own event loop, for scripts and tests.

    ``port`` defaults to 0 (an ephemeral port; read it from ``srv.config.port``) and ``grpc_port`` to
    None (REST only). The server is stopped and drained when the block ends.

    Example:
        >>> with serve_in_background([ModelConfig("out/minilm-split/server")]) as srv:  # doctest: +SKIP
        ...     url = f"http://127.0.0.1:{srv.config.port}"
    """
    import threading

    srv = Server(models, ServerConfig(**{"port": 0, "grpc_port": None, **config}))
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
