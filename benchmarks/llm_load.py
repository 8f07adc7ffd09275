"""The load generator of ``benchmarks/serve_llm_load.py``: C streaming clients of an OpenAI-compatible server.

Each of ``concurrency`` workers loops ``POST /v1/completions`` with ``stream: true`` (one request at a time,
keep-alive), reads the server-sent events as they arrive and stamps every chunk that carries text. The
measured window is ``[start + warmup_s, start + warmup_s + seconds]``: workers start no request after it
closes and the ones in flight run to their end. Per request sent inside the window:
TTFT = first text chunk - send, ITL = gaps between its later text chunks. Aggregate tokens/s = completion
tokens whose chunk arrived inside the window / window length, from every request (each chunk weighs
``usage.completion_tokens / text chunks`` of its request: 1 when the server sends one token per chunk).
Requests sent during the warm-up are left out of the latency figures.

Only the standard library and aiohttp (for the client itself); the parsing and the statistics are pure
functions, tested in ``tests/bench/test_llm_load.py``.

Example:
    >>> p = SSEParser()
    >>> p.feed(b'data: {"choices": [{"text": "hi"}]}\\n\\ndata: [DO')
    ['{"choices": [{"text": "hi"}]}']
    >>> p.feed(b"NE]\\n\\n")
    ['[DONE]']
    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any


class SSEParser:
    """Incremental server-sent-events parser: bytes in (any split), the ``data`` of each complete event out.

    Lines end in ``\\n``, ``\\r\\n`` or ``\\r``; an empty line ends an event; several ``data:`` lines of one
    event are joined with ``\\n``; comments (``:``) and other fields (``event:``, ``id:``) are skipped.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        out: list[str] = []
        while True:
            cut = _line_end(self._buf)
            if cut is None:
                return out
            end, nxt = cut
            line = self._buf[:end].decode("utf-8", errors="replace")
            self._buf = self._buf[nxt:]
            if not line:
                if self._data:
                    out.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)


def _line_end(buf: bytes) -> tuple[int, int] | None:
    """(end of the first line, start of the next) in ``buf``, or None while the line is incomplete."""
    n, r = buf.find(b"\n"), buf.find(b"\r")
    if r == -1 and n == -1:
        return None
    if r == -1 or (n != -1 and n < r):
        return n, n + 1
    if r + 1 == len(buf):  # a "\r" at the end: wait, a "\n" may follow
        return None
    return r, r + 2 if buf[r + 1 : r + 2] == b"\n" else r + 1


def chunk_text(obj: dict[str, Any]) -> str:
    """The text one OpenAI stream chunk carries (completions ``text`` or chat ``delta.content``), else ''."""
    choices = obj.get("choices") or []
    if not choices:
        return ""
    c = choices[0]
    text = c.get("text")
    if text is None:
        text = (c.get("delta") or {}).get("content")
    return text or ""


def percentile(xs: list[float], q: float) -> float:
    """The ``q``-th percentile of ``xs`` with linear interpolation (numpy's default); NaN when empty."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class Record:
    """One request: when it was sent, the arrival time of each chunk with text, and what the server said."""

    sent: float
    stamps: list[float] = field(default_factory=list)
    completion_tokens: int | None = None  # usage.completion_tokens, when the server sends usage
    prompt_tokens: int | None = None
    status: int = 200
    error: str | None = None
    done: bool = False  # saw data: [DONE]

    def ttft(self) -> float | None:
        return self.stamps[0] - self.sent if self.stamps else None

    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]

    def tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else len(self.stamps)


def add_event(rec: Record, data: str, at: float) -> None:
    """Apply one SSE ``data`` payload that arrived at ``at`` to ``rec``."""
    if data == "[DONE]":
        rec.done = True
        return
    obj = json.loads(data)
    if "error" in obj:  # an error after the headers went out
        err = obj["error"]
        rec.error = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        return
    if chunk_text(obj):
        rec.stamps.append(at)
    usage = obj.get("usage")
    if usage:
        rec.completion_tokens = usage.get("completion_tokens", rec.completion_tokens)
        rec.prompt_tokens = usage.get("prompt_tokens", rec.prompt_tokens)


def summarize(records: list[Record], start: float, end: float) -> dict[str, Any]:
    """The figures of the requests in ``records`` for the window [start, end] (seconds, one clock).

    tokens/s counts the tokens of every successful request that arrived inside the window (a warm-up
    request still streaming when the window opens adds its later tokens); TTFT, ITL and the request
    counts take only the requests sent inside it. Failed requests count in ``errors`` only. Times in the
    result are milliseconds.
    """

    def good(r: Record) -> bool:
        return r.error is None and r.status == 200 and bool(r.stamps) and r.done

    measured = [r for r in records if r.sent >= start]
    ok = [r for r in measured if good(r)]
    tokens = 0.0
    for r in filter(good, records):
        weight = r.tokens() / len(r.stamps)
        tokens += weight * sum(1 for t in r.stamps if start <= t <= end)
    ttft = [1e3 * r.ttft() for r in ok]  # type: ignore[operator]
    itl = [1e3 * g for r in ok for g in r.itls()]
    good = {id(r) for r in ok}
    errors = [r for r in measured if id(r) not in good]
    wall = max(end - start, 1e-9)
    return {
        "requests": len(ok),
        "errors": len(errors),
        "first_error": next((f"{r.status}: {r.error or 'stream ended early'}" for r in errors), None),
        "window_s": round(wall, 3),
        "tok_s": round(tokens / wall, 2),
        "completion_tokens": sum(r.tokens() for r in ok),
        "ttft_ms_p50": round(percentile(ttft, 50), 2),
        "ttft_ms_p99": round(percentile(ttft, 99), 2),
        "itl_ms_p50": round(percentile(itl, 50), 2),
        "itl_ms_p99": round(percentile(itl, 99), 2),
        "prompt_tokens": sorted({r.prompt_tokens for r in ok if r.prompt_tokens is not None}),
        "chunks_per_token": round(sum(len(r.stamps) for r in ok) / max(1, sum(r.tokens() for r in ok)), 3),
    }


async def _request(session: Any, url: str, body: bytes, timeout: Any) -> Record:
    rec = Record(sent=time.perf_counter())
    try:
        async with session.post(
            url, data=body, headers={"Content-Type": "application/json"}, timeout=timeout
        ) as r:
            rec.status = r.status
            if r.status != 200:
                rec.error = (await r.text())[:300]
                return rec
            parser = SSEParser()
            async for chunk in r.content.iter_any():
                at = time.perf_counter()
                for data in parser.feed(chunk):
                    add_event(rec, data, at)
    except Exception as e:  # a cut connection, a timeout: counted, not fatal
        rec.error = f"{type(e).__name__}: {e}"
    return rec


async def run_load(
    base: str,
    prompt: str | list[int],
    *,
    concurrency: int,
    seconds: float,
    warmup_s: float,
    max_tokens: int = 64,
    model: str | None = None,
    request_timeout_s: float = 600.0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Drive ``base`` (``http://host:port``) with ``concurrency`` streaming workers; return :func:`summarize`
    plus the configuration (``model`` is asked from ``GET /v1/models`` when not given)."""
    import aiohttp

    # a fresh connection per request: a keep-alive connection reused after a llama-server stream failed at
    # once here (ServerDisconnectedError); a local connect costs well under a millisecond, for every server
    conn = aiohttp.TCPConnector(limit=concurrency + 2, force_close=True)
    async with aiohttp.ClientSession(connector=conn) as s:
        if model is None:
            async with s.get(f"{base}/v1/models") as r:
                model = (await r.json())["data"][0]["id"]
        body = json.dumps(
            {
                "model": model,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
                "ignore_eos": True,
                **(extra or {}),
            }
        ).encode()
        timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        records: list[Record] = []
        t0 = time.perf_counter()
        start, end = t0 + warmup_s, t0 + warmup_s + seconds

        async def worker() -> None:
            while time.perf_counter() < end:
                rec = await _request(s, f"{base}/v1/completions", body, timeout)
                records.append(rec)
                if rec.error is not None:  # 429/503 or a cut stream: do not spin on a refusing server
                    await asyncio.sleep(0.1)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        drained = time.perf_counter()
    out = summarize(records, start, end)
    out.update(
        {
            "concurrency": concurrency,
            "model": model,
            "max_tokens": max_tokens,
            "warmup_requests": sum(1 for r in records if r.sent < start),
            "drain_s": round(max(0.0, drained - end), 2),
        }
    )
    return out
