"""The OpenAI-compatible routes of `edgellm serve` on a real server, with the real `openai` client and curl:
answers equal to the Generator's, streaming, continuous batching across requests, and OpenAI-style errors."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import threading

import pytest

openai = pytest.importorskip("openai", reason="pip install 'edgellm[dev]' (the openai client)")

from conftest import running  # noqa: E402

NAME = "small-lm"


@pytest.fixture(scope="module")
def llm(gen_artifact):
    from edgellm.serve import ModelConfig

    with running([ModelConfig(gen_artifact)], max_batch_size=4, prefill_chunk=64) as srv:
        yield srv


def url(srv) -> str:
    return f"http://127.0.0.1:{srv.config.port}/v1"


def client(srv, key: str = "unused"):
    return openai.OpenAI(base_url=url(srv), api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def gen(gen_artifact):
    from edgellm.runtime.generator import Generator

    return Generator(gen_artifact)


def expected(gen, ids, n):
    return gen.generate(ids, max_new_tokens=n).token_ids


def test_models_lists_the_artifact(llm):
    models = client(llm).models.list().data
    assert [m.id for m in models] == [NAME]
    assert models[0].object == "model"
    assert client(llm).models.retrieve(NAME).id == NAME


def test_chat_equals_the_generator_greedy(llm, gen):
    from edgellm.serve.llm import plain_chat

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a list?"}]
    r = client(llm).chat.completions.create(model=NAME, messages=msgs, max_tokens=12, temperature=0)
    ids = gen.encode(plain_chat(msgs))
    want = gen.generate(ids, max_new_tokens=12)
    assert r.choices[0].message.content == gen.decode(want.token_ids)
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == len(want.token_ids)
    assert r.usage.total_tokens == len(ids) + len(want.token_ids)
    assert r.choices[0].finish_reason == ("length" if want.stop_reason == "length" else "stop")
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion"


def test_chat_stream_with_usage(llm):
    c = client(llm)
    msgs = [{"role": "user", "content": "Tell me about tuples"}]
    whole = c.chat.completions.create(model=NAME, messages=msgs, max_tokens=10, temperature=0)
    chunks = list(
        c.chat.completions.create(
            model=NAME,
            messages=msgs,
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finished = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finished == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({ch.id for ch in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"


def test_completions_stream_and_not_with_stop(llm, gen):
    c = client(llm)
    ids = gen.encode("def main():")
    full = gen.decode(expected(gen, ids, 20))
    r = c.completions.create(model=NAME, prompt="def main():", max_tokens=20, temperature=0)
    assert r.choices[0].text == full and r.object == "text_completion"
    streamed = "".join(
        ch.choices[0].text
        for ch in c.completions.create(model=NAME, prompt=ids, max_tokens=20, temperature=0, stream=True)
        if ch.choices
    )
    assert streamed == full  # token ids as the prompt give the same answer
    stop = full.strip()[3:6]  # a piece from the middle of the answer
    cut = c.completions.create(model=NAME, prompt="def main():", max_tokens=20, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full[: full.index(stop)]


def test_curl_streams_server_sent_events(llm):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    body = json.dumps({"model": NAME, "prompt": "x = ", "max_tokens": 4, "temperature": 0, "stream": True})
    out = subprocess.run(
        ["curl", "-sN", "-i", f"{url(llm)}/completions", "-H", "Content-Type: application/json", "-d", body],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    head, _, events = out.replace("\r\n", "\n").partition("\n\n")
    assert "text/event-stream" in head.lower()
    lines = [ln for ln in events.split("\n\n") if ln.strip()]
    assert lines[-1] == "data: [DONE]"
    assert all(ln.startswith("data: {") for ln in lines[:-1])
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_concurrent_requests_batch_and_each_is_right(llm, gen):
    prompts = [f"item {i}: value" * (1 + i % 3) for i in range(8)]
    want = [gen.decode(expected(gen, gen.encode(p), 16)) for p in prompts]
    got = [None] * len(prompts)
    before = llm.llms[NAME].stats["max_batch_seen"]
    llm.llms[NAME].stats["max_batch_seen"] = 0

    def one(i):
        got[i] = client(llm).completions.create(
            model=NAME, prompt=prompts[i], max_tokens=16, temperature=0, extra_body={"ignore_eos": True}
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, r in enumerate(got):
        assert r is not None, f"request {i} did not finish"
        assert r.usage.completion_tokens == 16
        assert want[i].startswith(r.choices[0].text) or r.choices[0].text.startswith(want[i])
    assert llm.llms[NAME].stats["max_batch_seen"] > 1  # rows of different requests ran in one pass
    llm.llms[NAME].stats["max_batch_seen"] = max(before, llm.llms[NAME].stats["max_batch_seen"])


def test_seeded_sampling_is_reproducible(llm):
    c = client(llm)

    def run(seed):
        return (
            c.completions.create(
                model=NAME, prompt="import", max_tokens=24, temperature=1.0, top_p=0.95, seed=seed
            )
            .choices[0]
            .text
        )

    assert run(7) == run(7)
    assert len({run(7), run(8), run(9)}) > 1


def raw(srv, path, body, headers=None, method="POST"):
    c = http.client.HTTPConnection("127.0.0.1", srv.config.port, timeout=60)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    c.request(
        method,
        path,
        data if method == "POST" else None,
        {"Content-Type": "application/json", **(headers or {})},
    )
    r = c.getresponse()
    return r.status, dict(r.getheaders()), r.read()


CHAT = "/v1/chat/completions"
OK_MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "path,body,status,param",
    [
        (CHAT, {"model": "nope", "messages": OK_MSG}, 404, "model"),
        (CHAT, {"messages": OK_MSG}, 400, "model"),
        (CHAT, {"model": NAME, "messages": []}, 400, "messages"),
        (CHAT, {"model": NAME, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
        (CHAT, {"model": NAME, "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
        (CHAT, {"model": NAME, "messages": [{"role": "user", "content": "  "}]}, 400, "messages"),
        (CHAT, {"model": NAME, "messages": "hi"}, 400, "messages"),
        (CHAT, {"model": NAME, "messages": OK_MSG, "max_tokens": 100000}, 400, "max_tokens"),
        (CHAT, {"model": NAME, "messages": OK_MSG, "max_tokens": 0}, 400, "max_tokens"),
        (CHAT, {"model": NAME, "messages": OK_MSG, "max_tokens": "ten"}, 400, "max_tokens"),
        (CHAT, {"model": NAME, "messages": OK_MSG, "max_tokens": True}, 400, "max_tokens"),
        (CHAT, {"model": NAME, "messages": OK_MSG, "temperature": "hot"}, 400, "temperature"),
        (
            CHAT,
            b'{"model": "small-lm", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
            400,
            "temperature",
        ),
        (CHAT, {"model": NAME, "messages": OK_MSG, "temperature": -1}, 400, "temperature"),
        (CHAT, {"model": NAME, "messages": OK_MSG, "top_p": 0}, 400, "top_p"),
        (CHAT, {"model": NAME, "messages": OK_MSG, "n": 2}, 400, "n"),
        (CHAT, {"model": NAME, "messages": OK_MSG, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        (CHAT, {"model": NAME, "messages": OK_MSG, "seed": "x"}, 400, "seed"),
        (CHAT, {"model": NAME, "messages": OK_MSG, "stream": "yes"}, 400, "stream"),
        (
            CHAT,
            {"model": NAME, "messages": OK_MSG, "stream_options": {"include_usage": True}},
            400,
            "stream_options",
        ),
        (CHAT, {"model": NAME, "messages": OK_MSG, "tools": [{"type": "function"}]}, 400, "tools"),
        (CHAT, {"model": NAME, "messages": OK_MSG, "logprobs": True}, 400, "logprobs"),
        (CHAT, {"model": NAME, "messages": OK_MSG, "bogus": 1}, 400, "bogus"),
        (CHAT, b"not json", 400, None),
        (CHAT, b"[1, 2]", 400, None),
        (CHAT, b"[" * 40 + b"]" * 40, 400, None),
        ("/v1/completions", {"model": NAME, "prompt": ""}, 400, "prompt"),
        ("/v1/completions", {"model": NAME, "prompt": [1, 99999]}, 400, "prompt"),
        ("/v1/completions", {"model": NAME, "prompt": ["a", "b"]}, 400, "prompt"),
        ("/v1/completions", {"model": NAME, "prompt": "x", "echo": True}, 400, "echo"),
        ("/v1/nothing", {}, 404, None),
    ],
)
def test_bad_input_is_an_openai_error(llm, path, body, status, param):
    got, _, data = raw(llm, path, body)
    assert got == status, data
    err = json.loads(data)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    if param is not None:
        assert err["param"] == param
    if "max_tokens" in str(body) and status == 400 and "100000" in str(body):
        assert err["code"] == "context_length_exceeded"


def test_openai_client_sees_typed_errors(llm):
    c = client(llm)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="missing", messages=OK_MSG)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=NAME, messages=OK_MSG, max_tokens=10**6)
    assert e.value.code == "context_length_exceeded"
    got, _, _ = raw(llm, "/v1/models", b"", method="GET")
    assert got == 200


def test_concat_layout_is_batched_too(gen_concat_artifact, gen):
    """The step-graph layout (per-request caches left-padded into one pass) behind the same API."""
    from edgellm.serve import ModelConfig

    prompts = ["a = [", "for x in", "class A:", "import os"]
    want = [gen.decode(expected(gen, gen.encode(p), 12)) for p in prompts]
    with running([ModelConfig(gen_concat_artifact, NAME)], max_batch_size=4) as srv:
        assert srv.llms[NAME].describe()["batch_engine"] == "ConcatBatchEngine"
        got = [None] * 4
        clients = [client(srv) for _ in range(4)]  # made first: a client's set-up outlasted a 12-token decode
        start = threading.Barrier(4)

        def one(i):
            start.wait()  # the four requests leave together, so they meet in the scheduler's passes
            got[i] = clients[i].completions.create(
                model=NAME, prompt=prompts[i], max_tokens=12, temperature=0
            )

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [r.choices[0].text for r in got] == want
        assert srv.llms[NAME].stats["max_batch_seen"] > 1


def test_fuzzed_bodies_are_answered_or_refused_with_4xx(llm):
    """Hypothesis over request bodies (every field, values of every JSON type): 200, or a 4xx in OpenAI's
    error shape; never a 500 or a dropped connection."""
    from collections import Counter

    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True), st.text(max_size=8)
    )
    values = st.recursive(
        scalars,
        lambda v: st.lists(v, max_size=3) | st.dictionaries(st.text(max_size=6), v, max_size=3),
        max_leaves=6,
    )
    message = st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "system", "assistant", "robot", 3]),
            "content": st.one_of(st.text(max_size=12), values),
        }
    )
    chat = st.fixed_dictionaries(
        {
            "model": st.sampled_from([NAME, NAME, "other", 5]),
            "messages": st.one_of(st.lists(message, max_size=3), values),
        },
        optional={
            k: values | st.integers(1, 4)
            for k in (
                "temperature",
                "top_p",
                "top_k",
                "seed",
                "stop",
                "n",
                "stream",
                "stream_options",
                "ignore_eos",
                "logprobs",
                "bogus",
            )
        },
    ).map(lambda b: {**b, "max_tokens": b.get("max_tokens", 3)})
    seen: Counter = Counter()

    @settings(
        max_examples=120,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(chat)
    @example({"model": NAME, "messages": OK_MSG, "max_tokens": 2, "temperature": 0.5, "stop": "x"})
    @example({"model": NAME, "messages": OK_MSG, "max_tokens": 2, "stream": True, "top_k": 3})
    def run(body):
        status, _, data = raw(llm, CHAT, json.dumps(body).encode())
        assert status in (200, 400, 404), (status, body, data[:300])
        if status != 200:
            assert json.loads(data)["error"]["type"] in ("invalid_request_error", "not_found_error")
        seen[status] += 1

    run()
    assert seen[200] > 0 and seen[400] > 0
