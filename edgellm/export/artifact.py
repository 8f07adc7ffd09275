"""The artifact directory contract: model file(s) + ``manifest.json`` with a hash of every file.

Loading an artifact verifies every hash and refuses a tampered or truncated file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgellm._version import __version__
from edgellm.errors import ArtifactError
from edgellm.models.adapter import TensorSpec
from edgellm.utils.fs import sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Artifact:
    """A verified artifact directory.

    Example:
        >>> art = Artifact.load("edgellm-out/minilm-x86-server")    # doctest: +SKIP
        >>> art.manifest["parity"]["fixed"]["cosine_min"]           # doctest: +SKIP
        1.0
    """

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> Artifact:
        """Read ``manifest.json`` and (by default) check the sha256 of every file it lists."""
        path = Path(path)
        mpath = path / MANIFEST
        if not path.is_dir():
            raise ArtifactError(
                f"artifact directory '{path}' does not exist", "export one with: edgellm export"
            )
        if not mpath.is_file():
            raise ArtifactError(
                f"'{path}' is not an artifact: it has no {MANIFEST}",
                "point to a directory written by edgellm export",
            )
        try:
            manifest = json.loads(mpath.read_text())
        except ValueError as exc:
            raise ArtifactError(f"{mpath} is not valid JSON: {exc}", "re-export the artifact") from exc
        missing = {"schema_version", "files", "model_file", "inputs", "outputs", "target"} - set(manifest)
        if missing:
            raise ArtifactError(
                f"{mpath} lacks keys {sorted(missing)}", "re-export the artifact with edgellm export"
            )
        if manifest["schema_version"] > SCHEMA_VERSION:
            raise ArtifactError(
                f"artifact schema {manifest['schema_version']} is newer than this edgellm reads ({SCHEMA_VERSION})",
                "upgrade edgellm",
            )
        art = cls(path, manifest)
        if verify:
            art.verify()
        return art

    def verify(self) -> None:
        """Raise :class:`ArtifactError` if a listed file is missing or its sha256 differs."""
        for rel, meta in self.manifest["files"].items():
            f = self.path / rel
            if not f.is_file():
                raise ArtifactError(
                    f"artifact file '{rel}' is missing from {self.path}", "re-export the artifact"
                )
            if f.stat().st_size != meta["bytes"] or sha256_file(f) != meta["sha256"]:
                raise ArtifactError(
                    f"artifact file '{rel}' does not match the sha256 in its manifest (corrupted or tampered)",
                    "re-export the artifact; never edit files inside an artifact",
                )

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model_file"]

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(**d) for d in self.manifest["inputs"]]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(**d) for d in self.manifest["outputs"]]

    @property
    def size_bytes(self) -> int:
        """Bytes of the model files (manifest and tokenizer excluded)."""
        return sum(m["bytes"] for r, m in self.manifest["files"].items() if not r.startswith("tokenizer/"))


def model_fields(model: Any) -> dict[str, Any]:
    """The manifest's ``model`` section: what the artifact was exported from."""
    return {
        "name": model.name,
        "family": model.family,
        "num_parameters": model.num_parameters,
        "blocks": [b.name for b in model.blocks],
        "source": model.source,
    }


def file_table(root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``root`` except the manifest, keyed by relative path."""
    return {
        str(f.relative_to(root)): {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        for f in sorted(root.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    }


def write_manifest(root: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` for the files in ``root`` with the common fields filled in."""
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "edgellm_version": __version__,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **fields,
        "files": file_table(root),
        "environment": environment(),
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def environment() -> dict[str, str]:
    """Versions of the packages that shaped an artifact."""
    from importlib.metadata import PackageNotFoundError, version

    env = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "transformers", "onnx", "onnxruntime", "onnxscript"):
        with contextlib.suppress(PackageNotFoundError):
            env[pkg] = version(pkg)
    return env
