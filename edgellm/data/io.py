"""Reading and writing corpora as streams of Arrow record batches, so memory stays flat on any size.

Inputs: JSONL (one object per line), Parquet, and plain text (documents separated by blank lines), as
files or directories of them (read in sorted order). Every batch has the columns ``id`` and ``text``
plus any other JSONL/Parquet fields. Outputs are sharded (``part-00000.jsonl`` ...) and written to a
temporary directory that is renamed into place only when complete.

Bad input never passes silently: a malformed JSONL line is counted with its line number and skipped or
stops the run (``on_error``); undecodable bytes name the file, the line and the fix (``encoding``); a
missing text field names the fields that exist; an empty corpus is an error.

Example:
    >>> reader = CorpusReader("corpus.jsonl", text_field="content")       # doctest: +SKIP
    >>> for batch in reader.batches(): ...                                # doctest: +SKIP
    >>> reader.errors                                                      # doctest: +SKIP
    [{'file': 'corpus.jsonl', 'line': 17, 'error': 'Expecting value'}]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgellm.data.corpus import DEFAULT_CORPUS, pydoc_topics
from edgellm.data.files import data_files
from edgellm.data.store import version_files
from edgellm.errors import EdgeLLMError

FORMATS = ("jsonl", "parquet", "text")
_SUFFIX = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".txt": "text", ".text": "text"}


def _pa():
    try:
        import pyarrow as pa
    except ImportError as exc:  # pragma: no cover - the data extra is part of every install
        raise EdgeLLMError("the data front end needs pyarrow", "pip install 'edgellm[data]'") from exc
    return pa


def files_of(source: str | Path) -> list[tuple[Path, str]]:
    """The corpus files under ``source`` with their formats: a file, a directory of files, ``STORE@REF``
    (that dataset version's shards), or ``pydoc`` (the bundled text, read from the standard library)."""
    if str(source) == DEFAULT_CORPUS:
        return [(Path(DEFAULT_CORPUS), "pydoc")]
    versioned = version_files(str(source))
    if versioned is not None:
        return [(f, "jsonl") for f in versioned[0]]
    p = Path(source)
    if not p.exists():
        raise EdgeLLMError(
            f"corpus '{source}' does not exist", "give a .jsonl, .parquet or .txt file, or a folder of them"
        )
    paths = data_files(p) if p.is_dir() else [p]
    out = [(f, _SUFFIX[f.suffix.lower()]) for f in paths if f.suffix.lower() in _SUFFIX]
    if not out:
        raise EdgeLLMError(
            f"corpus '{source}' has no .jsonl, .parquet or .txt files",
            "name the files by their format (.jsonl, .parquet, .txt)",
        )
    return out


@dataclass
class CorpusReader:
    """Stream ``source`` as record batches of at most ``batch_size`` documents.

    Args:
        text_field: the field that holds the text (JSONL/Parquet); it is renamed to ``text``.
        id_field: the field that holds a document id (default: ``id`` if present, else file:line).
        on_error: ``"skip"`` (count and report malformed JSONL lines) or ``"stop"`` (raise at the first).
        encoding: the files' text encoding.
    """

    source: str | Path
    text_field: str = "text"
    id_field: str = "id"
    batch_size: int = 2048
    on_error: str = "skip"
    encoding: str = "utf-8"
    errors: list[dict[str, Any]] = field(default_factory=list)
    documents: int = 0

    def __post_init__(self) -> None:
        if self.on_error not in ("skip", "stop"):
            raise EdgeLLMError(f"on_error '{self.on_error}' is not skip or stop", "use --on-error skip|stop")
        self.files = files_of(self.source)

    def batches(self) -> Iterator[Any]:
        self.errors.clear()
        self.documents = 0
        for path, fmt in self.files:
            if fmt == "parquet":
                yield from self._parquet(path)
            elif fmt == "pydoc":
                docs = pydoc_topics()
                for i in range(0, len(docs), self.batch_size):
                    yield self._batch([{"id": d.id, "text": d.text} for d in docs[i : i + self.batch_size]])
            else:
                rows: list[dict[str, Any]] = []
                for row in self._jsonl(path) if fmt == "jsonl" else self._text(path):
                    rows.append(row)
                    if len(rows) >= self.batch_size:
                        yield self._batch(rows)
                        rows = []
                if rows:
                    yield self._batch(rows)
        if self.documents == 0:
            bad = f" ({len(self.errors)} malformed lines skipped)" if self.errors else ""
            raise EdgeLLMError(
                f"corpus '{self.source}' has no documents{bad}", "check the input files and --text-field"
            )

    def _batch(self, rows: list[dict[str, Any]]) -> Any:
        pa = _pa()
        self.documents += len(rows)
        keys: dict[str, None] = {}
        for r in rows:
            keys.update(dict.fromkeys(r))
        arrays = {}
        for k in keys:
            v = [r.get(k) for r in rows]
            try:
                arrays[k] = pa.array(v)
            except (
                pa.ArrowInvalid,
                pa.ArrowTypeError,
            ):  # mixed types in an extra field: keep it as JSON text
                arrays[k] = pa.array([None if x is None else json.dumps(x, ensure_ascii=False) for x in v])
        return pa.RecordBatch.from_pydict(arrays)

    def _lines(self, path: Path) -> Iterator[tuple[int, str]]:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                try:
                    yield n, raw.decode(self.encoding)
                except UnicodeDecodeError as exc:
                    raise EdgeLLMError(
                        f"{path}:{n} is not valid {self.encoding} ({exc.reason} at byte {exc.start})",
                        "convert the file to UTF-8, or pass --encoding (e.g. latin-1, gb18030)",
                    ) from exc

    def _jsonl(self, path: Path) -> Iterator[dict[str, Any]]:
        for n, line in self._lines(path):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("the line is not a JSON object")
            except ValueError as exc:
                self._bad(path, n, str(exc).split(":")[0])
                continue
            if self.text_field not in obj:
                raise EdgeLLMError(
                    f"{path}:{n} has no field '{self.text_field}' (it has: {', '.join(map(str, obj)) or 'nothing'})",
                    "pass --text-field with the field that holds the text",
                )
            text = obj.pop(self.text_field)
            if not isinstance(text, str):
                self._bad(path, n, f"field '{self.text_field}' is {type(text).__name__}, not a string")
                continue
            ident = obj.pop(self.id_field, None) if self.id_field in obj else None
            yield {"id": str(ident) if ident is not None else f"{path.name}:{n}", "text": text, **obj}

    def _bad(self, path: Path, line: int, error: str) -> None:
        if self.on_error == "stop":
            raise EdgeLLMError(
                f"{path}:{line} is malformed: {error}", "fix the line, or pass --on-error skip"
            )
        self.errors.append({"file": str(path), "line": line, "error": error})

    def _text(self, path: Path) -> Iterator[dict[str, Any]]:
        buf: list[str] = []
        start = 1
        for n, line in self._lines(path):
            if line.strip():
                if not buf:
                    start = n
                buf.append(line.rstrip("\r\n"))
            elif buf:
                yield {"id": f"{path.name}:{start}", "text": "\n".join(buf)}
                buf = []
        if buf:
            yield {"id": f"{path.name}:{start}", "text": "\n".join(buf)}

    def _parquet(self, path: Path) -> Iterator[Any]:
        import pyarrow.parquet as pq

        pa = _pa()
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise EdgeLLMError(f"{path} is not a readable Parquet file: {exc}", "check the file") from exc
        names = pf.schema_arrow.names
        if self.text_field not in names:
            raise EdgeLLMError(
                f"{path} has no column '{self.text_field}' (it has: {', '.join(names)})",
                "pass --text-field with the column that holds the text",
            )
        offset = 0
        for b in pf.iter_batches(batch_size=self.batch_size):
            cols = {n: b.column(n) for n in b.schema.names}
            text = cols.pop(self.text_field)
            ident = cols.pop(self.id_field, None)
            if ident is None:
                ident = pa.array([f"{path.name}:{offset + i}" for i in range(b.num_rows)])
            offset += b.num_rows
            self.documents += b.num_rows
            yield pa.RecordBatch.from_pydict(
                {"id": ident.cast(pa.string()), "text": text.cast(pa.string()), **cols}
            )


class ShardWriter:
    """Write record batches as shards of ``shard_size`` documents into ``output``, atomically.

    Use as a context manager: the shards go to a temporary directory beside ``output``, which replaces
    ``output`` only when the block ends without an error.
    """

    def __init__(
        self, output: str | Path, fmt: str = "jsonl", shard_size: int = 100_000, force: bool = False
    ) -> None:
        if fmt not in ("jsonl", "parquet"):
            raise EdgeLLMError(f"output format '{fmt}' is not jsonl or parquet", "use --format jsonl|parquet")
        self.output, self.fmt, self.shard_size, self.force = Path(output), fmt, shard_size, force
        self.shards: list[Path] = []
        self.written = 0

    def __enter__(self) -> ShardWriter:
        from edgellm.utils.fs import atomic_dir

        self._ctx = atomic_dir(self.output, force=self.force)
        self.tmp = self._ctx.__enter__()
        self._file: Any = None
        self._in_shard = 0
        return self

    def __exit__(self, *exc: Any) -> Any:
        self._close()
        return self._ctx.__exit__(*exc)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> None:
        self._close()
        name = f"part-{len(self.shards):05d}.{self.fmt}"
        path = self.tmp / name
        self.shards.append(Path(name))
        self._in_shard = 0
        if self.fmt == "jsonl":
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in _close
        else:
            self._path = path
            self._file = None

    def write(self, batch: Any) -> None:
        rows = batch.to_pylist()
        i = 0
        while i < len(rows):
            if not self.shards or self._in_shard >= self.shard_size:
                self._open()
            take = rows[i : i + self.shard_size - self._in_shard]
            if self.fmt == "jsonl":
                self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in take))
            else:
                self._append_parquet(take)
            self._in_shard += len(take)
            self.written += len(take)
            i += len(take)

    def _append_parquet(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow.parquet as pq

        pa = _pa()
        table = pa.Table.from_pylist(rows)
        if self._file is not None and not set(table.schema.names) <= set(self._file.schema.names):
            self._open()  # a new field: start a new shard (each shard has one schema)
        if self._file is None:
            self._file = pq.ParquetWriter(self._path, table.schema)
        schema = self._file.schema
        cols = [
            table.column(f.name) if f.name in table.schema.names else pa.nulls(table.num_rows, f.type)
            for f in schema
        ]
        self._file.write_table(pa.Table.from_arrays(cols, schema=schema) if table.schema != schema else table)
