"""`import edgellm` must not pull in heavy SDKs (design.md: heavy SDKs are optional)."""

import json
import subprocess
import sys

HEAVY = [
    "onnxruntime",
    "tensorflow",
    "tensorrt",
    "tflite_runtime",
    "ai_edge_litert",
    "litert_torch",
    "ai_edge_quantizer",
    "jax",
    "torch",
    "onnx",
    "transformers",
]


def test_import_edgellm_is_lean():
    code = f"import sys, json, edgellm; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_cli_help_is_lean():
    """`edgellm --help` answers without importing torch or any runtime."""
    code = (
        "import sys, json, contextlib, io\n"
        "from edgellm.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): rc = main(['--help'])\n"
        f"print(json.dumps([rc, [m for m in {HEAVY!r} if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rc, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert rc == 0 and loaded == []
