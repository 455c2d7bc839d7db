"""Batch scoring: a date's unlabeled documents through a registered model into the predictions table.

The output is docs/contracts.md section 6 (schema version 2, a Delta table partitioned by ``run_date``).
Scoring streams record batches from Parquet through the model, so memory is bounded by the batch size.
A date can be scored as N shards (by a hash of the doc id): each shard writes its data files into the
table's folder (not yet committed) and a small record of them, and ``commit_predictions`` adds every
shard's files and removes the date's old ones in one Delta commit. The unsharded path is the same code
with N = 1.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from textclf.common import json_bytes, stable_bucket, utc_now_iso
from textclf.config import ReportConfig, ScoreConfig
from textclf.errors import ModelError, PartitionNotFoundError, StorageError, UsageError
from textclf.lake import Lake
from textclf.lake.layout import data_docs_key, dataset_key, report_key, shard_key, shards_key
from textclf.lake.partition import FileEntry
from textclf.lake.tables import NotCommitted, Snapshot, dataset_table, predictions_table
from textclf.model.predict import model_vocabulary
from textclf.progress import NoProgress, Progress
from textclf.score.predictions import SCHEMA_VERSION, prediction_batch, prediction_schema
from textclf.score.signals import OOV_SAMPLE_PER_BATCH, ScoringStats
from textclf.textstats import oov_counts

log = logging.getLogger(__name__)


SHARD_SALT = "textclf-shard-v1:"


def shard_of(doc_id: str, num_shards: int) -> int:
    """The shard a document belongs to: stable across runs and machines."""
    if num_shards == 1:
        return 0
    return stable_bucket(SHARD_SALT, doc_id, num_shards)


def _resolve_version(lake: Lake, requested: str | None) -> str:
    from textclf.model.registry import champion_version

    return requested or champion_version(lake)


def _require_input(lake: Lake, date: str) -> tuple[Snapshot, dict[str, Any]]:
    """The unlabeled table's latest snapshot and the date's summary; a clear error when it was not ingested."""
    table = dataset_table(lake, "unlabeled")
    snapshot = table.snapshot()
    summary = table.summary(date, snapshot) if snapshot else None
    if snapshot is None or summary is None:
        raise PartitionNotFoundError(f"no unlabeled data ingested for {date} at "
                                     f"{lake.uri_of(dataset_key('unlabeled', date))}: "
                                     f"run `textclf ingest --kind unlabeled --date {date}` first")
    return snapshot, summary


def missing_inputs(lake: Lake, date: str, model_version: str | None = None) -> list[str]:
    """What scoring a date still waits for (no champion, no ingested data); empty when it can start."""
    from textclf.lake.layout import CHAMPION
    from textclf.model.registry import read_champion, read_version

    missing = []
    if model_version:
        try:
            read_version(lake, model_version)
        except ModelError as exc:
            missing.append(str(exc))
    elif not read_champion(lake).get("champion"):
        missing.append(f"no champion model yet in {lake.uri_of(CHAMPION)}: train and promote one (textclf_retrain)")
    snapshot = dataset_table(lake, "unlabeled").snapshot()
    if snapshot is None or date not in snapshot.files:
        missing.append(f"no unlabeled data ingested for {date} at {lake.uri_of(dataset_key('unlabeled', date))}: "
                       "land files and ingest them (textclf_ingest)")
    return missing


@dataclass(frozen=True)
class ShardResult:
    """One scored shard: its files are in the predictions table's folder, waiting for ``commit_predictions``."""

    date: str
    shard: int
    num_shards: int
    manifest: dict[str, Any]  # the shard record (``shard_key``): files, rows, model, source ingest, stats

    def summary(self) -> dict[str, Any]:
        return {"run_date": self.date, "shard": self.shard, "num_shards": self.num_shards,
                "rows": self.manifest["rows"], "model_version": self.manifest["model_version"],
                "seconds": self.manifest["seconds"]}


def _score_files(lake: Lake, config: ScoreConfig, progress: Progress) -> dict[str, Any]:
    """Score one shard into data files of the predictions table (not committed); return its record."""
    import datetime as dt

    import numpy as np
    import pyarrow.compute as pc

    if config.shard is None:
        raise UsageError("score_shard needs a shard number (0 to num_shards - 1)")
    shard = config.shard
    progress = progress or NoProgress()
    # The cheap checks first: a date without data or a lake without a champion fails before TensorFlow loads.
    snapshot, source = _require_input(lake, config.date)
    version = _resolve_version(lake, config.model_version)
    import tensorflow as tf

    from textclf.model.registry import load_model

    loaded = load_model(lake, version)
    vocabulary = model_vocabulary(loaded.model)
    classes = loaded.classes
    scored_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stats = ScoringStats()
    started = time.perf_counter()
    progress.start(source.get("rows"), f"scoring {config.date}" + (f" shard {shard}" if config.num_shards > 1 else ""),
                   unit="doc")
    seen = 0
    inputs = dataset_table(lake, "unlabeled")
    with predictions_table(lake, prediction_schema()).writer(config.date) as part:
        writer = None
        for batch in inputs.iter_batches(config.date, columns=["doc_id", "text"], batch_size=config.batch_rows,
                                         snapshot=snapshot):
            seen += batch.num_rows
            doc_ids = batch.column("doc_id").to_pylist()
            texts = batch.column("text")
            if config.num_shards > 1:
                mask = np.fromiter((shard_of(d, config.num_shards) == shard for d in doc_ids), dtype=bool,
                                   count=len(doc_ids))
                doc_ids = [d for d, keep in zip(doc_ids, mask, strict=True) if keep]
                texts = texts.filter(mask)
            if doc_ids:
                text_list = texts.to_pylist()
                probs = np.asarray(loaded.model.predict_on_batch(tf.constant(text_list)), dtype=np.float32)
                record = prediction_batch(doc_ids, probs, classes, version, scored_at, config.top_k)
                if writer is None or writer.rows >= config.rows_per_file:
                    if writer is not None:
                        part.close_parquet(writer)
                    writer = part.parquet(f"part-{shard:05d}-{len(part.files):05d}.parquet", prediction_schema())
                writer.write(record)
                words = np.asarray(pc.add(pc.count_substring(texts, " "), 1), dtype=np.int64)
                stats.add_batch(record.column("predicted_label").to_pylist(), probs.max(axis=1), words,
                                oov_counts(text_list[:OOV_SAMPLE_PER_BATCH], vocabulary))
            progress.update(seen)
        if writer is None:  # a shard without documents still has one file: the date exists, with no rows
            writer = part.parquet(f"part-{shard:05d}-00000.parquet", prediction_schema())
        part.close_parquet(writer)
        progress.close()
        part.keep()
    log.info("scored %d documents of %s (shard %d of %d) with %s", stats.rows, config.date, shard,
             config.num_shards, version)
    return {"kind": "prediction_shard", "run_date": config.date, "shard": shard, "num_shards": config.num_shards,
            "run": part.run, "model_version": version, "classes": list(classes), "rows": stats.rows,
            "source_ingest_run": source.get("ingest_run"), "source_version": snapshot.version,
            "created_at": utc_now_iso(), "seconds": round(time.perf_counter() - started, 3),
            "stats": stats.as_dict(), "files": [f.as_dict() for f in part.files]}


def score_shard(lake: Lake, config: ScoreConfig, progress: Progress | None = None) -> ShardResult:
    """Score the documents of shard ``config.shard`` into the predictions table's folder, and record them.

    The files are not committed: ``commit_predictions`` adds every shard's files in one Delta commit. The
    record (``_shards/predictions/run_date=D/shard=I-of-N.json``) is written last, so a shard killed on
    the way has none, and scoring the shard again replaces it.
    """
    record = _score_files(lake, config, progress or NoProgress())
    assert config.shard is not None
    lake.write_bytes(shard_key(config.date, config.shard, config.num_shards), json_bytes(record))
    return ShardResult(config.date, config.shard, config.num_shards, record)


@dataclass(frozen=True)
class PredictionsResult:
    """A committed date of the predictions table (schema version 2)."""

    date: str
    uri: str  # the predictions table
    manifest: dict[str, Any]  # the date's summary, with the table version it was committed as

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {"predictions": self.uri, "run_date": self.date, "table_version": m.get("table_version"),
                "model_version": m["model_version"], "rows": m["rows"], "input_rows": m["input_rows"],
                "quarantined_rows": m["quarantined_rows"], "files": len(m["files"])}


def _read_shard_records(lake: Lake, date: str, num_shards: int) -> list[dict[str, Any] | None]:
    out = []
    for shard in range(num_shards):
        key = shard_key(date, shard, num_shards)
        out.append(lake.read_json(key) if lake.exists(key) else None)
    return out


def commit_predictions(lake: Lake, config: ScoreConfig,
                       shards: list[dict[str, Any]] | None = None) -> PredictionsResult:
    """Commit every shard of ``config.date`` as the date's predictions, in one Delta commit.

    The commit adds all shards' files and removes the files the date had, so readers see the old
    predictions until then and the new ones after, never a part. ``shards`` are the records of an in-process
    run; without them the shard records in the lake are used and cleared afterwards. Refused (nothing
    changes): a shard not scored, shards of different models or of an older ingest of the date, counts that
    do not match the eligible documents, a shard rescored while this commit runs.
    """
    date, num_shards = config.date, config.num_shards
    table = predictions_table(lake, prediction_schema())
    _, source = _require_input(lake, date)
    from_lake = shards is None
    if shards is None:
        found = _read_shard_records(lake, date, num_shards)
        if not any(found):
            published = table.summary(date)
            if (published and published.get("source_ingest_run") == source.get("ingest_run")
                    and published.get("num_shards") == num_shards):
                # Already committed from these shards (a retried commit whose first try got this far).
                log.info("predictions for %s already committed from %d shard(s)", date, num_shards)
                return PredictionsResult(date, table.lake.uri_of(table.key), published)
        for shard, record in enumerate(found):
            if record is None:
                raise StorageError(f"shard {shard} of {num_shards} for {date} has not been scored; "
                                   f"rerun `textclf score --date {date}` (or that shard's task)")
        shards = [r for r in found if r is not None]
    for shard, record in enumerate(shards):
        if record.get("source_ingest_run") != source.get("ingest_run"):
            raise StorageError(f"shard {shard} of {num_shards} for {date} scored an older ingest of that date; "
                               "rescore it")
    versions = {m["model_version"] for m in shards}
    if len(versions) != 1:
        raise ModelError(f"the shards of {date} were scored by different models ({', '.join(sorted(versions))}); "
                         "rescore them with one --model-version")
    rows = sum(m["rows"] for m in shards)
    eligible = source["rows"]
    if rows != eligible:
        raise StorageError(f"shards of {date} hold {rows} predictions for {eligible} eligible documents; "
                           "rescore the date")
    files = [FileEntry(f["path"], f.get("rows"), f["bytes"], f["sha256"]) for m in shards for f in m["files"]]
    present = set(lake.list_files(table.date_key(date)))
    gone = [f.path for f in files if table.file_key(f.path) not in present]
    if gone:
        raise StorageError(f"{len(gone)} scored file(s) of {date} ({gone[0]}, ...) are gone from "
                           f"{lake.uri_of(table.date_key(date))}; rescore the date")

    def unchanged(_: Snapshot) -> None:
        # A rescore replaces a shard's record (and its files): this commit would publish what it replaced.
        if from_lake:
            for shard, record in enumerate(_read_shard_records(lake, date, num_shards)):
                if record != shards[shard]:
                    raise NotCommitted(
                        f"shard {shard} of {num_shards} for {date} was rescored while this commit ran (another "
                        f"run of the date?); rerun `textclf score --date {date} --shards {num_shards} --commit-only`")

    quarantined = source.get("quarantined_rows", 0)
    published = table.commit(date, files, {
        "schema_version": SCHEMA_VERSION, "model_version": versions.pop(), "classes": shards[0]["classes"],
        "rows": rows,
        # Exact duplicates are the same document received twice: they are not eligible, and not quarantined.
        "input_rows": eligible + quarantined, "quarantined_rows": quarantined,
        "duplicates_removed": source.get("duplicates_removed", 0), "received_rows": source.get("input_rows"),
        # Scored from their first max_text_chars characters (ingest cut them): the source's summary lists them.
        "truncated_rows": source.get("truncated_rows", 0),
        "num_shards": num_shards, "source": lake.uri_of(dataset_key("unlabeled", date)),
        "source_ingest_run": source.get("ingest_run"), "source_version": source.get("table_version"),
        "source_created_at": source.get("created_at"),
        "signals": ScoringStats.merge(m["stats"] for m in shards).as_dict(),
    }, check=unchanged)
    if from_lake:
        lake.delete_tree(shards_key(date))
    return PredictionsResult(date, table.lake.uri_of(table.key), published)


@dataclass(frozen=True)
class ReportResult:
    """A written scoring report: where it is and what it found."""

    date: str
    uri: str  # report.html
    content: dict[str, Any]  # report.json

    @property
    def warnings(self) -> list[str]:
        return [w["message"] for w in self.content.get("warnings", [])]

    def summary(self) -> dict[str, Any]:
        return {"report": self.uri, "run_date": self.date, "warnings": self.warnings}


@dataclass(frozen=True)
class ScoreResult:
    """A scored date: its predictions partition and, unless skipped, its report."""

    predictions: PredictionsResult
    report: ReportResult | None = None

    def summary(self) -> dict[str, Any]:
        out = self.predictions.summary()
        if self.report:
            out["report"] = self.report.uri
            out["warnings"] = self.report.warnings
        return out


def score(lake: Lake, config: ScoreConfig, progress: Progress | None = None,
          with_report: bool = True) -> ScoreResult:
    """Score every unlabeled document ingested for ``config.date`` and commit the date's predictions.

    In one process the shards' records stay in memory (no shard record is written): two runs of the same
    date at once each commit their own files, and the last to commit wins whole.
    """
    records: list[dict[str, Any]] = []
    try:
        for shard in range(config.num_shards):
            records.append(_score_files(lake, config.replaced(shard=shard), progress or NoProgress()))
    except BaseException:
        table = predictions_table(lake)
        for record in records:  # never committed: nothing references them
            for entry in record["files"]:
                with contextlib.suppress(StorageError):
                    lake.delete(table.file_key(entry["path"]))
        raise
    predictions = commit_predictions(lake, config.replaced(shard=None), shards=records)
    written = report(lake, ReportConfig(date=config.date)) if with_report else None
    return ScoreResult(predictions, written)


def report(lake: Lake, config: ReportConfig) -> ReportResult:
    """Write the scoring report of a date (JSON + HTML) from its predictions summary and the model's lineage."""

    from textclf.lake.layout import version_key
    from textclf.score.drift import ScoringReportInput
    from textclf.score.report import build_scoring_report

    date = config.date
    manifest = predictions_table(lake).require_summary(date)
    version = manifest["model_version"]
    lineage = lake.read_json(f"{version_key(version)}/lineage.json")
    profile = lineage.get("profile", {})
    signals = manifest["signals"]
    docs_key = data_docs_key("unlabeled", date)
    inp = ScoringReportInput(
        run_date=date, model_version=version, classes=tuple(manifest["classes"]),
        counts={"input_rows": manifest["input_rows"], "rows": manifest["rows"],
                "quarantined_rows": manifest["quarantined_rows"],
                "duplicates_removed": manifest.get("duplicates_removed", 0)},
        predicted_counts=signals["predicted"], training_class_counts=lineage.get("rows_per_class", {}),
        confidence_hist=signals["confidence_hist"], length_bins=signals["length_bins"],
        training_length_bins=profile.get("word_bins"),
        oov_rate=signals["oov_tokens"] / signals["sampled_tokens"] if signals["sampled_tokens"] else None,
        training_oov_rate=profile.get("oov_rate"), batch_signals=signals["batches"],
        predictions_uri=manifest["table"],
        validation_docs_uri=lake.uri_of(docs_key) if lake.exists(docs_key) else None,
        model_report_uri=lake.uri_of(f"{version_key(version)}/report.html"),
    )
    content, html = build_scoring_report(inp)
    with lake.partition(report_key(date)) as part:
        part.add_bytes("report.json", json_bytes(content))
        part.add_bytes("report.html", html.encode())
        part.commit({"kind": "scoring_report", "run_date": date, "model_version": version})
    return ReportResult(date, lake.uri_of(f"{report_key(date)}/report.html"), content)
