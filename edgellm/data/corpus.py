"""Text corpora for calibration and evaluation: plain text, JSONL, dataset directories, and the default
corpus every machine has — CPython's bundled ``pydoc_data.topics`` (~465 KB of English).

Documents are split into disjoint parts by a stable hash of their id, so a split never depends on
file order or on how many documents there are.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from edgellm.data.files import data_files
from edgellm.data.store import version_files
from edgellm.errors import EdgeLLMError

DEFAULT_CORPUS = "pydoc"


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    label: str | None = None  # the class of a labelled example (read with ``label_field``)


def pydoc_topics() -> list[Document]:
    """CPython's help topics, one document per topic, sorted by topic name."""
    from pydoc_data.topics import topics

    return [Document(k, topics[k]) for k in sorted(topics)]


def read_corpus(
    source: str | Path | None = None, *, text_field: str = "text", label_field: str | None = None
) -> list[Document]:
    """Documents from ``source``.

    Args:
        source: ``None`` or ``"pydoc"`` for the bundled default; a ``.txt`` file (documents separated by
            blank lines); a ``.jsonl`` file (one JSON object per line, text under ``text_field``); or a
            directory of such files (read in sorted order).
        text_field: the JSONL key holding the text.
        label_field: for labelled examples (classification): the JSONL key holding each record's class
            (a string or a number, kept as its string); every record must have one, and the source must
            be JSONL.
    """
    if label_field is not None and (source is None or str(source) == DEFAULT_CORPUS):
        raise EdgeLLMError(
            "classification needs labelled examples, and the bundled corpus has no labels",
            f"give a .jsonl file (or dataset STORE@REF) whose records have '{text_field}' and '{label_field}'",
        )
    if source is None or str(source) == DEFAULT_CORPUS:
        return pydoc_topics()
    versioned = version_files(str(source))  # STORE@REF: the shards of that dataset version
    if versioned is not None:
        docs: list[Document] = []
        for f in versioned[0]:
            docs += _read_jsonl(f, text_field, label_field)
        return docs
    path = Path(source)
    if not path.exists():
        raise EdgeLLMError(
            f"data path '{source}' does not exist", "give a .txt, .jsonl or a directory of them"
        )
    files = [p for p in data_files(path) if p.suffix in (".txt", ".jsonl")] if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise EdgeLLMError(
            f"data directory '{source}' has no .txt or .jsonl files", "add files or point to one"
        )
    docs = []
    for f in files:
        if f.suffix == ".jsonl":
            docs += _read_jsonl(f, text_field, label_field)
        elif label_field is not None:
            raise EdgeLLMError(
                f"{f} is plain text: it has no '{label_field}' labels for classification",
                f'write the examples as JSONL, one object per line: {{"{text_field}": ..., "{label_field}": ...}}',
            )
        elif f.suffix == ".txt" or f.is_file():
            paras = [p.strip() for p in f.read_text(errors="replace").split("\n\n")]
            docs += [Document(f"{f.name}:{i}", p) for i, p in enumerate(paras) if p]
    return docs


def _read_jsonl(path: Path, field: str, label_field: str | None = None) -> list[Document]:
    docs = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise EdgeLLMError(
                    f"{path}:{n} is not valid JSON ({exc})", "fix or remove that line"
                ) from exc
            if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                raise EdgeLLMError(
                    f"{path}:{n} has no string field '{field}'", "set the text field name (--text-field)"
                )
            label = None
            if label_field is not None:
                label = obj.get(label_field)
                if label is None or isinstance(label, (dict, list)):
                    raise EdgeLLMError(
                        f"{path}:{n} has no label under '{label_field}'",
                        "give every example a class (a string or a number), or set label_field",
                    )
                label = str(label)
            docs.append(Document(str(obj.get("id", f"{path.name}:{n}")), obj[field], label))
    return docs


def split(docs: list[Document], eval_fraction: float = 0.1) -> tuple[list[Document], list[Document]]:
    """Disjoint (train/calibration, evaluation) parts by a stable hash of each document id."""
    if not 0 < eval_fraction < 1:
        raise EdgeLLMError(f"eval_fraction {eval_fraction} is outside (0, 1)", "use e.g. 0.1")
    buckets = 1000
    cut = round(eval_fraction * buckets)

    def bucket(d: Document) -> int:
        return int(hashlib.sha256(d.id.encode()).hexdigest(), 16) % buckets

    train = [d for d in docs if bucket(d) >= cut]
    held = [d for d in docs if bucket(d) < cut]
    if not held and len(docs) > 1:  # tiny corpora: keep at least one document out
        train, held = docs[:-1], docs[-1:]
    return train, held


def sentences(docs: list[Document], *, min_words: int = 4, max_chars: int = 400) -> list[str]:
    """Prose sentences/lines from documents, for embedding calibration and evaluation."""
    import re

    out: list[str] = []
    for d in docs:
        for para in d.text.split("\n\n"):
            flat = " ".join(re.sub(r"[*=~^-]{3,}", " ", para).split())
            for s in re.split(r"(?<=[.!?])\s+", flat):
                if len(s.split()) >= min_words and not set(s) <= set("*=-~^ "):
                    out.append(s[:max_chars])
    return out
