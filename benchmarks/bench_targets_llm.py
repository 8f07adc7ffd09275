"""Every LLM format side by side on this host: decode tokens/s, time to first token and size of one model
lowered from ONE QuantSpec per precision (ONNX Runtime INT4, ORT-mobile INT4, LiteRT INT8, GGUF Q4_0 / Q8_0
in llama.cpp, ExecuTorch 8da4w), with the decode-rate bound on a phone profile, and on tiny-llama the
goal's comparison: edgellm's GPTQ Q4_0 GGUF against the Q4_0 file llama.cpp's own converter and quantizer
make of the same model (decode rate, llama-bench, interleaved; perplexity on the held-out text, both files
evaluated by llama.cpp).

    .venv/bin/python benchmarks/bench_targets_llm.py --model tiny-llama --prompt 128 --new 64 --rounds 3
    .venv/bin/python benchmarks/bench_targets_llm.py --model /work/models/qwen05 --method rtn --rounds 2

Each artifact is timed in a fresh process of its own (``--time-one``), rounds in rotating order; a GGUF
file by llama.cpp's ``llama-bench`` (prefill ``-p P``, decode ``-n N -d P``), the others by edgellm's
generator (``bench_generate``): the best round is reported, with every round's figure. Artifacts are cached
under ``.peers/bench-targets-llm/`` (git-ignored). Prints JSON (and writes edgellm-out/bench_targets_llm.json).
The llama.cpp comparison needs llama.cpp built by ``benchmarks/peers.py --build-only`` and the ``llamacpp``
extra (``make setup-llama``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".peers" / "bench-targets-llm"
sys.path.insert(0, str(Path(__file__).resolve().parent))
# (name, format, target, spec kind): one spec per kind, computed once
FORMATS = {
    "onnx-int4": ("onnx", "x86-server", "int4"),
    "ort-int4": ("ort", "snapdragon-8-gen-3", "int4"),
    "tflite-int8": ("tflite", "snapdragon-8-gen-3", "int8"),
    "gguf-q4_0": ("gguf", "snapdragon-8-gen-3", "int4"),
    "gguf-q4_0-head-q8": ("gguf", "snapdragon-8-gen-3", "int4-head8"),
    "gguf-q8_0": ("gguf", "snapdragon-8-gen-3", "q8"),
    "pte-8da4w": ("pte", "snapdragon-8-gen-3", "int4"),
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def model_dir(model: str) -> Path:
    from edgellm.models import bundled_path

    return Path(model) if Path(model).is_dir() else Path(bundled_path(model))


def specs(adapter: Any, method: str, kinds: set[str]) -> dict[str, Any]:
    """One QuantSpec per kind: int4 (``method`` at group 32, float16 scales: exactly Q4_0), int8-dynamic
    (LiteRT) and w8a16-rtn (Q8_0)."""
    from edgellm.compress.calibration import corpus_parts, make_batches
    from edgellm.compress.quant import quantize
    from edgellm.compress.quant.config import config_for

    out: dict[str, Any] = {}
    feeds = None
    # every format's INT4 is the same spec; the one compared with llama.cpp's own Q4_0 file has its mixture
    # (the tied table Q8_0) and its grid (all 16 levels, scale = -max/8)
    for kind, keep, full in (("int4", (), False), ("int4-head8", ("lm_head",), True)):
        if kind not in kinds:
            continue
        cfg = config_for(f"w4a16-{method}", group_size=32, scale_dtype="float16", keep=keep, full_range=full)
        if cfg.needs_calibration and feeds is None:
            docs, _, src, _ = corpus_parts(None, None)
            feeds = make_batches(adapter, docs, src, max_sequences=64).feeds
        t = time.perf_counter()
        out[kind] = quantize(adapter, cfg, feeds if cfg.needs_calibration else None)
        _log(f"{kind} spec ({cfg.recipe}, g32, fp16 scales, keep {keep}) in {time.perf_counter() - t:.1f} s")
    if "int8" in kinds:
        out["int8"] = quantize(adapter, config_for("int8-dynamic"), None)
    if "q8" in kinds:  # the head left to the file's Q8_0 table, as llama.cpp's Q8_0 files have it
        out["q8"] = quantize(adapter, config_for("w8a16-rtn", keep=("lm_head",)), None)
    return out


def build(
    model: str, names: list[str], method: str, context: int, min_agreement: float = 1.0
) -> dict[str, Path]:
    """The artifacts of ``names`` for ``model`` (cached; a failed format is reported, not fatal)."""
    from peers_llama import model_key

    from edgellm.models import load
    from edgellm.pipeline.generate_export import export_generate

    mdir = model_dir(model)
    root = CACHE / f"{model_key(mdir)}-{method}-c{context}"
    paths = {n: root / n for n in names}
    todo = [n for n in names if not (paths[n] / "manifest.json").is_file()]
    if not todo:
        return paths
    adapter = load(str(mdir))
    sp = specs(adapter, method, {FORMATS[n][2] for n in todo})
    for n in todo:
        fmt, target, kind = FORMATS[n]
        _log(f"exporting {n}")
        t = time.perf_counter()
        try:
            export_generate(
                adapter,
                paths[n],
                target=target,
                format=fmt,
                spec=sp[kind],
                context=context,
                check_tokens=16,
                min_agreement=min_agreement,
            )
            _log(f"  {n}: {time.perf_counter() - t:.1f} s")
        except Exception as exc:  # one format's failure is a row, not the end of the benchmark
            _log(f"  {n} failed: {exc}")
            paths[n].mkdir(parents=True, exist_ok=True)
            (paths[n] / "FAILED").write_text(f"{type(exc).__name__}: {exc}\n")
    return paths


def time_one(path: Path, prompt: int, new: int, threads: int) -> dict[str, Any]:
    """One artifact's figures, in this (fresh) process."""
    from edgellm.runtime.artifact import Artifact

    art = Artifact.load(path)
    gen = art.manifest["generation"]
    if art.manifest["target"]["format"] == "gguf":
        from edgellm.bench.remote_llm import LocalShell, bench_llama, find_llama_bench

        tool = find_llama_bench()
        if tool is not None:
            rep = bench_llama(
                LocalShell(),
                art,
                str(art.model_path),
                tool=tool,
                prompts=[prompt],
                new=new,
                runs=3,
                warmup=1,
                threads=threads,
            )
            row = rep["rows"][0]
            par = gen["parity"]
            return {
                **row,
                "timed_by": "llama-bench",
                "size_bytes": art.size_bytes,
                "parity_agreement": par["agreement"],
                "parity_logits_cosine_min": par["logits_cosine_min"],
            }
    from edgellm.bench.generation import bench_generate

    rep = bench_generate(path, prompts=[prompt], new=new, runs=2, threads=threads)
    par = gen["parity"]
    return {
        "parity_agreement": par["agreement"],
        "parity_logits_cosine_min": par["logits_cosine_min"],
        **rep["rows"][0],
        "timed_by": "edgellm Generator",
        "size_bytes": art.size_bytes,
        "precision": gen["precision"],
    }


def time_rounds(paths: dict[str, Path], prompt: int, new: int, threads: int, rounds: int) -> dict[str, Any]:
    """Every artifact timed ``rounds`` times, each run a fresh process, in rotating order."""
    names = [n for n, p in paths.items() if not (p / "FAILED").exists()]
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)] if names else []
        for n in order:
            cmd = [sys.executable, __file__, "--time-one", str(paths[n]), "--prompt", str(prompt)]
            cmd += ["--new", str(new), "--threads", str(threads)]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                runs[n].append({"error": (p.stderr.strip().splitlines() or ["?"])[-1][:300]})
                continue
            runs[n].append(json.loads(p.stdout))
    out = {}
    for n, rs in runs.items():
        ok = [x for x in rs if "decode_tok_s" in x]
        if not ok:
            out[n] = {"error": rs[0].get("error") if rs else "not run"}
            continue
        best = max(ok, key=lambda x: x["decode_tok_s"])
        out[n] = {**best, "decode_tok_s_rounds": [round(x["decode_tok_s"], 1) for x in ok]}
    return out


def phone_bound(paths: dict[str, Path], target: str = "snapdragon-8-gen-3") -> dict[str, Any]:
    """Decode tokens/s a phone's memory bandwidth allows at the roofline's memory efficiency (an estimate)."""
    from edgellm.bench.generation import decode_weight_bytes
    from edgellm.runtime.artifact import Artifact
    from edgellm.targets import load_target
    from edgellm.targets.roofline import MEMORY_EFFICIENCY

    tgt = load_target(target)
    out = {}
    for n, p in paths.items():
        if (p / "FAILED").exists():
            continue
        art = Artifact.load(p)
        wbytes = decode_weight_bytes(art.manifest["generation"], art.size_bytes)
        bw = tgt.memory_bandwidth_gbs * 1e9 * MEMORY_EFFICIENCY
        out[n] = {"decode_bytes": wbytes, "decode_tok_s_bound": round(bw / wbytes, 1)}
    return {"target": target, "memory_efficiency": MEMORY_EFFICIENCY, "rows": out}


# -------------------------------------------------------------------------- the goal's llama.cpp comparison
def log_probs(gguf_file: Path, ids: list[int], chunk: int, threads: int) -> list[Any]:
    """Next-token log-probabilities of a GGUF file in llama.cpp on ``ids``, in independent chunks."""
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(
        model_path=str(gguf_file),
        n_ctx=chunk,
        n_batch=chunk,
        n_threads=threads,
        logits_all=True,
        verbose=False,
    )
    out = []
    for s in range(0, len(ids) - chunk + 1, chunk):
        part = ids[s : s + chunk]
        llm.reset()
        llm.eval(part)
        logits = np.asarray(llm.scores[: len(part) - 1], dtype=np.float64)
        logp = logits - logits.max(-1, keepdims=True)
        out.append(logp - np.log(np.exp(logp).sum(-1, keepdims=True)))
    llm.close()
    return out


def perplexity(gguf_file: Path, ids: list[int], chunk: int, threads: int) -> float:
    """Perplexity of a GGUF file in llama.cpp on ``ids``, in independent chunks of ``chunk`` tokens."""
    import numpy as np

    nll, n = 0.0, 0
    for k, lp in enumerate(log_probs(gguf_file, ids, chunk, threads)):
        part = ids[k * chunk : (k + 1) * chunk]
        nll -= float(lp[np.arange(len(part) - 1), part[1:]].sum())
        n += len(part) - 1
    return math.exp(nll / n)


def fidelity(ref: list[Any], got: list[Any]) -> dict[str, float]:
    """How close a quantized file's next-token distributions are to the float file's (llama.cpp's own
    quantization measure, ``llama-perplexity --kl-divergence``): mean KL(p_ref || p_q), top-1 agreement."""
    import numpy as np

    kl = np.concatenate([(np.exp(r) * (r - g)).sum(-1) for r, g in zip(ref, got)])
    top = np.concatenate([r.argmax(-1) == g.argmax(-1) for r, g in zip(ref, got)])
    return {
        "kl_mean": float(kl.mean()),
        "kl_p99": float(np.quantile(kl, 0.99)),
        "top1_agree": float(top.mean()),
    }


def versus_llama_cpp(
    model: str, ours: Path, prompt: int, new: int, threads: int, rounds: int
) -> dict[str, Any]:
    """edgellm's GGUF Q4_0 (the spec's codes, the tied table Q8_0 by edgellm's RTN) vs llama.cpp's
    converter + llama-quantize Q4_0 of the same weights (its default mixture: Q4_0, the table Q8_0):
    perplexity on the held-out text, and the distance of each file's next-token distributions to the
    float32 file's (KL divergence, top-1 agreement), both computed by llama.cpp; decode rate by llama-bench."""
    import gguf
    from peers_llama import gguf_models

    from edgellm.compress.calibration import corpus_parts
    from edgellm.models import load

    files = gguf_models(model_dir(model), ("f32", "q4_0"))
    theirs = files["q4_0"]
    tok = load(str(model_dir(model))).tokenizer
    _, held, _, _ = corpus_parts(None, None)
    ids: list[int] = []
    for d in held:
        ids += [tok.bos_token_id] + tok(d.text, add_special_tokens=False)["input_ids"]
    ours_file = ours / "model.gguf"
    ref = log_probs(files["f32"], ids, 256, threads)
    quality = {}
    for name, f in (("float32", files["f32"]), ("edgellm", ours_file), ("llama.cpp", theirs)):
        quality[name] = {"perplexity": round(perplexity(f, ids, 256, threads), 3)}
        if name != "float32":
            quality[name].update(
                {k: round(v, 5) for k, v in fidelity(ref, log_probs(f, ids, 256, threads)).items()}
            )
    speed = time_rounds({"edgellm": ours, "llama.cpp": _wrap(theirs, ours)}, prompt, new, threads, rounds)

    def types(f: Path) -> dict[str, int]:
        c: dict[str, int] = {}
        for t in gguf.GGUFReader(f).tensors:
            c[t.tensor_type.name] = c.get(t.tensor_type.name, 0) + 1
        return c

    theirs_rate = speed["llama.cpp"].get("decode_tok_s")
    ratio = theirs_rate and speed["edgellm"]["decode_tok_s"] / theirs_rate
    recipe = json.loads((ours / "manifest.json").read_text())["generation"]["recipe"]
    return {
        "heldout_tokens": len(ids),
        "edgellm_recipe": recipe,
        "quality": quality,
        "decode": speed,
        "decode_ratio_edgellm_vs_llama_cpp": round(ratio, 3) if ratio else None,
        "sizes": {"edgellm": ours_file.stat().st_size, "llama.cpp": theirs.stat().st_size},
        "tensor_types": {"edgellm": types(ours_file), "llama.cpp": types(theirs)},
    }


def _wrap(gguf_file: Path, like: Path) -> Path:
    """llama.cpp's own file as an artifact folder (the manifest of ``like``, that file) for ``--time-one``."""
    from edgellm.runtime.artifact import write_manifest

    folder = CACHE / "llama.cpp-converted" / gguf_file.parent.name
    if not (folder / "manifest.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / "model.gguf"
        if not link.exists():
            os.link(gguf_file, link)
        m = json.loads((like / "manifest.json").read_text())
        fields = {
            k: v
            for k, v in m.items()
            if k not in ("files", "environment", "schema_version", "edgellm_version", "created_at")
        }
        fields["recipe"] = {"gguf": {"made_by": "llama.cpp convert_hf_to_gguf.py + llama-quantize Q4_0"}}
        write_manifest(folder, fields)
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-llama", help="bundled model name or a Hugging Face folder")
    ap.add_argument("--formats", default=",".join(FORMATS), help=f"comma list of: {', '.join(FORMATS)}")
    ap.add_argument("--method", default="gptq", choices=["gptq", "rtn", "awq"], help="the INT4 spec's method")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--min-agreement",
        type=float,
        default=1.0,
        help="greedy agreement an artifact needs (seeded random weights have near-flat logits: int8 "
        "activations flip near-ties there; the rows report the agreement each artifact reached)",
    )
    ap.add_argument(
        "--no-llama-cpp", action="store_true", help="skip the comparison with llama.cpp's own Q4_0"
    )
    ap.add_argument("--time-one", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.time_one:
        print(json.dumps(time_one(a.time_one, a.prompt, a.new, a.threads), default=str))
        return 0
    names = [n.strip() for n in a.formats.split(",") if n.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad:
        ap.error(f"unknown formats {bad}; use some of {list(FORMATS)}")
    from edgellm.bench import host_info

    paths = build(a.model, names, a.method, a.context, a.min_agreement)
    rep: dict[str, Any] = {
        "model": a.model,
        "int4_method": a.method,
        "prompt": a.prompt,
        "new": a.new,
        "threads": a.threads,
        "host": host_info(),
        "failed": {
            n: (p / "FAILED").read_text().strip() for n, p in paths.items() if (p / "FAILED").exists()
        },
        "rows": time_rounds(paths, a.prompt, a.new, a.threads, a.rounds),
        "phone_estimate": phone_bound(paths),
    }
    rows = rep["rows"]
    if "gguf-q4_0" in rows and "pte-8da4w" in rows and "decode_tok_s" in rows["pte-8da4w"]:
        rep["pte_8da4w_vs_gguf_q4_0_decode"] = round(
            rows["pte-8da4w"]["decode_tok_s"] / rows["gguf-q4_0"]["decode_tok_s"], 3
        )
    mine = paths.get("gguf-q4_0-head-q8")
    if not a.no_llama_cpp and mine is not None and not (mine / "FAILED").exists():
        rep["vs_llama_cpp_q4_0"] = versus_llama_cpp(a.model, mine, a.prompt, a.new, a.threads, a.rounds)
    text = json.dumps(rep, indent=2, default=str)
    (ROOT / "edgellm-out").mkdir(exist_ok=True)
    (ROOT / "edgellm-out" / "bench_targets_llm.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
