"""Silencing third-party chatter (progress prints, deprecation warnings, chatty loggers) around a call."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet(*loggers: str, stderr: bool = False) -> Iterator[None]:
    """Raise the named loggers to ERROR, ignore warnings and swallow stdout (and stderr) inside the block."""
    lgs = [logging.getLogger(n) for n in loggers]
    levels = [lg.level for lg in lgs]
    for lg in lgs:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            if stderr:
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(lgs, levels):
            lg.setLevel(lv)
