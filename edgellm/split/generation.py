"""Split generation sessions: the phone holds the cache of its blocks, the server the cache of its blocks
per session, and the server batches the decode steps of many phones.

Protocol (REST, under ``/v2/generate/{model}``, served by ``edgellm serve`` next to KServe v2):

- ``POST .../sessions`` with ``{"temperature": 0, "top_k": 0, "seed": 0}`` opens a session:
  ``201 {"session", "max_length", "idle_timeout_s"}``; ``429`` when the server holds its maximum of
  sessions (its cache memory bound).
- ``POST .../sessions/{id}/steps`` carries one step: the body is the hidden states of the new positions
  encoded by the codec (``fp16`` / ``int8``), the ``Edgellm-Activation`` header the codec's metadata
  and ``Edgellm-Step`` the step number (0: the prompt's prefill, then 1, 2... one token each). The answer
  is ``{"token", "step", "length", "server_ms"}``: the next token, greedy or sampled with the session's
  seed.
- ``DELETE .../sessions/{id}`` frees the session; an idle session is freed after ``idle_timeout_s``
  (a phone that disappears mid-generation loses nothing but its session).

Errors: an unknown or expired session (404), a step out of order or a second step while one runs (409),
a cache longer than ``max_length`` or a decode step of more than one token (400), the session limit
(429), the decode queue full (503, ``Retry-After``).

The server runs prefills one session at a time and decode steps in a continuous batch: every pass takes
whatever sessions have a step waiting (up to ``max_batch``), left-pads their caches to the longest with
masked slots, runs the server half once and hands each session its token and its grown cache; sessions
join and leave between passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError

STEP_HEADER = "Edgellm-Step"
ACT_HEADER = "Edgellm-Activation"


class GenerationError(Exception):
    """A refused generation request: the message and the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class GenerationConfig:
    max_sessions: int = 64
    max_length: int = 512  # prompt + generated positions a session's cache may hold
    idle_timeout_s: float = 60.0
    max_batch: int = 32
    max_queue: int = 256


@dataclass
class Session:
    id: str
    cache: list[np.ndarray]  # per past input of the server half: [1, kv_heads, length, head_dim]
    temperature: float
    top_k: int
    rng: np.random.Generator
    length: int = 0
    step: int = 0
    busy: bool = False
    last_used: float = field(default_factory=time.monotonic)


def pick(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    """The next token from one position's logits: argmax at temperature 0, else a seeded sample."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < len(z):
        cut = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cut, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(rng.choice(len(p), p=p))


class GenerationService:
    """The server half of a split decoder with per-session caches and a continuous decode batch."""

    def __init__(
        self, name: str, artifact: Any, runner: Any, config: GenerationConfig, metrics: Any = None
    ) -> None:
        from edgellm.partition.codecs import Codec

        self.name, self.artifact, self.runner, self.config = name, artifact, runner, config
        gen = artifact.manifest["generation"]
        self.info = gen
        self.past_names: list[str] = gen["past_inputs"]
        self.present_names: list[str] = gen["present_outputs"]
        self.kv_heads, self.head_dim = int(gen["kv_heads"]), int(gen["head_dim"])
        self.codecs = {c: Codec(c) for c in ("fp32", "fp16", "int8")}
        self.sessions: dict[str, Session] = {}
        self.queue: asyncio.Queue | None = None
        self.metrics = metrics
        self.stats = {"decode_passes": 0, "decode_steps": 0, "max_batch_seen": 0, "prefills": 0, "expired": 0}
        self._tasks: list[asyncio.Task] = []
        self._lock: asyncio.Lock | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.queue = asyncio.Queue(self.config.max_queue)
        self._lock = asyncio.Lock()  # one pass of the server half at a time (prefill or decode batch)
        self._tasks = [asyncio.create_task(self._decode_loop()), asyncio.create_task(self._expire_loop())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        while self.queue is not None and not self.queue.empty():  # waiting steps hear why, not a hang
            _, _, fut = self.queue.get_nowait()
            if not fut.done():
                fut.set_exception(
                    GenerationError("the server is shutting down; retry on another replica", 503)
                )
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.sessions.clear()

    def describe(self) -> dict[str, Any]:
        c = self.config
        per_position = 4 * len(self.past_names) * self.kv_heads * self.head_dim  # fp32 keys and values
        return {
            "name": self.name,
            "sessions": len(self.sessions),
            "max_sessions": c.max_sessions,
            "max_length": c.max_length,
            "idle_timeout_s": c.idle_timeout_s,
            "max_batch": c.max_batch,
            "cache_bytes_per_position": per_position,
            "cache_bytes_bound": per_position * c.max_length * c.max_sessions,
            "codec": self.info.get("codec"),
            **self.stats,
        }

    # -- sessions -------------------------------------------------------------------------------
    def open(self, options: dict[str, Any]) -> Session:
        if len(self.sessions) >= self.config.max_sessions:
            raise GenerationError(
                f"the server holds {len(self.sessions)} sessions, its limit (cache memory bound); close one or retry later",
                429,
            )
        unknown = set(options) - {"temperature", "top_k", "seed"}
        if unknown:
            raise GenerationError(
                f"unknown session options {sorted(unknown)}; use temperature, top_k, seed", 400
            )
        try:
            temperature, top_k = float(options.get("temperature", 0.0)), int(options.get("top_k", 0))
            seed = int(options.get("seed", 0))
        except (TypeError, ValueError) as exc:
            raise GenerationError(f"bad session options: {exc}", 400) from exc
        if temperature < 0 or top_k < 0:
            raise GenerationError("temperature and top_k must be >= 0", 400)
        empty = np.zeros((1, self.kv_heads, 0, self.head_dim), np.float32)
        s = Session(
            secrets.token_hex(8),
            [empty] * len(self.past_names),
            temperature,
            top_k,
            np.random.default_rng(seed),
        )
        self.sessions[s.id] = s
        return s

    def close(self, sid: str) -> None:
        if self.sessions.pop(sid, None) is None:
            raise GenerationError(f"unknown or expired session '{sid}'", 404)

    def _session(self, sid: str) -> Session:
        s = self.sessions.get(sid)
        if s is None:
            raise GenerationError(f"unknown or expired session '{sid}'; open a new one", 404)
        return s

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(1.0, self.config.idle_timeout_s / 4)))
            now = time.monotonic()
            for sid, s in list(self.sessions.items()):
                if not s.busy and now - s.last_used > self.config.idle_timeout_s:
                    del self.sessions[sid]
                    self.stats["expired"] += 1

    # -- steps ----------------------------------------------------------------------------------
    async def step(self, sid: str, step: int, payload: bytes, meta: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        s = self._session(sid)
        if s.busy:
            raise GenerationError(f"session '{sid}' already has a step running; send one step at a time", 409)
        if step != s.step:
            raise GenerationError(f"step {step} is out of order: session '{sid}' expects step {s.step}", 409)
        codec = self.codecs.get(str(meta.get("codec")))
        if codec is None:
            raise GenerationError(
                f"unknown activation codec '{meta.get('codec')}'; use fp32, fp16 or int8", 400
            )
        try:
            hidden = codec.decode(payload, meta).astype(np.float32)
        except (EdgeLLMError, KeyError, ValueError, TypeError) as exc:  # a malformed payload or header
            raise GenerationError(
                f"the activation does not decode: {type(exc).__name__}: {exc}", 400
            ) from exc
        if hidden.ndim != 3 or hidden.shape[0] != 1 or hidden.shape[2] != int(self.info["hidden_size"]):
            raise GenerationError(
                f"hidden states of shape {list(hidden.shape)}; one session sends [1, new, {self.info['hidden_size']}]",
                400,
            )
        new = hidden.shape[1]
        if step > 0 and new != 1:
            raise GenerationError(f"a decode step carries one token, this one {new}", 400)
        if s.length + new > self.config.max_length:
            raise GenerationError(
                f"the cache would hold {s.length + new} positions, over the limit of {self.config.max_length}; "
                "close the session and start a shorter one",
                400,
            )
        s.busy = True
        try:
            if step == 0:
                async with self._lock:
                    token = await asyncio.get_running_loop().run_in_executor(None, self._prefill, s, hidden)
                self.stats["prefills"] += 1
            else:
                fut = asyncio.get_running_loop().create_future()
                try:
                    self.queue.put_nowait((s, hidden, fut))
                except asyncio.QueueFull as exc:
                    raise GenerationError("the decode queue is full; retry shortly", 503) from exc
                token = await fut
        finally:
            s.busy = False
            s.last_used = time.monotonic()
        s.step += 1
        return {
            "token": token,
            "step": step,
            "length": s.length,
            "server_ms": round((time.perf_counter() - t0) * 1000, 3),
        }

    def _prefill(self, s: Session, hidden: np.ndarray) -> int:
        new = hidden.shape[1]
        feeds = {
            "hidden": hidden,
            "attention_mask": np.ones((1, new), np.int64),
            "position_ids": np.arange(new, dtype=np.int64)[None],
            **dict(zip(self.past_names, s.cache)),
        }
        out = self.runner.run(feeds)
        s.cache = [out[n] for n in self.present_names]
        s.length = new
        return pick(out["logits"][0, -1], s.temperature, s.top_k, s.rng)

    async def _decode_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.config.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            live = [b for b in batch if not b[2].done()]
            if not live:
                continue
            try:
                async with self._lock:
                    tokens = await loop.run_in_executor(None, self._decode, [(s, h) for s, h, _ in live])
            except Exception as exc:  # every waiting session hears of it; the service keeps running
                for _, _, fut in live:
                    if not fut.done():
                        fut.set_exception(
                            GenerationError(f"the server half failed: {type(exc).__name__}: {exc}", 500)
                        )
                continue
            for (_, _, fut), tok in zip(live, tokens):
                if not fut.done():
                    fut.set_result(tok)

    def _decode(self, items: list[tuple[Session, np.ndarray]]) -> list[int]:
        """One pass for ``items`` (one new token each): caches left-padded to the longest, masked."""
        b = len(items)
        longest = max(s.length for s, _ in items)
        mask = np.zeros((b, longest + 1), np.int64)
        past = [np.zeros((b, self.kv_heads, longest, self.head_dim), np.float32) for _ in self.past_names]
        for r, (s, _) in enumerate(items):
            mask[r, longest - s.length :] = 1
            for j, c in enumerate(s.cache):
                past[j][r, :, longest - s.length :] = c[0]
        feeds = {
            "hidden": np.concatenate([h for _, h in items]),
            "attention_mask": mask,
            "position_ids": np.asarray([[s.length] for s, _ in items], np.int64),
            **dict(zip(self.past_names, past)),
        }
        out = self.runner.run(feeds)
        tokens = []
        for r, (s, _) in enumerate(items):
            s.cache = [out[n][r : r + 1, :, longest - s.length :] for n in self.present_names]
            s.length += 1
            tokens.append(pick(out["logits"][r, -1], s.temperature, s.top_k, s.rng))
        self.stats["decode_passes"] += 1
        self.stats["decode_steps"] += b
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], b)
        return tokens


# -- export -------------------------------------------------------------------------------------------------
def export_generation(
    model: Any,
    layers: int,
    output: str | Path,
    *,
    codec: str = "fp16",
    device: str = "snapdragon-865",
    server: str = "x86-server",
    device_format: str = "ort",
    device_cache: int = 256,
    check_tokens: int = 16,
    force: bool = False,
) -> dict[str, Any]:
    """Export a decoder cut after ``layers`` layers for split generation: ``OUT/device`` (the phone's
    format: ORT-mobile by default, prefill and decode from one file; ``tflite``: a slot graph with a
    fixed cache of ``device_cache`` positions), ``OUT/server`` (ONNX Runtime) and ``OUT/tokenizer``. The
    chain is checked: ``check_tokens`` greedy tokens through both artifacts with the codec must equal the
    unsplit model's, else nothing is written."""
    import hashlib

    from edgellm.export import export
    from edgellm.models import ModelAdapter, load
    from edgellm.partition.codecs import Codec
    from edgellm.runtime import make_runner
    from edgellm.split.decoder import (
        cache_halves,
        greedy_split,
        reference_greedy,
        slot_adapter,
        step_adapter,
        step_names,
    )
    from edgellm.utils.fs import atomic_dir

    adapter = model if isinstance(model, ModelAdapter) else load(model)
    if codec not in ("fp16", "int8", "fp32"):
        raise EdgeLLMError(f"codec '{codec}' is not one split generation carries", "use fp16, int8 or fp32")
    if device_format not in ("ort", "tflite"):
        raise EdgeLLMError(
            f"device format '{device_format}' cannot hold a generation cache", "use ort or tflite"
        )
    halves = cache_halves(adapter, layers)
    slots = device_cache if device_format == "tflite" else None
    plan_id = hashlib.sha256(json.dumps([adapter.source.get("sha256"), layers, codec]).encode()).hexdigest()[
        :16
    ]
    common = {
        "plan_id": plan_id,
        "layers_on_device": layers,
        "codec": codec,
        "kv_heads": halves.kv_heads,
        "head_dim": halves.head_dim,
        "hidden_size": halves.hidden_size,
        "vocab": halves.vocab,
        "eos_token_id": getattr(adapter.tokenizer, "eos_token_id", None),
        "server_model": f"{adapter.name}-gen-server",
        "device_cache": {"kind": "slots", "slots": slots} if slots else {"kind": "dynamic"},
        "parent": {"name": adapter.name, "sha256": adapter.source.get("sha256")},
    }
    with atomic_dir(output, force=force) as tmp:
        arts = {}
        for role, target, fmt in (("device", device, device_format), ("server", server, None)):
            half = halves.device if role == "device" else halves.server
            ins, outs = step_names(half, role)
            extra = {
                "generation": {**common, "role": role, "past_inputs": ins[3:], "present_outputs": outs[1:]}
            }
            name = f"{adapter.name}-gen-{role}"
            half_adapter = (
                slot_adapter(halves, name, slots)
                if role == "device" and slots
                else step_adapter(halves, role, name)
            )
            arts[role] = export(
                half_adapter, target, tmp / role, manifest_extra=extra, **({"format": fmt} if fmt else {})
            )
        if adapter.tokenizer is not None:
            adapter.tokenizer.save_pretrained(tmp / "tokenizer")
        runners = {r: make_runner(a) for r, a in arts.items()}
        prompt = list(adapter.fixed_inputs()["input_ids"][0][:8])
        want = reference_greedy(adapter, [int(t) for t in prompt], check_tokens)
        got = greedy_split(
            runners["device"].run,
            runners["server"].run,
            halves,
            [int(t) for t in prompt],
            check_tokens,
            Codec(codec),
            slots=slots,
        )
        agree = float(np.mean([a == b for a, b in zip(got, want)]))
        check = {"tokens": check_tokens, "agreement": agree, "codec": codec}
        if codec != "int8" and got != want:
            raise EdgeLLMError(
                f"greedy tokens through the exported halves agree {agree:.0%} with the unsplit model's",
                "report it with the model; try codec fp32 to rule out the codec",
            )
        (tmp / "generation.json").write_text(json.dumps({**common, "check": check}, indent=2) + "\n")
    return {**common, "check": check, "output": str(output)}


# -- the phone side -------------------------------------------------------------------------------------------
class GenerationClient:
    """The phone half of split generation: runs the device artifact with the cache of its own layers,
    sends each step's hidden states to the server, and streams the tokens it gets back.

    Example:
        >>> c = GenerationClient("out/tl-gen", "http://127.0.0.1:8000")               # doctest: +SKIP
        >>> for t in c.generate(c.encode("The with statement"), 32): print(c.decode([t["token"]]))  # doctest: +SKIP
    """

    def __init__(
        self,
        folder: str | Path,
        server_url: str,
        *,
        codec: str | None = None,
        model: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        import urllib.parse

        from edgellm.export import Artifact
        from edgellm.hub import resolve_path
        from edgellm.partition.codecs import Codec
        from edgellm.runtime import make_runner

        folder = resolve_path(folder)  # a directory, or a hub reference
        device_dir = folder / "device" if (folder / "device").is_dir() else folder
        art = Artifact.load(device_dir)
        gen = art.manifest.get("generation")
        if not gen or gen.get("role") != "device":
            raise EdgeLLMError(
                f"{device_dir} is not the device half of a split-generation export",
                "export one with: edgellm split export MODEL --generate --cut N -o OUT, and pass OUT",
            )
        self.gen, self.runner = gen, make_runner(art)
        self.codec = Codec(codec or gen["codec"])
        self.model = model or gen["server_model"]
        root = device_dir.parent
        self.tokenizer = None
        if (root / "tokenizer").is_dir():
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
        u = urllib.parse.urlparse(server_url)
        if u.scheme != "http" or not u.hostname:
            raise EdgeLLMError(
                f"server URL '{server_url}' is not http://host:port", "e.g. http://127.0.0.1:8000"
            )
        self.host, self.port, self.timeout_s = u.hostname, u.port or 80, timeout_s
        self._conn = None

    # -- text ----------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise EdgeLLMError("this export has no tokenizer", "pass token ids instead of text")
        return list(self.tokenizer(text)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if self.tokenizer is not None else " ".join(map(str, ids))

    # -- http ----------------------------------------------------------------------------------
    def _request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        import http.client

        for attempt in (0, 1):  # one reconnect: a kept-alive connection the server closed
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                resp = self._conn.getresponse()
                data = resp.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self._conn.close()
                self._conn = None
                if attempt:
                    raise EdgeLLMError(
                        f"cannot reach the server at {self.host}:{self.port}: {exc}",
                        "start it: edgellm serve OUT/server",
                    ) from exc
        try:
            doc = json.loads(data or b"{}")
        except ValueError:
            doc = {"error": data[:200].decode(errors="replace")}
        if resp.status >= 400:
            raise GenerationError(
                f"server: {doc.get('error', resp.reason)} (HTTP {resp.status})", resp.status
            )
        return doc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- generation ----------------------------------------------------------------------------
    def generate(
        self,
        prompt: list[int],
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int = 0,
        seed: int = 0,
        stop_at_eos: bool = True,
    ):
        """Yield one dict per new token: ``token``, ``ms`` (since the previous one; the first is the time
        to first token), ``device_ms``, ``server_ms``."""
        base = f"/v2/generate/{self.model}/sessions"
        opened = self._request(
            "POST", base, json.dumps({"temperature": temperature, "top_k": top_k, "seed": seed}).encode()
        )
        sid = opened["session"]
        from edgellm.split.decoder import DeviceStepper

        cache = self.gen.get("device_cache", {})
        device = DeviceStepper(
            self.runner.run,
            self.gen["past_inputs"],
            self.gen["present_outputs"],
            int(self.gen["kv_heads"]),
            int(self.gen["head_dim"]),
            cache.get("slots") if cache.get("kind") == "slots" else None,
        )
        ids = list(prompt)
        eos = self.gen.get("eos_token_id")
        try:
            for step in range(max_new_tokens):
                t0 = time.perf_counter()
                payload, meta = self.codec.encode(device(ids))
                t1 = time.perf_counter()
                res = self._request(
                    "POST",
                    f"{base}/{sid}/steps",
                    payload,
                    {
                        STEP_HEADER: str(step),
                        ACT_HEADER: json.dumps(meta),
                        "Content-Type": "application/octet-stream",
                    },
                )
                t2 = time.perf_counter()
                token = int(res["token"])
                yield {
                    "token": token,
                    "ms": (t2 - t0) * 1000,
                    "device_ms": (t1 - t0) * 1000,
                    "server_ms": res.get("server_ms"),
                    "bytes": len(payload),
                }
                if stop_at_eos and eos is not None and token == eos:
                    break
                ids = [token]
        finally:
            with contextlib.suppress(GenerationError, EdgeLLMError):  # else the server frees it on expiry
                self._request("DELETE", f"{base}/{sid}")


def bench_generation(
    folder: str | Path,
    server_url: str,
    sessions: list[int],
    *,
    tokens: int = 32,
    prompts: list[str] | None = None,
    codec: str | None = None,
) -> list[dict[str, Any]]:
    """For each count of concurrent sessions (one phone each, in threads here): time to first token
    and tokens/s per session (median over sessions) and in aggregate (all tokens over the wall time)."""
    import threading

    from edgellm.data.corpus import pydoc_topics, sentences

    texts = prompts or sentences(pydoc_topics()[:20])[:64]
    rows = []
    for n in sessions:
        clients = [GenerationClient(folder, server_url, codec=codec) for _ in range(n)]
        results: list[dict[str, Any] | None] = [None] * n
        errors: list[str] = []

        def run(i: int, clients=clients, results=results, errors=errors) -> None:
            c = clients[i]
            try:
                ms = [t["ms"] for t in c.generate(c.encode(texts[i % len(texts)]), tokens, stop_at_eos=False)]
                results[i] = {"ttft_ms": ms[0], "tok_s": 1000.0 * (len(ms) - 1) / max(sum(ms[1:]), 1e-9)}
            except (GenerationError, EdgeLLMError) as exc:
                errors.append(str(exc))
            finally:
                c.close()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        ok = [r for r in results if r is not None]
        rows.append(
            {
                "sessions": n,
                "completed": len(ok),
                "refused": errors[:3],
                "ttft_ms_p50": round(float(np.median([r["ttft_ms"] for r in ok])), 2) if ok else None,
                "tok_s_per_session_p50": round(float(np.median([r["tok_s"] for r in ok])), 2) if ok else None,
                "tok_s_aggregate": round(len(ok) * tokens / wall, 2),
                "wall_s": round(wall, 3),
            }
        )
    return rows
