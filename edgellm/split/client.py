"""The phone half at run time: run the device artifact, encode the activation, call the server half.

The server half is served by ``edgellm serve`` (KServe v2 REST). The activation goes as a binary tensor
in the codec's number format (``FP32``/``FP16``/``INT8``, with ``compression`` when the codec compresses),
int8 scales as the ``hidden:scales`` companion input, side inputs (the attention mask) as they are. The
server reports its own time, so every call is broken down into device, encode, network, server and decode.

Before the first call the client checks that the server serves the half of the same plan (its model
metadata carries the plan id), so halves of two different plans are never mixed silently.

Example:
    >>> c = SplitClient.from_path("out/minilm-split/device", "http://127.0.0.1:8000")    # doctest: +SKIP
    >>> out, t = c.infer(c.encode_text(["hello world"]))                                 # doctest: +SKIP
    >>> t["device_ms"], t["network_ms"], t["server_ms"]                                  # doctest: +SKIP
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from edgellm.errors import EdgeLLMError
from edgellm.partition.wire import V2_TO_NP, v2_datatype
from edgellm.runtime.codecs import Codec, scale_shape

RETRY_STATUS = (502, 503, 504)


class SplitClient:
    """One phone half talking to one server half.

    Args:
        split: the ``split`` manifest section (plan id, cut, codec, activation, side inputs, server model).
        device: the device runner (None when the plan runs everything on the server).
        inputs: the full model's input specs (what the caller feeds).
        server_url: ``http://host:port`` of ``edgellm serve`` (None when everything runs on the device).
        timeout_s / retries / backoff_s: per-request timeout; retries on connection errors and 502-504.
        slowdown: emulate a device this many times slower: after the device half and the encoding, wait
            ``slowdown - 1`` times the CPU time they took (for benchmarks on a host faster than the phone).
    """

    def __init__(
        self,
        split: dict[str, Any],
        device: Any,
        inputs: list[Any],
        server_url: str | None,
        *,
        timeout_s: float = 30.0,
        retries: int = 2,
        backoff_s: float = 0.2,
        tokenizer: Any = None,
        slowdown: float = 1.0,
    ) -> None:
        self.split = split
        self.device = device
        self.inputs = inputs
        self.codec = Codec(split["codec"] if split.get("codec") not in (None, "none", "raw") else "fp32")
        self.server_model = split.get("server_model")
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.tokenizer = tokenizer
        self.slowdown = slowdown
        self.url = server_url
        self._conn: http.client.HTTPConnection | None = None
        self._checked = False
        if self.server_model is not None:
            if not server_url:
                raise EdgeLLMError(
                    f"plan {split['plan_id']} runs blocks after '{split.get('after_block')}' on a server, "
                    "but no server URL was given",
                    "pass --server http://HOST:PORT where edgellm serve runs the server half",
                )
            u = urllib.parse.urlsplit(server_url)
            if u.scheme != "http" or not u.hostname:
                raise EdgeLLMError(
                    f"server URL '{server_url}' is not http://HOST:PORT", "e.g. http://127.0.0.1:8000"
                )
            self.host, self.port = u.hostname, u.port or 80

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_path(cls, path: str | Path, server_url: str | None, **kw: Any) -> SplitClient:
        """From a split export directory (``split.json``) or its device artifact directory."""
        from edgellm.export import Artifact
        from edgellm.partition.split_export import SPLIT_FILE, SplitArtifacts
        from edgellm.runtime import make_runner

        path = Path(path)
        threads = kw.pop("threads", None)
        if (path / SPLIT_FILE).is_file():
            s = SplitArtifacts.load(path)
            if s.device is None:  # all on the server: the phone sends the raw input
                link = dict(s.link)
                link["codec"] = "raw"
                return cls(link, None, s.server.inputs, server_url, **kw)  # type: ignore[union-attr]
            art = s.device
        else:
            art = Artifact.load(path)
        split = art.manifest.get("split")
        if not split or split.get("role") != "device":
            raise EdgeLLMError(
                f"'{path}' is not the device half of a split model (its manifest has no split section "
                "with role 'device')",
                "export one with: edgellm split export MODEL --cut N, then pass OUT/device",
            )
        if split.get("server_model") and not server_url:
            cls(split, None, art.inputs, server_url)  # raises: the plan needs a server
        runner = make_runner(art, **({"intra_op_threads": threads} if threads else {}))
        return cls(split, runner, art.inputs, server_url, tokenizer=_tokenizer(art.path), **kw)

    # -- inputs -------------------------------------------------------------------------------------
    def encode_text(self, texts: list[str], max_length: int = 128) -> dict[str, np.ndarray]:
        if self.tokenizer is None:
            raise EdgeLLMError(
                "this model has no tokenizer: text input is not possible", "give --input FILE.npz"
            )
        tok = self.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        limit = min(max_length, getattr(self.device, "max_seq", None) or max_length)
        enc = tok(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="np")
        return {
            s.name: np.asarray(enc[s.name], dtype=s.dtype)
            if s.name in enc
            else np.zeros(enc["input_ids"].shape, s.dtype)
            for s in self.inputs
        }

    # -- the call ----------------------------------------------------------------------------------
    def infer(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Run the split model on ``feeds``; returns the outputs and the time breakdown (ms, bytes)."""
        if self.server_model is not None:
            self._check()  # once: the server serves this plan's server half
        t0 = time.perf_counter()
        if self.device is not None:
            missing = [s.name for s in self.device.inputs if s.name not in feeds]
            if missing:
                raise EdgeLLMError(
                    f"input '{missing[0]}' is missing; the model takes {', '.join(s.name for s in self.device.inputs)}",
                    "give every input the model takes",
                )
            c0 = time.thread_time()
            out = self.device.run({s.name: feeds[s.name] for s in self.device.inputs})
            self._dilate(c0)
        t1 = time.perf_counter()
        timing = {"device_ms": (t1 - t0) * 1000.0}
        if self.server_model is None:  # everything ran on the device
            timing.update(
                encode_ms=0.0, network_ms=0.0, server_ms=0.0, decode_ms=0.0, upload_bytes=0, download_bytes=0
            )
            timing["total_ms"] = timing["device_ms"]
            return out, timing
        tensors: list[tuple[str, np.ndarray | bytes, str, list[int], dict[str, Any]]] = []
        if self.device is None:  # raw input to the server
            for s in self.inputs:
                arr = np.ascontiguousarray(feeds[s.name])
                tensors.append((s.name, arr.tobytes(), v2_datatype(arr.dtype), list(arr.shape), {}))
        else:
            c0 = time.thread_time()
            x = out["hidden"]
            codes, scales = self.codec.quantize(x)
            params = {"compression": self.codec.compression} if self.codec.compression else {}
            tensors.append(
                ("hidden", self.codec.pack(codes), v2_datatype(codes.dtype), list(codes.shape), params)
            )
            if scales is not None:
                tensors.append(
                    ("hidden:scales", scales.astype("<f4").tobytes(), "FP32", list(scale_shape(x.shape)), {})
                )
            for name in self.split.get("side_inputs", []):
                arr = np.ascontiguousarray(feeds[name])
                tensors.append((name, arr.tobytes(), v2_datatype(arr.dtype), list(arr.shape), {}))
            self._dilate(c0)
        body, head_len = _request(tensors)
        t2 = time.perf_counter()
        timing["encode_ms"] = (t2 - t1) * 1000.0
        _, headers, resp = self._post(f"/v2/models/{self.server_model}/infer", body, head_len)
        t3 = time.perf_counter()
        outputs, params = _response(resp, headers)
        t4 = time.perf_counter()
        server_ms = float(params.get("server_ms", 0.0))
        timing.update(
            network_ms=max(0.0, (t3 - t2) * 1000.0 - server_ms),
            server_ms=server_ms,
            decode_ms=(t4 - t3) * 1000.0,
            upload_bytes=len(body),
            download_bytes=len(resp),
        )
        timing["total_ms"] = (t4 - t0) * 1000.0
        return outputs, timing

    def _dilate(self, cpu_start: float) -> None:
        if self.slowdown > 1.0:
            time.sleep((time.thread_time() - cpu_start) * (self.slowdown - 1.0))

    # -- HTTP ----------------------------------------------------------------------------------------
    def _check(self) -> None:
        if self._checked:
            return
        status, _, body = self._request("GET", f"/v2/models/{self.server_model}", None, {})
        if status == 404:
            raise EdgeLLMError(
                f"the server at {self.url} does not serve '{self.server_model}' (plan {self.split['plan_id']})",
                "serve the server half of this split export: edgellm serve OUT/server",
            )
        meta = json.loads(body or b"{}")
        plan = (meta.get("parameters") or {}).get("split_plan_id")
        if plan is not None and plan != self.split["plan_id"]:
            raise EdgeLLMError(
                f"the server half at {self.url} belongs to plan {plan}, this device half to plan "
                f"{self.split['plan_id']}",
                "serve the server half exported together with this device half (same edgellm split export)",
            )
        self._checked = True

    def _post(self, path: str, body: bytes, head_len: int) -> tuple[int, dict[str, str], bytes]:
        headers = {
            "Inference-Header-Content-Length": str(head_len),
            "Content-Type": "application/octet-stream",
        }
        status, hdrs, resp = self._request("POST", path, body, headers)
        if status != 200:
            try:
                msg = json.loads(resp).get("error", resp[:200].decode(errors="replace"))
            except ValueError:
                msg = resp[:200].decode(errors="replace")
            raise EdgeLLMError(
                f"the server half answered {status}: {msg}", "check the server's log and its model"
            )
        return status, hdrs, resp

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
                self._conn.request(method, path, body=body, headers=headers)
                r = self._conn.getresponse()
                data = r.read()
                if r.status in RETRY_STATUS and attempt < self.retries:
                    last = EdgeLLMError(f"status {r.status}", "")
                    time.sleep(self.backoff_s * 2**attempt)
                    continue
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out
                last = exc
                self.close()
                if attempt < self.retries:
                    time.sleep(self.backoff_s * 2**attempt)
        raise EdgeLLMError(
            f"cannot reach the server half at {self.url} after {self.retries + 1} tries: "
            f"{type(last).__name__}: {last}",
            "start it with: edgellm serve OUT/server --port PORT, and check --server and the network",
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _tokenizer(path: Path) -> Any:
    """The tokenizer an exporter saved beside the device half (none for models without one)."""
    from edgellm.models.loader import load_tokenizer

    return load_tokenizer(path / "tokenizer")


def _request(tensors: list[tuple[str, Any, str, list[int], dict[str, Any]]]) -> tuple[bytes, int]:
    inputs, blobs = [], []
    for name, data, dtype, shape, params in tensors:
        inputs.append(
            {
                "name": name,
                "datatype": dtype,
                "shape": shape,
                "parameters": {**params, "binary_data_size": len(data)},
            }
        )
        blobs.append(data)
    head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return head + b"".join(blobs), len(head)


def _response(body: bytes, headers: dict[str, str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    n = int(headers.get("inference-header-content-length", len(body)))
    head = json.loads(body[:n])
    offset, out = n, {}
    for o in head["outputs"]:
        dt = np.dtype(V2_TO_NP[o["datatype"]]).newbyteorder("<")
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            out[o["name"]] = np.asarray(o["data"], dtype=dt).reshape(o["shape"])
            continue
        out[o["name"]] = (
            np.frombuffer(body[offset : offset + size], dt).reshape(o["shape"]).astype(dt.newbyteorder("="))
        )
        offset += size
    return out, head.get("parameters") or {}
