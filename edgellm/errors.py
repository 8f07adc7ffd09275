"""The errors edgellm raises for problems a user can fix.

Every error carries a one-line message that names what is wrong and a hint that says how to fix it.
The CLI prints ``error: <message> (<hint>)`` and exits with code 2, never a traceback.
"""

from __future__ import annotations

from typing import Any


class EdgeLLMError(Exception):
    """Base class: a problem with the user's input or environment, with a hint on how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ModelLoadError(EdgeLLMError):
    """A model path is missing, is not a model, or holds an architecture edgellm does not know."""


class UnsupportedArchitectureError(ModelLoadError):
    """The model's architecture is not one of the supported families."""


class ExportError(EdgeLLMError):
    """Lowering a model to a target's format failed."""


class ParityError(ExportError):
    """An exported artifact disagrees with the reference model beyond the tolerance."""


class ArtifactError(EdgeLLMError):
    """An artifact directory is missing files, has a bad manifest, or a file's hash does not match."""


class TargetError(EdgeLLMError):
    """A target profile is unknown or malformed."""


class MissingDependencyError(EdgeLLMError):
    """An optional SDK is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed",
            f"install it with: pip install 'edgellm[{extra}]'",
        )


class OutputExistsError(EdgeLLMError):
    """The output directory already exists."""

    def __init__(self, path: object) -> None:
        super().__init__(
            f"output directory '{path}' already exists",
            "pass --force to replace it, or choose another -o/--output",
        )


def require(module: str, extra: str, purpose: str):
    """Import an optional SDK or raise :class:`MissingDependencyError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only where the SDK is absent
        raise MissingDependencyError(module.split(".")[0], extra, purpose) from exc


def first_error(exc: Any) -> str:
    """``'dotted.path': message`` of a pydantic ValidationError's first error, for one-line messages."""
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")  # a validator's own message, without pydantic's label
    loc = ".".join(str(x) for x in err["loc"])
    return f"'{loc}': {msg}" if loc else msg  # a check of the whole model has no location
