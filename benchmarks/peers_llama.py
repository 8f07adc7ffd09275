"""llama.cpp as a peer of edgellm's token-rate benchmark, and the helpers every peer shares.

Builds llama.cpp from the ``llama-cpp-python`` sdist (``vendor/llama.cpp``) under ``.peers/llama.cpp``,
converts a Hugging Face folder to GGUF (F32 by ``convert_hf_to_gguf.py`` through ``peers_convert.py``,
Q8_0 / Q4_0 by ``llama-quantize``) and times it with ``llama-bench -o json``. Each step is cached.
Used by ``benchmarks/peers.py`` (the CLI); see its docstring for the whole picture.

Example:
    >>> files = gguf_models("/work/models/qwen05", ("q4_0",))                                # doctest: +SKIP
    >>> bench_llama_cpp("/work/models/qwen05", precisions=("q4_0",), prompts=(128,))[0]["decode_tok_s"]  # doctest: +SKIP
    100.2
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / ".peers"
HERE = Path(__file__).resolve().parent
LLAMA_CPP_PYTHON = "0.3.36"  # the sdist whose vendor/llama.cpp is built
LLAMA_TARGETS = ("llama-bench", "llama-quantize", "llama-server")
# llama-server without its web UI: the prebuilt UI is a Hugging Face download (no network here)
SERVER_FLAGS = ("-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF")
GGUF_TYPES = {"f32": "F32", "q8_0": "Q8_0", "q4_0": "Q4_0"}


try:
    from edgellm.errors import EdgeLLMError as PeerError
except ImportError:  # the script also runs where edgellm is not importable

    class PeerError(RuntimeError):  # type: ignore[no-redef]
        """A peer could not be found, built or run; the message says how to fix it."""

        def __init__(self, message: str, hint: str | None = None) -> None:
            super().__init__(f"{message} ({hint})" if hint else message)


def peer_error(message: str, hint: str) -> Exception:
    return PeerError(message, hint)


def run_logged(
    cmd: Sequence[str | Path],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    what: str,
    hint: str,
) -> tuple[str, float]:
    """Run ``cmd``; stderr (and stdout) to ``log``; return (stdout, peak RSS of the child in MB)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        err.write("$ " + " ".join(map(str, cmd)) + "\n")
        err.flush()
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=None if env is None else {**os.environ, **env},
            cwd=cwd,
        )
        out = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-8:]
        raise peer_error(
            f"{what} failed (exit {proc.returncode}): " + " | ".join(tail)[-600:], f"{hint}; log: {log}"
        )
    return out, usage.ru_maxrss / 1024


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of this machine's CPU time spent busy over ``seconds`` (from /proc/stat): other work on a
    shared host skews every rate, llama.cpp's spinning threads most of all, so reports record it."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait

    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return round(1 - (i1 - i0) / max(1, t1 - t0), 3)


QUIET = {"max_busy": 0.15, "timeout": 0.0}  # before each timed run: wait_for_quiet(**QUIET); the CLI sets it


def wait_for_quiet(max_busy: float = 0.15, timeout: float = 0.0) -> float:
    """Wait up to ``timeout`` seconds until :func:`cpu_busy` is at most ``max_busy``; return the last value."""
    deadline = time.monotonic() + timeout
    busy = cpu_busy()
    while busy > max_busy and time.monotonic() < deadline:
        busy = cpu_busy(2.0)
    return busy


def model_key(hf_dir: Path) -> str:
    """A cache name for ``hf_dir``: folder name + hash of its path and weight files' sizes and times."""
    h = hashlib.sha256(str(hf_dir.resolve()).encode())
    for f in [*sorted(hf_dir.glob("*.safetensors")), hf_dir / "config.json"]:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{hf_dir.name}-{h.hexdigest()[:8]}"


def check_model(hf_dir: str | Path) -> Path:
    path = Path(hf_dir)
    if not (path / "config.json").is_file():
        raise peer_error(
            f"{path} is not a Hugging Face model folder (no config.json)",
            "pass a folder written by edgellm.models.synthetic.synthesize or save_pretrained",
        )
    return path


# ---------------------------------------------------------------------------------------------- llama.cpp
def unpack_llama_cpp(root: Path, src: Path, *, hint: str = "") -> Path:
    """``vendor/llama.cpp`` of the ``llama-cpp-python`` sdist (downloaded to ``root/dl`` once) into ``src``."""
    dl = root / "dl"
    sdist = dl / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.is_file():
        run_logged(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
                "--no-binary",
                ":all:",
                "--no-deps",
                "-d",
                dl,
            ],
            root / "logs" / "sdist.log",
            what="downloading the llama-cpp-python sdist",
            hint=hint or "see the log",
        )
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    tmp = src.with_name(src.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        for m in members:
            m.name = m.name[len(prefix) :]
        tar.extractall(tmp, members=members, filter="data")
    tmp.rename(src)
    return src


def llama_cpp(
    root: Path = PEERS, *, build: bool = True, need: Sequence[str] = LLAMA_TARGETS
) -> dict[str, Path]:
    """Find or build llama.cpp under ``root/llama.cpp``: the source tree and its tools (``bench``,
    ``quantize``, ``server``).

    Order: ``$EDGELLM_LLAMA_CPP`` (a llama.cpp tree with ``build/bin``), then ``root/llama.cpp``; a missing
    tree is unpacked from the ``llama-cpp-python`` sdist (``pip download``), missing tools are built with
    cmake (about 15 minutes on 2 cores; llama-server another ~10). A build folder configured without the
    server (older runs of this script) is reconfigured. ``need`` names the tools the caller uses (only
    they must exist); ``build=False`` raises instead of building.
    """
    src = Path(os.environ.get("EDGELLM_LLAMA_CPP", root / "llama.cpp"))
    bins = {t: src / "build" / "bin" / t for t in LLAMA_TARGETS}
    need = tuple(need)
    how = (
        f"build it once: python benchmarks/peers.py --build-only (or: pip download llama-cpp-python=="
        f"{LLAMA_CPP_PYTHON} --no-binary :all: --no-deps; unpack vendor/llama.cpp to {src}; cmake -B build "
        f"-DGGML_NATIVE=ON -DLLAMA_CURL=OFF {' '.join(SERVER_FLAGS)}; cmake --build build --target {' '.join(LLAMA_TARGETS)} -j2)"
    )
    if all(bins[t].is_file() for t in need) and (src / "convert_hf_to_gguf.py").is_file():
        return {"src": src, **{t.replace("llama-", ""): b for t, b in bins.items() if b.is_file()}}
    if not build:
        raise peer_error(f"llama.cpp is not built under {src}", how)
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise peer_error(
                f"llama.cpp needs '{tool}' to build, and it is not on PATH", "install cmake and gcc/g++"
            )
    if not (src / "CMakeLists.txt").is_file():
        unpack_llama_cpp(root, src, hint=how)
    logs = root / "logs"
    cache = src / "build" / "CMakeCache.txt"
    if not cache.is_file() or "LLAMA_BUILD_SERVER:BOOL=ON" not in cache.read_text(errors="replace"):
        gen = ["-G", "Ninja"] if shutil.which("ninja") else []
        run_logged(
            [
                "cmake",
                "-B",
                "build",
                *gen,
                "-DCMAKE_BUILD_TYPE=Release",
                "-DGGML_NATIVE=ON",
                "-DLLAMA_CURL=OFF",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                *SERVER_FLAGS,
            ],
            logs / "cmake-configure.log",
            cwd=src,
            what="configuring llama.cpp",
            hint=how,
        )
    run_logged(
        ["cmake", "--build", "build", "--target", *need, "-j", str(os.cpu_count() or 2)],
        logs / "cmake-build.log",
        cwd=src,
        what="building llama.cpp",
        hint=how,
    )
    return llama_cpp(root, build=False, need=need)


def llama_server(root: Path = PEERS, *, build: bool = False) -> Path:
    """The ``llama-server`` binary of :func:`llama_cpp` (``build=True`` builds what is missing).

    Example:
        >>> subprocess.run([llama_server(), "--version"]).returncode                # doctest: +SKIP
        0
    """
    return llama_cpp(root, build=build, need=("llama-server",))["server"]


def gguf_models(
    hf_dir: str | Path,
    precisions: Sequence[str] = ("f32", "q8_0", "q4_0"),
    *,
    root: Path = PEERS,
    pre: str = "gpt-2",
) -> dict[str, Path]:
    """GGUF files of ``hf_dir`` per precision (cached under ``root/gguf/<model key>/``).

    F32 comes from ``convert_hf_to_gguf.py`` (run by ``peers_convert.py`` with this interpreter and the
    tree's own ``gguf-py``), the others from ``llama-quantize F32 -> type`` with its default mixture.
    """
    path = check_model(hf_dir)
    bad = [p for p in precisions if p not in GGUF_TYPES]
    if bad:
        raise peer_error(f"unknown llama.cpp precision {bad}", f"use some of {list(GGUF_TYPES)}")
    tools = llama_cpp(root, need=("llama-quantize",))
    out = root / "gguf" / model_key(path)
    out.mkdir(parents=True, exist_ok=True)
    f32 = out / "model-F32.gguf"
    stamp = out / "convert.json"
    recipe = json.dumps({"sdist": LLAMA_CPP_PYTHON, "pre": pre})
    if not stamp.is_file() or stamp.read_text() != recipe:  # made another way: make all again
        for old in out.glob("model-*.gguf"):
            old.unlink()
    if not f32.is_file():
        tmp = out / "model-F32.gguf.tmp"
        run_logged(
            [
                sys.executable,
                HERE / "peers_convert.py",
                "--llama-dir",
                tools["src"],
                "--pre",
                pre,
                "--",
                path,
                "--outtype",
                "f32",
                "--outfile",
                tmp,
            ],
            out / "convert.log",
            what="convert_hf_to_gguf.py",
            hint="see the log; the converter needs torch, numpy, transformers",
        )
        tmp.rename(f32)
        stamp.write_text(recipe)
    files: dict[str, Path] = {}
    for p in precisions:
        target = out / f"model-{GGUF_TYPES[p]}.gguf"
        if not target.is_file():
            tmp = target.with_suffix(".gguf.tmp")
            run_logged(
                [tools["quantize"], f32, tmp, GGUF_TYPES[p]],
                out / f"quantize-{p}.log",
                what=f"llama-quantize {GGUF_TYPES[p]}",
                hint="see the log",
            )
            tmp.rename(target)
        files[p] = target
    return files


def gguf_tensor_bytes(gguf: Path, *, root: Path = PEERS) -> dict[str, int]:
    """Bytes of every tensor in ``gguf`` (read with llama.cpp's gguf-py, in a subprocess)."""
    src = llama_cpp(root, build=False, need=())["src"]
    code = (
        "import json,sys; from gguf import GGUFReader; r=GGUFReader(sys.argv[1]); "
        "print(json.dumps({t.name: int(t.n_bytes) for t in r.tensors}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(gguf)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(src / "gguf-py")},
    )
    return json.loads(out.stdout)


def _bytes_per_token_gguf(tensors: dict[str, int]) -> int:
    """Weight bytes one decode step reads: all tensors, less the embedding table when a separate
    ``output.weight`` exists (then only one row of ``token_embd`` is gathered)."""
    total = sum(tensors.values())
    return total - tensors.get("token_embd.weight", 0) if "output.weight" in tensors else total


def bench_llama_cpp(
    hf_dir: str | Path,
    *,
    precisions: Sequence[str] = ("f32", "q8_0", "q4_0"),
    prompts: Sequence[int] = (128, 512),
    new: int = 128,
    threads: int = 2,
    reps: int = 3,
    root: Path = PEERS,
) -> list[dict[str, Any]]:
    """Time llama.cpp (``llama-bench -o json``) per precision and prompt; builds what is missing.

    Prefill is ``llama-bench -p P -n 0`` (TTFT = P / prefill tokens/s); decode is ``-p 0 -n new -d P``,
    ``new`` tokens generated after a P-token context, as in a real generation (``decode_tok_s_depth0``:
    the same from an empty context, llama-bench's usual ``tg`` figure).
    """
    files = gguf_models(hf_dir, precisions, root=root)
    bench = llama_cpp(root, need=("llama-bench",))["bench"]
    rows: list[dict[str, Any]] = []
    for p, gguf in files.items():
        log_dir = gguf.parent
        common = [bench, "-m", gguf, "-t", str(threads), "-r", str(reps), "-o", "json"]
        plist = ",".join(map(str, prompts))
        busy = wait_for_quiet(**QUIET)  # before the runs: does something else share the cores?
        out, rss_pp = run_logged(
            [*common, "-p", plist, "-n", "0"],
            log_dir / f"bench-pp-{p}.log",
            what="llama-bench (prefill)",
            hint="see the log",
        )
        (log_dir / f"bench-pp-{p}.json").write_text(out)  # llama-bench's own report, kept
        pp = {r["n_prompt"]: r for r in json.loads(out)}
        out, rss_tg = run_logged(
            [*common, "-p", "0", "-n", str(new), "-d", ",".join(map(str, sorted({0, *prompts})))],
            log_dir / f"bench-tg-{p}.log",
            what="llama-bench (decode)",
            hint="see the log",
        )
        (log_dir / f"bench-tg-{p}.json").write_text(out)
        tg = {r["n_depth"]: r for r in json.loads(out)}
        tensors = gguf_tensor_bytes(gguf, root=root)
        for prompt in prompts:
            a, b = pp[prompt], tg[prompt]
            rows.append(
                {
                    "runtime": "llama.cpp",
                    "precision": GGUF_TYPES[p],
                    "prompt": prompt,
                    "new": new,
                    "threads": threads,
                    "batch": 1,
                    "ttft_ms": round(1e3 * prompt / max(a["samples_ts"]), 2),
                    "ttft_ms_median": round(1e3 * prompt / statistics.median(a["samples_ts"]), 2),
                    "prefill_tok_s": round(max(a["samples_ts"]), 2),
                    "prefill_tok_s_median": round(statistics.median(a["samples_ts"]), 2),
                    "decode_tok_s": round(max(b["samples_ts"]), 2),
                    "decode_tok_s_median": round(statistics.median(b["samples_ts"]), 2),
                    "decode_tok_s_depth0": round(
                        max(tg[0]["samples_ts"]), 2
                    ),  # llama-bench's plain tg figure
                    "size_bytes": gguf.stat().st_size,
                    "bytes_per_token": _bytes_per_token_gguf(tensors),
                    "peak_rss_mb": round(max(rss_pp, rss_tg), 1),
                    "reps": reps,
                    "cpu_busy_before": busy,
                    "build": {
                        "file": str(gguf),
                        "llama_cpp_python_sdist": LLAMA_CPP_PYTHON,
                        "build_commit": a.get("build_commit"),
                        "cpu_info": a.get("cpu_info"),
                        "model_type": a.get("model_type"),
                        "kv_type": a.get("type_k"),
                        "flash_attn": a.get("flash_attn"),
                        "quantize": "llama-quantize default mixture"
                        if p != "f32"
                        else "convert_hf_to_gguf --outtype f32",
                    },
                }
            )
    return rows
