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


class _DropMessages(logging.Filter):
    """Drops records whose format string contains one of ``parts``."""

    def __init__(self, *parts: str) -> None:
        super().__init__()
        self.parts = parts

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(p in str(record.msg) for p in self.parts)


def hush_import_noise() -> None:
    """Silence what third-party packages log merely on being imported, which a user cannot act on:
    torchao (pulled in by transformers once ExecuTorch installed it) warns about its CUDA-only kernels on
    a CPU machine, and registers Enums with torch's pytree, which torch 2.13 logs as deprecated."""
    logging.getLogger("torchao").setLevel(logging.ERROR)
    pytree = logging.getLogger("torch.utils._pytree")
    if not any(isinstance(f, _DropMessages) for f in pytree.filters):
        pytree.addFilter(_DropMessages("is an Enum subclass and is now natively supported"))
