"""The split planner on synthetic cost tables with known optima, the activation codecs, and profiling."""

import numpy as np
import pytest

from edgellm.errors import EdgeLLMError
from edgellm.partition.network import Network, parse_size
from edgellm.partition.planner import CostTable, make_generation_plan, make_plan
from edgellm.partition.profile import profile_blocks
from edgellm.runtime.codecs import Codec


def cnn_like(**over):
    """Four blocks; the input is large, the activation shrinks after block 2 (a CNN's shape)."""
    t = dict(
        blocks=["stem", "b1", "b2", "head"],
        device_ms=[20.0, 20.0, 20.0, 5.0],
        server_ms=[2.0, 2.0, 2.0, 0.5],
        weight_bytes=[1 << 20, 4 << 20, 16 << 20, 1 << 20],
        input_bytes=600_000,  # a 224x224x3 fp32 image
        cut_shapes=[[1, 64, 56, 56], [1, 128, 28, 28], [1, 256, 1, 1]],
        output_bytes=4000,
    )
    t.update(over)
    return CostTable(**t)


def decoder_like(new: int):
    """Four decoder blocks at ``new`` new tokens: the phone is 30x slower than the server."""
    return CostTable(
        blocks=["embeddings", "layers.0", "layers.1", "head"],
        device_ms=[0.2 * new, 1.0 * new, 1.0 * new, 0.3 * new],
        server_ms=[0.01 * new, 0.01 * new, 0.01 * new, 0.01 * new],
        weight_bytes=[1 << 20] * 4,
        input_bytes=8 * new,
        cut_shapes=[[1, new, 384]] * 3,
        output_bytes=4 * 32000,  # one-shot inference downloads the last position's logits
    )


def test_generation_plans_pay_a_round_trip_per_token():
    """One-shot over a 50 ms link sends the prompt to the server; generating 64 tokens pays the round
    trip 63 more times, so the same link keeps generation on the phone."""
    net = Network.parse("10mbit", "50ms")
    one_shot = make_plan(decoder_like(128), net)
    assert one_shot.best["cut"] == 0
    gen = make_generation_plan(decoder_like(128), decoder_like(1), net, tokens=64)
    assert gen.best["cut"] == 4 and gen.best["per_token_ms"] == pytest.approx(2.5)
    remote = [c for c in gen.candidates if c["cut"] < 4]
    assert all(
        c["per_token_ms"] >= 50 and c["total_ms"] == pytest.approx(c["ttft_ms"] + 63 * c["per_token_ms"])
        for c in remote
    )
    assert all(c["download_ms"] < 0.1 for c in remote)  # a token id comes back, not the logits
    fast = make_generation_plan(decoder_like(128), decoder_like(1), Network.parse("1gbit", "1ms"), tokens=64)
    assert fast.best["cut"] < 4  # a LAN-like link: the fast server wins even per token
    with pytest.raises(EdgeLLMError, match="at least 1"):
        make_generation_plan(decoder_like(128), decoder_like(1), net, tokens=0)


def test_slow_link_keeps_everything_on_the_device():
    plan = make_plan(cnn_like(), Network.parse("100kbit", "300ms"))
    assert plan.best["cut"] == 4 and plan.best["codec"] == "none" and plan.best["upload_ms"] == 0


def test_fast_link_and_slow_phone_send_the_input_to_the_server():
    plan = make_plan(cnn_like(device_ms=[200.0, 200.0, 200.0, 50.0]), Network.parse("1gbit", "1ms"))
    assert plan.best["cut"] == 0 and plan.best["codec"] == "raw"


def test_a_middle_cut_wins_where_the_activation_is_small():
    # 4G-like link, a heavy tail: the raw image costs 480 ms to upload, the 1 KB activation after block 3
    # almost nothing, and the phone would need 100 ms for the last block that the server does in 0.5 ms
    plan = make_plan(
        cnn_like(device_ms=[10.0, 10.0, 10.0, 100.0]), Network.parse("10mbit", "50ms"), min_device_blocks=1
    )
    assert plan.best["cut"] == 3 and plan.best["after_block"] == "b2"
    # the whole table is kept: every cut x codec, with the infeasible ones marked and explained
    assert len(plan.candidates) == 1 + 3 * 3 + 1
    raw = next(c for c in plan.candidates if c["cut"] == 0)
    assert not raw["feasible"] and "fewer than 1 block" in raw["reason"]
    # the predicted total is the sum of its parts, and the best is the minimum over feasible rows
    b = plan.best
    assert b["total_ms"] == pytest.approx(
        b["device_ms"] + b["codec_ms"] + b["upload_ms"] + b["rtt_ms"] + b["server_ms"] + b["download_ms"]
    )
    assert b["total_ms"] == min(c["total_ms"] for c in plan.candidates if c["feasible"])


def test_codec_choice_follows_the_link():
    t = cnn_like(cut_shapes=[[1, 128, 384]] * 3, device_ms=[5.0] * 4, server_ms=[1.0] * 4, input_bytes=10**7)
    slow = make_plan(t, Network.parse("1mbit", "20ms"), min_device_blocks=1, codecs=("fp32", "fp16", "int8"))
    fast = make_plan(t, Network.parse("10gbit", "1ms"), min_device_blocks=1, codecs=("fp32", "fp16", "int8"))
    assert slow.best["codec"] in ("int8", "none")  # fewest bytes, or nothing sent at all
    assert fast.best["codec"] in ("fp32", "none")  # no encode cost when bytes are free


def test_memory_budget_and_server_load():
    plan = make_plan(
        cnn_like(), Network.parse("100kbit", "300ms"), device_memory=parse_size("8MB"), min_device_blocks=1
    )
    assert plan.best["device_weight_bytes"] <= 8e6 and plan.best["cut"] <= 2
    assert any("exceed the budget" in (c["reason"] or "") for c in plan.candidates)
    busy = make_plan(cnn_like(), Network.parse("1gbit", "1ms"), server_load=100.0)
    assert busy.best["cut"] == 4  # a saturated server pushes the work back to the phone
    with pytest.raises(EdgeLLMError, match=r"budget is 0.5 MiB.*needs 1.0 MiB"):
        make_plan(cnn_like(), Network.parse("10mbit", "50ms"), device_memory=2**19, min_device_blocks=1)


def test_plan_id_is_stable_and_depends_on_the_inputs():
    a = make_plan(cnn_like(), Network.parse("10mbit", "50ms"))
    b = make_plan(cnn_like(), Network.parse("10mbit", "50ms"))
    c = make_plan(cnn_like(), Network.parse("10mbit", "60ms"))
    assert a.id == b.id != c.id


@pytest.mark.parametrize(
    "name,min_cos,ratio", [("fp32", 0.99999, 1.0), ("fp16", 0.9999, 0.5), ("int8", 0.999, 0.26)]
)
def test_codecs_round_trip(name, min_cos, ratio):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 384)).astype(np.float32)
    x[:, :, 7] *= 40  # an outlier channel, as transformer activations have
    c = Codec(name)
    payload, meta = c.encode(x)
    assert len(payload) == c.nbytes(x.shape) and len(payload) <= ratio * x.nbytes + 1
    y = c.decode(payload, meta)
    cos = (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)
    assert y.shape == x.shape and cos.min() >= min_cos
    with pytest.raises(EdgeLLMError, match="truncated"):
        c.decode(payload[:-1], meta)
    other = Codec("fp16" if name != "fp16" else "int8")
    with pytest.raises(EdgeLLMError, match="encoded with"):
        other.decode(payload, meta)


def test_profile_blocks_of_a_decoder(tiny_llama):
    prof = profile_blocks(tiny_llama, batch=1, seq=32, runs=3)
    names = [b.name for b in prof.blocks]
    assert names == [b.name for b in tiny_llama.blocks] and names[0] == "embeddings" and names[-1] == "head"
    hidden = tiny_llama.config.hidden_size
    for b in prof.blocks[:-1]:  # every inner cut hands [batch, seq, hidden] to the next block
        assert b.out_shape == [1, 32, hidden] and b.out_bytes == 32 * hidden * 4
        assert b.latency_ms > 0
    assert prof.blocks[-1].out_shape == [1, 32, tiny_llama.config.vocab_size]
    total = sum(p.numel() * 4 for p in tiny_llama.module.parameters())
    assert (
        0.9 * total <= sum(b.weight_bytes for b in prof.blocks) <= 2.1 * total
    )  # tied embeddings count twice
    assert prof.input_bytes == 2 * 32 * 8  # input_ids and attention_mask, int64


def test_cost_table_scales_host_figures_to_each_target(tiny_llama):
    from edgellm.partition.cost import cost_table
    from edgellm.targets import load_target

    prof = profile_blocks(tiny_llama, batch=1, seq=32, runs=3)
    phone, gpu = load_target("snapdragon-865"), load_target("nvidia-a100")
    table, basis = cost_table(tiny_llama, prof, phone, gpu)
    assert table.blocks == [b.name for b in prof.blocks] and len(table.cut_shapes) == len(table.blocks) - 1
    assert 0 < basis["host_efficiency"] <= 1 and basis["flops"]["layers.0"] > 0
    assert all(
        d > s for d, s in zip(table.device_ms, table.server_ms)
    )  # the A100 outruns the phone per block
    # int8 on the phone: 4x the fp32 peak and a quarter of the weight bytes
    t8, _ = cost_table(tiny_llama, prof, phone, gpu, device_precision="int8")
    assert sum(t8.device_ms) < sum(table.device_ms) and sum(t8.weight_bytes) < 0.3 * sum(table.weight_bytes)


def test_cli_partition_writes_plan_and_plot(tmp_path, capsys):
    import json

    from edgellm.cli import main

    out = tmp_path / "p"
    rc = main(
        [
            "partition",
            "tiny-llama",
            "--bandwidth",
            "1mbit",
            "--rtt",
            "100ms",
            "--seq",
            "32",
            "--runs",
            "2",
            "-o",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    plan = json.loads((out / "plan.json").read_text())
    assert plan["best"]["feasible"] and len(plan["candidates"]) >= len(plan["basis"]["flops"])
    assert (out / "plan.png").read_bytes()[:4] == b"\x89PNG" and "BEST" in capsys.readouterr().out
    rc = main(
        [
            "partition",
            "tiny-llama",
            "--device-memory",
            "1KB",
            "--seq",
            "16",
            "--runs",
            "1",
            "-o",
            str(tmp_path / "q"),
        ]
    )
    assert rc == 2 and "smallest feasible" in capsys.readouterr().err
    assert main(["partition", "tiny-llama", "--bandwidth", "fast", "-o", str(tmp_path / "r")]) == 2


def test_cli_partition_considers_compressed_codecs_from_measured_bytes(tmp_path, capsys):
    import json

    from edgellm.cli import main

    out = tmp_path / "cnn"
    assert (
        main(
            [
                "partition",
                "resnet18",
                "--codecs",
                "all",
                "--runs",
                "1",
                "--bandwidth",
                "4mbit",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    plan = json.loads((out / "plan.json").read_text())
    at_layer3 = {c["codec"]: c for c in plan["candidates"] if c["after_block"] == "layer3_0"}
    assert {"int8", "int8+zstd", "int8+lz4", "fp16+zstd"} <= set(at_layer3)
    # post-ReLU feature maps compress: the zstd candidate uploads fewer bytes than plain int8
    assert at_layer3["int8+zstd"]["upload_bytes"] < at_layer3["int8"]["upload_bytes"]
    capsys.readouterr()
    assert main(["partition", "resnet18", "--codecs", "int9", "-o", str(tmp_path / "x")]) == 2
    assert "unknown activation codec 'int9'" in capsys.readouterr().err
