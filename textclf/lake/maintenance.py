"""Lake housekeeping: the nightly vacuum of the tables, and the migration of a pre-Delta lake into tables.

``vacuum`` runs in the nightly scoring DAG (and as ``textclf vacuum``); ``migrate`` is ``textclf migrate``.
Both only touch the lake through ``Lake`` and ``Table``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from textclf.common import utc_now_iso
from textclf.config import KINDS, MigrateConfig, VacuumConfig
from textclf.errors import StorageError
from textclf.lake.layout import (
    DATASET_DATE,
    MANIFEST,
    PREDICTIONS,
    PREDICTIONS_DATE,
    SHARDS,
    STAGING_PREFIX,
    datasets_key,
    quarantine_table_key,
)
from textclf.lake.partition import FileEntry
from textclf.lake.store import Lake
from textclf.lake.tables import Table

log = logging.getLogger(__name__)


def table_areas() -> list[tuple[str, str]]:
    """(table key, date column) of every table of the lake."""
    return ([(datasets_key(k), DATASET_DATE) for k in KINDS] + [(quarantine_table_key(k), DATASET_DATE) for k in KINDS]
            + [(PREDICTIONS, PREDICTIONS_DATE)])


@dataclass(frozen=True)
class VacuumResult:
    """What a vacuum removed, per table."""

    retention_days: float
    tables: list[dict[str, Any]]
    shard_records_removed: int

    def summary(self) -> dict[str, Any]:
        return {"retention_days": self.retention_days, "tables": self.tables,
                "shard_records_removed": self.shard_records_removed}


def vacuum(lake: Lake, config: VacuumConfig) -> VacuumResult:
    """Vacuum every table (see ``Table.vacuum``) and drop shard records older than the retention."""
    hours = config.retention_days * 24
    results = [Table(lake, key, column).vacuum(hours) for key, column in table_areas()]
    cutoff, removed = time.time() - hours * 3600, 0
    for key in lake.list_files(SHARDS):  # records of sharded runs that never committed
        info = lake.fs.get_file_info(lake.path(key))
        if info.mtime is not None and info.mtime.timestamp() < cutoff:
            lake.delete(key)
            removed += 1
    log.info("vacuumed %d tables of %s (retention %.1f days)", len(results), lake.uri, config.retention_days)
    return VacuumResult(config.retention_days, results, removed)


@dataclass(frozen=True)
class MigrateResult:
    """Per table: the dates converted, the rows the old manifests counted and the rows the table holds now."""

    tables: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {"tables": self.tables, "converted_dates": sum(t["converted"] for t in self.tables)}


def _old_partitions(lake: Lake, key: str, column: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for child in lake.list_children(key):
        if child.startswith(f"{column}=") and lake.exists(f"{key}/{child}/{MANIFEST}"):
            found.append((child.split("=", 1)[1], lake.read_json(f"{key}/{child}/{MANIFEST}")))
    return found


def migrate(lake: Lake, config: MigrateConfig) -> MigrateResult:
    """Convert manifested partitions (textclf before schema version 2) into Delta tables, in place.

    Each manifested ``COL=D/`` folder becomes date D of its table in one commit that adds the files its
    manifest lists, where they are: nothing is copied or rewritten. Row counts are checked three ways (the
    manifest, the Parquet footers and the committed snapshot) before the old manifest is removed. Folders
    without a manifest were never visible and are left to vacuum. Running it again converts what is left,
    so an interrupted migration is finished by rerunning it; a date the table already has is not replaced.
    """
    import pyarrow as pa

    datasets_runs: dict[tuple[str, Any], dict[str, Any]] = {}  # (date, old manifest's created_at) -> summary
    out = []
    for key, column in table_areas():
        old = _old_partitions(lake, key, column)
        table = Table(lake, key, column)
        snapshot = table.snapshot()
        converted, old_rows = 0, 0
        for date, manifest in sorted(old):
            folder = f"{key}/{column}={date}"
            files, schema, footer_rows = [], None, 0
            for entry in manifest.get("files", []):
                if not entry["path"].endswith(".parquet"):
                    continue
                meta = lake.parquet_file(f"{folder}/{entry['path']}").metadata
                schema = schema or meta.schema.to_arrow_schema()
                footer_rows += meta.num_rows
                files.append(FileEntry(f"{column}={date}/{entry['path']}", meta.num_rows, entry["bytes"],
                                       entry["sha256"]))
            expected = int(manifest.get("rows", footer_rows))
            if footer_rows != expected:
                raise StorageError(f"cannot migrate {lake.uri_of(folder)}: its manifest counts {expected} rows, its "
                                   f"files hold {footer_rows}; fix or remove that partition and rerun")
            old_rows += expected
            if snapshot is not None and date in snapshot.files:
                if {f.path for f in snapshot.files[date]} != {f.path for f in files}:
                    log.warning("%s: the table already has %s %s (written since); the old partition is not used",
                                lake.uri_of(key), column, date)
            else:
                if table.schema is None:
                    table.schema = pa.schema([f for f in (schema or pa.schema([])) if f.name != column])
                fields = {k: v for k, v in manifest.items()
                          if k not in ("files", "partition", "manifest_version", "rows", "created_at")}
                if key == PREDICTIONS:
                    fields["schema_version"] = 2
                    source = datasets_runs.get((date, manifest.get("source_created_at"))) or {}
                    if source.get("ingest_run"):
                        fields["source_ingest_run"] = source["ingest_run"]
                table.commit(date, files, {**fields, "rows": expected, "migrated_at": utc_now_iso(),
                                           "migrated_from_created_at": manifest.get("created_at")})
                converted += 1
            snapshot = table.snapshot()
            assert snapshot is not None
            if snapshot.rows(date) != expected:
                raise StorageError(f"migrating {lake.uri_of(folder)}: the table holds {snapshot.rows(date)} rows for "
                                   f"{date}, the old manifest {expected}; nothing more was changed")
            if config.remove_manifests:
                lake.delete(f"{folder}/{MANIFEST}")
                for child in lake.list_children(folder):
                    if child.startswith(STAGING_PREFIX):
                        lake.delete_tree(f"{folder}/{child}")
        if key == datasets_key("unlabeled") and snapshot is not None:  # old predictions name their ingest this way
            for date in snapshot.dates():
                summary = table.summary(date, snapshot) or {}
                datasets_runs[date, summary.get("migrated_from_created_at")] = summary
        if key == PREDICTIONS:
            lake.delete_tree(f"{PREDICTIONS}/_shards")  # old shard partitions: never published
        rows = sum(snapshot.rows(d) for d in snapshot.dates()) if snapshot else 0
        out.append({"table": lake.uri_of(key), "converted": converted, "old_rows": old_rows,
                    "dates": len(snapshot.dates()) if snapshot else 0, "rows": rows,
                    "version": snapshot.version if snapshot else None})
        log.info("%s: %d date(s) converted (%d rows); the table holds %d rows", lake.uri_of(key), converted, old_rows,
                 rows)
    return MigrateResult(out)
