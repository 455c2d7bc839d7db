"""Batch scoring against the predictions contract (docs/contracts.md section 6), locally and on real S3."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import train_evaluated
from textclf.config import IngestConfig, PromoteConfig, ScoreConfig, TrainConfig
from textclf.demo.corpus import CorpusSpec, write_corpus
from textclf.ingest.stage import ingest
from textclf.lake import Lake
from textclf.lake.layout import dataset_key, predictions_key
from textclf.promote.stage import promote
from textclf.score.predictions import prediction_schema
from textclf.score.stage import score

pytestmark = pytest.mark.model

TEXTCLF = str(Path(sys.executable).with_name("textclf"))
DATE = "2026-05-01"


def build_lake(uri: str, tmp: Path) -> None:
    """Labeled data, a promoted champion, and a dirty unlabeled partition for DATE."""
    labeled = tmp / "labeled.csv"
    write_corpus(CorpusSpec(rows=1500, seed=11, id_prefix="l-"), labeled)
    ingest(Lake(uri), IngestConfig(kind="labeled", date="2026-04-30", sources=(str(labeled),)))
    version = train_evaluated(Lake(uri), TrainConfig(epochs=4))
    promote(Lake(uri), PromoteConfig(model_version=version))
    unlabeled = tmp / "unlabeled.jsonl"
    write_corpus(CorpusSpec(rows=900, labeled=False, seed=12, dirty_fraction=0.05, id_prefix="u-"), unlabeled)
    ingest(Lake(uri), IngestConfig(kind="unlabeled", date=DATE, sources=(str(unlabeled),)))


@pytest.fixture(scope="module")
def base_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("scoring")
    build_lake(str(tmp / "lake"), tmp)
    return tmp / "lake"


@pytest.fixture
def lake(base_lake: Path, tmp_path: Path) -> Lake:
    shutil.copytree(base_lake, tmp_path / "lake")
    return Lake(str(tmp_path / "lake"))


def check_contract(lake: Lake, date: str) -> tuple[dict, list[dict]]:
    """Everything a downstream consumer relies on; returns the manifest and the rows."""
    key = predictions_key(date)
    manifest = lake.verify(key)  # every file's sha256 matches
    for name in ("schema_version", "run_date", "model_version", "classes", "files", "rows", "input_rows",
                 "quarantined_rows", "created_at"):
        assert name in manifest, name
    assert manifest["schema_version"] == 1 and manifest["run_date"] == date
    assert manifest["rows"] + manifest["quarantined_rows"] == manifest["input_rows"]
    rows = []
    for entry in manifest["files"]:
        assert entry["path"].startswith("part-") and entry["path"].endswith(".parquet")
        pf = lake.parquet_file(f"{key}/{entry['path']}")
        assert pf.schema_arrow == prediction_schema()
        assert pf.metadata.row_group(0).column(0).compression.lower() == "zstd"
        table = pf.read()
        assert table.num_rows == entry["rows"]
        rows += table.to_pylist()
    assert len(rows) == manifest["rows"]
    source = lake.read_table(dataset_key("unlabeled", date), columns=["doc_id"]).column("doc_id").to_pylist()
    ids = [r["doc_id"] for r in rows]
    assert len(set(ids)) == len(ids) and set(ids) == set(source)  # one row per eligible document
    ingest_manifest = lake.require_manifest(dataset_key("unlabeled", date))
    assert manifest["quarantined_rows"] == ingest_manifest["quarantined_rows"]
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


def test_rerun_replaces_the_partition(lake: Lake) -> None:
    score(lake, ScoreConfig(date=DATE, rows_per_file=300, batch_rows=100))
    first = lake.require_manifest(predictions_key(DATE))
    score(lake, ScoreConfig(date=DATE))
    manifest, _ = check_contract(lake, DATE)
    assert len(first["files"]) > 1 and len(manifest["files"]) == 1
    on_disk = sorted(p.name for p in Path(lake.path(predictions_key(DATE))).iterdir())
    assert on_disk == sorted([f["path"] for f in manifest["files"]] + ["_MANIFEST.json"])
    shards = Path(lake.path("predictions/_shards"))
    assert not shards.exists() or not any(shards.iterdir())  # shard staging is cleaned up after the commit


def test_sharded_and_unsharded_scoring_agree(lake: Lake) -> None:
    score(lake, ScoreConfig(date=DATE))
    _, whole = check_contract(lake, DATE)
    score(lake, ScoreConfig(date=DATE, num_shards=3))
    manifest, sharded = check_contract(lake, DATE)
    assert manifest["num_shards"] == 3 and len(manifest["files"]) == 3
    key = {r["doc_id"]: (r["predicted_label"], r["top_labels"], r["top_probs"]) for r in whole}
    assert {r["doc_id"]: (r["predicted_label"], r["top_labels"], r["top_probs"]) for r in sharded} == key


def test_crash_before_the_manifest_leaves_nothing_visible(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    score(lake, ScoreConfig(date=DATE))
    original = Lake.write_bytes

    def crash_on_manifest(self: Lake, key: str, data: bytes) -> str:
        if key == f"{predictions_key(DATE)}/_MANIFEST.json":
            raise KeyboardInterrupt("simulated crash between data files and manifest")
        return original(self, key, data)

    monkeypatch.setattr(Lake, "write_bytes", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        score(lake, ScoreConfig(date=DATE))
    assert lake.read_manifest(predictions_key(DATE)) is None  # readers see no partition, not a mix
    monkeypatch.setattr(Lake, "write_bytes", original)
    score(lake, ScoreConfig(date=DATE))
    check_contract(lake, DATE)


def test_a_commit_that_dies_halfway_can_be_run_again(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    from textclf.errors import StorageError
    from textclf.score.stage import commit_predictions, score_shard

    score(lake, ScoreConfig(date=DATE))
    before = lake.require_manifest(predictions_key(DATE))
    config = ScoreConfig(date=DATE, num_shards=3)
    for shard in range(3):
        score_shard(lake, config.replaced(shard=shard))
    original, copies = Lake.copy, []

    def fail_second_copy(self: Lake, src: str, dst: str) -> None:
        copies.append(src)
        if len(copies) == 2:
            raise StorageError("simulated network failure while copying a shard file")
        original(self, src, dst)

    monkeypatch.setattr(Lake, "copy", fail_second_copy)
    with pytest.raises(StorageError, match="simulated"):
        commit_predictions(lake, ScoreConfig(date=DATE, num_shards=3))
    assert lake.require_manifest(predictions_key(DATE)) == before  # the old partition is still served whole
    monkeypatch.setattr(Lake, "copy", original)
    # every shard file is still there: the retry succeeds
    published = commit_predictions(lake, ScoreConfig(date=DATE, num_shards=3)).manifest
    manifest, _ = check_contract(lake, DATE)
    assert manifest["num_shards"] == 3 and manifest["created_at"] == published["created_at"]
    # a retry after success changes nothing
    assert commit_predictions(lake, ScoreConfig(date=DATE, num_shards=3)).manifest == published


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
    assert summary["predictions"] == f"{s3_lake}/predictions/run_date={DATE}"
    manifest, rows = check_contract(lake, DATE)
    assert summary["rows"] == manifest["rows"] == len(rows)
    dataset = pq.ParquetDataset(f"{s3_lake[5:]}/predictions/run_date={DATE}", filesystem=lake.fs)
    assert dataset.read().num_rows == manifest["rows"]  # a plain pyarrow reader sees exactly the data files


def test_consumer_guide_recipes_read_the_right_rows(lake: Lake) -> None:
    """The reading recipes of docs/scoring.md, run as written against a scored lake."""
    import os

    import pandas as pd
    import pyarrow.dataset as ds

    score(lake, ScoreConfig(date=DATE), with_report=False)
    Path(lake.path("predictions/run_date=2026-05-09")).mkdir(parents=True)  # a run that died: no manifest
    (Path(lake.path("predictions/run_date=2026-05-09")) / "part-00000-00000.parquet").write_bytes(b"partial")
    base = lake.path(predictions_key(DATE))
    with open(f"{base}/_MANIFEST.json") as fh:
        manifest = json.load(fh)
    df = pd.concat(pd.read_parquet(f"{base}/{f['path']}") for f in manifest["files"])
    assert len(df) == manifest["rows"] and df["doc_id"].is_unique
    root = lake.path("predictions")
    files = []
    for d in sorted(os.listdir(root)):
        if d.startswith("run_date=") and os.path.exists(f"{root}/{d}/_MANIFEST.json"):
            with open(f"{root}/{d}/_MANIFEST.json") as fh:
                files += [f"{root}/{d}/{f['path']}" for f in json.load(fh)["files"]]
    dataset = ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=root)
    table = dataset.to_table()
    assert table.num_rows == manifest["rows"]  # the unfinished date is not read
    assert set(table.column("run_date").to_pylist()) == {DATE}
