"""Helpers shared by CLI commands: JSON output, tables."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def console():
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=120)


def kv_table(title: str, rows: list[tuple[str, Any]]) -> None:
    from rich.table import Table

    t = Table(title=title, show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    for k, v in rows:
        t.add_row(k, str(v))
    console().print(t)
