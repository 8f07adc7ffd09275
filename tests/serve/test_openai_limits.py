"""The OpenAI routes under load and at their limits, on real servers: 429 and 503 with Retry-After, a client
that disconnects mid-stream (its slot and cache freed, counted), chunked prefill between running decodes,
API keys, metrics and the access log, the chat template, and the drain on SIGTERM of a real process."""

from __future__ import annotations

import http.client
import json
import logging
import signal
import socket
import threading
import time

import pytest

openai = pytest.importorskip("openai", reason="pip install 'edgellm[dev]' (the openai client)")

from conftest import running  # noqa: E402

NAME = "small-lm"


def client(srv, key="unused"):
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{srv.config.port}/v1", api_key=key, max_retries=0, timeout=60
    )


def body(n=200, stream=True, prompt="hello"):
    return {
        "model": NAME,
        "prompt": prompt,
        "max_tokens": n,
        "temperature": 0,
        "stream": stream,
        "ignore_eos": True,
    }


def post(port, data, path="/v1/completions", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request(
        "POST", path, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})}
    )
    return c.getresponse()


def metric(srv, name):
    from edgellm.serve.metrics import parse

    return parse(srv.metrics.render()[0].decode()).get(name, 0.0)


def events(resp, on_event=None):
    """The ``data:`` lines of a streamed answer, up to ``[DONE]`` (or the end of the stream)."""
    out = []
    for line in iter(resp.readline, b""):
        if line.startswith(b"data: "):
            out.append(line.strip())
            if on_event is not None:
                on_event(line)
            if line.strip() == b"data: [DONE]":
                break
    return out


def hold(svc):
    """Keep the model busy: the next pass waits until the returned event is set (requests pile up)."""
    gate = threading.Event()
    svc._pool.submit(gate.wait)
    return gate


def test_queue_full_503_and_concurrency_429_with_retry_after(gen_artifact):
    from edgellm.serve import ModelConfig

    with running([ModelConfig(gen_artifact)], max_batch_size=1, max_queue_size=1) as srv:
        svc = srv.llms[NAME]
        gate = hold(svc)
        answers = []

        def ask():
            r = post(srv.config.port, body(8, stream=False))
            answers.append((r.status, json.loads(r.read())))

        first = threading.Thread(target=ask)  # takes the slot (its pass waits)
        first.start()
        while len(svc.running) < 1:
            time.sleep(0.01)
        second = threading.Thread(target=ask)  # waits in the queue
        second.start()
        while len(svc.waiting) < 1:
            time.sleep(0.01)
        r = post(srv.config.port, body(8, stream=False))
        assert r.status == 503 and r.getheader("Retry-After") == "1"
        err = json.loads(r.read())["error"]
        assert err["type"] == "unavailable_error" and "queue is full" in err["message"]
        with pytest.raises(openai.InternalServerError):  # the client's class for a 503
            client(srv).completions.create(**{k: v for k, v in body(4, False).items() if k != "ignore_eos"})
        gate.set()
        first.join(60)
        second.join(60)
        assert [(s, a["usage"]["completion_tokens"]) for s, a in answers] == [(200, 8), (200, 8)]
    with running([ModelConfig(gen_artifact)], max_batch_size=1, max_concurrent=2) as srv:
        gate = hold(srv.llms[NAME])
        threads = [
            threading.Thread(target=lambda: post(srv.config.port, body(4, False)).read()) for _ in range(2)
        ]
        for t in threads:
            t.start()
        while len(srv.llms[NAME].waiting) + len(srv.llms[NAME].running) < 2:
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as e:
            client(srv).completions.create(model=NAME, prompt="x", max_tokens=2)
        assert e.value.response.headers["Retry-After"] == "1"
        assert "too many concurrent requests" in e.value.message
        gate.set()
        for t in threads:
            t.join(60)


def test_client_disconnect_frees_slot_and_is_counted(gen_artifact):
    from edgellm.serve import ModelConfig

    with running([ModelConfig(gen_artifact)], max_batch_size=1) as srv:
        svc = srv.llms[NAME]
        decode = svc.engine.decode
        svc.engine.decode = lambda slots, ids: (time.sleep(0.02), decode(slots, ids))[1]  # 20 ms a token
        sock = socket.create_connection(("127.0.0.1", srv.config.port))
        data = json.dumps(body(230)).encode()
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        got = b""
        while got.count(b"data: ") < 3:
            got += sock.recv(4096)
        sock.close()  # mid-stream: 3 of 230 tokens read
        deadline = time.time() + 10
        while metric(srv, "edgellm:request_aborted") < 1 and time.time() < deadline:
            time.sleep(0.02)
        assert metric(srv, "edgellm:request_aborted") == 1
        assert not svc.running and svc.engine.busy == [False]  # the slot and its cache are free
        assert svc.stats["decode_steps"] < 100  # freed long before its 230 tokens
        svc.engine.decode = decode
        r = client(srv).completions.create(model=NAME, prompt="again", max_tokens=3, temperature=0)
        assert r.usage.completion_tokens in (1, 2, 3)  # the one slot serves the next request at once
        assert metric(srv, "edgellm:num_requests_running") == 0


def test_long_prompt_is_chunked_between_running_decodes(gen_artifact):
    from edgellm.serve import ModelConfig

    with running([ModelConfig(gen_artifact)], max_batch_size=2, prefill_chunk=16) as srv:
        stamps = []
        resp = post(srv.config.port, body(240))
        t = threading.Thread(target=lambda: events(resp, lambda _: stamps.append(time.perf_counter())))
        t.start()
        while len(stamps) < 6:
            time.sleep(0.001)
        long_prompt = list(range(5, 205))  # 200 tokens: 13 chunks of 16
        sent = time.perf_counter()
        b = post(srv.config.port, {**body(1), "prompt": long_prompt})
        while not b.readline().startswith(
            b"data: "
        ):  # its first event: the first token, after its whole prompt
            pass
        first_b = time.perf_counter()
        t.join(60)
        between = [s for s in stamps if sent < s < first_b]
        assert srv.llms[NAME].stats["prefill_tokens"] >= 200
        # 13 passes ran B's chunks, each with a decode step of A: A kept streaming meanwhile
        assert len(between) >= 2 * 6, (len(between), len(stamps))


def test_api_key_is_required_on_v1(gen_artifact, tmp_path):
    from edgellm.serve import ModelConfig

    with running([ModelConfig(gen_artifact)], api_key="s3cret", max_body_mb=0.01) as srv:
        with pytest.raises(openai.AuthenticationError) as e:
            client(srv, "wrong").models.list()
        assert e.value.body["type"] == "authentication_error" and e.value.body["code"] == "invalid_api_key"
        assert [m.id for m in client(srv, "s3cret").models.list().data] == [NAME]
        r = client(srv, "s3cret").completions.create(model=NAME, prompt="a", max_tokens=2, temperature=0)
        assert r.usage.completion_tokens >= 1
        big = post(
            srv.config.port, body(2, False, prompt="x " * 20000), headers={"Authorization": "Bearer s3cret"}
        )
        assert big.status == 413  # the same body limit as the tensor endpoints, in OpenAI's error shape
        assert json.loads(big.read())["error"]["type"] == "invalid_request_error"


def test_metrics_and_access_log_count_tokens(gen_artifact, caplog):
    from edgellm.serve import ModelConfig

    caplog.set_level(logging.INFO, logger="edgellm.serve.access")
    with running([ModelConfig(gen_artifact)], max_batch_size=4) as srv:
        c = client(srv)
        usages = [
            c.completions.create(model=NAME, prompt=f"p{i}", max_tokens=5 + i, temperature=0).usage
            for i in range(3)
        ]
        list(
            c.chat.completions.create(
                model=NAME,
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=4,
                stream=True,
                temperature=0,
            )
        )
        text = srv.metrics.render()[0].decode()
        for name in (
            "edgellm:time_to_first_token_seconds",
            "edgellm:time_per_output_token_seconds",
            "edgellm:e2e_request_latency_seconds",
            "edgellm:batch_occupancy",
            "edgellm:prompt_tokens_total",
            "edgellm:generation_tokens_total",
            "edgellm:num_requests_running",
            "edgellm:num_requests_waiting",
        ):
            assert name in text, name
        assert metric(srv, "edgellm:time_to_first_token_seconds_count") == 4
        assert metric(srv, "edgellm:request_success") == 4
        gen3 = sum(u.completion_tokens for u in usages)
        assert metric(srv, "edgellm:generation_tokens") >= gen3 + 1
        assert metric(srv, "edgellm:prompt_tokens") >= sum(u.prompt_tokens for u in usages)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgellm.serve.access"]
    v1 = [ln for ln in lines if ln["path"] == "/v1/completions"]
    assert [ln["completion_tokens"] for ln in v1] == [u.completion_tokens for u in usages]
    assert all(ln["prompt_tokens"] == u.prompt_tokens for ln, u in zip(v1, usages))


def test_chat_template_of_the_tokenizer_is_used(gen_artifact):
    from edgellm.serve import ModelConfig

    with running([ModelConfig(gen_artifact)]) as srv:
        svc = srv.llms[NAME]
        svc.tokenizer.chat_template = (
            "{% for m in messages %}{% if m.role == 'assistant' and loop.first %}"
            "{{ raise_exception('a chat starts with the user') }}{% endif %}"
            "[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
        )
        svc.chat_template = True
        msgs = [{"role": "user", "content": "What is a dict?"}]
        r = client(srv).chat.completions.create(model=NAME, messages=msgs, max_tokens=3, temperature=0)
        assert r.usage.prompt_tokens == len(svc.encode("[user] What is a dict?\n[assistant] "))
        with pytest.raises(openai.BadRequestError) as e:
            client(srv).chat.completions.create(model=NAME, messages=[{"role": "assistant", "content": "x"}])
        assert "a chat starts with the user" in e.value.message
        assert client(srv).models.retrieve(NAME).model_extra["chat_template"] == "tokenizer"


def test_sigterm_drains_running_streams(gen_artifact, serve_cli, tmp_path):
    proc, port = serve_cli(gen_artifact, tmp_path, "--max-batch-size", "4", "--threads", "1")
    try:
        done, stamps = [], []
        started = threading.Semaphore(0)

        def stream():
            r = post(port, body(240, prompt="a b c"))
            first = []

            def on_event(_):
                if not first:
                    first.append(1)
                    started.release()

            got = events(r, on_event)
            stamps.append(time.perf_counter())
            done.append(got)

        threads = [threading.Thread(target=stream) for _ in range(3)]
        for t in threads:
            t.start()
        for _ in threads:  # every stream has its first chunk (a fixed sleep raced a fast decode)
            assert started.acquire(timeout=60)
        term = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        try:
            late = post(port, body(2, stream=False)).status
        except OSError:
            late = "refused"
        for t in threads:
            t.join(60)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert late in (503, "refused")
    assert len(done) == 3 and all(ev[-1] == b"data: [DONE]" for ev in done)
    assert all(json.loads(ev[-2][6:])["choices"][0]["finish_reason"] == "length" for ev in done)
    assert max(stamps) > term  # the streams were still running when SIGTERM came, and finished
