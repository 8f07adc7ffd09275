"""The pure parts of the LLM load benchmark (benchmarks/llm_load.py, benchmarks/serve_llm_load.py): the
server-sent-events parser on every split of a real llama-server stream, the text of OpenAI chunks, the
percentiles against numpy, and the window arithmetic of tokens/s, TTFT and ITL; plus the goal checks."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

import llm_load
import serve_llm_load
from llm_load import Record, SSEParser, add_event, chunk_text, percentile, summarize

# three events as llama-server b0 sent them here (trimmed), then the usage chunk and [DONE]
STREAM = (
    b'data: {"choices":[{"text":" by","index":0,"finish_reason":null}],"object":"text_completion"}\n\n'
    b'data: {"choices":[{"text":" the","index":0,"finish_reason":null}],"object":"text_completion"}\n\n'
    b'data: {"choices":[{"text":"","index":0,"finish_reason":"length"}],"object":"text_completion",'
    b'"usage":{"completion_tokens":2,"prompt_tokens":128,"total_tokens":130}}\n\n'
    b"data: [DONE]\n\n"
)


def test_sse_parser_any_split():
    whole = SSEParser().feed(STREAM)
    assert len(whole) == 4 and whole[-1] == "[DONE]"
    assert json.loads(whole[0])["choices"][0]["text"] == " by"
    for cut in range(1, len(STREAM)):
        p = SSEParser()
        assert p.feed(STREAM[:cut]) + p.feed(STREAM[cut:]) == whole, cut


def test_sse_parser_crlf_multiline_and_comments():
    p = SSEParser()
    got = p.feed(b": keep-alive\r\nevent: message\r\ndata: a\r\ndata:b\r\n\r\ndata: c\r")
    assert got == ["a\nb"]
    assert p.feed(b"\n\r\n") == ["c"]  # a \r\n split across two reads is one line end
    assert p.feed(b"\n\n") == []  # blank lines alone end no event


def test_chunk_text_completions_and_chat():
    assert chunk_text({"choices": [{"text": "x"}]}) == "x"
    assert chunk_text({"choices": [{"delta": {"content": "y"}}]}) == "y"
    assert chunk_text({"choices": [{"delta": {"role": "assistant", "content": ""}}]}) == ""
    assert chunk_text({"choices": [], "usage": {"completion_tokens": 3}}) == ""


def test_add_event_stamps_text_and_reads_usage():
    rec = Record(sent=10.0)
    for i, data in enumerate(SSEParser().feed(STREAM)):
        add_event(rec, data, 10.5 + i)
    assert rec.stamps == [10.5, 11.5]  # the empty final chunk carries no token
    assert (rec.prompt_tokens, rec.completion_tokens, rec.done) == (128, 2, True)
    assert rec.ttft() == 0.5 and rec.itls() == [1.0]
    bad = Record(sent=0.0)
    add_event(bad, '{"error": {"message": "slot freed", "type": "server_error"}}', 1.0)
    assert bad.error == "slot freed"


@pytest.mark.parametrize("q", [0, 1, 50, 90, 99, 100])
def test_percentile_matches_numpy(q):
    xs = list(np.random.default_rng(q).exponential(5.0, size=37))
    assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert percentile([], q) != percentile([], q)  # NaN


def rec(sent, stamps, tokens=None, done=True, **kw):
    return Record(sent=sent, stamps=list(stamps), completion_tokens=tokens, done=done, **kw)


def test_summarize_window():
    records = [
        rec(0.5, [0.6, 1.4, 1.6]),  # warm-up: sent before the window, only its tokens inside it count
        rec(1.0, [1.2, 1.3, 1.5, 2.1]),  # 4 tokens, 4 chunks; the last one after the window
        rec(1.1, [1.6, 1.8], tokens=4),  # 4 tokens in 2 chunks: each chunk weighs 2
        rec(1.2, [1.9], done=False),  # cut: an error
        rec(1.3, [], status=429, error="too many"),
    ]
    s = summarize(records, start=1.0, end=2.0)
    assert s["requests"] == 2 and s["errors"] == 2
    assert s["first_error"] == "200: stream ended early"
    assert s["tok_s"] == pytest.approx(2 + 3 + 2 * 2)  # tokens that arrived in [1, 2] over 1 s
    assert s["completion_tokens"] == 8
    assert s["ttft_ms_p50"] == pytest.approx(1e3 * np.median([0.2, 0.5]))
    assert s["itl_ms_p99"] == pytest.approx(1e3 * float(np.percentile([0.1, 0.2, 0.6, 0.2], 99)))
    assert s["chunks_per_token"] == pytest.approx(6 / 8)


def row(arm, c, tok_s, p99, model="tiny-llama", rnd=0):
    return {
        "model_name": model,
        "precision": "fp32",
        "gguf": "F32",
        "arm": arm,
        "concurrency": c,
        "tok_s": tok_s,
        "ttft_ms_p99": p99,
        "round": rnd,
    }


def test_best_rows_and_goals():
    runs = [
        row("edgellm", 16, 900.0, 80.0),
        row("edgellm", 16, 1000.0, 90.0, rnd=1),
        row("llama-server", 16, 950.0, 100.0),
        row("edgellm-nobatch", 16, 400.0, 2000.0),
        row("llama-server", 4, 2000.0, 10.0),
    ]
    best = serve_llm_load.best_rows(runs)
    assert len(best) == 4
    g = serve_llm_load.goal_checks(best)
    assert g["tok_s_vs_llama_server"] == pytest.approx(1000 / 950, abs=1e-3)
    assert g["goal_vs_llama_server"] is True  # the best round: 1000 tok/s at p99 90 <= 100
    assert g["goal_batching_2x"] is True and g["batching_speedup"] == 2.5
    slower = serve_llm_load.goal_checks([*best[:1], row("llama-server", 16, 950.0, 50.0), best[2]])
    assert slower["goal_vs_llama_server"] is False  # faster, but a worse p99 TTFT
    assert "goal_batching_2x" not in serve_llm_load.goal_checks(best, model="qwen05")
    unmeasured = serve_llm_load.goal_checks([best[0], row("llama-server", 16, 99.0, float("nan"))])
    assert unmeasured["goal_vs_llama_server"] is None  # no llama-server request finished in the window


def test_table_lists_every_row():
    best = serve_llm_load.best_rows([row("edgellm", 1, 10.0, 5.0), row("llama-server", 1, 12.0, 4.0)])
    for r in best:
        r.update(ttft_ms_p50=1.0, itl_ms_p50=2.0, itl_ms_p99=3.0, requests=5, errors=0)
    md = serve_llm_load.table(best)
    assert md.count("\n") == 3 and "| tiny-llama | fp32/F32 | llama-server | 1 | 12.0 |" in md
    assert llm_load.summarize([], 0.0, 1.0)["requests"] == 0


def test_tokens_per_pass_from_counters():
    ours = {
        'edgellm:generation_tokens_total{model="tl"}': 640.0,
        'edgellm:batch_occupancy_count{model="tl"}': 80.0,
    }
    llama = {"llamacpp:tokens_predicted_total": 640.0, "llamacpp:n_decode_total": 320.0}
    assert serve_llm_load.tokens_per_pass(ours) == 8.0
    assert serve_llm_load.tokens_per_pass(llama) == 2.0
    assert serve_llm_load.tokens_per_pass({"llamacpp:prompt_tokens_total": 5.0}) is None
