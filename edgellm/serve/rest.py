"""KServe v2 over REST (aiohttp) on a :class:`~edgellm.serve.server.Server`: health, metadata, infer,
release and ``/metrics``, plus the split-generation sessions under ``/v2/generate/{model}``
(:mod:`edgellm.serve.generation`) and the OpenAI-compatible ``/v1`` routes (:mod:`edgellm.serve.openai_api`).
Middlewares turn every refusal into ``{"error": ...}`` with its status
(503 adds ``Retry-After``) and check the bearer token (probes stay open); the access log is aiohttp's, the
outermost layer, so every answered request (a 401, a 413, a malformed HTTP request too) is one JSON line.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from typing import Any

from edgellm._version import __version__
from edgellm.partition.wire import ACT_HEADER, STEP_HEADER, GenerationError
from edgellm.serve.auth import bearer_ok
from edgellm.serve.listener import Listener
from edgellm.serve.openai_api import TOKENS, add_openai_routes, error_body
from edgellm.serve.protocol import EXTENSIONS, ProtocolError, encode_rest, parse_rest
from edgellm.serve.replicas import add_replica_routes, session_url

access_log = logging.getLogger("edgellm.serve.access")
log = logging.getLogger("edgellm.serve")


class RestApi:
    """The REST handlers over one server (its models, generators, releases and metrics)."""

    def __init__(self, server: Any) -> None:
        self.s = server

    async def start(self) -> Any:
        """Bind the REST listener; returns the running :class:`~edgellm.serve.listener.Listener` (drained
        and closed at shutdown)."""
        from aiohttp import web

        mws = [web.middleware(_bind(f)) for f in (self._errors, self._auth)]
        app = web.Application(client_max_size=int(self.s.config.max_body_mb * 2**20), middlewares=mws)
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
        add_openai_routes(r, self.s)
        add_replica_routes(r, self)  # the same under /v2/generate/{model}/replicas/{r}/ (serve/replicas.py)
        listener = Listener(self.s, app)  # timeouts, connection cap, early 413, the SIGTERM drain
        # handler_cancellation: a client that disconnects cancels its handler, which withdraws its request
        runner = web.AppRunner(
            app,
            access_log=access_log,
            access_log_class=json_access_logger(),
            shutdown_timeout=30.0,
            handler_cancellation=True,
        )
        await runner.setup()
        return await listener.start(runner)

    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict | None = None):
        from aiohttp import web

        return web.json_response(data, status=status, headers=headers)

    def _refusal(self, request, message: str, status: int, param=None, code=None):
        """The error answer: ``{"error": message}``, or OpenAI's error object under ``/v1/``; 429 and 503
        say when to retry."""
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        if request.path.startswith("/v1/"):
            return self._json(error_body(message, status, param, code), status, headers)
        return self._json({"error": message}, status, headers)

    async def _errors(self, request, handler):
        from aiohttp import web

        try:
            return await handler(request)
        except ProtocolError as exc:
            return self._refusal(
                request, str(exc), exc.status, getattr(exc, "param", None), getattr(exc, "code", None)
            )
        except web.HTTPRequestEntityTooLarge:
            return self._refusal(request, f"request body is larger than {self.s.config.max_body_mb:g} MB", 413)
        except web.HTTPException as exc:
            code = "not_found" if exc.status == 404 else None
            return self._refusal(request, exc.reason or str(exc), exc.status, code=code)
        except (asyncio.CancelledError, ConnectionError):
            raise  # the client went away: nobody to answer
        except Exception as exc:  # a bug: still one JSON answer (and a traceback in the server's log)
            log.exception("%s %s failed", request.method, request.path)
            return self._refusal(request, f"internal error: {type(exc).__name__}: {exc} (please report it)", 500)

    async def _auth(self, request, handler):
        key = self.s.config.api_key
        open_path = request.path.startswith("/v2/health/")  # probes stay open
        if key and not open_path and not bearer_ok(request.headers.get("Authorization", ""), key):
            msg = "missing or wrong bearer token (Authorization: Bearer <key>)"
            return self._refusal(request, msg, 401, code="invalid_api_key")
        return await handler(request)

    async def _live(self, request):
        return self._json({"live": self.s.live}, 200 if self.s.live else 503)

    async def _ready(self, request):
        return self._json({"ready": self.s.ready}, 200 if self.s.ready else 503)

    async def _server_meta(self, request):
        return self._json({"name": "edgellm", "version": __version__, "extensions": EXTENSIONS})

    async def _model_meta(self, request):
        m = self.s.model(request.match_info["model"], request.match_info.get("version"))
        return self._json(m.metadata())

    async def _model_ready(self, request):
        m = self.s.model(request.match_info["model"], request.match_info.get("version"))
        ok = m.ready and not self.s.draining
        return self._json({"name": m.name, "ready": ok}, 200 if ok else 503)

    async def _release(self, request):
        name = request.match_info["model"]
        rel = self.s.releases.get(name)
        if rel is None:
            raise ProtocolError(f"model '{name}' has no traffic split (serve versions with --traffic)", 404)
        return self._json(rel.describe())

    async def _metrics(self, request):
        from aiohttp import web

        body, ctype = self.s.metrics.render()
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def _infer(self, request):
        from aiohttp import web

        m = self.s.model(request.match_info["model"], request.match_info.get("version"))
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
                m.bounds,
            )
        except ProtocolError:
            self.s.metrics.request(m.name, m.version, False, 0.0, "invalid")
            raise
        t_parsed = time.perf_counter()
        out, m = await self.s.route(m, req.feeds, pinned=bool(request.match_info.get("version")))
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
    def _generator(self, request, opening: bool = False) -> Any:
        """The request's generation service; while draining only a new session is refused (503): open
        sessions keep stepping until their clients close them (``Server._wait_for_sessions``)."""
        name = request.match_info["model"]
        g = self.s.generators.get(name)
        if g is None:
            served = ", ".join(self.s.generators) or "none"
            raise ProtocolError(f"'{name}' is not a split-generation model here (served: {served})", 404)
        if opening and self.s.draining:
            raise ProtocolError("the server is shutting down; retry on another replica", 503)
        return g

    async def _gen_call(self, fn, *args):
        try:
            res = fn(*args)
            return await res if asyncio.iscoroutine(res) else res
        except GenerationError as exc:
            raise ProtocolError(str(exc), exc.status) from exc

    async def _gen_meta(self, request):
        return self._json(self._generator(request).describe())

    async def _gen_open(self, request):
        g = self._generator(request, opening=True)
        try:
            options = json.loads(await request.read() or b"{}")
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"session options are not JSON: {exc}", 400) from exc
        if not isinstance(options, dict):
            raise ProtocolError("session options must be a JSON object", 400)
        s = await self._gen_call(g.open, options)
        body = {"session": s.id, "max_length": s.max_length, "idle_timeout_s": g.config.idle_timeout_s}
        if self.s.replica_id is not None:  # where this session's steps go (the pod that holds its cache)
            body["url"] = session_url(g.name, self.s.replica_id, s.id)
        return self._json(body, 201)

    async def _gen_step(self, request):
        g = self._generator(request)
        try:
            step = int(request.headers.get(STEP_HEADER, ""))
            meta = json.loads(request.headers.get(ACT_HEADER, ""))
        except (ValueError, RecursionError) as exc:
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


@functools.cache
def json_access_logger() -> type:
    """aiohttp's access-logger class writing one JSON line per answered request (``edgellm.serve.access``
    at INFO: method, path, status, ms, remote); made on first use, so importing this module needs no aiohttp."""
    from aiohttp.abc import AbstractAccessLogger

    class JsonAccessLogger(AbstractAccessLogger):
        @property
        def enabled(self) -> bool:  # aiohttp asks once per connection; the level is checked per line
            return True

        def log(self, request, response, time: float) -> None:
            if not self.logger.isEnabledFor(logging.INFO):
                return
            line = {
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "ms": round(time * 1000, 3),
                "remote": request.remote,
            }
            tokens = request.get(TOKENS)  # generation requests: prompt and completion token counts
            if tokens:
                line["prompt_tokens"], line["completion_tokens"] = tokens["prompt"], tokens["completion"]
            self.logger.info(json.dumps(line))

    return JsonAccessLogger


def _bind(method):
    """A plain function around a bound method (aiohttp marks middlewares with an attribute)."""

    async def mw(request, handler):
        return await method(request, handler)

    return mw
