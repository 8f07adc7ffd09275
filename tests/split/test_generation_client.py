"""The phone half of split generation through the real server on loopback: the phone half (ORT-mobile,
or a TFLite slot graph with a fixed cache) holds its cache; greedy tokens with the fp16 codec equal the
unsplit model's for 64 tokens; a client names what is wrong; ``edgellm split export/chat/bench``."""

import json

import numpy as np
import pytest
from generation_helpers import PROMPTS, hf_greedy, tokens

from edgellm.pipeline.generation import export_generation
from edgellm.serve import ModelConfig, serve_in_background
from edgellm.split.generation_client import GenerationClient, GenerationError


def test_greedy_tokens_through_the_server_equal_the_unsplit_model(tiny_llama, gen_dir, gen_server):
    url, srv = gen_server
    c = GenerationClient(gen_dir, url)
    prompt = c.encode(PROMPTS[0])
    want = hf_greedy(tiny_llama, prompt, 64)
    stream = list(c.generate(prompt, 64, stop_at_eos=False))
    assert [t["token"] for t in stream] == want  # fp16 codec: token for token
    assert all(t["bytes"] == 2 * 384 for t in stream[1:])  # one fp16 hidden state per decode step
    int8 = tokens(GenerationClient(gen_dir, url, codec="int8"), prompt, 64)
    assert np.mean([a == b for a, b in zip(int8, want)]) > 0.5
    assert srv.generators["tiny-llama-gen-server"].describe()["sessions"] == 0  # closed after each run


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


def test_cli_export_chat_and_bench(tiny_llama, gen_dir, gen_server, tmp_path, capsys):
    from edgellm.cli import main

    url, _ = gen_server
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


def test_compressed_halves_through_the_real_server(small_llm, tmp_path):
    """An INT4 phone half beside an INT8 server half (each lowered from its own QuantSpec): the export's
    chain check passes against the model with those layers fake-quantized, the quantized server half is
    served unchanged with continuous batching, and the phone's tokens through it equal the local pair's."""
    from edgellm.runtime.generator import Generator

    out = tmp_path / "q"
    info = export_generation(
        small_llm,
        1,
        out,
        device="snapdragon-8-gen-3",
        device_precision="int4",
        server_precision="int8",
        check_tokens=16,
    )
    assert info["precision"] == {"device": "int4", "server": "int8"}
    assert info["check"]["reference"].endswith("fake-quantized")
    dev = json.loads((out / "device" / "manifest.json").read_text())
    srv_m = json.loads((out / "server" / "manifest.json").read_text())
    assert dev["precision"] == "int4" and srv_m["precision"] == "int8"
    prompt = [0, 17, 94, 120, 33]
    local = Generator(out).generate(prompt, max_new_tokens=12, stop_token_ids=()).token_ids
    with serve_in_background([ModelConfig(out / "server")], max_length=128, max_batch_size=4) as srv:
        c = GenerationClient(out, f"http://127.0.0.1:{srv.config.port}")
        remote = [t["token"] for t in c.generate(prompt, 12, stop_at_eos=False)]
        c.close()
    assert remote == local
