"""The terminal every command and report prints to (rich), 120 columns wide when stdout is not a terminal."""

from __future__ import annotations

from typing import Any


def console() -> Any:
    """A rich ``Console`` on stdout; piped or captured output gets a fixed width of 120 columns."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=120)
