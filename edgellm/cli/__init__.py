"""The ``edgellm`` command: one module per command group, errors as one line and exit code 2."""

from __future__ import annotations

import os
import sys

import typer

from edgellm.cli import bench as _bench
from edgellm.cli import compress as _compress
from edgellm.cli import data as _data
from edgellm.cli import deploy as _deploy
from edgellm.cli import export as _export
from edgellm.cli import generate as _generate
from edgellm.cli import hub as _hub
from edgellm.cli import info as _info
from edgellm.cli import init as _init
from edgellm.cli import partition as _partition
from edgellm.cli import plugins as _plugins
from edgellm.cli import run as _run
from edgellm.cli import serve as _serve
from edgellm.cli import split as _split
from edgellm.cli import targets as _targets
from edgellm.cli import train as _train

app = typer.Typer(
    name="edgellm",
    help="edgellm: compress, export, benchmark and serve models for phones and servers.\n\n"
    "Start with: edgellm demo",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("info")(_info.info)
app.add_typer(_targets.app, name="targets")
app.command("export")(_export.export)
app.command("generate")(_generate.generate)
app.command("bench")(_bench.bench)
app.command("compress")(_compress.compress)
app.command("demo")(_run.demo)
app.command("run")(_run.run)
app.command("serve")(_serve.serve)
app.command("partition")(_partition.partition)
app.add_typer(_deploy.app, name="deploy")
app.add_typer(_split.app, name="split")
app.add_typer(_data.app, name="data")
app.command("train")(_train.train)
app.add_typer(_hub.app, name="hub")
app.command("plugins")(_plugins.plugins)
app.add_typer(_init.app, name="init")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; print user errors as one line (exit 2) and never a bare traceback."""
    from edgellm.errors import EdgeLLMError

    try:
        rv = app(args=argv, prog_name="edgellm", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else 0
    except EdgeLLMError as exc:
        _err(f"error: {exc}")
        return exc.exit_code
    except (typer.Exit, typer.Abort) as exc:
        return getattr(exc, "exit_code", 130)
    except Exception as exc:
        if getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message"):  # click's UsageError
            if type(exc).__name__ == "NoArgsIsHelpError":
                _err(exc.format_message())
                return 2
            ctx = getattr(exc, "ctx", None)
            cmd = ctx.command_path if ctx is not None else "edgellm"
            _err(f"error: {exc.format_message()} (see '{cmd} --help')")
            return 2
        if os.environ.get("EDGELLM_DEBUG"):
            raise
        first = (str(exc).splitlines() or [""])[0][:400]
        _err(
            f"internal error: {type(exc).__name__}: {first} (rerun with EDGELLM_DEBUG=1 for the traceback and report it)"
        )
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def run() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
