"""Ingest: landed source files (CSV, TSV, JSON Lines, Parquet) into a dataset partition and its quarantine.

``sources`` reads the files, ``normalize`` cleans text, ``quarantine`` and ``dedup`` account for every
rejected row, ``landing`` finds the files not yet ingested, ``stage`` is the ``ingest`` stage itself.
"""

from textclf.ingest.stage import IngestResult, ingest

__all__ = ["IngestResult", "ingest"]
