"""Data front end (stage 1): reading corpora as Arrow record batches, cleaning (normalisation, quality
filters, language identification, PII, exact and near-duplicate removal) in parallel workers, stratified
sampling, augmentation, and the versioned dataset store. Calibration/evaluation corpora and splits too."""

from edgellm.data.corpus import Document, pydoc_topics, read_corpus, sentences, split

__all__ = ["Document", "pydoc_topics", "read_corpus", "sentences", "split"]
