"""Helpers shared by CLI commands: JSON output, tables, and the console (:mod:`edgellm.utils.console`)."""

from __future__ import annotations

import json
import sys
from typing import Any

from edgellm.utils.console import console


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def kv_table(title: str, rows: list[tuple[str, Any]]) -> None:
    from rich.table import Table

    t = Table(title=title, show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    for k, v in rows:
        t.add_row(k, str(v))
    console().print(t)
