"""The phone half of split generation: run the device artifact with the cache of its own layers, send
each step's hidden states to the server's session (``/v2/generate/{model}/sessions`` on ``edgellm
serve``, :mod:`edgellm.serve.generation`), stream the tokens it answers. When the server answers the
session's ``url`` (a replica behind a router: :mod:`edgellm.serve.replicas`), the steps go there.

A server refusal raises :class:`~edgellm.partition.wire.GenerationError` with the server's message and
HTTP status; a server that cannot be reached, :class:`~edgellm.errors.EdgeLLMError` with how to start it.

Example:
    >>> c = GenerationClient("out/tl-gen", "http://127.0.0.1:8000")               # doctest: +SKIP
    >>> for t in c.generate(c.encode("The with statement"), 32): print(c.decode([t["token"]]))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.partition.wire import ACT_HEADER, STEP_HEADER, GenerationError

__all__ = ["GenerationClient", "GenerationError"]


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
        from edgellm.runtime import make_runner
        from edgellm.runtime.codecs import Codec

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
        # a server that names its replica answers where the session lives (the pod holding its cache:
        # a router sends that path there); older servers do not, and the plain path is used
        url = _session_path(opened.get("url")) or f"{base}/{opened['session']}"
        from edgellm.split.stepper import DeviceStepper

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
                    f"{url}/steps",
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
                self._request("DELETE", url)


def _session_path(url: Any) -> str | None:
    """The path of a session's ``url`` as a server answered it (a path, or a full URL on this server)."""
    import urllib.parse

    if not isinstance(url, str) or not url:
        return None
    return urllib.parse.urlparse(url).path or None
