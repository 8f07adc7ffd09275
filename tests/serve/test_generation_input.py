"""Hostile and broken input to split-generation sessions, on the real server over loopback: every bad
session option and every bad step tensor is refused with 400 before it reaches the runtime, the answer
names the field, the bad value and what is allowed, the refused step leaves its session as it was, and a
valid session still generates the same tokens afterwards."""

import http.client
import json

import numpy as np
import pytest
from generation_helpers import PROMPTS, tokens

from edgellm.runtime.codecs import Codec
from edgellm.split.generation_client import GenerationClient

BASE = "/v2/generate/tiny-llama-gen-server/sessions"
HIDDEN = 384


def call(url, method, path, body=b"", headers=None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        raw = r.read()
    finally:
        conn.close()
    return r.status, json.loads(raw or b"{}")  # json.loads would fail on a bare NaN: never emitted


def open_session(url, options=None, raw=None):
    return call(url, "POST", BASE, raw if raw is not None else json.dumps(options or {}).encode())


def send(url, sid, n, payload, meta):
    headers = {"Edgellm-Step": str(n), "Edgellm-Activation": json.dumps(meta)}
    return call(url, "POST", f"{BASE}/{sid}/steps", payload, headers)


def hidden(new=5, seed=0):
    return np.random.default_rng(seed).standard_normal((1, new, HIDDEN)).astype(np.float32)


BAD_OPTIONS = [  # (raw JSON body, words the 400 must name)
    (b'{"seed": -1}', ["seed", "-1", "2**64"]),
    (b'{"seed": 1.5}', ["seed", "1.5", "integer"]),
    (b'{"seed": true}', ["seed", "True", "integer"]),
    (b'{"seed": "7"}', ["seed", "'7'", "integer"]),
    (b'{"seed": 18446744073709551616}', ["seed", "18446744073709551616"]),
    (b'{"temperature": NaN}', ["temperature", "nan", "finite"]),
    (b'{"temperature": Infinity}', ["temperature", "inf", "finite"]),
    (b'{"temperature": -0.5}', ["temperature", "-0.5", ">= 0"]),
    (b'{"temperature": "hot"}', ["temperature", "'hot'", "number"]),
    (b'{"temperature": null}', ["temperature", "None", "number"]),
    (b'{"top_k": -1}', ["top_k", "-1", ">= 0"]),
    (b'{"top_k": 2.5}', ["top_k", "2.5", "integer"]),
    (b'{"top_k": [3]}', ["top_k", "[3]", "integer"]),
    (b'{"max_length": 0}', ["max_length", "0", "1..256"]),
    (b'{"max_length": 257}', ["max_length", "257", "1..256"]),
    (b'{"temp": 1}', ["temp", "temperature, top_k, seed, max_length"]),
]


@pytest.mark.parametrize("body,words", BAD_OPTIONS, ids=[b.decode() for b, _ in BAD_OPTIONS])
def test_bad_session_options_are_refused_with_the_reason(gen_server, body, words):
    url, srv = gen_server
    before = len(srv.generators["tiny-llama-gen-server"].sessions)
    st, err = open_session(url, raw=body)
    assert st == 400, (st, err)
    for w in words:
        assert w in err["error"], (w, err["error"])
    assert len(srv.generators["tiny-llama-gen-server"].sessions) == before  # nothing was opened


def _int8(x, scales):
    """An int8 payload of ``x`` whose scales are replaced by ``scales`` (NaN, inf, negative...)."""
    payload, meta = Codec("int8").encode(x)
    n = meta["codes_bytes"]
    bad = np.full(len(payload[n:]) // 4, scales, "<f4")
    return payload[:n] + bad.tobytes(), meta


def _fp32(x):
    return Codec("fp32").encode(x)


def _bad_steps():
    h = hidden()
    nan, inf, huge = h.copy(), h.copy(), h.copy()
    nan[0, 2, 7] = np.nan
    inf[0, 4, 0] = -np.inf
    huge[:] = 3e38  # finite, but the server half's logits overflow
    fp16 = Codec("fp16")
    empty_payload, empty_meta = fp16.encode(np.zeros((1, 0, HIDDEN), np.float32))
    p16, m16 = fp16.encode(h)
    p8, m8 = Codec("int8").encode(h)
    with np.errstate(over="ignore"):
        p16_inf = fp16.encode(h * 1e6)[0]  # past fp16's 65504: inf on the wire
    return [  # (name, payload, meta, words the 400 must name)
        ("no positions", empty_payload, empty_meta, ["[1, 0, 384]", "at least one position"]),
        ("two rows", *fp16.encode(np.zeros((2, 1, HIDDEN), np.float32)), ["[2, 1, 384]", "[1, new, 384]"]),
        ("wrong width", *fp16.encode(np.zeros((1, 3, 100), np.float32)), ["[1, 3, 100]", "384"]),
        ("2-d", *fp16.encode(np.zeros((3, HIDDEN), np.float32)), ["[3, 384]", "[1, new, 384]"]),
        ("nan fp32", *_fp32(nan), ["not finite", "nan", "[0, 2, 7]"]),
        ("inf fp32", *_fp32(inf), ["not finite", "-inf", "[0, 4, 0]"]),
        ("inf fp16", p16_inf, m16, ["not finite", "inf"]),
        ("nan int8 scale", *_int8(h, np.nan), ["int8 scale", "nan", "finite and > 0"]),
        ("inf int8 scale", *_int8(h, np.inf), ["int8 scale", "inf", "finite and > 0"]),
        ("negative int8 scale", *_int8(h, -0.1), ["int8 scale", "-0.1", "finite and > 0"]),
        ("zero int8 scale", *_int8(h, 0.0), ["int8 scale", "0.0", "finite and > 0"]),
        (
            "int8 scale in the metadata",
            p8,
            {**m8, "scale": "abc"},
            ["unknown keys ['scale']", "in the payload"],
        ),
        ("huge values", *_fp32(huge), ["|x| = 3e+38", "overflows from |x| = 9.41e+17"]),
        ("shape not a list", p16, {**m16, "shape": "abc"}, ["shape", "'abc'", "list of integers"]),
        ("shape of floats", p16, {**m16, "shape": [1, 2.5, HIDDEN]}, ["shape", "2.5", "list of integers"]),
        ("negative shape", p16, {**m16, "shape": [1, -5, HIDDEN]}, ["shape", "-5", ">= 0"]),
        (
            "shape overflow",
            b"",
            {"codec": "fp16", "shape": [2**32, 2**32, HIDDEN]},  # 2**64 * 384 elements: 0 in int64
            ["shape", "4294967296", "needs"],
        ),
        ("codes_bytes text", p16, {**m16, "codes_bytes": "abc"}, ["codes_bytes", "'abc'", "integer"]),
        (
            "codes_bytes past end",
            p16,
            {**m16, "codes_bytes": len(p16) + 9},
            ["codes_bytes", str(len(p16) + 9)],
        ),
        ("truncated", p16[:-2], m16, ["bytes", "truncated"]),
        ("codec unknown", p16, {**m16, "codec": "bf16"}, ["codec", "bf16", "fp32, fp16 or int8"]),
    ]


BAD_STEPS = _bad_steps()


@pytest.fixture
def greedy_and_sampled(gen_server):
    """One greedy and one sampled session, fresh for each bad step."""
    url, _ = gen_server
    sids = [open_session(url, o)[1]["session"] for o in ({}, {"temperature": 0.8, "top_k": 5, "seed": 3})]
    yield sids
    for sid in sids:
        call(url, "DELETE", f"{BASE}/{sid}")


@pytest.mark.parametrize("name,payload,meta,words", BAD_STEPS, ids=[c[0] for c in BAD_STEPS])
def test_bad_step_tensors_are_refused_before_the_runtime(
    gen_server, greedy_and_sampled, name, payload, meta, words
):
    url, srv = gen_server
    g = srv.generators["tiny-llama-gen-server"]
    for sid in greedy_and_sampled:  # greedy and sampling alike: no silent 200, no 500
        st, err = send(url, sid, 0, payload, meta)
        assert st == 400, (st, err)
        for w in words:
            assert w in err["error"], (w, err["error"])
        s = g.sessions[sid]
        assert (s.step, s.length, s.busy) == (0, 0, False)  # the session is as it was


def test_a_refused_step_leaves_the_session_usable_and_generation_unchanged(gen_dir, gen_server):
    url, _ = gen_server
    c = GenerationClient(gen_dir, url)
    prompt = c.encode(PROMPTS[2])
    want = tokens(c, prompt, 6)
    st, s = open_session(url, {"temperature": 1e-300, "seed": 2**64 - 1, "max_length": 40})
    assert st == 201
    sid = s["session"]
    bad = hidden()
    bad[0, 0, 0] = np.nan
    assert send(url, sid, 0, *_fp32(bad))[0] == 400
    st, out = send(url, sid, 0, *Codec("fp16").encode(hidden()))
    assert st == 200 and out["length"] == 5 and isinstance(out["token"], int)  # tiny temperature: no NaN
    st, err = send(url, sid, 1, *Codec("fp16").encode(hidden(36)[:, :1] * np.inf))
    assert st == 400 and "not finite" in err["error"]
    assert send(url, sid, 1, *Codec("fp16").encode(hidden(1)))[0] == 200  # decode step after a refusal
    st, err = send(url, sid, 2, *Codec("fp16").encode(hidden(1)))
    assert st == 200
    long = Codec("fp16").encode(hidden(1))
    for n in range(3, 36):
        assert send(url, sid, n, *long)[0] == 200
    st, err = send(url, sid, 36, *long)
    assert st == 400 and "over the limit of 40" in err["error"]  # the session's own max_length
    assert call(url, "DELETE", f"{BASE}/{sid}")[0] == 200
    assert tokens(GenerationClient(gen_dir, url), prompt, 6) == want


def test_non_finite_outputs_of_the_server_half_are_a_400_not_a_token(gen_server, monkeypatch):
    """The last line of defence: were the server half to give NaN logits from finite hidden states, the
    step is refused (greedy used to answer argmax(NaN) = 0 with 200) and the session keeps its cache."""
    url, srv = gen_server
    g = srv.generators["tiny-llama-gen-server"]
    real = g.runner

    class NaNLogits:  # the real server half, its logits poisoned
        def run(self, feeds):
            out = dict(real.run(feeds))
            out["logits"] = np.full_like(out["logits"], np.nan)
            return out

    fp16 = Codec("fp16")
    for options in ({}, {"temperature": 1.0, "seed": 1}):
        sid = open_session(url, options)[1]["session"]
        monkeypatch.setattr(g, "runner", NaNLogits())
        st, err = send(url, sid, 0, *fp16.encode(hidden()))
        assert st == 400 and "non-finite logits" in err["error"], err
        assert (g.sessions[sid].step, g.sessions[sid].length) == (0, 0)
        monkeypatch.setattr(g, "runner", real)
        assert send(url, sid, 0, *fp16.encode(hidden()))[0] == 200
        monkeypatch.setattr(g, "runner", NaNLogits())
        st, err = send(url, sid, 1, *fp16.encode(hidden(1)))  # through the decode batch
        assert st == 400 and "non-finite logits" in err["error"], err
        assert (g.sessions[sid].step, g.sessions[sid].length) == (1, 5)
        monkeypatch.setattr(g, "runner", real)
        assert send(url, sid, 1, *fp16.encode(hidden(1)))[0] == 200
        call(url, "DELETE", f"{BASE}/{sid}")
