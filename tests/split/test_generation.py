"""Split generation through the real server on loopback: the phone half (ORT-mobile) holds its cache, the
server half holds one cache per session and batches decode steps across sessions. Greedy tokens with the
fp16 codec equal the unsplit model's for 64 tokens; concurrent sessions get exactly their own tokens while
the server batches them; sessions are limited, ordered and expire."""

import http.client
import json
import threading

import numpy as np
import pytest

from edgellm.serve.server import ModelConfig, serve_in_background
from edgellm.split.generation import GenerationClient, GenerationError, export_generation

PROMPTS = [
    "The with statement is used to wrap the execution of a block",
    "A class definition defines a class object",
    "The try statement specifies exception handlers",
    "Names refer to objects. Names are introduced by name binding operations",
]


def hf_greedy(adapter, prompt, n):
    from edgellm.split.decoder import reference_greedy

    return reference_greedy(adapter, prompt, n)


@pytest.fixture(scope="module")
def gen_dir(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "tl"
    info = export_generation(tiny_llama, 2, out, check_tokens=16)
    assert info["check"]["agreement"] == 1.0
    return out


@pytest.fixture(scope="module")
def server(gen_dir):
    with serve_in_background([ModelConfig(gen_dir / "server")], max_length=256, max_batch_size=8) as srv:
        yield f"http://127.0.0.1:{srv.config.port}", srv


def tokens(client, prompt_ids, n, **kw):
    return [t["token"] for t in client.generate(prompt_ids, n, stop_at_eos=False, **kw)]


def test_greedy_tokens_through_the_server_equal_the_unsplit_model(tiny_llama, gen_dir, server):
    url, srv = server
    c = GenerationClient(gen_dir, url)
    prompt = c.encode(PROMPTS[0])
    want = hf_greedy(tiny_llama, prompt, 64)
    stream = list(c.generate(prompt, 64, stop_at_eos=False))
    assert [t["token"] for t in stream] == want  # fp16 codec: token for token
    assert all(t["bytes"] == 2 * 384 for t in stream[1:])  # one fp16 hidden state per decode step
    int8 = tokens(GenerationClient(gen_dir, url, codec="int8"), prompt, 64)
    assert np.mean([a == b for a, b in zip(int8, want)]) > 0.5
    assert srv.generators["tiny-llama-gen-server"].describe()["sessions"] == 0  # closed after each run


def test_concurrent_sessions_are_batched_and_get_their_own_tokens(tiny_llama, gen_dir, server):
    url, srv = server
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


def test_sampling_is_seeded(gen_dir, server):
    url, _ = server
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

    from edgellm.partition.codecs import Codec

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


def test_a_client_names_what_is_wrong(gen_dir, tmp_path):
    from edgellm.errors import EdgeLLMError

    with pytest.raises(EdgeLLMError, match="not the device half of a split-generation export"):
        GenerationClient(gen_dir / "server", "http://127.0.0.1:1")
    c = GenerationClient(gen_dir, "http://127.0.0.1:1")  # nothing listens there
    with pytest.raises(EdgeLLMError, match="cannot reach the server"):
        list(c.generate([1, 2, 3], 2))
    with serve_in_background([ModelConfig(gen_dir / "server", name="other")]) as srv:
        c = GenerationClient(gen_dir, f"http://127.0.0.1:{srv.config.port}")
        with pytest.raises(GenerationError, match="not a split-generation model"):
            list(c.generate([1, 2, 3], 2))


def test_cli_export_chat_and_bench(tiny_llama, gen_dir, server, tmp_path, capsys):
    from edgellm.cli import main

    url, _ = server
    assert (
        main(
            [
                "split",
                "export",
                "tiny-llama",
                "--generate",
                "--cut",
                "1",
                "-o",
                str(tmp_path / "g1"),
                "--json",
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["layers_on_device"] == 1 and info["check"]["agreement"] == 1.0
    assert (tmp_path / "g1" / "device" / "manifest.json").is_file() and (
        tmp_path / "g1" / "tokenizer"
    ).is_dir()

    prompt = PROMPTS[2]
    assert (
        main(["split", "chat", "--device-artifact", str(gen_dir), "--server", url, "-p", prompt, "-n", "12"])
        == 0
    )
    out = capsys.readouterr().out
    c = GenerationClient(gen_dir, url)
    want = c.decode(hf_greedy(tiny_llama, c.encode(prompt), 12))
    assert out.startswith(want.split("</s>")[0][:20]) and "time to first token" in out

    argv = [
        "split",
        "bench",
        "--device-artifact",
        str(gen_dir),
        "--server",
        url,
        "--sessions",
        "1,3",
        "--tokens",
        "6",
        "--json",
    ]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["sessions"] for r in rows] == [1, 3] and all(r["completed"] == r["sessions"] for r in rows)
    assert all(r["ttft_ms_p50"] > 0 and r["tok_s_aggregate"] > 0 for r in rows)
    assert main(["split", "bench", "--device-artifact", str(gen_dir), "--sessions", "1,x"]) == 2
    assert "not a list of counts" in capsys.readouterr().err


def test_a_tflite_phone_half_with_a_fixed_cache_generates_the_same_tokens(tiny_llama, tmp_path):
    """TFLite has static shapes: the phone half is a slot graph (one token per call into a fixed cache
    of 96 positions); through the real server it still gives the unsplit model's 64 greedy tokens, and a
    full phone cache is refused with the way out."""
    from edgellm.errors import EdgeLLMError

    info = export_generation(
        tiny_llama, 2, tmp_path / "tfl", device_format="tflite", device_cache=96, check_tokens=8
    )
    man = json.loads((tmp_path / "tfl" / "device" / "manifest.json").read_text())
    assert info["device_cache"] == {"kind": "slots", "slots": 96} and man["target"]["format"] == "tflite"
    with serve_in_background([ModelConfig(tmp_path / "tfl" / "server")]) as srv:
        url = f"http://127.0.0.1:{srv.config.port}"
        c = GenerationClient(tmp_path / "tfl", url)
        prompt = c.encode(PROMPTS[3])
        assert tokens(c, prompt, 64) == hf_greedy(tiny_llama, prompt, 64)
        with pytest.raises(EdgeLLMError, match="cache holds 96 positions and is full"):
            tokens(c, list(range(5, 100)), 4)
