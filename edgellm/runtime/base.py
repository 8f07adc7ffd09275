"""One ``Runner`` interface over every runtime; a registry keyed by runtime name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

import numpy as np

from edgellm import plugins
from edgellm.errors import EdgeLLMError
from edgellm.utils.specs import TensorSpec


class Runner(ABC):
    """Runs a model on named numpy inputs and returns named numpy outputs.

    Subclasses set :attr:`inputs`/:attr:`outputs` and implement :meth:`_run`; :meth:`run` checks names
    and dtypes first so that a wrong input fails with a message that says what to change.
    """

    runtime: str = ""
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once. ``feeds`` maps every input name to an array of the declared dtype."""
        checked = {}
        for spec in self.inputs:
            if spec.name not in feeds:
                raise EdgeLLMError(
                    f"input '{spec.name}' is missing",
                    f"give all of: {', '.join(s.name for s in self.inputs)}",
                )
            arr = np.asarray(feeds[spec.name])
            if arr.dtype != np.dtype(spec.dtype):
                raise EdgeLLMError(
                    f"input '{spec.name}' has dtype {arr.dtype}, expected {spec.dtype}",
                    f"cast it with .astype('{spec.dtype}')",
                )
            if arr.ndim != len(spec.shape):
                raise EdgeLLMError(
                    f"input '{spec.name}' has {arr.ndim} dimensions, expected {len(spec.shape)} {spec.shape}",
                    "reshape the input",
                )
            checked[spec.name] = arr
        return self._run(checked)

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release the session (optional)."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def context_full(context: int, length: int, new: int) -> EdgeLLMError:
    """The error of a step engine whose cache (``context`` positions, ``length`` used) cannot take ``new``."""
    return EdgeLLMError(
        f"the prompt and output need {length + new} positions but the artifact's cache holds {context}",
        "shorten the prompt or --max-new-tokens, or export with a larger --context",
    )


RUNNERS: dict[str, Callable[..., Runner]] = {}


def register_runner(name: str):
    """Class decorator: make a runner available to :func:`make_runner` under ``name``."""

    def deco(cls):
        cls.runtime = name
        RUNNERS[name] = cls
        return cls

    return deco


@plugins.accepts("edgellm.runners")
def _accept_plugin(name: str, obj: object) -> None:
    if not isinstance(obj, type):
        raise TypeError(f"{obj!r} is not a runner class")
    obj.runtime = getattr(obj, "runtime", None) or name
    RUNNERS.setdefault(name, obj)
