"""Data front end (stage 1). For now: reading corpora (text, JSONL, directories, the bundled pydoc
topics) and disjoint calibration/evaluation splits. Cleaning, dedup, PII, augmentation, sampling and
the versioned dataset store come with the data-front-end issue."""

from edgellm.data.corpus import Document, pydoc_topics, read_corpus, sentences, split

__all__ = ["Document", "pydoc_topics", "read_corpus", "sentences", "split"]
