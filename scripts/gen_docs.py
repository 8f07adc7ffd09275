"""Write the user guide's generated references: docs/reference/cli.md (every command of the CLI, from the
Typer app) and docs/reference/recipe.md (every key of a recipe, from the pydantic models). tests/test_docs.py
keeps the files current and checks that everything is documented.

.venv/bin/python scripts/gen_docs.py && .venv/bin/mkdocs build --strict
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent / "docs" / "reference"


def commands() -> list[tuple[str, Any]]:
    """``("edgellm hub push", click_command)`` for every leaf command."""
    import typer

    from edgellm.cli import app

    out: list[tuple[str, Any]] = []

    def walk(cmd: Any, path: str) -> None:
        if getattr(cmd, "commands", None):  # a group (typer carries its own click)
            for name in sorted(cmd.commands):
                walk(cmd.commands[name], f"{path} {name}")
        else:
            out.append((path, cmd))

    walk(typer.main.get_command(app), "edgellm")
    return out


def cli_reference() -> str:
    lines = ["# CLI reference", "", "Generated from the commands (`python scripts/gen_docs.py`).", ""]
    for path, cmd in commands():
        lines += [f"## `{path}`", ""]
        doc = (cmd.help or "").strip()
        if doc:
            lines += [doc.replace("\b", "").strip(), ""]
        rows = []
        for p in cmd.params:
            if p.name == "help":
                continue
            names = (
                ", ".join(f"`{o}`" for o in (p.opts or [p.name]))
                if p.param_type_name == "option"
                else f"`{p.name.upper()}`"
            )
            helptext = (getattr(p, "help", None) or "").replace("|", "\\|").replace("\n", " ")
            default = (
                p.default if p.param_type_name == "option" and p.default not in (None, (), [], False) else ""
            )
            rows.append(f"| {names} | {helptext} | {'' if default == '' else f'`{default}`'} |")
        if rows:
            lines += ["| argument / option | what it does | default |", "|---|---|---|", *rows, ""]
    return "\n".join(lines).rstrip() + "\n"


def _models_in(tp: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's annotation holds (``X | None``, ``list[X]``...)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    found = []
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is not None:
        for a in typing.get_args(tp):
            found += _models_in(a)
    return found


def _type_name(tp: Any) -> str:
    return (
        str(tp)
        .replace("typing.", "")
        .replace("edgellm.pipeline.recipe.", "")
        .replace("edgellm.train.config.", "")
        .replace("<class '", "")
        .replace("'>", "")
    )


def recipe_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[tuple[str, str, str, Any]]:
    """``(key.path, type, description, default)`` for every key a recipe may hold, nested ones included."""
    if model is None:
        from edgellm.pipeline.recipe import Recipe

        model = Recipe
    out = []
    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        default = None if f.is_required() else f.get_default(call_default_factory=False)
        out.append((path, _type_name(f.annotation), f.description or "", default))
        for sub in _models_in(f.annotation):
            out += recipe_keys(sub, f"{path}.")
    return out


def recipe_reference() -> str:
    lines = [
        "# Recipe reference",
        "",
        "Generated from the recipe's pydantic models (`python scripts/gen_docs.py`). Unknown keys are errors;",
        "a list's items are documented under `key.field`.",
        "",
        "| key | type | what it is | default |",
        "|---|---|---|---|",
    ]
    for path, tp, desc, default in recipe_keys():
        d = "" if default is None or default is _undefined() else f"`{default}`"
        lines.append(f"| `{path}` | `{tp}` | {desc.replace('|', '/')} | {d.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _undefined() -> Any:
    """pydantic's marker of a field without a default."""
    from pydantic_core import PydanticUndefined

    return PydanticUndefined


def main() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    (ROOT / "cli.md").write_text(cli_reference())
    (ROOT / "recipe.md").write_text(recipe_reference())
    print(f"wrote {ROOT / 'cli.md'} and {ROOT / 'recipe.md'}")


if __name__ == "__main__":
    main()
