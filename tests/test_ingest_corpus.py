"""The dirty demo corpus through ingest: each injected kind ends where it should, in every format."""

from __future__ import annotations

from pathlib import Path

import pytest

from textclf.config import IngestConfig
from textclf.demo.corpus import CorpusSpec, generate_rows, write_corpus
from textclf.ingest.normalize import normalize_one
from textclf.ingest.stage import ingest
from textclf.lake import Lake
from textclf.lake.tables import dataset_table

pytestmark = pytest.mark.data

# injected kind -> quarantine reason it must produce
QUARANTINED = {
    "empty_text": "empty_text",
    "missing_id": "missing_id",
    "invalid_encoding": "invalid_encoding",
    "too_long": "text_too_long",
    "missing_label": "missing_label",
    "malformed_row": "malformed_row",
}


@pytest.mark.parametrize("ext", ["csv", "tsv.gz", "jsonl.zst", "parquet"])
def test_dirty_corpus_is_fully_accounted_for(tmp_path: Path, ext: str) -> None:
    spec = CorpusSpec(rows=3_000, labeled=True, seed=3, dirty_fraction=0.05, max_text_chars=5_000)
    stats = write_corpus(spec, tmp_path / f"dirty.{ext}")
    lake = Lake(str(tmp_path / "lake"))
    config = IngestConfig(kind="labeled", date="2026-11-21", max_text_chars=5_000,
                          sources=(str(tmp_path / f"dirty.{ext}"),))
    m = ingest(lake, config).manifest
    assert m["input_rows"] == stats.rows
    assert m["rows"] + m["quarantined_rows"] + m["duplicates_removed"] == m["input_rows"]
    reasons = m["quarantine_reasons"]
    for kind, reason in QUARANTINED.items():
        assert reasons.get(reason, 0) >= stats.dirty.get(kind, 0), (kind, reasons, stats.dirty)
    # a repeat of a row that is itself quarantined is quarantined too, not counted as a duplicate
    direct = sum(stats.dirty.get(kind, 0) for kind in QUARANTINED)
    assert m["duplicates_removed"] + m["quarantined_rows"] >= stats.dirty.get("exact_duplicate", 0) + direct
    assert m["duplicates_removed"] > 0
    # a conflict quarantines the injected row and the earlier row it contradicts
    assert reasons.get("conflicting_label", 0) >= 2 * stats.dirty.get("conflicting_label", 0)
    texts = dataset_table(lake, "labeled").read("2026-11-21", columns=["text"]).column("text").to_pylist()
    assert not any("<br" in t or "&amp;" in t or "\x07" in t or "\u200b" in t for t in texts)
    if ext in ("csv", "tsv.gz"):  # generate_rows yields the delimited formats' rows; cp1252 bytes are repaired
        kept = dict(zip(dataset_table(lake, "labeled").read("2026-11-21", columns=["doc_id"])
                        .column("doc_id").to_pylist(), texts, strict=True))
        repairable = [r for chunk in generate_rows(spec) for r in chunk if r.get("_dirty") == "repairable_encoding"]
        assert repairable
        for row in repairable:
            assert kept[row["id"]] == normalize_one(row["text"].decode("cp1252"))
