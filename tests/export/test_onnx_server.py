"""The server ONNX path: real exports, real ONNX Runtime sessions, parity, manifests, tamper checks."""

import json

import numpy as np
import onnx
import pytest
import torch

from edgellm import models
from edgellm.errors import ArtifactError, OutputExistsError, ParityError
from edgellm.export import Artifact, Tolerance, export
from edgellm.runtime import make_runner


def test_minilm_artifact_is_fused_and_validated(minilm_artifact, minilm):
    m = minilm_artifact.manifest
    assert m["target"]["runtime"] == "onnxruntime" and m["precision"] == "fp32"
    ops = {n.op_type for n in onnx.load(minilm_artifact.model_path).graph.node}
    assert {
        "Attention",
        "LayerNormalization",
        "Sum",
        "EmbedLayerNormalization",
    } <= ops  # ORT transformer fusions
    assert m["recipe"]["fusion"]["applied"] and m["recipe"]["fusion"]["ops"]["Attention"] == 6
    assert m["recipe"]["fusion"]["residual_sums"] == 12  # residual adds kept out of SkipLayerNormalization
    assert "SkipLayerNormalization" not in ops
    for suite in ("fixed", "random"):
        assert m["parity"][suite]["sentence_embedding"]["cosine_min"] >= 0.9999
        assert m["parity"][suite]["sentence_embedding"]["max_abs"] <= 1e-3
    assert m["model"]["source"]["sha256"] == minilm.source["sha256"]
    assert set(m["files"]) >= {"model.onnx", "tokenizer/tokenizer.json"}
    for key in (
        "schema_version",
        "edgellm_version",
        "inputs",
        "outputs",
        "calibration_dataset",
        "recipe",
        "environment",
    ):
        assert key in m


def test_minilm_dynamic_axes(minilm_artifact, minilm):
    """One artifact serves any batch and sequence length; outputs match torch at unseen shapes."""
    runner = make_runner(minilm_artifact, intra_op_threads=1)
    for b, s in [(1, 1), (5, 61), (2, 200)]:
        feeds = minilm.example_inputs(batch=b, seq=s, seed=b * s)
        got = runner.run(feeds)["sentence_embedding"]
        ref = minilm.run(feeds)["sentence_embedding"]
        assert got.shape == (b, 384)
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_tampered_artifact_is_refused(minilm_artifact, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(minilm_artifact.path, copy)
    Artifact.load(copy)  # intact copy verifies
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        Artifact.load(copy)
    (copy / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Artifact.load(copy)


def test_manifest_must_be_json(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Artifact.load(tmp_path)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])  # every decoder family: the family matrix
def test_decoder_exports_match_torch(decoder_dir, kind, tmp_path):
    model = models.load(decoder_dir(kind))
    art = export(model, "x86-server", tmp_path / kind)
    par = art.manifest["parity"]
    assert par["random"]["logits"]["cosine_min"] >= 0.9999
    runner = make_runner(art)
    feeds = model.example_inputs(batch=3, seq=21, seed=7)
    mask = feeds["attention_mask"].astype(bool)
    got, ref = runner.run(feeds)["logits"], model.run(feeds)["logits"]
    np.testing.assert_allclose(got[mask], ref[mask], atol=1e-4)
    assert art.manifest["model"]["blocks"] == ["embeddings", "layers.0", "layers.1", "head"]


def test_plain_mlp_export(mlp, tmp_path):
    model = models.load(mlp, example_inputs=torch.randn(2, 16))
    art = export(model, "x86-server", tmp_path / "mlp")
    x = np.random.default_rng(0).standard_normal((7, 16)).astype("float32")
    got = make_runner(art).run({"input": x})["output"]
    np.testing.assert_allclose(got, mlp(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_external_data_for_large_models(tmp_path):
    """Past the size threshold (2 GB by default) weights go to model.onnx.data, hashed like the rest."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 256), torch.nn.ReLU(), torch.nn.Linear(256, 4))
    model = models.load(mlp, example_inputs=torch.randn(2, 16))
    art = export(model, "x86-server", tmp_path / "big", external_data_threshold=1024)
    assert art.manifest["recipe"]["external_data"] is True
    assert {"model.onnx", "model.onnx.data"} <= set(art.manifest["files"])
    assert (art.path / "model.onnx.data").stat().st_size > (art.path / "model.onnx").stat().st_size
    x = np.ones((1, 16), dtype="float32")
    np.testing.assert_allclose(
        make_runner(art).run({"input": x})["output"], mlp(torch.from_numpy(x)).detach().numpy(), atol=1e-5
    )
    (art.path / "model.onnx.data").write_bytes(b"\0" * 16)
    with pytest.raises(ArtifactError):
        Artifact.load(art.path)


def test_parity_failure_is_loud_and_leaves_nothing(mlp, tmp_path):
    model = models.load(mlp, example_inputs=torch.randn(2, 16))
    out = tmp_path / "never"
    with pytest.raises(ParityError, match="disagrees with torch"):
        export(model, "x86-server", out, tolerance=Tolerance(max_abs=0.0, min_cosine=1.5))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind


def test_existing_output_needs_force(mlp, tmp_path):
    model = models.load(mlp, example_inputs=torch.randn(2, 16))
    out = tmp_path / "a"
    first = export(model, "x86-server", out)
    stamp = json.loads((out / "manifest.json").read_text())["created_at"]
    with pytest.raises(OutputExistsError, match="--force"):
        export(model, "x86-server", out)
    assert first.manifest["created_at"] == stamp
    again = export(model, "x86-server", out, force=True)
    assert again.path == out and (out / "model.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_fused_graph_failing_parity_falls_back_to_unfused(minilm, tmp_path, monkeypatch):
    """A fusion pass that corrupts the graph (simulated) is rejected, and the unfused graph ships."""
    from onnx import numpy_helper

    import edgellm.export.onnx_server as srv

    def broken_fuse(raw, model, ort_type, attention=True, skip_layer_norm=False):
        m = onnx.load(str(raw))
        init = max(m.graph.initializer, key=lambda t: t.dims[0] if t.dims else 0)
        arr = numpy_helper.to_array(init) * 3.0
        init.CopyFrom(numpy_helper.from_array(arr.astype(arr.dtype), init.name))
        return {"applied": True, "ops": {"BrokenFusion": 1}, "model_type": ort_type}, m

    monkeypatch.setattr(srv, "_fuse", broken_fuse)
    art = export(minilm, "x86-server", tmp_path / "fallback")
    fusion = art.manifest["recipe"]["fusion"]
    assert fusion["applied"] is False
    assert (
        fusion["rejected"][0]["ops"] == {"BrokenFusion": 1}
        and "failed parity" in fusion["rejected"][0]["reason"]
    )
    assert art.manifest["parity"]["random"]["sentence_embedding"]["cosine_min"] >= 0.9999
    ops = {n.op_type for n in onnx.load(art.model_path).graph.node}
    assert "Attention" not in ops  # the unfused graph


def test_runtime_does_not_refuse_residuals(minilm_artifact, tmp_path):
    """ONNX Runtime would fuse Add + LayerNorm into SkipLayerNormalization (slower on CPU); Sum stays."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(minilm_artifact.model_path), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") == 12


def test_the_export_cache_traces_a_model_once(mlp, tmp_path, monkeypatch):
    import torch

    from edgellm import models
    from edgellm.export import export
    from edgellm.export import onnx_server as srv

    monkeypatch.setenv("EDGELLM_EXPORT_CACHE", str(tmp_path / "cache"))
    m = models.load(mlp, example_inputs=torch.randn(2, 16))
    a = export(m, "x86-server", tmp_path / "a")
    key = srv.raw_key(m, srv.OnnxOptions())
    assert (tmp_path / "cache" / key / "export.json").is_file()

    def no_trace(*args, **kwargs):
        raise AssertionError("traced again")

    monkeypatch.setattr(srv, "_export", no_trace)
    b = export(m, "x86-server", tmp_path / "b")  # from the cache
    assert a.manifest["files"]["model.onnx"]["sha256"] == b.manifest["files"]["model.onnx"]["sha256"]
    with torch.no_grad():
        mlp[0].weight[0, 0] += 1.0  # other weights: another key, traced again
    assert srv.raw_key(m, srv.OnnxOptions()) != key
    assert srv.raw_key(m, srv.OnnxOptions(opset=18)) != srv.raw_key(m, srv.OnnxOptions())
    with pytest.raises(Exception, match="traced again"):
        export(m, "x86-server", tmp_path / "c")
