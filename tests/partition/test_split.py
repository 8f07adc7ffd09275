"""Cutting models in two, exporting both halves linked, and split inference through the real server.

Every half is a real artifact run in its real runtime (LiteRT or ONNX Runtime mobile for the phone,
ONNX Runtime for the server); the server runs on loopback and the client talks KServe v2 binary to it.
"""

import json
import shutil
import time

import numpy as np
import pytest
import torch

from edgellm.errors import ArtifactError, EdgeLLMError
from edgellm.export.validate import compare
from edgellm.models import load
from edgellm.partition.cut import split_model
from edgellm.partition.network import Network
from edgellm.partition.planner import CostTable, make_plan
from edgellm.runtime.codecs import ALL_CODECS, Codec, scale_shape

pytest.importorskip("onnxruntime")


# -- codecs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_CODECS)
def test_every_codec_round_trips_transformer_and_cnn_activations(name):
    rng = np.random.default_rng(0)
    for shape in ((2, 16, 64), (1, 32, 14, 14), (3, 10)):
        x = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)  # post-ReLU: compressible
        c = Codec(name)
        payload, meta = c.encode(x)
        y = c.decode(payload, meta)
        cos = (x * y).sum() / np.linalg.norm(x) / np.linalg.norm(y)
        assert y.shape == x.shape and cos > (0.999 if c.format != "int8" else 0.99)
        if c.compression and x.size > 1000:
            assert len(payload) < c.nbytes(shape)  # half the values are zeros: compression pays


def test_int8_scales_are_per_token_and_per_channel():
    assert scale_shape((2, 16, 384)) == (2, 16, 1)  # one per token
    assert scale_shape((1, 64, 14, 14)) == (1, 64, 1, 1)  # one per channel
    x = np.zeros((1, 2, 3, 3), np.float32)
    x[0, 0] = 100.0
    x[0, 1] = 0.01  # a quiet channel keeps its precision next to a loud one
    _, scales = Codec("int8").quantize(x)
    y = Codec("int8").decode(*Codec("int8").encode(x))
    assert scales.shape == (1, 2, 1, 1) and np.allclose(y[0, 1], 0.01, rtol=1e-2)


def test_corrupt_or_oversized_compressed_payloads_are_refused():
    x = np.ones((1, 8, 32), np.float32)
    c = Codec("int8+zstd")
    payload, meta = c.encode(x)
    with pytest.raises(EdgeLLMError, match="truncated|decompress"):
        c.decode(payload[:5] + payload[-128:], {**meta, "codes_bytes": 5})
    with pytest.raises(EdgeLLMError, match="needs"):  # decodes to more than the shape needs: refused
        c.unpack(c.pack(np.zeros((1, 8, 64), np.int8)), (1, 8, 32))
    with pytest.raises(EdgeLLMError, match="encoded with 'int8\\+zstd'"):
        Codec("int8").decode(payload, meta)


def test_planner_counts_measured_compressed_bytes_and_side_inputs():
    t = CostTable(
        blocks=["a", "b"],
        device_ms=[10.0, 1000.0],  # the second block is slow on the phone: offload it
        server_ms=[1.0, 1.0],
        weight_bytes=[1, 1],
        input_bytes=1_000_000,
        cut_shapes=[[1, 64, 32, 32]],
        output_bytes=10,
        cut_codecs=[
            {
                "int8": {"bytes": 65_792, "encode_ms": 1, "decode_ms": 1},
                "int8+zstd": {"bytes": 20_000, "encode_ms": 2, "decode_ms": 1},
            }
        ],
        side_bytes=1000,
    )
    plan = make_plan(t, Network.parse("1mbit", "10ms"), codecs=("int8", "int8+zstd"), min_device_blocks=1)
    row = {c["codec"]: c for c in plan.candidates if c["cut"] == 1}
    assert row["int8+zstd"]["upload_bytes"] == 21_000 and row["int8"]["upload_bytes"] == 66_792
    assert plan.best["codec"] == "int8+zstd" and plan.best["cut"] == 1


# -- cutting (torch) ------------------------------------------------------------------------------------
def _cos_rows(ref, got, spec, feeds):
    return compare({spec.name: ref}, {spec.name: got}, [spec], feeds)[spec.name]["cosine_min"]


@pytest.mark.parametrize("name", ["minilm", "tiny-llama", "resnet18", "mobilenet-v2"])
def test_every_inner_cut_reproduces_the_model(name):
    m = load(name)
    feeds = m.fixed_inputs()
    spec = m.outputs[0]
    ref = m.run(feeds)[spec.name]
    n = len(m.blocks)
    for cut in range(1, n):
        h = split_model(m, cut)
        assert h.device.blocks + h.server.blocks == m.blocks
        act = h.device.run({s.name: feeds[s.name] for s in h.device.inputs})["hidden"]
        assert [d for d in h.activation.shape[1:] if isinstance(d, int)] == [
            d for d, sp in zip(act.shape[1:], h.activation.shape[1:]) if isinstance(sp, int)
        ]
        for codec, need in (("fp32", 0.99999), ("fp16", 0.999), ("int8", 0.99)):
            y = Codec(codec).decode(*Codec(codec).encode(act))
            got = h.server.run({"hidden": y, **{k: feeds[k] for k in h.side_inputs}})[spec.name]
            assert _cos_rows(ref, got, spec, feeds) >= need, (name, cut, codec)
    assert split_model(m, 0).device is None and split_model(m, n).server is None
    with pytest.raises(EdgeLLMError, match="outside"):
        split_model(m, n + 1)


def test_halves_share_the_parents_weights():
    m = load("tiny-llama")
    h = split_model(m, 3)
    ids = {id(p) for p in m.module.parameters()}
    assert all(id(p) in ids for p in h.device.module.parameters())
    assert all(id(p) in ids for p in h.server.module.parameters())
    # the parent is untouched: still all its layers
    assert len(m.submodule("lm.model.layers")) == len(m.blocks) - 2


def test_gpt2_split_does_not_add_positions_twice(decoder_dir):
    m = load(decoder_dir("gpt2"))
    feeds = m.example_inputs(batch=2, seq=12, seed=3)
    h = split_model(m, 2)
    act = h.device.run({s.name: feeds[s.name] for s in h.device.inputs})["hidden"]
    got = h.server.run({"hidden": act, "attention_mask": feeds["attention_mask"]})["logits"]
    assert _cos_rows(m.run(feeds)["logits"], got, m.outputs[0], feeds) > 0.99999


def test_a_module_that_is_not_its_children_in_order_is_refused():
    class Skip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(8, 8)
            self.b = torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.b(self.a(x)) + x  # a skip around both children: cutting would drop it

    m = load(Skip(), example_inputs=torch.randn(2, 8))
    with pytest.raises(EdgeLLMError, match="does not give its output"):
        split_model(m, 1)


# -- exported halves, linked ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sources(small_lm):
    """What each split test's model is loaded from: the decoder is small-lm (2 layers, 128 wide; the bundled
    tiny-llama's cuts are checked in torch above), whose LiteRT half converts in a fraction of the time."""
    return {"minilm": "minilm", "llama": str(small_lm), "resnet18": "resnet18"}


@pytest.fixture(scope="module")
def exports(sources, tmp_path_factory):
    pytest.importorskip("ai_edge_litert")
    from edgellm.partition.split_export import export_split

    root = tmp_path_factory.mktemp("split")
    return {
        # the phone's formats: LiteRT for the decoder, ORT-mobile for MiniLM and the CNN
        "minilm": export_split("minilm", cut=4, codec="int8", output=root / "minilm", device_format="ort"),
        "llama": export_split(sources["llama"], cut=2, codec="fp16", output=root / "llama", seq_len=64),
        "resnet18": export_split(
            "resnet18", cut=7, codec="int8+zstd", output=root / "cnn", device_format="ort"
        ),
    }


@pytest.mark.parametrize(
    "name,need,runtime",
    [
        ("minilm", 0.99, "onnxruntime-mobile"),
        ("llama", 0.999, "litert"),
        ("resnet18", 0.99, "onnxruntime-mobile"),
    ],
)
def test_split_export_links_the_halves_and_meets_the_codec_tolerance(exports, name, need, runtime):
    s = exports[name]
    link = s.link
    assert link["parity"]["cosine_min"] >= need and link["parity"]["min_cosine_required"] == need
    assert s.device.manifest["target"]["runtime"] == runtime
    assert s.server.manifest["target"]["runtime"] == "onnxruntime"
    for role, art in (("device", s.device), ("server", s.server)):
        sec = art.manifest["split"]
        assert sec["role"] == role and sec["plan_id"] == link["plan_id"] and sec["codec"] == link["codec"]
        assert sec["activation"] == link["activation"]
    assert s.server.manifest["inputs"][0]["name"] == "hidden"
    assert s.device.manifest["outputs"][0]["name"] == "hidden"


def test_a_half_from_another_export_is_refused(exports, tmp_path):
    from edgellm.partition.split_export import SplitArtifacts

    mixed = tmp_path / "mixed"
    shutil.copytree(exports["minilm"].path, mixed)
    shutil.rmtree(mixed / "server")
    shutil.copytree(exports["llama"].path / "server", mixed / "server")
    with pytest.raises(ArtifactError, match="never mix halves"):
        SplitArtifacts.load(mixed)


def test_a_failing_split_export_leaves_nothing_behind(tmp_path):
    from edgellm.partition.split_export import export_split

    out = tmp_path / "x"
    with pytest.raises(EdgeLLMError, match="outside"):
        export_split("resnet18", cut=99, codec="int8", output=out, device_format="ort")
    assert not out.exists() and not list(tmp_path.iterdir())


# -- split inference through the real server -----------------------------------------------------------
@pytest.fixture(scope="module")
def split_server(exports):
    from conftest import running

    from edgellm.serve import ModelConfig

    models = [ModelConfig(s.server.path) for s in exports.values()]
    with running(models, max_batch_size=4, max_queue_delay_ms=1) as srv:
        yield f"http://127.0.0.1:{srv.config.port}"


@pytest.mark.parametrize("name", ["minilm", "llama", "resnet18"])
def test_split_inference_matches_the_unsplit_model(exports, sources, split_server, name):
    from edgellm.split.client import SplitClient

    s = exports[name]
    m = load(sources[name])
    c = SplitClient.from_path(s.path / "device", split_server)
    feeds = m.fixed_inputs() if name != "resnet18" else m.example_inputs(batch=2, seed=5)
    out, t = c.infer(feeds)
    spec = m.outputs[0]
    need = {"int8": 0.99, "fp16": 0.999, "int8+zstd": 0.99}[s.codec]
    assert _cos_rows(m.run(feeds)[spec.name], out[spec.name], spec, feeds) >= need
    for k in ("device_ms", "encode_ms", "network_ms", "server_ms", "decode_ms"):
        assert t[k] >= 0
    assert t["device_ms"] > 0 and t["server_ms"] > 0
    parts = sum(t[k] for k in ("device_ms", "encode_ms", "network_ms", "server_ms", "decode_ms"))
    assert abs(parts - t["total_ms"]) < 0.05 * t["total_ms"] + 1.0
    if s.codec.endswith("zstd"):  # the compressed activation really is smaller on the wire
        shape = [feeds["image"].shape[0], *s.link["activation"]["shape"][1:]]
        assert t["upload_bytes"] < Codec("int8").nbytes(shape)
    c.close()


def test_split_client_refuses_a_server_half_of_another_plan(exports, split_server, tmp_path):
    from edgellm.split.client import SplitClient

    dev = tmp_path / "device"
    shutil.copytree(exports["minilm"].path / "device", dev)
    mf = json.loads((dev / "manifest.json").read_text())
    mf["split"]["plan_id"] = "0000000000000000"
    (dev / "manifest.json").write_text(json.dumps(mf))
    c = SplitClient.from_path(dev, split_server)
    with pytest.raises(EdgeLLMError, match="belongs to plan"):
        c.infer(c.encode_text(["hello"]))
    mf["split"]["server_model"] = "nope"
    (dev / "manifest.json").write_text(json.dumps(mf))
    with pytest.raises(EdgeLLMError, match="does not serve 'nope'"):
        SplitClient.from_path(dev, split_server).infer(c.encode_text(["hello"]))


def test_unreachable_server_is_retried_then_named(exports):
    import socket

    from edgellm.split.client import SplitClient

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = SplitClient.from_path(
        exports["resnet18"].path / "device", f"http://127.0.0.1:{port}", retries=2, backoff_s=0.05
    )
    t0 = time.perf_counter()
    with pytest.raises(EdgeLLMError, match="after 3 tries.*edgellm serve"):
        c.infer(load("resnet18").example_inputs(batch=1))
    assert time.perf_counter() - t0 >= 0.05 + 0.1  # it backed off between the tries
    with pytest.raises(EdgeLLMError, match="no server URL"):
        SplitClient.from_path(exports["resnet18"].path / "device", None)


def test_server_refuses_a_corrupt_compressed_activation(exports, split_server):
    import http.client
    import urllib.parse

    s = exports["resnet18"]
    shape = [1, *s.link["activation"]["shape"][1:]]
    codes = Codec("int8+zstd").pack(np.ones(shape, np.int8))[:-4]  # truncated frame
    scales = np.ones(scale_shape(shape), "<f4").tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "hidden",
                    "datatype": "INT8",
                    "shape": shape,
                    "parameters": {"binary_data_size": len(codes), "compression": "zstd"},
                },
                {
                    "name": "hidden:scales",
                    "datatype": "FP32",
                    "shape": list(scale_shape(shape)),
                    "parameters": {"binary_data_size": len(scales)},
                },
            ]
        }
    ).encode()
    u = urllib.parse.urlsplit(split_server)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request(
        "POST",
        f"/v2/models/{s.link['server_model']}/infer",
        body=head + codes + scales,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 400 and "zstd" in body["error"] and "hidden" in body["error"]


def test_split_cli_export_run_and_bench(split_server, exports, tmp_path, capsys):
    from edgellm.cli import main

    out = tmp_path / "cnn"
    assert (
        main(
            [
                "split",
                "export",
                "resnet18",
                "--cut",
                "9",
                "--codec",
                "fp16",
                "--device-format",
                "ort",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    link = json.loads(capsys.readouterr().out)
    assert link["cut"] == 9 and link["after_block"] == "layer4_1" and link["parity"]["cosine_min"] >= 0.999
    # this server does not serve the new plan's half: a clear refusal, exit 2
    assert (
        main(["split", "run", "--device-artifact", str(out / "device"), "--server", split_server, "--random"])
        == 2
    )
    assert "does not serve" in capsys.readouterr().err
    dev = str(exports["minilm"].path / "device")
    assert (
        main(
            [
                "split",
                "run",
                "--device-artifact",
                dev,
                "--server",
                split_server,
                "-i",
                "hello there",
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert (
        np.asarray(res["outputs"]["sentence_embedding"]).shape == (1, 384) and res["timing"]["server_ms"] > 0
    )
    assert (
        main(
            [
                "split",
                "bench",
                "--device-artifact",
                dev,
                "--server",
                split_server,
                "--runs",
                "5",
                "--seq",
                "32",
                "--json",
            ]
        )
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert rep["runs"] == 5 and rep["ms"]["total_ms"]["p50"] >= rep["ms"]["device_ms"]["p50"] > 0
    assert rep["upload_bytes"] > 32 * 384  # int8 codes of 32 tokens, plus scales and the mask


def test_profile_prefixes_gives_one_figure_per_block_on_any_runtime():
    from edgellm.partition.profile import profile_prefixes
    from edgellm.runtime import make_runner

    m = load("mobilenet-v2")
    n = len(m.blocks)
    runners = {k: make_runner(split_model(m, k).device) for k in range(1, n + 1)}
    ms = profile_prefixes(runners, m.example_inputs(batch=1), runs=2, warmup=1)
    assert len(ms) == n and all(v >= 0 for v in ms) and sum(ms) > 0


def test_slowdown_stretches_the_device_side_by_its_cpu_time(exports):
    from edgellm.runtime import make_runner
    from edgellm.split.client import SplitClient

    m = load("resnet18")
    dev = make_runner(exports["resnet18"].device, intra_op_threads=1)  # runs on the calling thread
    feeds = m.example_inputs(batch=1)
    split = {"plan_id": "x", "codec": "none", "server_model": None}
    fast = SplitClient(split, dev, m.inputs, None)
    slow = SplitClient(split, dev, m.inputs, None, slowdown=4.0)
    fast.infer(feeds)
    t1 = min(fast.infer(feeds)[1]["device_ms"] for _ in range(2))
    t4 = min(slow.infer(feeds)[1]["device_ms"] for _ in range(2))
    assert t4 > 2.5 * t1  # waits 3x the device step's CPU time
