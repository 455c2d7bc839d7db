"""``textclf migrate``: a lake of manifested partitions (textclf before schema version 2) becomes Delta tables."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from tests.readers import assert_engines_read
from textclf.cli import main
from textclf.config import MigrateConfig
from textclf.lake import Lake
from textclf.lake.layout import MANIFEST
from textclf.lake.maintenance import migrate
from textclf.lake.tables import dataset_table, predictions_table, quarantine_table
from textclf.score.predictions import prediction_schema
from textclf.validate.accounting import check_accounting

pytestmark = pytest.mark.data

DATES = ("2026-04-01", "2026-04-02")
DATASET = pa.schema([pa.field("doc_id", pa.string(), nullable=False), pa.field("text", pa.string(), nullable=False),
                     ("source_file", pa.string()), ("source_row", pa.int64())])
QUARANTINE = pa.schema([("reason", pa.string()), ("detail", pa.string()), ("source_file", pa.string()),
                        ("source_row", pa.int64()), ("id", pa.string()), ("label", pa.string()), ("text", pa.string()),
                        ("raw_bytes", pa.binary())])


def old_partition(lake: Lake, key: str, files: list[pa.Table], fields: dict) -> dict:
    """A partition as textclf 1.x wrote it: Parquet files, then _MANIFEST.json (PartitionWriter is that writer)."""
    with lake.partition(key) as writer:
        for i, table in enumerate(files):
            part = writer.parquet(f"part-{i:05d}.parquet" if "rejects" not in fields else "rejects.parquet",
                                  table.schema)
            part.write(table)
            writer.close_parquet(part)
        return writer.commit({k: v for k, v in fields.items() if k != "rejects"})


def old_lake(root: Path) -> tuple[Lake, dict[str, int]]:
    """Two dates of unlabeled data, their quarantine and their predictions (one sharded), plus leftovers."""
    lake = Lake(str(root))
    rows = {}
    for n, date in enumerate(DATES):
        kept = 40 + 10 * n
        docs = pa.table({"doc_id": [f"d{n}-{i}" for i in range(kept)], "text": ["some text"] * kept,
                         "source_file": ["a.csv"] * kept, "source_row": list(range(kept))}, schema=DATASET)
        run = f"run{n}"
        dataset = old_partition(lake, f"datasets/unlabeled/ingest_date={date}", [docs.slice(0, 25), docs.slice(25)], {
            "kind": "unlabeled", "ingest_date": date, "ingest_run": run, "input_rows": kept + 3, "rows": kept,
            "quarantined_rows": 2, "duplicates_removed": 1, "quarantine_reasons": {"empty_text": 2},
            "sources": [{"uri": f"/landing/{date}.csv", "input_rows": kept + 3}]})
        rejects = pa.table({"reason": ["empty_text"] * 2, "detail": ["x"] * 2, "source_file": ["a.csv"] * 2,
                            "source_row": [1, 2], "id": ["q1", "q2"], "label": [None, None], "text": ["", ""],
                            "raw_bytes": [None, None]}, schema=QUARANTINE)
        old_partition(lake, f"quarantine/unlabeled/ingest_date={date}", [rejects],
                      {"kind": "unlabeled", "ingest_date": date, "ingest_run": run, "rows": 2, "rejects": True})
        now = dt.datetime(2026, 4, 2, tzinfo=dt.UTC)
        preds = pa.table({"doc_id": docs.column("doc_id"), "predicted_label": ["a"] * kept,
                          "confidence": pa.array([0.9] * kept, pa.float32()), "top_labels": [["a", "b"]] * kept,
                          "top_probs": pa.array([[0.9, 0.1]] * kept, pa.list_(pa.float32())),
                          "model_version": ["v1"] * kept, "scored_at": pa.array([now] * kept,
                                                                                pa.timestamp("us", tz="UTC"))},
                         schema=prediction_schema())
        parts = [preds] if n == 0 else [preds.slice(0, 20), preds.slice(20)]
        old_partition(lake, f"predictions/run_date={date}", parts, {
            "schema_version": 1, "run_date": date, "model_version": "v1", "classes": ["a", "b"], "rows": kept,
            "input_rows": kept + 2, "quarantined_rows": 2, "num_shards": len(parts),
            "source_created_at": dataset["created_at"], "signals": {}})
        rows[date] = kept
    # Leftovers a reader of 1.x never saw: a run that died before its manifest, a staging folder, a shard.
    lake.write_bytes("datasets/unlabeled/ingest_date=2026-04-09/part-00000.parquet", b"half-written")
    lake.write_bytes(f"predictions/run_date={DATES[0]}/_staging-1-abc/part-00000.parquet", b"staged")
    lake.write_bytes(f"predictions/_shards/run_date={DATES[1]}/shard=00000-of-00002/part-00000.parquet", b"shard")
    return lake, rows


def test_migrate_converts_every_area_in_place_and_keeps_every_row(tmp_path: Path) -> None:
    lake, rows = old_lake(tmp_path / "lake")
    before = {p.relative_to(tmp_path).as_posix(): p.stat().st_ino for p in (tmp_path / "lake").rglob("*.parquet")}
    result = migrate(lake, MigrateConfig()).summary()
    tables = {t["table"].rsplit("/lake/", 1)[1]: t for t in result["tables"]}
    assert tables["datasets/unlabeled"] == {**tables["datasets/unlabeled"], "converted": 2, "dates": 2,
                                            "old_rows": sum(rows.values()), "rows": sum(rows.values())}
    assert tables["quarantine/unlabeled"]["rows"] == tables["quarantine/unlabeled"]["old_rows"] == 4
    assert tables["predictions"]["rows"] == tables["predictions"]["old_rows"] == sum(rows.values())
    assert tables["datasets/labeled"]["converted"] == 0 and result["converted_dates"] == 6
    for date, kept in rows.items():
        summary = dataset_table(lake, "unlabeled").verify(date)  # the old checksums, checked
        assert summary["rows"] == kept and summary["ingest_run"] == f"run{DATES.index(date)}"
        assert check_accounting(lake, "unlabeled", date, summary) == []  # counts and the quarantine pair hold
        predictions = predictions_table(lake).verify(date)
        assert predictions["schema_version"] == 2 and predictions["source_ingest_run"] == summary["ingest_run"]
        assert predictions["rows"] + predictions["quarantined_rows"] == predictions["input_rows"]
        assert_engines_read(predictions_table(lake), date, kept)
        assert_engines_read(dataset_table(lake, "unlabeled"), date, kept)
        assert_engines_read(quarantine_table(lake, "unlabeled"), date, 2, unique=False)
    # In place: the very same files (same inodes), nothing copied; the manifests and leftovers are gone.
    after = {p.relative_to(tmp_path).as_posix(): p.stat().st_ino for p in (tmp_path / "lake").rglob("*.parquet")}
    assert {k: v for k, v in after.items() if k in before} == {k: v for k, v in before.items() if k in after}
    assert not list((tmp_path / "lake").rglob(MANIFEST)) or all(
        "validation" in str(p) or "models" in str(p) for p in (tmp_path / "lake").rglob(MANIFEST))
    assert not list((tmp_path / "lake").rglob("_staging-*")) and not (tmp_path / "lake/predictions/_shards").exists()


def test_migrate_again_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake, rows = old_lake(tmp_path / "lake")
    assert main(["migrate", "--lake", str(tmp_path / "lake"), "-q"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    versions = {t["table"]: t["version"] for t in first["tables"]}
    assert main(["migrate", "--lake", str(tmp_path / "lake"), "-q"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["converted_dates"] == 0
    assert {t["table"]: t["version"] for t in again["tables"]} == versions  # not one more commit
    assert {t["table"]: t["rows"] for t in again["tables"]} == {t["table"]: t["rows"] for t in first["tables"]}


def test_an_interrupted_migration_is_finished_by_rerunning_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from textclf.lake.tables import Table

    lake, rows = old_lake(tmp_path / "lake")
    original, commits = Table.commit, []

    def die_on_the_fourth(self: Table, *args: object, **kwargs: object) -> dict:
        commits.append(1)
        if len(commits) == 4:
            raise KeyboardInterrupt("killed mid-migration")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Table, "commit", die_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        migrate(lake, MigrateConfig())
    monkeypatch.undo()
    result = migrate(lake, MigrateConfig()).summary()
    assert result["converted_dates"] == 3  # the rest
    for date, kept in rows.items():
        assert predictions_table(lake).verify(date)["rows"] == kept
        assert dataset_table(lake, "unlabeled").verify(date)["rows"] == kept
