"""The contract of a cleaning step: a pydantic model with ``run`` over one batch's texts.

Every step (:mod:`edgellm.data.steps`, :mod:`edgellm.data.quality`, a plugin's) subclasses :class:`Step`.
Unknown keys in a step's config are errors (``extra="forbid"``). A step returns the new texts, which
documents it drops, the extra columns it adds and counters for the report; ``stateful`` steps (the
deduplications) return hashes instead, decided later in order in the main process.

Example:
    >>> class Upper(Step):
    ...     kind: str = "upper"
    ...     def run(self, texts):
    ...         return [t and t.upper() for t in texts], np.zeros(len(texts), bool), {}, Counter()
    >>> Upper().run(["a", None])[0]
    ['A', None]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

ALIVE = np.iinfo(np.int32).max  # "_drop_at" of a document no step dropped


class Step(BaseModel):
    """One cleaning step; subclasses set ``kind`` (its name in a config) and implement ``run``."""

    model_config = ConfigDict(extra="forbid")
    stateful: ClassVar[bool] = False

    def run(self, texts: list[str | None]) -> tuple[list[str | None], np.ndarray, dict[str, Any], Counter]:
        """``(texts, dropped mask, extra columns, counters)`` for one batch (None: dropped earlier)."""
        raise NotImplementedError

    def run_fields(
        self, texts: list[str | None], fields: Mapping[str, list[Any]]
    ) -> tuple[list[str | None], np.ndarray, dict[str, Any], Counter]:
        """``run`` for a step that also reads the documents' other fields (``fields``: name -> values, the
        text excluded); the extra columns it returns replace the fields of the same name."""
        return self.run(texts)
