"""Split-generation sessions on the real server (loopback): the server half holds one cache per session
and batches decode steps across sessions; concurrent sessions get exactly their own tokens, sampling is
seeded, sessions are limited, ordered and expire, and every malformed step is refused with the reason."""

import http.client
import json
import threading

import numpy as np
from generation_helpers import PROMPTS, hf_greedy, tokens

from edgellm.serve import ModelConfig, serve_in_background
from edgellm.split.generation_client import GenerationClient


def test_concurrent_sessions_are_batched_and_get_their_own_tokens(tiny_llama, gen_dir, gen_server):
    url, srv = gen_server
    g = srv.generators["tiny-llama-gen-server"]
    c0 = GenerationClient(gen_dir, url)
    prompts = [c0.encode(p) for p in PROMPTS]
    want = [hf_greedy(tiny_llama, p, 24) for p in prompts]
    before = g.stats["decode_passes"], g.stats["decode_steps"]
    got: dict[int, list[int]] = {}

    def run(i):
        got[i] = tokens(GenerationClient(gen_dir, url), prompts[i], 24)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [got[i] for i in range(4)] == want  # ragged caches, padded and masked, change nothing
    passes, steps = g.stats["decode_passes"] - before[0], g.stats["decode_steps"] - before[1]
    assert steps == 4 * 23 and passes < steps and g.stats["max_batch_seen"] > 1  # steps shared passes


def test_sampling_is_seeded(gen_dir, gen_server):
    url, _ = gen_server
    c = GenerationClient(gen_dir, url)
    p = c.encode(PROMPTS[1])
    a = tokens(c, p, 16, temperature=1.0, top_k=20, seed=7)
    assert a == tokens(c, p, 16, temperature=1.0, top_k=20, seed=7)
    assert a != tokens(c, p, 16, temperature=1.0, top_k=20, seed=8)


def call(url, method, path, body=b"", headers=None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"{}")


def test_sessions_are_limited_ordered_and_expire(gen_dir):
    import time

    from edgellm.runtime.codecs import Codec

    with serve_in_background(
        [ModelConfig(gen_dir / "server")], max_sessions=2, max_length=12, idle_timeout_s=0.4
    ) as srv:
        url = f"http://127.0.0.1:{srv.config.port}"
        base = "/v2/generate/tiny-llama-gen-server/sessions"
        fp16 = Codec("fp16")

        def step(sid, n, hidden):
            payload, meta = fp16.encode(hidden)
            return call(
                url,
                "POST",
                f"{base}/{sid}/steps",
                payload,
                {"Edgellm-Step": str(n), "Edgellm-Activation": json.dumps(meta)},
            )

        h = np.random.default_rng(0).standard_normal((1, 5, 384)).astype(np.float32)
        st, s1 = call(url, "POST", base, b"{}")
        assert st == 201
        assert call(url, "POST", base, b"{}")[0] == 201
        st, err = call(url, "POST", base, b"{}")
        assert st == 429 and "limit" in err["error"]  # the memory bound: two sessions
        sid = s1["session"]
        st, err = step(sid, 1, h[:, :1])
        assert st == 409 and "expects step 0" in err["error"]
        assert step(sid, 0, h)[0] == 200
        st, err = step(sid, 1, h[:, :2])
        assert st == 400 and "one token" in err["error"]
        for n in range(1, 8):  # 5 + 7 = 12 positions: the limit
            assert step(sid, n, h[:, :1])[0] == 200
        st, err = step(sid, 8, h[:, :1])
        assert st == 400 and "over the limit of 12" in err["error"]
        st, err = call(url, "POST", f"{base}/{sid}/steps", b"xx", {"Edgellm-Step": "8"})
        assert st == 400 and "Edgellm-Activation" in err["error"]
        st, err = call(
            url,
            "POST",
            f"{base}/{sid}/steps",
            b"xx",
            {"Edgellm-Step": "8", "Edgellm-Activation": '{"codec": "fp16"}'},
        )
        assert st == 400 and "does not decode" in err["error"]
        st, err = call(
            url, "POST", f"{base}/{sid}/steps", b"xx", {"Edgellm-Step": "8", "Edgellm-Activation": "[1]"}
        )
        assert st == 400 and "JSON object" in err["error"]
        st, err = step("nope", 0, h)
        assert st == 404 and "unknown or expired session" in err["error"]
        time.sleep(1.5)  # both sessions go idle: a phone that vanished frees its cache
        assert call(url, "GET", "/v2/generate/tiny-llama-gen-server")[1]["sessions"] == 0
        st, err = step(sid, 8, h[:, :1])
        assert st == 404
        assert call(url, "POST", base, json.dumps({"temp": 1}).encode())[0] == 400
