"""The Delta tables (textclf.lake.tables): one commit per date, summaries, checksums, vacuum, on disk and on S3."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from textclf.errors import ChecksumMismatchError, PartitionNotFoundError, StorageError, UnsafeKeyError
from textclf.lake import Lake
from textclf.lake.layout import TABLE_META
from textclf.lake.tables import DateWriter, NotCommitted, Table

pytestmark = pytest.mark.data

SCHEMA = pa.schema([("doc_id", pa.string()), ("n", pa.int64())])
D, D2 = "2026-01-01", "2026-01-02"


def table_of(lake_uri: str) -> Table:
    return Table(Lake(lake_uri), "things", "run_date", SCHEMA)


def write(table: Table, date: str, tag: str, files: int = 2, rows: int = 3) -> DateWriter:
    """A run's files for a date, written but not committed."""
    writer = table.writer(date)
    for i in range(files):
        part = writer.parquet(f"part-{i:05d}.parquet", SCHEMA)
        part.write(pa.table({"doc_id": [f"{tag}-{i}-{j}" for j in range(rows)], "n": list(range(rows))},
                            schema=SCHEMA))
        writer.close_parquet(part)
    return writer


def commit(table: Table, date: str, tag: str, files: int = 2, rows: int = 3) -> dict:
    return write(table, date, tag, files, rows).commit({"tag": tag, "input_rows": files * rows})


def ids(table: Table, date: str, version: int | None = None) -> list[str]:
    """The date's ids as a Delta reader (delta-rs) sees them."""
    from deltalake import DeltaTable

    read = DeltaTable(table.uri, version=version, storage_options=table.storage_options()).to_pyarrow_table(
        filters=[("run_date", "=", dt.date.fromisoformat(date))])
    return sorted(read.column("doc_id").to_pylist())


def test_a_date_is_replaced_in_one_commit_and_readers_see_whole_snapshots(lake_uri: str) -> None:
    table = table_of(lake_uri)
    first = commit(table, D, "old")
    other = commit(table, D2, "other", files=1)
    assert (first["table_version"], other["table_version"]) == (1, 2)
    writer = write(table, D, "new", files=1)  # the new files exist, the commit has not happened
    assert ids(table, D) == sorted(f"old-{i}-{j}" for i in range(2) for j in range(3))
    summary = writer.commit({"tag": "new", "input_rows": 3})
    assert summary["table_version"] == 3 and summary["rows"] == 3
    assert ids(table, D) == ["new-0-0", "new-0-1", "new-0-2"]  # all of the new snapshot, none of the old
    assert ids(table, D2) == ["other-0-0", "other-0-1", "other-0-2"]  # another date is untouched
    assert len(ids(table, D, version=2)) == 6  # time travel: the replaced snapshot, whole
    assert table.verify(D)["tag"] == "new" and table.summary(D)["commit_run"] == writer.run
    assert table.summary(D2)["tag"] == "other"
    history = {e["version"]: e.get("textclf") for e in table.delta().history()}
    assert history[3] == {"run_date": D, "run": writer.run, "rows": 3, "input_rows": 3}  # counts with the commit


def test_files_are_named_by_run_and_date(tmp_path: Path) -> None:
    table = table_of(str(tmp_path / "lake"))
    summary = commit(table, D, "x", files=1)
    [entry] = summary["files"]
    assert entry["path"] == f"run_date={D}/part-00000-{summary['commit_run']}.parquet"
    assert Path(table.lake.path(table.file_key(entry["path"]))).is_file()
    assert list((Path(table.uri) / TABLE_META / f"run_date={D}").glob(f"*-{summary['commit_run']}.json"))


def test_a_failure_before_the_commit_keeps_the_snapshot_and_removes_the_files(lake_uri: str) -> None:
    table = table_of(lake_uri)
    commit(table, D, "old")
    with pytest.raises(RuntimeError, match="boom"), table.writer(D) as writer:
        part = writer.parquet("part-00000.parquet", SCHEMA)
        part.write(pa.table({"doc_id": ["new"], "n": [1]}, schema=SCHEMA))
        raise RuntimeError("boom")
    assert table.verify(D)["tag"] == "old" and len(ids(table, D)) == 6
    assert not [k for k in table.lake.list_files(table.date_key(D)) if writer.run in k]


def test_a_failed_first_run_leaves_nothing_behind(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.write_bytes("other/keep.txt", b"x")  # the lake's other contents stay
    table = table_of(lake.uri)
    with pytest.raises(RuntimeError, match="boom"), table.writer(D) as writer:
        part = writer.parquet("part-00000.parquet", SCHEMA)
        part.write(pa.table({"doc_id": ["new"], "n": [1]}, schema=SCHEMA))
        writer.close_parquet(part)
        raise RuntimeError("boom")
    assert table.delta() is None and table.summary(D) is None
    left = sorted(str(p.relative_to(tmp_path / "lake")) for p in (tmp_path / "lake").rglob("*"))
    assert left == ["other", "other/keep.txt"]  # no empty date or table folder


def test_a_commit_given_up_by_its_check_removes_its_files(tmp_path: Path) -> None:
    table = table_of(str(tmp_path / "lake"))
    commit(table, D, "old")
    writer = write(table, D, "late")

    def another_run_won(_: object) -> None:
        raise NotCommitted("another run committed meanwhile")

    with pytest.raises(NotCommitted):
        writer.commit({"tag": "late"}, check=another_run_won)
    assert table.summary(D)["tag"] == "old"
    assert not [k for k in table.lake.list_files(table.date_key(D)) if writer.run in k]


def test_a_conflicting_commit_is_retried_on_the_new_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError

    table = table_of(str(tmp_path / "lake"))
    commit(table, D, "old")
    original, calls = DeltaTable.create_write_transaction, []

    def conflict_once(self: DeltaTable, *args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 1:  # another writer replaced the date meanwhile
            other, latest = write(table, D, "meanwhile", files=1), DeltaTable(table.uri)
            original(latest, *table_actions(table, other), "append", latest.schema(), partition_by=["run_date"])
            raise CommitFailedError("a concurrent transaction deleted data this operation read")
        original(self, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", conflict_once)
    summary = commit(table, D, "retried", files=1)
    assert len(calls) == 2 and table.summary(D)["commit_run"] == summary["commit_run"]
    assert ids(table, D) == ["retried-0-0", "retried-0-1", "retried-0-2"]  # the meanwhile commit's rows are gone


def table_actions(table: Table, writer: DateWriter) -> tuple[list, ...]:
    """Add and remove actions replacing the date with ``writer``'s files (as another writer would commit)."""
    import time

    from deltalake.transaction import AddAction, RemoveAction

    now = int(time.time() * 1000)
    snapshot = table.snapshot()
    removes = [RemoveAction(f.path, True, now, f.bytes, {"run_date": writer.date})
               for f in snapshot.date_files(writer.date)]
    adds = [AddAction(f.path, f.bytes, {"run_date": writer.date}, now, True, json.dumps({"numRecords": f.rows}))
            for f in writer.files]
    return ([*adds, *removes],)


def test_two_writers_of_one_date_conflict_in_delta_rs(tmp_path: Path) -> None:
    """What the design rests on: two commits of one date, each with the date's application transaction, read at
    the same version: delta-rs refuses the second instead of letting both add their files."""
    from deltalake import CommitProperties, DeltaTable, Transaction
    from deltalake.exceptions import CommitFailedError

    table = table_of(str(tmp_path / "lake"))
    commit(table, D2, "base")  # creates the table
    first, second = DeltaTable(table.uri), DeltaTable(table.uri)  # both read version 1
    for dt_, tag in ((first, "a"), (second, "b")):
        writer = write(table, D, tag, files=1)
        properties = CommitProperties(app_transactions=[Transaction(f"textclf:run_date={D}", 1)])
        if tag == "a":
            dt_.create_write_transaction(*table_actions(table, writer), "append", dt_.schema(),
                                         partition_by=["run_date"], commit_properties=properties)
        else:
            with pytest.raises(CommitFailedError):
                dt_.create_write_transaction(*table_actions(table, writer), "append", dt_.schema(),
                                             partition_by=["run_date"], commit_properties=properties)
    assert DeltaTable(table.uri).transaction_version(f"textclf:run_date={D}") == 1


def test_a_retried_commit_of_the_same_files_changes_nothing(lake_uri: str) -> None:
    table = table_of(lake_uri)
    writer = write(table, D, "x")
    first = writer.commit({"tag": "x"})
    again = table.commit(D, writer.files, {"tag": "x"})
    assert again["table_version"] == first["table_version"] == table.snapshot().version
    assert again["commit_run"] == first["commit_run"]


def test_tampered_file_fails_verification(lake_uri: str) -> None:
    table = table_of(lake_uri)
    summary = commit(table, D, "x")
    key = table.file_key(summary["files"][0]["path"])
    data = table.lake.read_bytes(key)
    table.lake.write_bytes(key, data[:-9] + bytes(9))
    with pytest.raises(ChecksumMismatchError, match="part-00000"):
        table.verify(D)


def test_absent_dates_and_tables_are_clear(tmp_path: Path) -> None:
    table = table_of(str(tmp_path / "lake"))
    assert table.snapshot() is None and table.summary(D) is None
    commit(table, D, "x")
    with pytest.raises(PartitionNotFoundError, match=f"things/run_date={D2}"):
        table.require_summary(D2)
    with pytest.raises(PartitionNotFoundError):
        list(table.iter_batches(D2))


def test_files_no_summary_lists_are_refused(tmp_path: Path) -> None:
    """A date whose files no summary lists (written by another tool) is a clear error, never another's counts."""
    from deltalake import write_deltalake

    table = table_of(str(tmp_path / "lake"))
    commit(table, D, "x")
    write_deltalake(table.uri, pa.table({"doc_id": ["y"], "n": [1], "run_date": [dt.date(2026, 1, 1)]}),
                    mode="append")
    with pytest.raises(StorageError, match="no summary"):
        table.summary(D)


def test_log_paths_cannot_point_outside_the_lake(tmp_path: Path) -> None:
    """A Delta log naming ``../`` files is refused by every reader instead of being followed."""
    table = table_of(str(tmp_path / "lake"))
    commit(table, D, "x", files=1)
    log = sorted((Path(table.uri) / "_delta_log").glob("*.json"))[-1]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    for entry in entries:
        if "add" in entry:
            entry["add"]["path"] = "../../../outside.parquet"
    log.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    for read in (table.read, table.file_keys, lambda d: list(table.iter_batches(d))):
        with pytest.raises(UnsafeKeyError, match=r"'\.\.'"):
            read(D)


def test_vacuum_removes_replaced_and_dead_files_and_keeps_the_snapshot(lake_uri: str) -> None:
    table = table_of(lake_uri)
    old = commit(table, D, "old")
    dead = write(table, D, "dead", files=1)  # a killed run's file: in no snapshot
    dead.keep()
    new = commit(table, D, "new", files=1)
    assert table.vacuum(retention_hours=24)["files_removed"] == 0  # all younger than the retention
    assert len(ids(table, D, version=old["table_version"])) == 6  # time travel within the retention
    result = table.vacuum(retention_hours=0)
    assert result["files_removed"] == 3 and result["summaries_removed"] == 1
    left = {k.rsplit("/", 1)[1] for k in table.lake.list_files(table.date_key(D))}
    assert left == {f["path"].split("/")[1] for f in new["files"]}
    assert table.verify(D)["commit_run"] == new["commit_run"] and len(ids(table, D)) == 3


def test_conditional_writes_refuse_a_changed_object(lake_uri: str) -> None:
    """champion.json's compare-and-swap: only the writer that read the current object may replace it."""
    lake = Lake(lake_uri)
    assert lake.read_tagged("models/champion.json") == (None, None)
    tag = lake.write_if("models/champion.json", b"one", None)  # create: only if absent
    assert tag is not None and lake.write_if("models/champion.json", b"again", None) is None
    data, read_tag = lake.read_tagged("models/champion.json")
    assert data == b"one" and read_tag == tag
    second = lake.write_if("models/champion.json", b"two", tag)
    assert second is not None and lake.write_if("models/champion.json", b"stale", tag) is None
    assert lake.read_bytes("models/champion.json") == b"two"
