"""The names both ends of a cut agree on: what the phone half (``edgellm.split``) sends and the server half
(``edgellm.serve``) reads, kept below both so neither imports the other.

- KServe v2 datatypes (``FP16``, ``INT8``...) and their numpy dtypes, for the binary tensors of a split call.
- The headers of a split-generation step: ``Edgellm-Step`` (the step number: 0 is the prompt's prefill,
  then one token each) and ``Edgellm-Activation`` (the codec's metadata, JSON; the body is the codes).
- :class:`GenerationError`: a refused generation request with its HTTP status, raised by the server's
  sessions and by the phone's client when the server answers with it.

The activation's number format and compression are :mod:`edgellm.runtime.codecs`.
"""

from __future__ import annotations

import numpy as np

V2_TO_NP = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
NP_TO_V2 = {v: k for k, v in V2_TO_NP.items()}

STEP_HEADER = "Edgellm-Step"
ACT_HEADER = "Edgellm-Activation"


def v2_datatype(dtype: str | np.dtype) -> str:
    """The KServe v2 datatype of a numpy dtype (``float16`` -> ``FP16``); ``ValueError`` when it has none."""
    name = np.dtype(dtype).name
    if name not in NP_TO_V2:
        raise ValueError(f"dtype {name} has no KServe v2 datatype")
    return NP_TO_V2[name]


class GenerationError(Exception):
    """A refused generation request: the message and the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
