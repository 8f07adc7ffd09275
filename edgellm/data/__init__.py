"""Data front end (stage 1): corpora I/O, cleaning, deduplication, PII masking, augmentation, sampling and
the versioned dataset store. Hands on a ``DatasetVersion``. Built in a later issue."""
