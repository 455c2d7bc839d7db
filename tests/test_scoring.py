"""Batch scoring against the predictions contract (docs/contracts.md section 6), locally and on real S3."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import SCORE_DATE, TrainedLake
from textclf.config import IngestConfig, PromoteConfig, ScoreConfig
from textclf.demo.corpus import CorpusSpec, write_corpus
from textclf.ingest.stage import ingest
from textclf.lake import Lake
from textclf.lake.tables import dataset_table, predictions_table
from textclf.promote.stage import promote
from textclf.score.predictions import prediction_schema
from textclf.score.stage import score

pytestmark = pytest.mark.model

TEXTCLF = str(Path(sys.executable).with_name("textclf"))
ROOT = Path(__file__).resolve().parents[1]
DATE = SCORE_DATE


@pytest.fixture(scope="module")
def base_lake(trained_lake: TrainedLake, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's trained lake with its version promoted: labeled data, a champion, and a dirty
    unlabeled partition for DATE."""
    uri = trained_lake.copy(tmp_path_factory.mktemp("scoring") / "lake")
    assert promote(Lake(uri), PromoteConfig(model_version=trained_lake.version)).decision == "promoted"
    return Path(uri)


@pytest.fixture
def lake(base_lake: Path, tmp_path: Path) -> Lake:
    shutil.copytree(base_lake, tmp_path / "lake")
    return Lake(str(tmp_path / "lake"))


SCHEMA_V2 = prediction_schema().append(pa.field("run_date", pa.date32()))


def read_predictions(lake: Lake, date: str, version: int | None = None) -> pa.Table:
    """One date of the predictions table as a Delta reader sees it (delta-rs, as in docs/scoring.md)."""
    from deltalake import DeltaTable

    table = predictions_table(lake)
    dt_ = DeltaTable(table.uri, version=version, storage_options=table.storage_options())
    return dt_.to_pyarrow_table(filters=[("run_date", "=", dt.date.fromisoformat(date))])


def check_contract(lake: Lake, date: str) -> tuple[dict, list[dict]]:
    """Everything a downstream consumer relies on; returns the date's summary and its rows."""
    table = predictions_table(lake)
    manifest = table.verify(date)  # every file's sha256 matches, and the Delta log counts the summary's rows
    for name in ("schema_version", "run_date", "model_version", "classes", "files", "rows", "input_rows",
                 "quarantined_rows", "created_at", "table", "table_version"):
        assert name in manifest, name
    assert manifest["schema_version"] == 2 and manifest["run_date"] == date
    assert manifest["rows"] + manifest["quarantined_rows"] == manifest["input_rows"]
    for entry in manifest["files"]:
        folder, name = entry["path"].split("/")
        assert folder == f"run_date={date}" and name.startswith("part-") and name.endswith(".parquet")
        pf = lake.parquet_file(table.file_key(entry["path"]))
        assert pf.schema_arrow == prediction_schema()  # the data files: version 1's columns
        if pf.metadata.num_row_groups:
            assert pf.metadata.row_group(0).column(0).compression.lower() == "zstd"
        assert pf.metadata.num_rows == entry["rows"]
    read = read_predictions(lake, date, manifest["table_version"])
    assert read.schema.remove_metadata() == SCHEMA_V2  # the table: plus run_date, a date
    rows = read.to_pylist()
    assert len(rows) == manifest["rows"] and {r["run_date"] for r in rows} <= {dt.date.fromisoformat(date)}
    source = dataset_table(lake, "unlabeled").read(date, columns=["doc_id"]).column("doc_id").to_pylist()
    ids = [r["doc_id"] for r in rows]
    assert len(set(ids)) == len(ids) and set(ids) == set(source)  # one row per eligible document
    ingest_manifest = dataset_table(lake, "unlabeled").require_summary(date)
    assert manifest["quarantined_rows"] == ingest_manifest["quarantined_rows"]
    assert manifest["source_ingest_run"] == ingest_manifest["ingest_run"]
    for r in rows[:200]:
        assert r["predicted_label"] == r["top_labels"][0] and r["confidence"] == r["top_probs"][0]
        assert len(r["top_labels"]) == min(3, len(manifest["classes"]))
        assert r["top_probs"] == sorted(r["top_probs"], reverse=True)
        assert r["model_version"] == manifest["model_version"] and r["scored_at"].tzinfo is not None
    return manifest, rows


def test_score_writes_the_contract(lake: Lake) -> None:
    result = score(lake, ScoreConfig(date=DATE))
    manifest, _ = check_contract(lake, DATE)
    assert manifest["quarantined_rows"] > 0  # the dirty corpus put some rows in quarantine
    assert result.summary()["rows"] == manifest["rows"]
    html = lake.read_bytes(f"reports/run_date={DATE}/report.html").decode()
    assert 'id="class-mix"' in html and 'id="drift"' in html


# The tests of the table contract skip the run report (matplotlib figures): only the first test and the
# drift test read it.


def test_rerun_replaces_the_date_in_one_commit(lake: Lake) -> None:
    score(lake, ScoreConfig(date=DATE, rows_per_file=150, batch_rows=50), with_report=False)
    first = predictions_table(lake).require_summary(DATE)
    score(lake, ScoreConfig(date=DATE), with_report=False)
    manifest, _ = check_contract(lake, DATE)
    assert len(first["files"]) > 1 and len(manifest["files"]) == 1
    assert manifest["table_version"] == first["table_version"] + 1  # one commit replaced the date
    # The replaced snapshot stays readable (time travel) until a vacuum past its retention removes its files.
    assert read_predictions(lake, DATE, first["table_version"]).num_rows == first["rows"]
    predictions_table(lake).vacuum(retention_hours=0)
    on_disk = sorted(p.name for p in Path(lake.path(predictions_table(lake).date_key(DATE))).iterdir())
    assert on_disk == sorted(f["path"].split("/")[1] for f in manifest["files"])
    assert not list(Path(lake.root).rglob("shard=*.json"))  # an in-process run writes no shard records


def test_sharded_and_unsharded_scoring_agree(lake: Lake) -> None:
    score(lake, ScoreConfig(date=DATE), with_report=False)
    _, whole = check_contract(lake, DATE)
    score(lake, ScoreConfig(date=DATE, num_shards=3), with_report=False)
    manifest, sharded = check_contract(lake, DATE)
    assert manifest["num_shards"] == 3 and len(manifest["files"]) == 3
    key = {r["doc_id"]: (r["predicted_label"], r["top_labels"], r["top_probs"]) for r in whole}
    assert {r["doc_id"]: (r["predicted_label"], r["top_labels"], r["top_probs"]) for r in sharded} == key


def test_crash_before_the_commit_keeps_the_old_snapshot(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    from textclf.lake.tables import Table

    score(lake, ScoreConfig(date=DATE), with_report=False)
    before = predictions_table(lake).require_summary(DATE)

    def crash(self: Table, *args: object, **kwargs: object) -> dict:
        raise KeyboardInterrupt("simulated crash between the data files and the commit")

    monkeypatch.setattr(Table, "commit", crash)
    with pytest.raises(KeyboardInterrupt):
        score(lake, ScoreConfig(date=DATE), with_report=False)
    monkeypatch.undo()
    assert predictions_table(lake).require_summary(DATE) == before  # readers see the old snapshot, whole
    check_contract(lake, DATE)
    score(lake, ScoreConfig(date=DATE), with_report=False)
    assert check_contract(lake, DATE)[0]["table_version"] == before["table_version"] + 1


def test_a_failed_commit_can_be_run_again(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    from deltalake import DeltaTable

    from textclf.errors import StorageError
    from textclf.score.stage import commit_predictions, score_shard

    score(lake, ScoreConfig(date=DATE), with_report=False)
    before = predictions_table(lake).require_summary(DATE)
    config = ScoreConfig(date=DATE, num_shards=3)
    for shard in range(3):
        score_shard(lake, config.replaced(shard=shard))
    original = DeltaTable.create_write_transaction

    def network_failure(self: DeltaTable, *args: object, **kwargs: object) -> None:
        raise OSError("simulated network failure while writing the Delta log")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", network_failure)
    with pytest.raises(StorageError, match="simulated network failure"):
        commit_predictions(lake, ScoreConfig(date=DATE, num_shards=3))
    assert predictions_table(lake).require_summary(DATE) == before  # the old snapshot is still served whole
    monkeypatch.setattr(DeltaTable, "create_write_transaction", original)
    # every shard and its files are still there: the retry succeeds
    published = commit_predictions(lake, ScoreConfig(date=DATE, num_shards=3)).manifest
    manifest, _ = check_contract(lake, DATE)
    assert manifest["num_shards"] == 3 and manifest["table_version"] == published["table_version"]
    # a retry after success changes nothing
    assert commit_predictions(lake, ScoreConfig(date=DATE, num_shards=3)).manifest == manifest


def test_shard_commit_refuses_missing_shards(lake: Lake) -> None:
    from textclf.errors import StorageError
    from textclf.score.stage import commit_predictions, score_shard

    score_shard(lake, ScoreConfig(date=DATE, num_shards=2, shard=0))
    with pytest.raises(StorageError, match="shard 1 of 2"):
        commit_predictions(lake, ScoreConfig(date=DATE, num_shards=2))


def test_drift_turns_into_visible_warnings(lake: Lake, tmp_path: Path) -> None:
    import random

    rng = random.Random(0)
    foreign = tmp_path / "foreign.csv"
    words = [f"zq{n}x" for n in range(300)]
    with open(foreign, "w") as fh:
        fh.write("id,text\n")
        for i in range(400):
            fh.write(f"f{i},{' '.join(rng.choices(words, k=rng.randint(120, 400)))}\n")
    ingest(lake, IngestConfig(kind="unlabeled", date="2026-05-02", sources=(str(foreign),)))
    result = score(lake, ScoreConfig(date="2026-05-02"))
    assert result.report and result.report.warnings
    names = {w["name"] for w in result.report.content["warnings"]}
    assert "oov_rate" in names and "length_psi" in names
    html = lake.read_bytes("reports/run_date=2026-05-02/report.html").decode()
    assert "PSI" in html


def test_no_champion_is_a_clear_error(tmp_path: Path) -> None:
    from textclf.errors import ModelError

    unlabeled = tmp_path / "u.csv"
    unlabeled.write_text("id,text\n1,hello world\n")
    ingest(Lake(str(tmp_path / "lake")), IngestConfig(kind="unlabeled", date=DATE, sources=(str(unlabeled),)))
    with pytest.raises(ModelError, match="no champion"):
        score(Lake(str(tmp_path / "lake")), ScoreConfig(date=DATE))


@pytest.mark.s3
def test_cli_scores_an_s3_lake(s3_lake: str, tmp_path: Path, base_lake: Path) -> None:
    lake = Lake(s3_lake)
    for path in sorted(base_lake.rglob("*")):
        if path.is_file():
            lake.upload(str(path), str(path.relative_to(base_lake)))
    proc = subprocess.run([TEXTCLF, "score", "--lake", s3_lake, "--date", DATE, "--shards", "2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["predictions"] == f"{s3_lake}/predictions"  # the table; the date and its version beside it
    manifest, rows = check_contract(lake, DATE)
    assert summary["rows"] == manifest["rows"] == len(rows)
    assert summary["table_version"] == manifest["table_version"] and summary["run_date"] == DATE


RECIPE = re.compile(r"```python\n# recipe: (?P<name>[\w-]+)(?: -> (?P<names>[\w, ]+))?\n(?P<code>.*?)```", re.S)


def recipes() -> list[tuple[str, list[str], str]]:
    """The reading recipes of docs/scoring.md: (name, variables it defines, code), in order."""
    text = (ROOT / "docs" / "scoring.md").read_text(encoding="utf-8")
    found = [(m["name"], [n.strip() for n in (m["names"] or "").split(",") if n.strip()], m["code"])
             for m in RECIPE.finditer(text)]
    assert [name for name, _, _ in found] == ["s3-options", "deltalake", "polars", "duckdb", "time-travel"]
    return found


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_consumer_guide_recipes(where: str, base_lake: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The recipes of docs/scoring.md, run as written: every reader sees the committed rows, typed, and time travels."""
    from collections import Counter

    import polars as pl

    namespace: dict = {"STORAGE_OPTIONS": None, "__name__": "recipes"}
    if where == "local":
        shutil.copytree(base_lake, tmp_path / "lake")
        lake = Lake(str(tmp_path / "lake"))
    else:
        server = request.getfixturevalue("s3_env")
        lake = Lake(request.getfixturevalue("s3_lake"))
        for path in sorted(base_lake.rglob("*")):
            if path.is_file():
                lake.upload(str(path), str(path.relative_to(base_lake)))
        namespace.update(ENDPOINT=server.endpoint, KEY=server.env["AWS_ACCESS_KEY_ID"],
                         SECRET=server.env["AWS_SECRET_ACCESS_KEY"])
    table = predictions_table(lake)
    old = score(lake, ScoreConfig(date=DATE), with_report=False).predictions.manifest
    more = tmp_path / "more.csv"  # the date ingested again with more documents, then rescored: a new snapshot
    write_corpus(CorpusSpec(rows=300, labeled=False, seed=99, id_prefix="more-"), more)
    ingest(lake, IngestConfig(kind="unlabeled", date=DATE, sources=(str(more),)))
    new = score(lake, ScoreConfig(date=DATE, num_shards=2), with_report=False).predictions.manifest
    assert new["rows"] != old["rows"] and new["table_version"] > old["table_version"]
    # a run that died after writing its files, and a shard waiting for its commit: no reader may see them
    with table.writer(DATE) as dead:
        part = dead.parquet("part-00000-00000.parquet", prediction_schema())
        part.write(pa.Table.from_pylist([{"doc_id": "ghost", "predicted_label": "x", "confidence": 1.0,
                                          "top_labels": ["x"], "top_probs": [1.0], "model_version": "v",
                                          "scored_at": dt.datetime.now(dt.UTC)}], prediction_schema()))
        dead.close_parquet(part)
        dead.keep()
    namespace["VERSION"] = old["table_version"]
    for name, _, code in recipes():
        if name == "s3-options" and where == "local":
            continue
        exec(compile(code.replace("LAKE/", f"{table.lake.uri}/"), f"docs/scoring.md:{name}", "exec"), namespace)
    df, arrow, frame, counts = (namespace[n] for n in ("df", "table", "frame", "counts"))
    day = dt.date.fromisoformat(DATE)
    assert len(df) == arrow.num_rows == frame.height == sum(n for _, n in counts) == new["rows"]
    assert df["doc_id"].is_unique and "ghost" not in set(df["doc_id"])
    assert set(df["run_date"]) == {day} and arrow.schema.field("run_date").type == pa.date32()
    assert frame.schema["run_date"] == pl.Date and frame["run_date"].unique().to_list() == [day]
    assert dict(counts) == dict(Counter(df["predicted_label"]))
    old_df, old_frame, old_counts = (namespace[n] for n in ("old_df", "old_frame", "old_counts"))
    assert len(old_df) == old_frame.height == sum(n for _, n in old_counts) == old["rows"]
    then = read_predictions(lake, DATE, old["table_version"])
    assert set(old_df["doc_id"]) == set(then.column("doc_id").to_pylist())
