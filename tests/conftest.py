"""Shared fixtures: the bundled MiniLM, tiny random-weight decoders saved as HF directories, a plain MLP."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# exports for arm64 targets validate on emulated arm64 kernels only where a test asks (arm64="require",
# the `arm64` marker): emulation costs seconds per run
os.environ.setdefault("EDGELLM_ARM64", "off")
# one trace per model for the whole run (and the CLI processes it starts): every export of the same
# weights, class, config and options reuses the plain fp32 ONNX (edgellm.export.onnx_server.raw_key)
_EXPORT_CACHE = None
if "EDGELLM_EXPORT_CACHE" not in os.environ:
    import tempfile

    _EXPORT_CACHE = tempfile.mkdtemp(prefix="edgellm-test-export-cache-")
    os.environ["EDGELLM_EXPORT_CACHE"] = _EXPORT_CACHE


def pytest_unconfigure(config):
    if _EXPORT_CACHE is not None:
        import shutil

        shutil.rmtree(_EXPORT_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Hardware markers skip, with the reason, where the hardware or SDK is absent (CPU CI)."""
    import importlib.util

    has_trt = importlib.util.find_spec("tensorrt") is not None
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    arm64_missing = None
    if any("arm64" in item.keywords for item in items):
        from edgellm.runtime.arm64 import find_root

        arm64_missing = find_root()[1] or None
    for item in items:
        if "arm64" in item.keywords and arm64_missing:
            item.add_marker(pytest.mark.skip(reason=f"emulated arm64 is not available: {arm64_missing}"))
        if "requires_tensorrt" in item.keywords and not has_trt:
            item.add_marker(
                pytest.mark.skip(reason="TensorRT is not installed: pip install 'edgellm[tensorrt]'")
            )
        if "requires_cuda" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="no CUDA GPU on this machine"))


@pytest.fixture(scope="session")
def minilm():
    from edgellm import models

    return models.load("minilm")


@pytest.fixture(scope="session")
def minilm_artifact(minilm, tmp_path_factory):
    from edgellm.export import export

    return export(minilm, "x86-server", tmp_path_factory.mktemp("art") / "minilm")


# a tiny decoder with grouped-query attention (4 query heads, 2 key/value heads)
SMALL = dict(
    vocab_size=320,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


# SMALL as a from-scratch architecture (edgellm train's ``scratch.architecture``)
SCRATCH_LLAMA = {
    "model_type": "llama",
    **{k: v for k, v in SMALL.items() if k != "vocab_size"},
    "max_position_embeddings": 128,
    "tie_word_embeddings": True,
}


def save_llama(path: Path, **overrides) -> Path:
    """Save a random-weight Llama (GQA 4:2) with ``overrides`` on a tiny config; returns ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{**SMALL, **overrides})).save_pretrained(path)
    return path


def tiny_config(kind: str):
    """A tiny random-init config of family ``kind`` (64 wide, 2 layers, vocabulary 320)."""
    import transformers as t

    return {
        "llama": lambda: t.LlamaConfig(**SMALL),
        "qwen2": lambda: t.Qwen2Config(**SMALL),
        "gpt2": lambda: t.GPT2Config(vocab_size=320, n_embd=64, n_layer=2, n_head=4, n_positions=256),
        # fused qkv_proj (GQA 4:2) and gate_up_proj, rotary on half of each head, untied embeddings
        "phi3": lambda: t.Phi3Config(
            **SMALL, partial_rotary_factor=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=2
        ),
        # (1 + w) RMSNorm, embeddings scaled by sqrt(hidden) and tied to the LM head, GELU-gated MLP
        "gemma": lambda: t.GemmaConfig(**SMALL, head_dim=16),
        # Gemma plus logit soft-capping and every other layer attending over a sliding window
        "gemma2": lambda: t.Gemma2Config(**SMALL, head_dim=16, sliding_window=8),
        # query/key RMSNorms, a local rotary for its sliding-window layers
        "gemma3_text": lambda: t.Gemma3TextConfig(**SMALL, head_dim=16, sliding_window=8),
        "distilbert": lambda: t.DistilBertConfig(
            vocab_size=320, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=256
        ),
    }[kind]()


def save_char_tokenizer(path: Path, vocab_size: int = 320) -> Path:
    """A WordPiece tokenizer of exactly ``vocab_size`` entries that spells any English text: the BERT
    specials, ASCII characters and their ``##`` continuations, then unused slots. Saved into ``path``."""
    import string

    from transformers import BertTokenizerFast

    cont = string.ascii_lowercase + string.digits
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *cont,
        *string.punctuation,
        *("##" + c for c in cont),
    ]
    vocab += [f"[unused{i}]" for i in range(vocab_size - len(vocab))]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    return path


def save_tiny(kind: str, path: Path, *, tokenizer: bool = False) -> Path:
    """Save a seeded random-weight model of :func:`tiny_config` ``kind`` (an encoder as its base model, a
    decoder with its LM head), with :func:`save_char_tokenizer` beside it if asked; returns ``path``."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    cfg = tiny_config(kind)
    torch.manual_seed(0)
    auto = AutoModel if kind == "distilbert" else AutoModelForCausalLM
    auto.from_config(cfg).save_pretrained(path)
    if tokenizer:
        save_char_tokenizer(path, cfg.vocab_size)
    return path


def _save_decoder(kind: str, root: Path) -> Path:
    return save_tiny(kind, root / f"tiny-{kind}")


@pytest.fixture(scope="session")
def decoder_dir(tmp_path_factory):
    """A factory: ``decoder_dir("llama")`` -> directory of a tiny random-weight model (saved once)."""
    root = tmp_path_factory.mktemp("decoders")
    cache: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = _save_decoder(kind, root)
        return cache[kind]

    return make


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A factory: ``tiny_dir("distilbert")`` -> directory of a tiny random-weight model of that family
    (:func:`tiny_config`) with a character tokenizer beside it, saved once."""
    root = tmp_path_factory.mktemp("tiny")
    cache: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = save_tiny(kind, root / f"tiny-{kind}", tokenizer=True)
        return cache[kind]

    return make


def llama_like_tiny(path: Path, seed: int = 0, **overrides) -> Path:
    """A random-weight Llama of :data:`SMALL`'s shape with the bundled tiny-llama's tokenizer, saved: a real
    language model (it reads text) that exports, quantizes and trains in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from edgellm.models import bundled_path

    tok = AutoTokenizer.from_pretrained(bundled_path("tiny-llama"))
    torch.manual_seed(seed)
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    LlamaForCausalLM(LlamaConfig(**{**SMALL, "vocab_size": len(tok), **ids, **overrides})).save_pretrained(
        path
    )
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def small_lm(tmp_path_factory) -> Path:
    """:func:`llama_like_tiny` 128 wide (INT4 groups of 32..128 fit), saved once per session as ``small-lm``."""
    return llama_like_tiny(tmp_path_factory.mktemp("lm") / "small-lm", hidden_size=128, intermediate_size=256)


@pytest.fixture(scope="session")
def small_llm(small_lm):
    """:func:`small_lm` loaded: for tests of format mechanics, where the bundled tiny-llama's size only costs
    time (its own artifacts are checked where its accuracy or size is the point)."""
    from edgellm import models

    return models.load(small_lm)


@pytest.fixture()
def mlp():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))


@pytest.fixture(scope="session")
def mlp_art(tmp_path_factory):
    """The plain MLP exported for the server (read-only: tests that tamper with it work on a copy)."""
    import torch

    from edgellm import models
    from edgellm.export import export

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    return export(
        models.load(net, example_inputs=torch.randn(2, 16)),
        "x86-server",
        tmp_path_factory.mktemp("a") / "mlp",
    )


@pytest.fixture(scope="session")
def arm64_host():
    """The arm64 root (scripts/arm64_root.sh) as an Arm64Host; tests marked ``arm64`` skip without it."""
    from edgellm.runtime.arm64 import find_root

    host, why = find_root()
    if host is None:
        pytest.skip(f"emulated arm64 is not available: {why}")
    return host


@pytest.fixture(scope="session")
def tiny_llama():
    from edgellm import models

    return models.load("tiny-llama")


@pytest.fixture(scope="session")
def pydoc_batches():
    """``pydoc_batches(model, n)`` -> (calibration, evaluation) batches from the bundled corpus."""
    from edgellm.compress.calibration import corpus_parts, make_batches

    train, held, cs, es = corpus_parts(None, None)

    def make(model, n_calib=32, n_eval=64):
        return (
            make_batches(model, train, cs, max_sequences=n_calib),
            make_batches(model, held, es, max_sequences=n_eval),
        )

    return make


def corpus_excerpt(path: Path, part: int, chars: int = 8000) -> str:
    """Write about ``chars`` characters of the bundled corpus's calibration (``part`` 0) or evaluation (1)
    documents to ``path`` (~16 windows of 128 tokens, where the full parts give 64 and 49): ``--calib`` /
    ``--eval`` for commands whose mechanics, not their accuracy figures, a test checks."""
    from edgellm.compress.calibration import corpus_parts

    path.write_text("\n\n".join(d.text for d in corpus_parts(None, None)[part])[:chars])
    return str(path)


# -- the batching server (tests/serve) ------------------------------------------------------------


@contextlib.contextmanager
def running(models, **cfg):
    """A real server on loopback (ephemeral ports) in a background event loop."""
    pytest.importorskip("aiohttp", reason="pip install 'edgellm[serve]'")
    from edgellm.serve import serve_in_background

    with serve_in_background(models, **{"grpc_port": 0, **cfg}) as srv:
        yield srv


@pytest.fixture(scope="module")
def served(minilm_artifact):
    from edgellm.serve import ModelConfig

    with running([ModelConfig(minilm_artifact.path)], max_batch_size=8, max_queue_delay_ms=5) as srv:
        yield srv


@pytest.fixture(scope="session")
def run_server():
    """``with run_server([ModelConfig(...)], **config) as srv:`` -- a real server for one test."""
    return running


# -- split generation (tests/serve, tests/split, tests/pipeline) -------------------------------------------


@pytest.fixture(scope="session")
def gen_dir(tiny_llama, tmp_path_factory):
    """tiny-llama exported for split generation, cut after 2 of 6 layers (ORT-mobile phone half)."""
    from edgellm.pipeline.generation import export_generation

    out = tmp_path_factory.mktemp("gen") / "tl"
    info = export_generation(tiny_llama, 2, out, check_tokens=16)
    assert info["check"]["agreement"] == 1.0
    return out


@pytest.fixture(scope="session")
def gen_artifact(small_llm, tmp_path_factory):
    """small-lm as an fp32 generation artifact for ONNX Runtime (export --generate), 32 tokens checked."""
    from edgellm.pipeline.generate_export import export_generate

    out = tmp_path_factory.mktemp("genart") / "fp32"
    export_generate(small_llm, out, check_tokens=32)
    return out


@pytest.fixture(scope="session")
def pte_gen_fp32(small_llm, tmp_path_factory):
    """``(directory, manifest)``: small-lm as an fp32 ExecuTorch generation artifact (the static-cache
    program, 48 positions, 16 tokens checked), lowered once for tests/conformance and tests/export."""
    pytest.importorskip("executorch", reason="pip install 'edgellm[executorch]'")
    from edgellm.pipeline.generate_export import export_generate

    out = tmp_path_factory.mktemp("ptegen") / "fp32"
    m = export_generate(
        small_llm,
        out,
        target="snapdragon-8-gen-3",
        format="pte",
        precision="fp32",
        context=48,
        check_tokens=16,
    )
    return out, m


@pytest.fixture(scope="session")
def gen_concat_artifact(small_llm, tmp_path_factory):
    """small-lm as an fp32 generation artifact with the ``concat`` cache layout (the step graph)."""
    from edgellm.pipeline.generate_export import export_generate

    out = tmp_path_factory.mktemp("genconcat") / "fp32"
    export_generate(small_llm, out, check_tokens=8, fused=False)
    return out


@pytest.fixture(scope="module")
def gen_server(gen_dir):
    """``(url, server)``: the server half of ``gen_dir`` served on loopback."""
    pytest.importorskip("aiohttp", reason="pip install 'edgellm[serve]'")
    from edgellm.serve import ModelConfig, serve_in_background

    with serve_in_background([ModelConfig(gen_dir / "server")], max_length=256, max_batch_size=8) as srv:
        yield f"http://127.0.0.1:{srv.config.port}", srv


# -- a real `edgellm serve` process (the server tests) ---------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_serve(artifact, tmp_path, *flags):
    """``edgellm serve ARTIFACT FLAGS`` on a free port, REST only; returns (process, port) once ready."""
    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - the server writes to it until it exits
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgellm.cli",
            "serve",
            str(artifact),
            "--port",
            str(port),
            "--grpc-port",
            "-1",
        ]
        + [str(f) for f in flags],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/v2/health/ready")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    pytest.fail("server did not become ready: " + (tmp_path / "serve.log").read_text()[-2000:])


@pytest.fixture(scope="session")
def serve_cli():
    """``serve_cli(artifact, log_dir, *flags)`` -> ``(process, port)``: `edgellm serve` (REST only) on a
    free port, once it is ready; the caller terminates it."""
    return _start_serve
