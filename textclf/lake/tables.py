"""Delta Lake tables: the datasets, the quarantine and the predictions, one partition per date, via delta-rs.

A table (``datasets/labeled``, ``quarantine/unlabeled``, ``predictions``, ...) is a standard Delta table that
DuckDB, Polars, pandas, Spark or Trino read through its log:

```
TABLE/_delta_log/                         the log, written by delta-rs: every snapshot of the table
TABLE/COL=D/STEM-RUN.parquet              data files (zstd), written here before the commit that adds them
TABLE/_textclf/COL=D/STAMP-ID.json        one summary per commit of a date: counts, sources, checksums
```

**One commit per date.** ``Table.commit`` removes every file the date has in the current snapshot and adds
the new ones in one Delta transaction (an explicit predicate overwrite). A reader sees the old snapshot until
that commit and the new one after it. Data files get unique names and are written before the commit, so a
run that dies leaves files no snapshot references; ``vacuum`` deletes them once they are older than the
retention. Sharded scoring writes its files from many workers and commits them together the same way.

**Concurrent writers** are delta-rs's own business: each Delta log entry is created only if absent (an
exclusive create on a disk, ``If-None-Match: *`` on S3), and every commit of a date carries the Delta
application transaction ``textclf:COL=D`` (a ``txn`` action) whose version counts the date's commits, so
two commits of one date always conflict in delta-rs's conflict checker instead of both adding files. The
loser re-reads the snapshot and commits again, so the last to commit wins whole; commits of other dates
are retried the same way. No lock of this project's own is involved.

**Summaries.** The counts a stage promises (``rows + quarantined_rows == input_rows`` and the rest) are
recorded in the commit's metadata (``textclf`` in the Delta history) and, because Delta logs expire, in a
small JSON object per commit, written before it under the table's ``_textclf/`` folder. The summary of a
date is the one whose file list is exactly the date's files in the snapshot read, so a summary is never
paired with another commit's data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textclf.common import utc_now_iso
from textclf.errors import PartitionNotFoundError, StorageError
from textclf.lake.layout import TABLE_META, safe_key
from textclf.lake.partition import FileEntry, HashingSink, ParquetPartFile
from textclf.lake.store import Lake, S3Options, wrap_os_error

if TYPE_CHECKING:
    import pyarrow as pa
    from deltalake import DeltaTable

log = logging.getLogger(__name__)

SUMMARY_VERSION = 1
COMMIT_ATTEMPTS = 30  # conflicting commits re-read the snapshot and try again, with a jittered backoff
DEFAULT_RETENTION_DAYS = 7.0  # vacuum: files of replaced snapshots are kept this long (time travel works within it)
_ANSI = re.compile(r"\x1b\[[0-9;]*m|[↳]")


class NotCommitted(StorageError):
    """A commit given up before it was attempted, or after every attempt conflicted: its files can go."""


def dataset_table(lake: Lake, kind: str, schema: pa.Schema | None = None) -> Table:
    """The dataset table of a kind (``schema`` is needed only to create it)."""
    from textclf.lake.layout import DATASET_DATE, datasets_key

    return Table(lake, datasets_key(kind), DATASET_DATE, schema)


def quarantine_table(lake: Lake, kind: str, schema: pa.Schema | None = None) -> Table:
    """The quarantine table of a kind: the rows its ingests rejected, with their reasons."""
    from textclf.lake.layout import DATASET_DATE, quarantine_table_key

    return Table(lake, quarantine_table_key(kind), DATASET_DATE, schema)


def predictions_table(lake: Lake, schema: pa.Schema | None = None) -> Table:
    """The predictions table (schema version 2: docs/contracts.md)."""
    from textclf.lake.layout import PREDICTIONS, PREDICTIONS_DATE

    return Table(lake, PREDICTIONS, PREDICTIONS_DATE, schema)


def new_run_id() -> str:
    """A unique id for one writer's files: sortable by time, 20 characters."""
    return f"{int(time.time()):010x}{uuid.uuid4().hex[:10]}"


def delta_error(what: str, exc: BaseException) -> StorageError:
    """A delta-rs error as one readable line (its messages span lines and carry colour codes)."""
    text = " ".join(_ANSI.sub("", str(exc)).split())
    return wrap_os_error(what, OSError(text[:600] or type(exc).__name__))


@dataclass(frozen=True)
class TableFile:
    """One data file of a date in a snapshot."""

    path: str  # relative to the table root, as in the Delta log
    rows: int | None
    bytes: int


class Snapshot:
    """One version of a table: its data files by date."""

    def __init__(self, table: Table, version: int, files: dict[str, list[TableFile]]) -> None:
        self.table = table
        self.version = version
        self.files = files

    def dates(self) -> list[str]:
        return sorted(self.files)

    def date_files(self, date: str) -> list[TableFile]:
        return sorted(self.files.get(date, []), key=lambda f: f.path)

    def rows(self, date: str) -> int:
        return sum(f.rows or 0 for f in self.files.get(date, []))


class Table:
    """A Delta table of the lake, partitioned by one date column.

    ``schema`` (the data files' columns, without the date column) is needed only to create the table.
    """

    def __init__(self, lake: Lake, key: str, date_column: str, schema: pa.Schema | None = None) -> None:
        self.lake = lake
        self.key = safe_key(key)
        self.date_column = date_column
        self.schema = schema

    def __repr__(self) -> str:
        return f"Table({self.uri!r})"

    # -- where ------------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        """What Delta readers open: the table's absolute path, or its ``s3://`` URI."""
        return self.lake.path(self.key) if self.lake.is_local else self.lake.uri_of(self.key)

    def storage_options(self) -> dict[str, str] | None:
        """delta-rs storage options: None on a disk, the lake's endpoint and credentials on S3."""
        if self.lake.is_local:
            return None
        return (self.lake.s3 or S3Options.from_env()).storage_options()

    def date_key(self, date: str) -> str:
        """The folder of a date's files (its Delta partition)."""
        return f"{self.key}/{self.date_column}={date}"

    def file_key(self, path: str) -> str:
        """The lake key of a data file named by its path in the Delta log."""
        return f"{self.key}/{safe_key(path)}"

    def delta_schema(self) -> pa.Schema:
        import pyarrow as pa

        if self.schema is None:
            raise StorageError(f"{self.uri}: no schema to create the table with")
        return self.schema.append(pa.field(self.date_column, pa.date32()))

    # -- reading ----------------------------------------------------------------------------
    def delta(self, version: int | None = None) -> DeltaTable | None:
        """The table as delta-rs sees it (the latest version, or ``version``), or None when it does not exist."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.uri, version=version, storage_options=self.storage_options())
        except TableNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - delta-rs raises OSError and its own errors for storage trouble
            raise delta_error(f"cannot read the Delta table {self.lake.uri_of(self.key)}", exc) from exc

    def snapshot(self, version: int | None = None) -> Snapshot | None:
        """The latest snapshot (or version ``version``); None when the table does not exist yet."""
        dt = self.delta(version)
        return None if dt is None else self._snapshot_of(dt)

    def _snapshot_of(self, dt: DeltaTable) -> Snapshot:
        import pyarrow as pa

        try:
            actions = pa.table(dt.get_add_actions(flatten=True))
            version = dt.version()
        except Exception as exc:  # noqa: BLE001
            raise delta_error(f"cannot read the Delta table {self.lake.uri_of(self.key)}", exc) from exc
        files: dict[str, list[TableFile]] = {}
        column = f"partition.{self.date_column}"
        if actions.num_rows:
            dates = actions.column(column).to_pylist()
            rows = actions.column("num_records").to_pylist()
            for path, size, date, n in zip(actions.column("path").to_pylist(), actions.column("size_bytes").to_pylist(),
                                           dates, rows, strict=True):
                files.setdefault(str(date), []).append(TableFile(path, None if n is None else int(n), int(size)))
        return Snapshot(self, version, files)

    def summary_key(self, date: str, name: str) -> str:
        return f"{self.key}/{TABLE_META}/{self.date_column}={date}/{name}"

    def summary(self, date: str, snapshot: Snapshot | None = None) -> dict[str, Any] | None:
        """The summary of the commit whose files the date holds in ``snapshot`` (default: the latest).

        None when the table or the date does not exist. The result also names the snapshot it was read from
        (``table_version``), the table's URI (``table``) and the summary's own key (``summary_key``).
        """
        snap = snapshot or self.snapshot()
        if snap is None or date not in snap.files:
            return None
        paths = {f.path for f in snap.files[date]}
        folder = f"{self.key}/{TABLE_META}/{self.date_column}={date}"
        for name in sorted(self.lake.list_children(folder), reverse=True):  # newest first: usually the first
            if not name.endswith(".json"):
                continue
            try:
                summary = self.lake.read_json(f"{folder}/{name}")
            except StorageError:
                if not self.lake.exists(f"{folder}/{name}"):
                    continue  # vacuumed meanwhile
                raise
            if isinstance(summary, dict) and {f.get("path") for f in summary.get("files", [])} == paths:
                return {**summary, "table": self.lake.uri_of(self.key), "table_version": snap.version,
                        "summary_key": f"{folder}/{name}"}
        raise StorageError(f"{self.lake.uri_of(self.date_key(date))} holds files that no summary under "
                           f"{self.lake.uri_of(folder)} lists (written by another tool?); rerun the stage for {date}")

    def require_summary(self, date: str, snapshot: Snapshot | None = None) -> dict[str, Any]:
        summary = self.summary(date, snapshot)
        if summary is None:
            raise self._absent(date)
        return summary

    def _absent(self, date: str) -> PartitionNotFoundError:
        return PartitionNotFoundError(f"nothing committed at {self.lake.uri_of(self.date_key(date))}: the table "
                                      f"{self.lake.uri_of(self.key)} has no {self.date_column} {date}")

    def file_keys(self, date: str, snapshot: Snapshot | None = None) -> list[str]:
        """Lake keys of a date's data files in a snapshot (default: the latest)."""
        snap = snapshot or self.snapshot()
        if snap is None or date not in snap.files:
            raise self._absent(date)
        return [self.file_key(f.path) for f in snap.date_files(date)]

    def iter_batches(self, date: str, columns: list[str] | None = None, batch_size: int = 65_536,
                     snapshot: Snapshot | None = None) -> Iterator[pa.RecordBatch]:
        """Stream a date's rows (without the date column) from the files of one snapshot."""
        return self.lake.iter_file_batches(self.file_keys(date, snapshot), columns, batch_size)

    def read(self, date: str, columns: list[str] | None = None, snapshot: Snapshot | None = None) -> pa.Table:
        """A date's rows in memory (small dates only), without the date column."""
        import pyarrow as pa

        tables = []
        for file_key in self.file_keys(date, snapshot):
            try:
                tables.append(self.lake.parquet_file(file_key).read(columns=columns))
            except OSError as exc:
                raise wrap_os_error(f"cannot read {self.lake.uri_of(file_key)}", exc) from exc
        return pa.concat_tables(tables) if tables else pa.table({})

    def verify(self, date: str) -> dict[str, Any]:
        """Check a date's files against the sha256 sums of its summary; the summary, or ChecksumMismatchError."""
        from textclf.errors import ChecksumMismatchError

        snap = self.snapshot()
        summary = self.require_summary(date, snap)
        for entry in summary["files"]:
            self.lake.verify_file(self.file_key(entry["path"]), entry["sha256"], "the summary's")
        assert snap is not None
        if snap.rows(date) != summary["rows"]:
            raise ChecksumMismatchError(f"{self.lake.uri_of(self.date_key(date))}: the Delta log counts "
                                        f"{snap.rows(date)} rows, the summary {summary['rows']}")
        return summary

    # -- writing ----------------------------------------------------------------------------
    def writer(self, date: str, run: str | None = None) -> DateWriter:
        """Start writing a date's files; see ``DateWriter``."""
        return DateWriter(self, date, run)

    def _ensure(self) -> DeltaTable:
        from deltalake import DeltaTable

        dt = self.delta()
        if dt is not None:
            return dt
        try:
            if self.lake.is_local:
                self.lake.fs.create_dir(self.lake.path(self.key), recursive=True)
            DeltaTable.create(self.uri, self.delta_schema(), mode="ignore", partition_by=[self.date_column],
                              storage_options=self.storage_options(),
                              configuration={"delta.deletedFileRetentionDuration":
                                             f"interval {int(DEFAULT_RETENTION_DAYS)} days"})
        except Exception as exc:  # noqa: BLE001 - another writer may have created it at the same instant
            if self.delta() is None:
                raise delta_error(f"cannot create the Delta table {self.lake.uri_of(self.key)}", exc) from exc
        dt = self.delta()
        assert dt is not None
        return dt

    def commit(self, date: str, files: list[FileEntry], fields: dict[str, Any],
               check: Callable[[Snapshot], None] | None = None, run: str | None = None) -> dict[str, Any]:
        """Replace a date's files by ``files`` in one Delta commit; return the summary (with ``table_version``).

        ``files`` must already exist in the table's folder. The summary (``fields`` plus the files, their rows
        and checksums) is written first, then the commit: it removes every file the date has in the latest
        snapshot and adds ``files``. ``check(snapshot)`` runs before each attempt and may raise ``NotCommitted``
        to give up (a writer that learns another run's result must stand). A conflicting commit is retried on the new
        snapshot; a commit of exactly the files the date already holds changes nothing (a retried task).
        """
        import datetime as dt_

        from deltalake import CommitProperties, Transaction
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import AddAction, RemoveAction

        run = run or new_run_id()
        paths = sorted(f.path for f in files)
        if len(set(paths)) != len(paths):
            raise StorageError(f"{self.lake.uri_of(self.date_key(date))}: a file is listed twice")
        summary: dict[str, Any] = {
            "summary_version": SUMMARY_VERSION, self.date_column: date, "commit_run": run,
            "created_at": utc_now_iso(), **fields, "files": [f.as_dict() for f in files],
        }
        summary.setdefault("rows", sum(f.rows or 0 for f in files))
        snap = self.snapshot()
        if snap is not None and sorted(f.path for f in snap.date_files(date)) == paths:
            log.info("%s already holds these files (a retried commit)", self.lake.uri_of(self.date_key(date)))
            return self.require_summary(date, snap)
        stamp = dt_.datetime.now(dt_.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        summary_key = self.summary_key(date, f"{stamp}-{run}.json")
        self.lake.write_bytes(summary_key, json.dumps(summary, indent=2).encode())
        where = {"table": self.lake.uri_of(self.key), "summary_key": summary_key}
        metadata = {"textclf": {self.date_column: date, "run": run, "rows": summary["rows"],
                                **{k: summary[k] for k in ("input_rows", "quarantined_rows", "duplicates_removed",
                                                           "kind", "model_version", "ingest_run") if k in summary}}}
        app_id = f"textclf:{self.date_column}={date}"
        pause = 0.05
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            table = self._ensure()
            snap = self._snapshot_of(table)
            if check is not None:
                check(snap)
            current = snap.date_files(date)
            if sorted(f.path for f in current) == paths:
                log.info("%s already holds these files", self.lake.uri_of(self.date_key(date)))
                return self.summary(date, snap) or {**summary, **where, "table_version": snap.version}
            now = int(time.time() * 1000)
            removes = [RemoveAction(f.path, True, now, f.bytes, {self.date_column: date}) for f in current]
            adds = [AddAction(f.path, f.bytes, {self.date_column: date}, now, True,
                              json.dumps({"numRecords": f.rows or 0})) for f in files]
            txn = Transaction(app_id, (table.transaction_version(app_id) or 0) + 1, now)
            try:
                table.create_write_transaction(
                    [*adds, *removes], "append", table.schema(), partition_by=[self.date_column],
                    commit_properties=CommitProperties(custom_metadata=metadata, app_transactions=[txn]))
            except CommitFailedError as exc:
                log.info("commit of %s conflicted with another writer (attempt %d): %s",
                         self.lake.uri_of(self.date_key(date)), attempt, " ".join(str(exc).split())[:200])
                time.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(pause * 2, 2.0)
                continue
            except Exception as exc:  # noqa: BLE001
                raise delta_error(f"cannot commit {self.lake.uri_of(self.date_key(date))}", exc) from exc
            version = self._committed_version(run)
            log.info("committed %s (%d files, %d rows) as version %s of %s", self.date_key(date), len(files),
                     summary["rows"], version, self.lake.uri_of(self.key))
            return {**summary, **where, "table_version": version}
        raise NotCommitted(f"cannot commit {self.lake.uri_of(self.date_key(date))}: {COMMIT_ATTEMPTS} attempts "
                           "conflicted with other writers of the table; rerun")

    def _committed_version(self, run: str) -> int | None:
        """The version of the commit that carried ``run``: its log entry, searched from the newest.

        Read from the log entries themselves (``_delta_log/N.json``, whose first line is the commit's info):
        ``history()`` numbers its entries from the snapshot it loaded, which is off by one when another writer
        commits while it lists the log.
        """
        dt = self.delta()
        if dt is None:
            return None
        for version in range(dt.version(), max(-1, dt.version() - 500), -1):
            try:
                first = self.lake.read_bytes(f"{self.key}/_delta_log/{version:020d}.json").split(b"\n", 1)[0]
                info = json.loads(first).get("commitInfo", {})
            except (StorageError, ValueError):
                continue
            if (info.get("textclf") or {}).get("run") == run:
                return version
        return None

    # -- housekeeping -----------------------------------------------------------------------
    def vacuum(self, retention_hours: float) -> dict[str, Any]:
        """Delete what no snapshot within the retention needs: replaced files, dead runs' files, old summaries.

        delta-rs's full vacuum removes files removed from the table more than ``retention_hours`` ago and files
        no snapshot lists (killed runs, never-committed shards) older than that; time travel to any version
        whose files are all younger keeps working. Summaries of commits that no longer hold a date in the latest
        snapshot are deleted once older than the retention too.
        """
        dt = self.delta()
        if dt is None:
            return {"table": self.lake.uri_of(self.key), "files_removed": 0, "summaries_removed": 0}
        try:
            removed = dt.vacuum(retention_hours=int(retention_hours), dry_run=False, enforce_retention_duration=False,
                                full=True)
        except Exception as exc:  # noqa: BLE001
            raise delta_error(f"cannot vacuum {self.lake.uri_of(self.key)}", exc) from exc
        snap = self._snapshot_of(self.delta() or dt)
        current: set[str] = set()
        for date in snap.dates():
            with contextlib.suppress(StorageError):
                summary = self.summary(date, snap)
                if summary:
                    current.add(summary["commit_run"])
        cutoff = time.time() - retention_hours * 3600
        summaries = 0
        for key in self.lake.list_files(f"{self.key}/{TABLE_META}"):
            name = posixpath.basename(key)
            run = name.rsplit("-", 1)[-1].removesuffix(".json")
            if run not in current and _run_started(run) < cutoff:
                self.lake.delete(key)
                summaries += 1
        return {"table": self.lake.uri_of(self.key), "version": snap.version, "files_removed": len(removed),
                "summaries_removed": summaries}


def _run_started(run: str) -> float:
    try:
        return float(int(run[:10], 16))
    except ValueError:
        return 0.0


class DateWriter:
    """Writes one run's data files of one date straight into the table's folder, for a later ``commit``.

    Files are named ``STEM-RUN.parquet`` (``part-00000.parquet`` becomes ``part-00000-RUN.parquet``), so runs
    never overwrite each other's files. They are invisible to readers until committed. Used as a context
    manager, an exception before any commit attempt deletes them; after one, they are left to vacuum (a
    commit that failed on the way back may still have landed, and deleting its files would break the table).
    """

    def __init__(self, table: Table, date: str, run: str | None = None) -> None:
        self.table = table
        self.lake = table.lake
        self.date = date
        self.run = run or new_run_id()
        self.files: list[FileEntry] = []
        self._open: list[ParquetPartFile] = []
        self._keep = False

    def __enter__(self) -> DateWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None and not self._keep:
            self.abort()

    def path_of(self, name: str) -> str:
        """The table-relative path a logical file name is written under."""
        stem, dot, ext = safe_key(name).rpartition(".")
        if not dot or "/" in name:
            raise StorageError(f"{name!r}: data files are named STEM.parquet")
        return f"{self.table.date_column}={self.date}/{stem}-{self.run}.{ext}"

    def staged_uri(self, entry: FileEntry) -> str:
        """Lake key of a written file, for reading it back before the commit."""
        return self.table.file_key(entry.path)

    def parquet(self, name: str, schema: pa.Schema) -> ParquetPartFile:
        """Open a Parquet file of this run; ``close_parquet`` it, then it is one of ``files``."""
        return self._open_path(self.path_of(name), schema)

    def _open_path(self, path: str, schema: pa.Schema) -> ParquetPartFile:
        key = self.table.file_key(path)
        part = ParquetPartFile(HashingSink(self.lake.open_output(key), self.lake.uri_of(key)), schema, path)
        self._open.append(part)
        return part

    def close_parquet(self, part: ParquetPartFile) -> FileEntry:
        entry = part.close()
        self._open.remove(part)
        self.files.append(entry)
        return entry

    def rewrite_parquet(self, entry: FileEntry, schema: pa.Schema, batches: Any) -> FileEntry:
        """Replace a written file by a new one (streamed from ``batches``) under a new name; drop the old."""
        stem = entry.path.removesuffix(".parquet")
        part = self._open_path(f"{stem}-r{uuid.uuid4().hex[:6]}.parquet", schema)
        for batch in batches:
            part.write(batch)
        written = part.close()
        self._open.remove(part)
        self.files = [written if f is entry else f for f in self.files]
        self.lake.delete(self.table.file_key(entry.path))
        return written

    def drop_file(self, entry: FileEntry) -> None:
        self.files = [f for f in self.files if f is not entry]
        self.lake.delete(self.table.file_key(entry.path))

    def keep(self) -> None:
        """From now on the files stay whatever happens (they are, or may be, in a commit or a shard record)."""
        self._keep = True

    def commit(self, fields: dict[str, Any], check: Callable[[Snapshot], None] | None = None) -> dict[str, Any]:
        """Commit this run's files as the date's new content; see ``Table.commit``."""
        if self._open:
            raise StorageError(f"{self.table.date_key(self.date)}: commit with {len(self._open)} file(s) still open")
        self._keep = True
        try:
            return self.table.commit(self.date, self.files, fields, check, run=self.run)
        except NotCommitted:
            self.abort()  # no commit of them landed: nothing references them
            raise

    def abort(self) -> None:
        """Delete this run's files (never committed); the table is as it was."""
        paths = [entry.path for entry in self.files]
        for part in list(self._open):
            paths.append(part.name)
            with contextlib.suppress(Exception):
                part.close()
        self._open.clear()
        for path in paths:
            try:
                self.lake.delete(self.table.file_key(path))
            except StorageError:
                log.warning("could not remove %s (vacuum will)", self.lake.uri_of(self.table.file_key(path)))
        self.files = []
        # A first run of a date (or of the table) that failed leaves no empty folders behind either.
        with contextlib.suppress(OSError):
            self.lake.remove_empty_folders(self.table.date_key(self.date))
