"""Every phone artifact of the demo on x86 kernels and on emulated arm64 kernels: cosine against torch fp32.

    sudo scripts/arm64_root.sh                       # once: the arm64 root (qemu-user + aarch64 wheels)
    .venv/bin/python benchmarks/arm64_parity.py      # MiniLM, the demo's phone rows + the symmetric "before" file
    .venv/bin/python benchmarks/arm64_parity.py --eval 32 --rows tflite-int8,tflite-int8-symmetric

For each (format, precision) of the demo's Snapdragon 865 rows, the artifact is exported once (validated on
x86 only), then run on the same inputs by the same runtime versions on this host and under qemu-user
(``cortex-a76``: Armv8.2 + dot-product + fp16, the phone's ISA), with XNNPACK (the Android default) and, for
dynamic-range INT8, TFLite's builtin kernels (an interpreter without the delegate). ``tflite-int8-symmetric``
is the file as it was before issue 24's fix (hybrid FCs without ``asymmetric_quantize_inputs``).

Inputs: the fixed sentences (what the manifests' ``vs_fp32`` use) and ``--eval`` held-out sequences of the
bundled text (128 tokens, the demo's evaluation split). No timing is taken under emulation. Prints JSON and
writes edgellm-out/arm64_parity.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROWS = {  # name -> (format, precision, exporter options)
    "tflite-fp32": ("tflite", "fp32", {}),
    "tflite-fp16": ("tflite", "fp16", {}),
    "tflite-int8": ("tflite", "int8", {}),
    "tflite-int8-symmetric": ("tflite", "int8", {"asymmetric_inputs": False}),
    "tflite-int8-static": ("tflite", "int8-static", {}),
    "ort-fp32": ("ort", "fp32", {}),
    "ort-int8": ("ort", "int8", {}),
    "ort-int8-keep1": ("ort", "int8-keep1", {}),  # the demo's: the most sensitive layer kept in float
}


def _cosines(ref: list, got: list) -> dict[str, float]:
    import numpy as np

    cos = []
    for a, b in zip(ref, got):
        for x, y in zip(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)):
            x, y = x.astype(np.float64), y.astype(np.float64)
            cos.append(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))))
    return {"min": round(min(cos), 5), "mean": round(sum(cos) / len(cos), 5), "n": len(cos)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--target", default="snapdragon-865")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    ap.add_argument("--eval", type=int, default=16, help="held-out sequences of the bundled text")
    args = ap.parse_args(argv)

    from edgellm.compress.calibration import corpus_parts, make_batches
    from edgellm.compress.quant import Int8Dynamic, Int8Static, quantize
    from edgellm.export import export
    from edgellm.models import load
    from edgellm.pipeline.export_many import calibration_feeds
    from edgellm.runtime import make_runner
    from edgellm.runtime.arm64 import Arm64Runner, find_root, qemu_cpu
    from edgellm.targets import load_target

    host, why = find_root()
    if host is None:
        print(json.dumps({"skipped": why}))
        return 0
    tgt = load_target(args.target)
    host = host.with_cpu(qemu_cpu(tgt))
    model = load(args.model)
    _train, held, source, _ = corpus_parts(None, None)
    evals = make_batches(model, held, source, max_sequences=args.eval, batch_size=4, min_sequences=1).feeds
    inputs = {"fixed": [model.fixed_inputs()], "eval": evals}
    fp32 = {k: [model.run(f)[model.outputs[0].name] for f in v] for k, v in inputs.items()}
    dyn = static = None
    out_rows = []
    with tempfile.TemporaryDirectory(prefix="arm64-parity-") as tmp:
        for name in [r for r in args.rows.split(",") if r]:
            fmt, prec, opts = ROWS[name]
            spec = None
            if prec == "int8":
                spec = dyn = dyn or quantize(model, Int8Dynamic())
            elif prec == "int8-keep1":
                spec = quantize(model, Int8Dynamic(auto_keep=1), calibration_feeds(model, None))
            elif prec == "int8-static":
                # full-integer: SmoothQuant 0.5, the outlier-output layers kept in fp32 (the conformance suite's)
                static = static or quantize(
                    model,
                    Int8Static(smoothquant_alpha=0.5, keep=("*output.dense",)),
                    calibration_feeds(model, None),
                )
                spec = static
            print(f"  {name}: export", file=sys.stderr, flush=True)
            art = export(
                model,
                tgt,
                Path(tmp) / name,
                format=fmt,
                quant=spec,
                precision="fp16" if prec == "fp16" else None,
                arm64="off",
                select_runtime=False,
                **opts,
            )
            kernels = {"xnnpack": {}}
            if fmt == "tflite" and prec == "int8":
                kernels["builtin"] = {"xnnpack": False}
            if fmt == "ort":
                kernels = {"mlas": {}}
            row = {"row": name, "format": fmt, "precision": prec, "x86": {}, "arm64": {}}
            rt = art.manifest["target"]["runtime"]
            specs = {"inputs": list(art.inputs), "outputs": list(art.outputs)}
            for kname, kopts in kernels.items():
                for where in ("x86", "arm64"):
                    print(f"  {name}: {where} {kname}", file=sys.stderr, flush=True)
                    if where == "x86":
                        runner = make_runner(art, **kopts)
                    else:
                        runner = Arm64Runner(rt, art.model_path, host, **specs, **kopts)
                    with runner:
                        got = {
                            k: [
                                runner.run({s.name: f[s.name] for s in art.inputs})[model.outputs[0].name]
                                for f in v
                            ]
                            for k, v in inputs.items()
                        }
                    row[where][kname] = {k: _cosines(fp32[k], got[k]) for k in inputs}
            out_rows.append(row)
    result = {
        "model": args.model,
        "target": tgt.name,
        "emulation": host.describe(),
        "inputs": {
            "fixed": "the fixed sentences",
            "eval": f"{args.eval} held-out sequences of {source}, 128 tokens",
        },
        "metric": "cosine against torch fp32 per sequence (min, mean)",
        "rows": out_rows,
    }
    text = json.dumps(result, indent=2)
    Path("edgellm-out").mkdir(exist_ok=True)
    Path("edgellm-out/arm64_parity.json").write_text(text + "\n")
    Path("edgellm-out/arm64_parity.md").write_text(_markdown(result))
    print(text)
    return 0


def _markdown(result: dict) -> str:
    lines = [
        f"{result['model']} phone artifacts ({result['target']}), cosine against torch fp32, min / mean; "
        f"arm64 = qemu-user {result['emulation']['cpu']}",
        "",
        "| artifact | kernels | x86 fixed | arm64 fixed | x86 eval | arm64 eval |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        for k in r["x86"]:
            x, a = r["x86"][k], r["arm64"][k]
            lines.append(
                f"| {r['row']} | {k} | {x['fixed']['min']:.5f} | {a['fixed']['min']:.5f} | "
                f"{x['eval']['min']:.5f} / {x['eval']['mean']:.5f} | {a['eval']['min']:.5f} / {a['eval']['mean']:.5f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
