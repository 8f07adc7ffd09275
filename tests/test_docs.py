"""The user guide: its generated references are current (every command of the CLI, every key of a
recipe), every command's help has an example, and the site builds with mkdocs in strict mode (no broken
links, no page left out of the navigation)."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _gen_docs():
    """``scripts/gen_docs.py``, the generator of the references (a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen_docs = _gen_docs()
cli_reference, commands = gen_docs.cli_reference, gen_docs.commands
recipe_keys, recipe_reference = gen_docs.recipe_keys, gen_docs.recipe_reference


def test_the_references_are_current_and_complete():
    cli = (ROOT / "docs" / "reference" / "cli.md").read_text()
    recipe = (ROOT / "docs" / "reference" / "recipe.md").read_text()
    hint = "run: .venv/bin/python scripts/gen_docs.py"
    assert cli == cli_reference(), f"docs/reference/cli.md is stale ({hint})"
    assert recipe == recipe_reference(), f"docs/reference/recipe.md is stale ({hint})"
    for path, cmd in commands():
        assert f"## `{path}`" in cli
        assert "Example" in (cmd.help or ""), f"'{path} --help' has no example"
    for key, *_ in recipe_keys():
        assert f"| `{key}` |" in recipe
    assert len(commands()) > 30 and len(recipe_keys()) > 100  # the walk found the real surface


def test_every_stage_page_is_in_the_navigation_and_the_site_builds(tmp_path):
    pytest.importorskip("mkdocs")
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    listed = set()
    for item in nav:
        for v in item.values():
            listed |= {next(iter(x.values())) for x in v} if isinstance(v, list) else {v}
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages == listed
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    r = subprocess.run(
        [mkdocs, "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
