"""The artifact directory contract: model file(s) + ``manifest.json`` with a hash of every file.

Loading an artifact checks the manifest's shape (its model file is one of its listed files, every listed
file lies inside the directory, inputs and outputs have known dtypes), verifies every hash and refuses a
tampered or truncated file: a runtime only ever opens a file whose hash was checked.
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
from edgellm.utils.fs import sha256_file
from edgellm.utils.paths import inside, relpath_problem
from edgellm.utils.specs import TensorSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
DTYPES = frozenset(
    ["float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"]
)
_REEXPORT = "re-export the artifact with edgellm export; never edit a manifest by hand"


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
        try:
            is_dir = path.is_dir()
        except OSError as exc:  # a name too long for the file system
            raise ArtifactError(
                f"artifact directory '{str(path)[:60]}...' cannot be read: {exc.strerror}",
                "give the path of a directory written by edgellm export",
            ) from None
        if not is_dir:
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
        if not isinstance(manifest, dict):
            raise ArtifactError(f"{mpath} is not a JSON object", _REEXPORT)
        missing = {"schema_version", "files", "model_file", "inputs", "outputs", "target"} - set(manifest)
        if missing:
            raise ArtifactError(
                f"{mpath} lacks keys {sorted(missing)}", "re-export the artifact with edgellm export"
            )
        problem = manifest_problem(manifest)
        if problem:
            raise ArtifactError(f"{mpath} is refused: {problem}", _REEXPORT)
        if manifest["schema_version"] > SCHEMA_VERSION:
            raise ArtifactError(
                f"artifact schema {manifest['schema_version']} is newer than this edgellm reads ({SCHEMA_VERSION})",
                "upgrade edgellm",
            )
        for rel in manifest["files"]:  # a link that leaves the folder: checked with or without hashes
            if not inside(path, path / rel):
                raise ArtifactError(
                    f"artifact file '{rel}' is a link to {(path / rel).resolve()}, outside {path}; refused",
                    "copy the artifact with its files (cp -rL), or re-export it",
                )
        art = cls(path, manifest)
        if verify:
            art.verify()
            art._check_external_data()
            art._check_folders()
        return art

    def _check_folders(self) -> None:
        """A sub-folder a loader reads whole (``tokenizer/``) holds only listed files: one added or
        swapped in unlisted would be read unchecked."""
        files = self.manifest["files"]
        for folder in sorted({Path(rel).parent for rel in files} - {Path(".")}):
            for f in (self.path / folder).iterdir():
                rel = (folder / f.name).as_posix()
                if f.is_file() and rel not in files and not f.name.startswith("."):
                    raise ArtifactError(
                        f"artifact file '{rel}' is not listed in {MANIFEST} (it would be read unchecked); refused",
                        "remove it, or re-export the artifact",
                    )

    def _check_external_data(self) -> None:
        """An ONNX model's external data files (ONNX Runtime opens them by the names the model holds)
        are files of the artifact listed with their hashes; the model file itself was just verified."""
        model = self.model_path
        if model.suffix != ".onnx":
            return
        for loc in external_data(model):
            bad = relpath_problem(loc)
            rel = (Path(self.manifest["model_file"]).parent / loc).as_posix() if not bad else loc
            if bad or rel not in self.manifest["files"]:
                raise ArtifactError(
                    f"{model.name} reads external data from {loc[:200]!r}, which is not a file the manifest "
                    f"lists with its hash{f' ({bad})' if bad else ''}; refused",
                    _REEXPORT,
                )

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


def external_data(model: Path) -> list[str]:
    """The external data locations an ONNX file's initializers name ([] for a file onnx cannot parse:
    the runner then says why it cannot load it)."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is installed wherever ONNX artifacts are made
        return []
    try:
        m = onnx.load_model(str(model), load_external_data=False)
    except Exception:  # not a protobuf: ONNX Runtime refuses it with its own message
        return []
    locs = {
        e.value
        for t in m.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        for e in t.external_data
        if e.key == "location"
    }
    return sorted(locs)


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What makes a manifest unsafe or unusable (None: nothing): a file table whose paths leave the
    directory or whose hashes are not sha256 digests, a model file that is not one of the listed files,
    inputs or outputs without a name, a known dtype or a shape."""
    if type(manifest["schema_version"]) is not int:
        return f"schema_version {manifest['schema_version']!r} is not an integer"
    target = manifest["target"]
    if not isinstance(target, dict) or not isinstance(target.get("runtime"), str):
        return "'target' has no runtime"
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        return "'files' is not a table of path -> {sha256, bytes}"
    for rel, meta in files.items():
        bad = relpath_problem(rel)
        if bad:
            return f"listed file {rel[:200]!r} is not a path inside the artifact: {bad}"
        if not (
            isinstance(meta, dict)
            and isinstance(meta.get("sha256"), str)
            and len(meta["sha256"]) == 64
            and type(meta.get("bytes")) is int
        ):
            return f"listed file '{rel}' has no sha256 and size"
    model_file = manifest["model_file"]
    bad = relpath_problem(model_file)
    if bad:
        return f"model_file {str(model_file)[:200]!r} is not a path inside the artifact: {bad}"
    if model_file not in files:
        return f"model_file '{model_file}' is not among the files it lists with their hashes"
    for key in ("inputs", "outputs"):
        specs = manifest[key]
        if not isinstance(specs, list) or not specs:
            return f"'{key}' is not a list of tensors"
        for d in specs:
            if not isinstance(d, dict) or not isinstance(d.get("name"), str):
                return f"an entry of '{key}' has no name"
            if d.get("dtype") not in DTYPES:
                return f"{key[:-1]} '{d['name']}' has dtype {d.get('dtype')!r}, not one of {', '.join(sorted(DTYPES))}"
            shape = d.get("shape")
            if not isinstance(shape, list) or not all(
                isinstance(x, str) or (type(x) is int and x >= 0) for x in shape
            ):
                return f"{key[:-1]} '{d['name']}' has shape {shape!r}, not a list of sizes and axis names"
            if set(d) - {"name", "dtype", "shape", "valid_mask"}:
                return f"{key[:-1]} '{d['name']}' has unknown keys {sorted(set(d) - {'name', 'dtype', 'shape', 'valid_mask'})}"
    return None


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
