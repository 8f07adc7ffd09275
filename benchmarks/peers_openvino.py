"""The INT8 peers of edgellm on OpenVINO: NNCF's default post-training INT8, and Optimum's AVX-512 VNNI
recipe, built from the same model and calibration feeds as edgellm's INT8 artifacts.

- :func:`nncf_int8`: OpenVINO reads edgellm's fp32 ONNX export, ``nncf.quantize(..., model_type=
  TRANSFORMER)`` (its defaults: SmoothQuant 0.95 on MatMuls, mean-of-batch min/max activation ranges,
  fast bias correction, the attention-output MatMul left in float) on edgellm's calibration feeds;
  saved with ``openvino.save_model`` as ``model.xml``.
- :func:`optimum_vnni`: Optimum's export + ``ORTQuantizer`` with
  ``AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)``; None without optimum.

``--accuracy`` prints JSON: mean/min sentence-embedding cosine vs torch fp32 on the held-out pydoc
sentences (as ``benchmarks/bench_int8_minilm.py`` splits them) for edgellm fp32, edgellm's INT8
recipes (``int8-static`` with SmoothQuant 0.8, the new ``int8-static-ov``, per-layer alpha) and NNCF,
each in ONNX Runtime (ONNX files) and in OpenVINO at f32 and at its default precision (bf16 on this
CPU), plus how many MatMuls OpenVINO runs in int8. Accuracy only, no timing (OpenVINO and ONNX
Runtime sessions in one process disturb each other's timings).

    .venv/bin/python benchmarks/peers_openvino.py --accuracy

Example:
    >>> xml = nncf_int8(art.model_path, calib.feeds, "edgellm-out/nncf")       # doctest: +SKIP
    >>> embed_openvino(xml, evalb.feeds, "f32")[0].shape                       # doctest: +SKIP
    (2048, 384)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

Feeds = Sequence[dict[str, np.ndarray]]


def _inputs(names: Sequence[str], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {n: feed[n] for n in names if n in feed}


def nncf_int8(onnx_fp32_path: str | Path, calib_feeds: Feeds, out_dir: str | Path) -> Path:
    """NNCF's default INT8 post-training quantization (TRANSFORMER model type) of the OpenVINO model read
    from ``onnx_fp32_path``, calibrated on ``calib_feeds``; returns the saved ``model.xml``."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_fp32_path))
    names = [i.get_any_name() for i in model.inputs]
    ds = nncf.Dataset(list(calib_feeds), lambda f: _inputs(names, f))
    q = nncf.quantize(model, ds, model_type=nncf.ModelType.TRANSFORMER)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(q, str(out / "model.xml"))
    return out / "model.xml"


def optimum_vnni(model_dir: str | Path, out_dir: str | Path) -> Path | None:
    """Optimum's AVX-512 VNNI dynamic INT8 (per channel) of the HF model in ``model_dir``; None when
    optimum is not installed. Its graph returns token states (pool them, see :func:`pool`)."""
    try:
        from optimum.exporters.onnx import main_export
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig
    except ImportError:
        return None
    out = Path(out_dir)
    raw, q = out / "optimum-fp32", out / "optimum-avx512-vnni"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main_export(
            str(model_dir),
            output=raw,
            task="feature-extraction",
            library_name="transformers",
            do_validation=False,
        )
        cfg = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
        ORTQuantizer.from_pretrained(raw).quantize(save_dir=q, quantization_config=cfg)
    return next(q.glob("*.onnx"))


def pool(out: np.ndarray, feed: dict[str, np.ndarray]) -> np.ndarray:
    """Sentence embeddings: as they are, or mean-pooled token states (as sentence-transformers does)."""
    if out.ndim == 3:
        m = feed["attention_mask"][..., None].astype(out.dtype)
        out = (out * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return out


def embed_ort(path: str | Path, feeds: Feeds) -> np.ndarray:
    """Embeddings of ``feeds`` by ONNX Runtime (CPU) on the ONNX file ``path``."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    outs = [o.name for o in s.get_outputs()]
    want = "sentence_embedding" if "sentence_embedding" in outs else outs[0]
    return np.concatenate([pool(s.run([want], _inputs(names, f))[0], f) for f in feeds])


def embed_openvino(path: str | Path, feeds: Feeds, precision: str | None) -> tuple[np.ndarray, dict]:
    """Embeddings of ``feeds`` by OpenVINO (CPU) on ``path`` (.onnx or .xml) at ``INFERENCE_PRECISION_HINT``
    ``precision`` (None: the device default), and what OpenVINO ran the MatMuls in."""
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
    cm = core.compile_model(core.read_model(str(path)), "CPU", cfg)
    names = [i.get_any_name() for i in cm.inputs]
    outs = [o.get_any_name() for o in cm.outputs]
    port = cm.output("sentence_embedding" if "sentence_embedding" in outs else outs[0])
    req = cm.create_infer_request()
    got = np.concatenate([pool(req.infer(_inputs(names, f))[port], f) for f in feeds])
    return got, matmul_precisions(cm)


def matmul_precisions(cm: object) -> dict[str, int]:
    """How many FullyConnected/MatMul nodes of the compiled model run in each precision (u8/i8: int8)."""
    counts: dict[str, int] = {}
    for op in cm.get_runtime_model().get_ops():  # type: ignore[attr-defined]
        info = op.get_rt_info()
        keys = set(info.keys())
        kind = info["layerType"].astype(str) if "layerType" in keys else ""
        if kind in ("FullyConnected", "MatMul"):
            prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in keys else "?"
            counts[f"{kind}:{prec}"] = counts.get(f"{kind}:{prec}", 0) + 1
    return dict(sorted(counts.items()))


def accuracy(calib_sequences: int = 64, eval_sequences: int = 256, optimum: bool = True) -> dict:
    """Every variant's mean/min cosine vs torch fp32 per runtime (see the module docstring)."""
    from edgellm.compress.calibration import corpus_parts, make_batches
    from edgellm.compress.evaluate import embedding_accuracy
    from edgellm.compress.quant import Int8Static, Int8StaticOV, quantize
    from edgellm.export import Tolerance, export
    from edgellm.models import load

    model = load("minilm")
    train, held, cs, es = corpus_parts(None, None)
    calib = make_batches(model, train, cs, max_sequences=calib_sequences)
    evalb = make_batches(model, held, es, max_sequences=eval_sequences)
    ref = np.concatenate([model.run(f)["sentence_embedding"] for f in evalb.feeds])

    def score(got: np.ndarray) -> dict[str, float]:
        a = embedding_accuracy(ref, got)
        return {"cosine_mean": round(a["cosine_mean"], 5), "cosine_min": round(a["cosine_min"], 5)}

    recipes = {
        "edgellm-int8-static-sq0.8": Int8Static(smoothquant_alpha=0.8),
        "edgellm-int8-static-ov": Int8StaticOV(),
        "edgellm-int8-static-sqauto-bc": Int8Static(smoothquant_alpha="auto", bias_correction=True),
    }
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp32 = export(model, "x86-server", work / "fp32")
        files: dict[str, tuple[Path, dict]] = {"edgellm-fp32": (Path(fp32.model_path), {})}
        for name, cfg in recipes.items():
            spec = quantize(model, cfg, calib.feeds)
            art = export(model, "x86-server", work / name, quant=spec, tolerance=Tolerance.quantized())
            q = art.manifest["recipe"]["quantization"]
            files[name] = (Path(art.model_path), {"recipe": cfg.to_dict(), "onnx_ops": q.get("ops")})
        files["nncf-int8"] = (
            nncf_int8(fp32.model_path, calib.feeds, work / "nncf"),
            {"nncf": "3.4 defaults"},
        )
        if optimum and (p := optimum_vnni(model.source["path"], work)) is not None:
            files["optimum-avx512-vnni-dynamic"] = (p, {})
        for name, (path, info) in files.items():
            row: dict = {**info, "format": path.suffix.lstrip(".")}
            if path.suffix == ".onnx":
                row["onnxruntime"] = score(embed_ort(path, evalb.feeds))
            if name.startswith("optimum"):  # ONNX Runtime's contrib int8 ops: OpenVINO does not read them
                rows[name] = row
                continue
            for prec, key in (("f32", "openvino_f32"), (None, "openvino_default_bf16")):
                got, mm = embed_openvino(path, evalb.feeds, prec)
                row[key] = {**score(got), "matmul_precisions": mm}
            rows[name] = row
    return {
        "model": "minilm",
        "calibration": {"source": cs, "sequences": sum(len(f["input_ids"]) for f in calib.feeds)},
        "evaluation": {"source": es, "sentences": len(ref)},
        "accuracy_vs_torch_fp32": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accuracy", action="store_true", help="build every variant, print accuracy JSON")
    ap.add_argument("--calib-sequences", type=int, default=64)
    ap.add_argument("--eval-sequences", type=int, default=256)
    ap.add_argument("--no-optimum", action="store_true", help="skip Optimum's VNNI recipe")
    ap.add_argument("--output", default="edgellm-out/peers_openvino_accuracy.json")
    args = ap.parse_args(argv)
    if not args.accuracy:
        ap.error("nothing to do: pass --accuracy")
    logging.disable(logging.WARNING)
    rep = accuracy(args.calib_sequences, args.eval_sequences, optimum=not args.no_optimum)
    rep["command"] = "python benchmarks/peers_openvino.py " + " ".join(sys.argv[1:] if argv is None else argv)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(rep, indent=2) + "\n")
    print(json.dumps(rep, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
