"""The house is checked, not remembered: the import-linter contracts of pyproject.toml (the stages' layers,
no import circles inside any package) hold, and a wrong import is named when one breaks them."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT)], cwd=cwd, capture_output=True, text=True, timeout=300, env=env or None)


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed: pip install 'edgellm[dev]'")
def test_the_import_contracts_hold():
    p = lint(ROOT)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "0 broken" in p.stdout and "2 kept" in p.stdout


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed: pip install 'edgellm[dev]'")
def test_an_import_against_the_layers_breaks_the_contract(tmp_path):
    """A copy of the package with one upward import (a stage reaching up into the pipeline) fails,
    and the message names the importing module."""
    shutil.copytree(
        ROOT / "edgellm", tmp_path / "edgellm", ignore=shutil.ignore_patterns("__pycache__", "*.safetensors")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bad = tmp_path / "edgellm" / "compress" / "upward.py"
    bad.write_text(
        textwrap.dedent("""
        def run():
            from edgellm.pipeline import compress  # a stage must not reach up into the workflows

            return compress
    """)
    )
    p = lint(tmp_path, PYTHONPATH=str(tmp_path), PATH="/usr/bin:/bin")
    assert p.returncode != 0
    assert "edgellm.compress.upward -> edgellm.pipeline" in p.stdout
