"""The REST listener under aiohttp: timeouts for slow and stalled clients, a cap on open connections, an
early 413 from ``Content-Length``, and the drain on SIGTERM that answers every request it has received.

Each connection is aiohttp's own request handler behind a thin :class:`_Conn` that keeps time:

- **headers**: from a connection's start (or the first byte of its next request) to the end of the
  request's headers, at most ``http.header_timeout_s``, else the connection is closed;
- **body**: from the headers to the end of the body, at most ``http.body_timeout_s``, else 408;
  a ``Content-Length`` over ``--max-body-mb`` is answered 413 before any of the body is read;
- **idle**: a kept-alive connection without a request for ``http.keepalive_timeout_s`` is closed;
- **cap**: beyond ``http.max_connections`` a new connection is answered 503 (``Retry-After``) and closed.

Drain (:meth:`Listener.stop_accepting`, then :meth:`Listener.close`): new connection attempts stop
reaching the server (on Linux a socket filter drops new SYNs, so a client is refused instead of being
accepted and reset), the connections already accepted are kept; every request received is answered (the
model's answer, or 503 with ``Retry-After`` once the server is draining) with ``Connection: close``;
connections that hold no request are closed after a short grace, stalled ones too, so a stalled client
never delays the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import socket
import struct
import sys
from typing import Any

from edgellm.serve.protocol import ProtocolError

log = logging.getLogger("edgellm.serve")

DRAIN_GRACE_S = 0.5  # during a drain, how long a connection without a complete request is given


class _Conn(asyncio.Protocol):
    """One client connection: aiohttp's handler ``inner``, plus the clocks and the drain's bookkeeping."""

    def __init__(self, listener: Listener, inner: Any) -> None:
        self.listener, self.inner = listener, inner
        self.transport: Any = None
        self.busy = False  # a request is being handled (its headers have arrived)
        self.pending = False  # bytes of a request that is not yet being handled
        self.refused = False
        self.close_after = False  # the answer closes the connection (a body was refused or stalled)
        self.discard = False  # the rest of what the client sends is dropped (its answer says so)
        self._timer: asyncio.TimerHandle | None = None
        self.since = 0.0  # when the current state began (loop time)

    # -- asyncio.Protocol, forwarded to aiohttp's handler ---------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        lst = self.listener
        if len(lst.conns) >= lst.http.max_connections or lst.closed:
            self.refused = True
            body = b'{"error": "too many open connections; retry shortly"}'
            transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            transport.close()
            return
        lst.conns.add(self)
        self.inner.connection_made(transport)
        self._arm(lst.http.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self.refused or self.discard:
            return
        if not self.busy and not self.pending:
            self.pending = True
            self._arm(self.listener.http.header_timeout_s)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.refused else self.inner.eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self.listener.conns.discard(self)
        self.listener._by_inner.pop(id(self.inner), None)
        if not self.refused:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()

    # -- clocks -------------------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._disarm()
        loop = self.listener.loop
        self.since = loop.time()
        self._timer = loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if not self.busy:  # headers that never completed, or an idle kept-alive connection
            self.close()

    def begin(self) -> None:
        """A request's headers are in: its handler starts (the header clock stops)."""
        self._disarm()
        self.busy, self.pending = True, False

    def end(self) -> None:
        """The handler is done: the connection idles until its next request."""
        self.busy = False
        self._arm(self.listener.http.keepalive_timeout_s)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.inner.force_close()


class Listener:
    """Serve an aiohttp ``web.AppRunner`` on the server's host and port with the protections above.

    Build it on the app before the runner is set up (it adds two middlewares: connection bookkeeping,
    outermost; the body guard, innermost), then :meth:`start` it on the runner."""

    def __init__(self, server: Any, app: Any) -> None:
        self.s = server
        self.http = server.config.http
        self.conns: set[_Conn] = set()
        self.closed = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._server: Any = None
        self._runner: Any = None
        self._by_inner: dict[int, _Conn] = {}
        self._draining: asyncio.Event | None = None
        self._reads: set[_Deadline] = set()
        app.middlewares.insert(0, _middleware(self._track))
        app.middlewares.append(_middleware(self._guard))

    async def start(self, runner: Any) -> Listener:
        """Listen (``runner`` is set up); an ephemeral port asked for (0) is written back to the config."""
        self.loop = asyncio.get_running_loop()
        self._draining = asyncio.Event()
        self._runner = runner
        cfg = self.s.config
        self._server = await self.loop.create_server(
            self._connection,
            cfg.host,
            cfg.port,
            reuse_address=True,
            backlog=min(1024, self.http.max_connections),
        )
        if cfg.port == 0:
            cfg.port = self._server.sockets[0].getsockname()[1]
        return self

    def _connection(self) -> _Conn:
        inner = self._runner.server()
        conn = _Conn(self, inner)
        self._by_inner[id(inner)] = conn
        return conn

    def _conn(self, request: Any) -> _Conn | None:
        c = self._by_inner.get(id(request.protocol))
        return c if c is not None and c.inner is request.protocol else None

    # -- middlewares ----------------------------------------------------------------------------------
    async def _track(self, request: Any, handler: Any) -> Any:
        conn = self._conn(request)
        if conn is not None:
            conn.begin()
        try:
            resp = await handler(request)
            closing = conn is not None and conn.close_after
            if self.s.draining or closing:
                resp.force_close()  # Connection: close
            if closing:  # a body left unread: dropped, no lingering to read it
                conn.discard = True
                if not request.content.is_eof():
                    request.content.feed_eof()
            return resp
        finally:
            if conn is not None:
                conn.end()

    async def _guard(self, request: Any, handler: Any) -> Any:
        """An early 413 from Content-Length; the body read under the body clock (408 when it stalls)."""
        if request.can_read_body:
            conn = self._conn(request)
            limit = int(self.s.config.max_body_mb * 2**20)
            if request.content_length is not None and request.content_length > limit:
                if conn is not None:
                    conn.close_after = True
                raise ProtocolError(
                    f"request body of {request.content_length} bytes is larger than "
                    f"{self.s.config.max_body_mb:g} MB (--max-body-mb)",
                    413,
                )
            await self._read_body(request, conn)
        return await handler(request)

    async def _read_body(self, request: Any, conn: _Conn | None) -> None:
        from aiohttp import web

        clock = _Deadline(self.http.body_timeout_s)  # in this task: a body already in is read at once
        self._reads.add(clock)
        if self._draining.is_set():
            clock.shorten(DRAIN_GRACE_S)
        try:
            await request.read()  # aiohttp keeps the body: the handler's read() has it
        except asyncio.CancelledError:
            if not clock.expired:
                raise
            clock.uncancel()
            if conn is not None:
                conn.close_after = True
            if self._draining.is_set():
                raise ProtocolError("the server is shutting down; retry on another replica", 503) from None
            raise ProtocolError(
                f"the request body did not arrive within {self.http.body_timeout_s:g} s; send it whole", 408
            ) from None
        except web.HTTPRequestEntityTooLarge as exc:
            if conn is not None:
                conn.close_after = True
            raise ProtocolError(
                f"request body is larger than {self.s.config.max_body_mb:g} MB (--max-body-mb)", 413
            ) from exc
        finally:
            clock.cancel()
            self._reads.discard(clock)

    # -- drain ----------------------------------------------------------------------------------------
    async def stop_accepting(self) -> None:
        """No new connections: new SYNs are dropped (Linux), handshakes under way finish and are accepted,
        then the listening sockets close (a later client is refused, never reset after connecting)."""
        if self._server is None or self.closed:
            return
        self._draining.set()
        for clock in self._reads:  # bodies still arriving get a short grace
            clock.shorten(DRAIN_GRACE_S)
        filtered = all(_drop_new_syns(s) for s in self._server.sockets)
        if filtered:
            await asyncio.sleep(0.1)  # connections already handshaking are accepted meanwhile
        self.closed = True
        self._server.close()

    async def close(self) -> None:
        """Answer what the connections hold, close them, and clean up the runner. Requests being handled
        are waited for (at most ``drain_timeout_s``); a connection holding no complete request gets
        :data:`DRAIN_GRACE_S` to send one, then it is closed."""
        await self.stop_accepting()
        loop = self.loop
        if loop is None:
            return
        start = loop.time()
        deadline = start + self.http.drain_timeout_s
        while self.conns and loop.time() < deadline:
            now = loop.time()
            for c in list(self.conns):
                if not c.busy and now - max(c.since, start) >= DRAIN_GRACE_S:
                    c.close()
            await asyncio.sleep(0.01)
        for c in list(self.conns):
            c.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._by_inner.clear()


class _Deadline:
    """Cancel the current task after ``seconds`` (``expired`` tells it from any other cancellation); the
    drain may bring it forward. (``asyncio.timeout`` does this from Python 3.11 on.)"""

    def __init__(self, seconds: float) -> None:
        self.task = asyncio.current_task()
        self.loop = asyncio.get_running_loop()
        self.expired = False
        self.when = self.loop.time() + seconds
        self._handle = self.loop.call_at(self.when, self._fire)

    def _fire(self) -> None:
        self.expired = True
        self.task.cancel()

    def shorten(self, seconds: float) -> None:
        when = self.loop.time() + seconds
        if when < self.when and not self.expired:
            self._handle.cancel()
            self.when = when
            self._handle = self.loop.call_at(when, self._fire)

    def cancel(self) -> None:
        self._handle.cancel()

    def uncancel(self) -> None:
        if hasattr(self.task, "uncancel"):  # Python 3.11+: the task is not being cancelled any more
            self.task.uncancel()


def _middleware(method: Any) -> Any:
    from aiohttp import web

    async def mw(request: Any, handler: Any) -> Any:
        return await method(request, handler)

    return web.middleware(mw)


_SO_ATTACH_FILTER = 26


def _drop_new_syns(sock: Any) -> bool:
    """Attach a classic BPF filter to a listening TCP socket that drops pure SYNs (new connection attempts)
    and keeps everything else; True where it took (Linux)."""
    if not sys.platform.startswith("linux") or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    code = [  # (opcode, jt, jf, k) on the TCP header
        (0x30, 0, 0, 13),  # ldb [13]           A = TCP flags
        (0x54, 0, 0, 0x12),  # and #0x12        A &= SYN | ACK
        (0x15, 0, 1, 0x02),  # jeq #0x02        a pure SYN?
        (0x06, 0, 0, 0),  # ret #0              drop it
        (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1    keep the rest
    ]
    prog = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *c) for c in code))
    fprog = struct.pack("HL", len(code), ctypes.addressof(prog))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
        return True
    return False
