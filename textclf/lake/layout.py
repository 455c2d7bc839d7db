"""Every key of the lake, in one place: where each stage reads and writes.

```
LAKE/landing/{labeled,unlabeled}/...                  files waiting to be ingested
LAKE/datasets/{labeled,unlabeled}/                    Delta table, partitioned by ingest_date (textclf.lake.tables)
LAKE/quarantine/{labeled,unlabeled}/                  Delta table, partitioned by ingest_date
LAKE/predictions/                                     Delta table, partitioned by run_date (schema version 2)
LAKE/TABLE/_textclf/COL=D/*.json                      one summary per commit of a date (counts, sources, checksums)
LAKE/_shards/predictions/run_date=D/shard=I-of-N.json a scored shard's files, waiting for the date's commit
LAKE/validation/{labeled,unlabeled}/ingest_date=D/    results.json, profile.*, gx_results/, data_docs/ + _MANIFEST.json
LAKE/models/VERSION/                                  model.keras, metrics.json, report.html, ... + _MANIFEST.json
LAKE/models/champion.json                             the serving version and every decision (conditional writes)
LAKE/reports/run_date=D/                              report.html + report.json + _MANIFEST.json
LAKE/_locks/                                          lock objects of the manifested folders' short commit steps
```

Stages build keys only with these functions; ``safe_key`` refuses anything that could leave the lake.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

from textclf.config import parse_kind
from textclf.errors import ModelError, UnsafeKeyError

MANIFEST = "_MANIFEST.json"  # written last in every manifested folder: a folder without one is absent
STAGING_PREFIX = "_staging-"  # files of a partition being written, inside the partition's folder
WRITER = "_writer.json"  # inside a staging folder: who is writing it (host, pid, time)
LOCKS = "_locks"  # lock objects, at the lake root (see Lake.lock)

LANDING = "landing"
DATASETS = "datasets"
QUARANTINE = "quarantine"
VALIDATION = "validation"
MODELS = "models"
CHAMPION = f"{MODELS}/champion.json"
MODEL_FILE = "model.keras"
PREDICTIONS = "predictions"  # the predictions table
REPORTS = "reports"
SHARDS = "_shards"  # scored shards waiting for their date's commit, outside every table
TABLE_META = "_textclf"  # inside a table root: per-commit summaries (Delta readers and vacuum skip `_` folders)
DATASET_DATE = "ingest_date"  # partition column of the dataset and quarantine tables
PREDICTIONS_DATE = "run_date"  # partition column of the predictions table
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def safe_key(key: str) -> str:
    """Normalise a lake key, refusing anything that could escape the lake root."""
    if not isinstance(key, str) or not key.strip():
        raise UnsafeKeyError(f"lake key must be a non-empty string, got {key!r}")
    if "\x00" in key or "\\" in key:
        raise UnsafeKeyError(f"lake key {key!r} contains a NUL or backslash")
    if key.startswith("/") or urlparse(key).scheme:
        raise UnsafeKeyError(f"lake key {key!r} is absolute; keys are relative to the lake root")
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeKeyError(f"lake key {key!r} contains '..'; keys may not leave the lake")
    if not parts:
        raise UnsafeKeyError(f"lake key {key!r} names the lake root itself")
    return "/".join(parts)


def landing_key(kind: str) -> str:
    """Where files of a kind land before they are ingested."""
    return f"{LANDING}/{parse_kind(kind)}"


def datasets_key(kind: str) -> str:
    """The dataset table of a kind (a Delta table partitioned by ``ingest_date``)."""
    return f"{DATASETS}/{parse_kind(kind)}"


def dataset_key(kind: str, date: str) -> str:
    """The folder of one ingest date's files inside the dataset table (named in messages)."""
    return f"{datasets_key(kind)}/{DATASET_DATE}={date}"


def quarantine_table_key(kind: str) -> str:
    """The quarantine table of a kind (a Delta table partitioned by ``ingest_date``)."""
    return f"{QUARANTINE}/{parse_kind(kind)}"


def quarantine_key(kind: str, date: str) -> str:
    """The folder of one ingest date's rejects inside the quarantine table."""
    return f"{quarantine_table_key(kind)}/{DATASET_DATE}={date}"


def validation_key(kind: str, date: str) -> str:
    """The validation results of a dataset partition."""
    return f"{VALIDATION}/{parse_kind(kind)}/ingest_date={date}"


def data_docs_key(kind: str, date: str) -> str:
    """The Great Expectations Data Docs page of a validation."""
    return f"{validation_key(kind, date)}/data_docs/index.html"


def version_key(version: str) -> str:
    """The folder of a model version; a clear error for a version id that could not be one."""
    if not VERSION_RE.match(version or "") or version == "champion.json":
        raise ModelError(f"invalid model version {version!r}")
    return f"{MODELS}/{version}"


def predictions_key(date: str) -> str:
    """The folder of one run date's files inside the predictions table (named in messages)."""
    return f"{PREDICTIONS}/{PREDICTIONS_DATE}={date}"


def shards_key(date: str) -> str:
    """The folder of a run date's shard records, cleared once the date is committed."""
    return f"{SHARDS}/{PREDICTIONS}/{PREDICTIONS_DATE}={date}"


def shard_key(date: str, shard: int, num_shards: int) -> str:
    """One scored shard's record: its files (already in the table's folder, not yet committed) and stats."""
    return f"{shards_key(date)}/shard={shard:05d}-of-{num_shards:05d}.json"


def report_key(date: str) -> str:
    """The scoring report of a run date."""
    return f"{REPORTS}/run_date={date}"
