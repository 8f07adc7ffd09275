"""The OpenAI-compatible API of ``edgellm serve`` for whole-model generation artifacts.

Routes (next to KServe v2; the same API key, body limit, timeouts and SIGTERM drain):

- ``GET /v1/models``, ``GET /v1/models/{model}``;
- ``POST /v1/completions``: ``prompt`` a string or token ids;
- ``POST /v1/chat/completions``: ``messages`` through the tokenizer's chat template, or, when it has none,
  the plain template ``<|role|>\\ncontent\\n`` per message, then ``<|assistant|>\\n``
  (:func:`edgellm.serve.llm.plain_chat`).

Fields: ``model``, ``max_tokens`` (or ``max_completion_tokens``; prompt + max_tokens within the context;
default: 16 for completions as OpenAI's, the rest of the context for chat), ``temperature`` (0..2, default
1), ``top_p`` (0, 1], ``seed``, ``stop`` (a string or up to 4), ``n`` (1), ``stream``,
``stream_options.include_usage``, and the extensions llama-server and vLLM share: ``top_k``,
``repetition_penalty``, ``ignore_eos``. ``stream: true`` answers server-sent events in OpenAI's chunk
format ending with ``data: [DONE]``. Anything else a client can send gets an OpenAI-style error body
``{"error": {"message", "type", "param", "code"}}`` with 400 (a bad field, named in ``param``), 401, 404
(``model_not_found``), 413, 429 or 503 (with ``Retry-After``), never a 500.

Example (curl):
    curl -N localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{"model": "tiny-llama", "messages": [{"role": "user", "content": "Hi"}], "stream": true}'
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import time
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.partition.wire import GenerationError
from edgellm.runtime.sampling import SEED_MAX, GenerationConfig
from edgellm.serve.protocol import ProtocolError

ROLES = ("system", "developer", "user", "assistant")
COMMON = {
    "model",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "n",
}
COMMON |= {"stream", "stream_options", "ignore_eos", "repetition_penalty", "user", "metadata", "store"}
COMMON |= {"presence_penalty", "frequency_penalty", "logprobs", "logit_bias", "service_tier"}
CHAT_FIELDS = COMMON | {"messages", "top_logprobs", "response_format", "parallel_tool_calls"}
COMPLETION_FIELDS = COMMON | {"prompt", "echo", "best_of", "suffix"}
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "unavailable_error",
}


class OpenAIError(ProtocolError):
    """A refused request with OpenAI's error fields (``param``: the field at fault)."""

    def __init__(self, message: str, status: int = 400, *, param: str | None = None, code: str | None = None):
        super().__init__(message, status)
        self.param, self.code = param, code


def error_body(
    message: str, status: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object for ``status``."""
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


try:  # the request key under which a generation request leaves its token counts for the access log
    from aiohttp.web import RequestKey

    TOKENS: Any = RequestKey("tokens", dict)
except ImportError:  # no aiohttp: nothing is served, the key is never used
    TOKENS = "edgellm.tokens"


def add_openai_routes(router: Any, server: Any) -> None:
    api = OpenAIApi(server)
    router.add_get("/v1/models", api.models)
    router.add_get("/v1/models/{model}", api.model)
    router.add_post("/v1/completions", api.completions)
    router.add_post("/v1/chat/completions", api.chat)


class OpenAIApi:
    def __init__(self, server: Any) -> None:
        self.s = server

    # -- models ---------------------------------------------------------------------------------
    def _card(self, name: str, svc: Any) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": int(self.s.started_at),
            "owned_by": "edgellm",
            "context_length": svc.context,
            "chat_template": "tokenizer" if svc.chat_template else "plain",
        }

    async def models(self, request):
        from aiohttp import web

        data = [self._card(n, svc) for n, svc in self.s.llms.items()]
        return web.json_response({"object": "list", "data": data})

    async def model(self, request):
        from aiohttp import web

        name = request.match_info["model"]
        svc = self._service(name)
        return web.json_response({**self._card(name, svc), "edgellm": svc.describe()})

    def _service(self, name: Any) -> Any:
        if not isinstance(name, str) or not name:
            raise OpenAIError("'model' is required: the id of a served model (GET /v1/models)", param="model")
        svc = self.s.llms.get(name)
        if svc is None:
            served = ", ".join(self.s.llms) or "none"
            raise OpenAIError(
                f"the model '{name}' does not exist here; served: {served}",
                404,
                param="model",
                code="model_not_found",
            )
        return svc

    # -- completions ----------------------------------------------------------------------------
    async def completions(self, request):
        body = await _body(request, COMPLETION_FIELDS)
        svc = self._service(body.get("model"))
        for name, ok in (("echo", False), ("best_of", 1), ("suffix", None)):
            if body.get(name, ok) not in (ok, None):
                raise OpenAIError(f"'{name}' is not supported by this server; leave it out", param=name)
        ids = _prompt_ids(body.get("prompt"), svc)
        return await self._run(request, body, svc, ids, chat=False)

    async def chat(self, request):
        body = await _body(request, CHAT_FIELDS)
        svc = self._service(body.get("model"))
        fmt = body.get("response_format")
        if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
            raise OpenAIError(
                '\'response_format\' other than {"type": "text"} is not supported by this server',
                param="response_format",
            )
        messages = _messages(body.get("messages"))
        try:
            ids = svc.chat_ids(messages)
        except GenerationError as exc:
            raise _as_openai(exc) from exc
        return await self._run(request, body, svc, ids, chat=True)

    async def _run(self, request, body: dict[str, Any], svc: Any, ids: list[int], *, chat: bool):
        cfg, ignore_eos = _config(body, svc, len(ids), chat)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise OpenAIError(f"'stream' is {stream!r}; use true or false", param="stream")
        usage_opt = _stream_options(body.get("stream_options"), stream)
        try:
            req = svc.request(ids, cfg, ignore_eos=ignore_eos)
            svc.submit(req)
        except GenerationError as exc:
            raise _as_openai(exc) from exc
        kind = "chat.completion" if chat else "text_completion"
        head = {
            "id": ("chatcmpl-" if chat else "cmpl-") + req.id,
            "created": int(time.time()),
            "model": svc.name,
        }
        request[TOKENS] = {"prompt": len(ids), "completion": 0}
        events = svc.events(req)
        async with contextlib.aclosing(events):
            if stream:
                return await _stream(
                    request, events, req, head, kind + (".chunk" if chat else ""), chat, usage_opt
                )
            text, reason = [], None
            async for ev, value in events:
                if ev == "token":
                    text.append(value)
                elif ev == "error":
                    raise _as_openai(value)
                else:
                    reason = value
        request[TOKENS]["completion"] = len(req.out)
        content = "".join(text)
        choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
        choice.update({"message": {"role": "assistant", "content": content}} if chat else {"text": content})
        from aiohttp import web

        return web.json_response({**head, "object": kind, "choices": [choice], "usage": _usage(req)})


def _usage(req: Any) -> dict[str, int]:
    p, c = len(req.prompt), len(req.out)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def _stream(request, events, req, head, kind: str, chat: bool, include_usage: bool):
    from aiohttp import web

    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    base = {**head, "object": kind}
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: Any, reason: str | None) -> bytes:
        choice = {"index": 0, "logprobs": None, "finish_reason": reason}
        choice.update({"delta": delta} if chat else {"text": delta})
        return b"data: " + json.dumps({**base, "choices": [choice], **extra}).encode() + b"\n\n"

    if chat:
        await resp.write(chunk({"role": "assistant", "content": ""}, None))
    async for ev, value in events:
        if ev == "token":
            await resp.write(chunk({"content": value} if chat else value, None))
        elif ev == "error":
            err = _as_openai(value)
            body = error_body(str(err), err.status, err.param, err.code)
            await resp.write(b"data: " + json.dumps(body).encode() + b"\n\n")
            return resp
        else:
            await resp.write(chunk({} if chat else "", value))
    request[TOKENS]["completion"] = len(req.out)
    if include_usage:
        tail = {**base, "choices": [], "usage": _usage(req)}
        await resp.write(b"data: " + json.dumps(tail).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def _as_openai(exc: GenerationError) -> OpenAIError:
    """A refusal of the service (429, 503, a chat template's 400, a failed pass) in OpenAI's terms; the
    request's own fields and the context were checked before, with their ``param``."""
    code = {429: "rate_limit_exceeded", 503: "server_overloaded", 500: "model_failed"}.get(exc.status)
    return OpenAIError(str(exc), exc.status, code=code)


async def _body(request, allowed: set[str]) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise OpenAIError(f"the request body is not JSON: {str(exc)[:200]}") from exc
    if not isinstance(body, dict):
        raise OpenAIError(f"the request body is a JSON {type(body).__name__}; send a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise OpenAIError(
            f"unrecognized request argument(s) {', '.join(map(repr, unknown))}; this server takes "
            f"{', '.join(sorted(allowed))}",
            param=unknown[0],
        )
    for name in ("tools", "tool_choice", "functions"):
        if body.get(name):
            raise OpenAIError(f"'{name}' is not supported by this server", param=name)
    return body


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(
            '\'messages\' must be a non-empty list of {"role", "content"} objects', param="messages"
        )
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise OpenAIError(
                f"{where} is a {type(m).__name__}; send an object with role and content", param=where
            )
        role = m.get("role")
        if role not in ROLES:
            raise OpenAIError(
                f"{where}.role is {role!r}; use one of {', '.join(ROLES)}", param=f"{where}.role"
            )
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            parts = []
            for j, part in enumerate(content):
                if (
                    not isinstance(part, dict)
                    or part.get("type") != "text"
                    or not isinstance(part.get("text"), str)
                ):
                    raise OpenAIError(
                        f'{where}.content[{j}] is not a text part ({{"type": "text", "text": ...}}); this model '
                        "reads text only",
                        param=f"{where}.content",
                    )
                parts.append(part["text"])
            content = "".join(parts)
        if not isinstance(content, str):
            raise OpenAIError(f"{where}.content is {content!r}; send a string", param=f"{where}.content")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    if not any(m["content"].strip() for m in out):
        raise OpenAIError("every message is empty; send some text", param="messages")
    return out


def _prompt_ids(prompt: Any, svc: Any) -> list[int]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        if not prompt:
            raise OpenAIError("'prompt' is empty; send some text", param="prompt")
        return svc.encode(prompt)
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    ):
        vocab = svc.vocab
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise OpenAIError(f"'prompt' token id {bad[0]} is outside 0..{vocab - 1}", param="prompt")
        return list(prompt)
    if isinstance(prompt, list) and len(prompt) > 1:
        raise OpenAIError("'prompt' holds several prompts; send one per request (n=1)", param="prompt")
    raise OpenAIError("'prompt' must be a string or a list of token ids", param="prompt")


def _number(
    body: dict[str, Any], name: str, default: float, lo: float, hi: float, *, open_lo: bool = False
) -> float:
    v = body.get(name)
    if v is None:
        return default
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > lo if open_lo else v >= lo) and v <= hi
    if not ok:
        span = f"({lo:g}, {hi:g}]" if open_lo else f"[{lo:g}, {hi:g}]"
        raise OpenAIError(f"'{name}' is {v!r}; use a number in {span}", param=name)
    return float(v)


def _int(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise OpenAIError(f"'{name}' is {v!r}; use an integer in {lo}..{hi}", param=name)
    return v


def _config(body: dict[str, Any], svc: Any, prompt_len: int, chat: bool) -> tuple[GenerationConfig, bool]:
    room = svc.context - prompt_len
    if room < 1:
        raise OpenAIError(
            f"the prompt has {prompt_len} tokens; this model's context is {svc.context} tokens; shorten it",
            param="messages" if chat else "prompt",
            code="context_length_exceeded",
        )
    n = _int(body, "n", 1, 1 << 30)
    if n not in (None, 1):
        raise OpenAIError(f"'n' is {n}; this server returns one choice a request (n=1)", param="n")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    mt = _int(body, key, 1, 1 << 31)
    if mt is not None and mt > room:
        raise OpenAIError(
            f"'{key}' is {mt}, but the prompt's {prompt_len} tokens leave {room} of this model's context of "
            f"{svc.context}; ask for at most {room}",
            param=key,
            code="context_length_exceeded",
        )
    max_tokens = mt if mt is not None else (room if chat else min(16, room))
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, 0.0, -2.0, 2.0) != 0.0:
            raise OpenAIError(
                f"'{name}' is not supported by this server (use repetition_penalty)", param=name
            )
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs") not in (None, 0):
        raise OpenAIError("'logprobs' are not supported by this server", param="logprobs")
    if body.get("logit_bias") not in (None, {}):
        raise OpenAIError("'logit_bias' is not supported by this server", param="logit_bias")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stop is not None and (
        not isinstance(stops, list) or len(stops) > 4 or any(not isinstance(s, str) or not s for s in stops)
    ):
        raise OpenAIError(f"'stop' is {stop!r}; use a non-empty string or a list of up to 4", param="stop")
    seed = _int(body, "seed", -(2**63), SEED_MAX)
    ignore = body.get("ignore_eos", False)
    if not isinstance(ignore, bool):
        raise OpenAIError(f"'ignore_eos' is {ignore!r}; use true or false", param="ignore_eos")
    try:
        cfg = GenerationConfig(
            max_new_tokens=max_tokens,
            temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
            top_p=_number(body, "top_p", 1.0, 0.0, 1.0, open_lo=True),
            top_k=_int(body, "top_k", 0, 1 << 30) or 0,
            repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.0, 10.0, open_lo=True),
            stop=tuple(stops or ()),
            seed=(seed % (SEED_MAX + 1)) if seed is not None else secrets.randbits(63),
        )
    except EdgeLLMError as exc:
        raise OpenAIError(str(exc)) from exc
    return cfg, ignore


def _stream_options(opts: Any, stream: bool) -> bool:
    if opts is None:
        return False
    if not stream:
        raise OpenAIError("'stream_options' is only allowed with stream: true", param="stream_options")
    if not isinstance(opts, dict) or set(opts) - {"include_usage", "continuous_usage_stats"}:
        raise OpenAIError(
            f"'stream_options' is {opts!r}; use {{\"include_usage\": true}}", param="stream_options"
        )
    inc = opts.get("include_usage", False)
    if not isinstance(inc, bool):
        raise OpenAIError(
            f"'stream_options.include_usage' is {inc!r}; use true or false", param="stream_options"
        )
    return inc
