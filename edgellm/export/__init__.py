"""Export: lower a model to each target's native format, validated against the reference.

Example:
    >>> from edgellm.export import export, Artifact
    >>> art = export("minilm", target="x86-server", output="out/minilm")   # doctest: +SKIP
    >>> Artifact.load("out/minilm").manifest["target"]                     # doctest: +SKIP
"""

from edgellm.export.base import EXPORTERS, Exporter, export, parity_reference, register_exporter
from edgellm.export.validate import Tolerance
from edgellm.runtime.artifact import SCHEMA_VERSION, Artifact

__all__ = [
    "EXPORTERS",
    "SCHEMA_VERSION",
    "Artifact",
    "Exporter",
    "Tolerance",
    "export",
    "parity_reference",
    "register_exporter",
]
