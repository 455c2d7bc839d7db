"""The lake: safe keys, partitions written as a unit, on a local disk and on real S3."""

from __future__ import annotations

import json
import subprocess
import time

import pyarrow as pa
import pytest

from textclf.errors import ChecksumMismatchError, PartitionNotFoundError, StorageError, UnsafeKeyError
from textclf.lake import Lake
from textclf.lake.layout import MANIFEST, STAGING_PREFIX, WRITER, safe_key
from textclf.lake.store import STAGING_ABANDONED_S, holder_record

pytestmark = pytest.mark.data

SCHEMA = pa.schema([("doc_id", pa.string()), ("n", pa.int64())])


def write_partition(lake: Lake, key: str, tag: str, files: int = 2, rows: int = 3) -> dict:
    with lake.partition(key) as writer:
        for i in range(files):
            part = writer.parquet(f"part-{i:05d}.parquet", SCHEMA)
            part.write(pa.table({"doc_id": [f"{tag}-{i}-{j}" for j in range(rows)], "n": list(range(rows))}))
            writer.close_parquet(part)
        writer.add_bytes("notes.json", json.dumps({"tag": tag}).encode())
        return writer.commit({"tag": tag})


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "s3://other/x", "", ".", "a\\b", "a/\x00"])
def test_keys_that_escape_the_lake_are_refused(key: str, tmp_path) -> None:
    with pytest.raises(UnsafeKeyError):
        safe_key(key)
    with pytest.raises(UnsafeKeyError):
        Lake(str(tmp_path)).write_bytes(key, b"x")


def test_safe_key_normalises_harmless_forms() -> None:
    assert safe_key("a//b/./c/") == "a/b/c"


def test_partition_roundtrip_with_manifest(lake_uri: str) -> None:
    lake = Lake(lake_uri)
    manifest = write_partition(lake, "datasets/x/ingest_date=2026-01-01", "one")
    assert manifest["rows"] == 6 and manifest["tag"] == "one"
    assert [f["path"] for f in manifest["files"]] == ["part-00000.parquet", "part-00001.parquet", "notes.json"]
    assert lake.read_manifest("datasets/x/ingest_date=2026-01-01") == manifest
    table = lake.read_table("datasets/x/ingest_date=2026-01-01")
    assert table.num_rows == 6
    assert sum(b.num_rows for b in lake.iter_batches("datasets/x/ingest_date=2026-01-01", ["doc_id"])) == 6
    assert lake.verify("datasets/x/ingest_date=2026-01-01")["rows"] == 6
    assert lake.list_partitions("datasets/x") == ["datasets/x/ingest_date=2026-01-01"]
    # nothing but the data files and the manifest is left behind
    assert lake.list_children("datasets/x/ingest_date=2026-01-01") == sorted(
        ["part-00000.parquet", "part-00001.parquet", "notes.json", MANIFEST])


def test_rerun_replaces_the_partition_whole(lake_uri: str) -> None:
    lake = Lake(lake_uri)
    key = "datasets/x/ingest_date=2026-01-01"
    write_partition(lake, key, "old", files=3)
    write_partition(lake, key, "new", files=1)
    assert lake.read_table(key).column("doc_id").to_pylist() == ["new-0-0", "new-0-1", "new-0-2"]
    assert "part-00001.parquet" not in lake.list_children(key)
    assert json.loads(lake.read_bytes(f"{key}/notes.json")) == {"tag": "new"}


def test_failure_before_commit_keeps_the_old_partition(lake_uri: str) -> None:
    lake = Lake(lake_uri)
    key = "datasets/x/ingest_date=2026-01-01"
    write_partition(lake, key, "old")
    with pytest.raises(RuntimeError, match="boom"), lake.partition(key) as writer:
        part = writer.parquet("part-00000.parquet", SCHEMA)
        part.write(pa.table({"doc_id": ["new"], "n": [1]}))
        raise RuntimeError("boom")
    assert lake.read_manifest(key)["tag"] == "old"
    assert lake.read_table(key).num_rows == 6
    assert not [c for c in lake.list_children(key) if c.startswith("_staging")]


def test_crash_between_data_files_and_manifest_leaves_no_visible_partition(lake_uri: str, monkeypatch) -> None:
    lake = Lake(lake_uri)
    key = "datasets/x/ingest_date=2026-01-01"
    write_partition(lake, key, "old")
    real_write = Lake.write_bytes

    def crash_on_manifest(self: Lake, k: str, data: bytes) -> str:
        if k.endswith(MANIFEST):
            raise OSError("simulated crash before the manifest")
        return real_write(self, k, data)

    monkeypatch.setattr(Lake, "write_bytes", crash_on_manifest)
    with pytest.raises(OSError):
        write_partition(lake, key, "new")
    monkeypatch.undo()
    assert lake.read_manifest(key) is None
    assert lake.list_partitions("datasets/x") == []
    with pytest.raises(PartitionNotFoundError):
        lake.read_table(key)


def staging_folders(lake: Lake, key: str) -> list[str]:
    return [c for c in lake.list_children(key) if c.startswith(STAGING_PREFIX)]


def test_two_writers_of_one_partition_both_commit_and_the_last_wins(lake_uri: str) -> None:
    lake = Lake(lake_uri)
    key = "datasets/x/ingest_date=2026-01-03"
    with lake.partition(key) as slow:
        part = slow.parquet("part-00000.parquet", SCHEMA)
        part.write(pa.table({"doc_id": ["slow-0"], "n": [0]}))
        slow.close_parquet(part)
        write_partition(lake, key, "fast")  # commits while the slow writer is still staging
        assert lake.read_manifest(key)["tag"] == "fast"
        assert staging_folders(lake, key) == [slow.staging.rsplit("/", 1)[1]]  # left alone
        slow.commit({"tag": "slow"})
    assert lake.verify(key)["tag"] == "slow"
    assert lake.read_table(key).column("doc_id").to_pylist() == ["slow-0"]
    assert set(lake.list_children(key)) == {MANIFEST, "part-00000.parquet"}


@pytest.mark.integration
def test_a_commit_removes_the_staging_folders_of_abandoned_runs(lake_uri: str) -> None:
    lake = Lake(lake_uri)
    key = "datasets/x/ingest_date=2026-01-04"
    dead = {"host": "elsewhere", "pid": 1, "acquired_at": time.time()}
    lake.write_object(f"{key}/{STAGING_PREFIX}1-0123456789ab/part-00000.parquet", b"old name format")
    old = int(time.time() - STAGING_ABANDONED_S - 60)
    lake.write_object(f"{key}/{STAGING_PREFIX}{old}-0123456789ab/{WRITER}", json.dumps(dead).encode())
    alive = f"{STAGING_PREFIX}{int(time.time())}-0123456789ab"  # another host's run, started just now
    lake.write_object(f"{key}/{alive}/{WRITER}", json.dumps(dead).encode())
    exited = subprocess.Popen(["true"])
    exited.wait()  # a process of this host that has ended: its staging folder is abandoned at once
    lake.write_object(f"{key}/{STAGING_PREFIX}{int(time.time())}-fedcba987654/{WRITER}",
                      json.dumps({**holder_record(), "pid": exited.pid}).encode())
    write_partition(lake, key, "new")
    assert staging_folders(lake, key) == [alive]


def test_partitions_without_manifest_are_ignored(lake_uri: str) -> None:
    lake = Lake(lake_uri)
    lake.write_bytes("datasets/x/ingest_date=2026-01-02/part-00000.parquet", b"half-written")
    write_partition(lake, "datasets/x/ingest_date=2026-01-03", "ok")
    assert lake.list_partitions("datasets/x") == ["datasets/x/ingest_date=2026-01-03"]


def test_tampered_file_fails_verification(lake_uri: str) -> None:
    lake = Lake(lake_uri)
    key = "datasets/x/ingest_date=2026-01-01"
    write_partition(lake, key, "one")
    lake.write_bytes(f"{key}/notes.json", b'{"tag": "evil"}')
    with pytest.raises(ChecksumMismatchError, match="notes.json"):
        lake.verify(key)


def test_reserved_names_inside_a_partition_are_refused(tmp_path) -> None:
    with Lake(str(tmp_path)).partition("p/d=1") as writer, pytest.raises(UnsafeKeyError):
        writer.add_bytes(MANIFEST, b"{}")


def test_missing_object_is_a_storage_error(lake_uri: str) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        Lake(lake_uri).read_bytes("nothing/here.json")


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(StorageError, match="unsupported scheme"):
        Lake("gs://bucket/x")
