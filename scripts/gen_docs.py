"""Write the user guide's generated references: docs/reference/cli.md and docs/reference/recipe.md.

.venv/bin/python scripts/gen_docs.py && .venv/bin/mkdocs build --strict
"""

from pathlib import Path

from edgellm.utils.docs import cli_reference, recipe_reference

ROOT = Path(__file__).resolve().parent.parent / "docs" / "reference"

if __name__ == "__main__":
    ROOT.mkdir(parents=True, exist_ok=True)
    (ROOT / "cli.md").write_text(cli_reference())
    (ROOT / "recipe.md").write_text(recipe_reference())
    print(f"wrote {ROOT / 'cli.md'} and {ROOT / 'recipe.md'}")
