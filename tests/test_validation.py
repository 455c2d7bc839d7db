"""Validation: GX suites against good and bad partitions; results, profile and Data Docs in the lake."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from tests.conftest import write_csv
from textclf.config import IngestConfig, ValidationConfig
from textclf.errors import PartitionNotFoundError, ValidationFailedError
from textclf.ingest.stage import dataset_schema, ingest
from textclf.lake import Lake
from textclf.lake.layout import MANIFEST, validation_key
from textclf.lake.tables import dataset_table, quarantine_table
from textclf.validate.expectations import check_schema, describe, expectation_specs
from textclf.validate.profile import profile, render_profile_html, text_stats
from textclf.validate.stage import ValidationResult, validate

pytestmark = pytest.mark.data

WORDS = ["parcel", "refund", "invoice", "late", "broken", "thanks", "order", "account", "password", "card"]


def text(i: int, n_words: int = 8) -> str:
    """A deterministic text of `n_words` words (at least 3, so no short-text warning)."""
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n_words))


def labeled_rows(counts: dict[str, int], prefix: str = "") -> list[tuple]:
    """Rows (id, text, label) with `counts[label]` rows per label."""
    rows, i = [], 0
    for label, n in counts.items():
        for _ in range(n):
            rows.append((f"{prefix}{i}", text(i, 5 + i % 20), label))
            i += 1
    return rows


def ingest_rows(lake: str, tmp: Path, kind: str, date: str, rows: list[tuple]) -> None:
    header = ("id", "text", "label") if kind == "labeled" else ("id", "text")
    csv = write_csv(tmp / f"{kind}-{date}.csv", rows, header)
    ingest(Lake(lake), IngestConfig(kind=kind, date=date, sources=(str(csv),)))  # type: ignore[arg-type]


def write_dataset(lake: str, kind: str, date: str, table: pa.Table) -> None:
    """Write a date of a dataset table directly, for data that ingest would refuse."""
    with dataset_table(Lake(lake), kind, table.schema).writer(date) as writer:
        part = writer.parquet("part-00000.parquet", table.schema)
        part.write(table)
        writer.close_parquet(part)
        writer.commit({"kind": kind, "ingest_date": date})


def run(lake: str, kind: str, date: str, **thresholds: object) -> ValidationResult | ValidationFailedError:
    try:
        return validate(Lake(lake), ValidationConfig.build(kind=kind, date=date, **thresholds))
    except ValidationFailedError as exc:
        return exc


def results_json(lake: str, kind: str, date: str) -> dict:
    return Lake(lake).read_json(f"{validation_key(kind, date)}/results.json")


GOOD = "2026-03-01"
BELOW_MIN = "2026-03-02"
NOT_ALLOWED = "2026-03-03"
IMBALANCED = "2026-03-04"
TOO_LONG = "2026-03-05"
DUPLICATES = "2026-03-06"
NULL_LABELS = "2026-03-07"
RERUN = "2026-03-08"


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One lake holding a partition per case."""
    tmp = tmp_path_factory.mktemp("validation")
    uri = str(tmp / "lake")
    balanced = {"billing": 12, "shipping": 12, "login": 12}
    ingest_rows(uri, tmp, "labeled", GOOD, labeled_rows(balanced))
    ingest_rows(uri, tmp, "unlabeled", GOOD, [(r[0], r[1]) for r in labeled_rows(balanced)])
    ingest_rows(uri, tmp, "labeled", BELOW_MIN, labeled_rows({**balanced, "refund": 3}))
    ingest_rows(uri, tmp, "labeled", NOT_ALLOWED, labeled_rows({**balanced, "spam": 11, "<b>x</b>": 10}))
    ingest_rows(uri, tmp, "labeled", IMBALANCED, labeled_rows({"billing": 130, "shipping": 10}))
    long_rows = labeled_rows(balanced)
    long_rows[0] = ("long-1", text(0, 40), "billing")
    ingest_rows(uri, tmp, "labeled", TOO_LONG, long_rows)
    good = labeled_rows(balanced)
    ids = [r[0] for r in good]
    ids[1] = ids[2] = ids[0]  # three rows share doc_id "0"
    write_dataset(uri, "labeled", DUPLICATES, pa.table(
        {"doc_id": ids, "text": [r[1] for r in good], "label": [r[2] for r in good],
         "source_file": ["x.csv"] * len(good), "source_row": list(range(len(good)))}))
    write_dataset(uri, "labeled", NULL_LABELS, pa.table(
        {"doc_id": [r[0] for r in good], "text": [r[1] for r in good], "label": pa.nulls(len(good))}))
    return uri


@pytest.fixture(scope="module")
def good_labeled(lake: str) -> ValidationResult:
    return validate(Lake(lake), ValidationConfig(kind="labeled", date=GOOD))


# -- end to end on a lake ----------------------------------------------------------------------------


def test_good_labeled_partition_passes_and_writes_results_profile_and_docs(
        lake: str, good_labeled: ValidationResult) -> None:
    report = good_labeled
    assert report.success and report.failures == [] and report.warnings == []
    key = validation_key("labeled", GOOD)
    files = set(Lake(lake).list_files(key))
    for name in ("results.json", "profile.json", "profile.html", "data_docs/index.html", MANIFEST,
                 "gx_results/labeled_critical.json", "gx_results/labeled_warning.json"):
        assert f"{key}/{name}" in files
    assert any(f.startswith(f"{key}/data_docs/validations/") and f.endswith(".html") for f in files)
    manifest = Lake(lake).verify(key)  # every file matches its sha256, manifest written last
    assert {f"{key}/{f['path']}" for f in manifest["files"]} | {f"{key}/{MANIFEST}"} == files
    assert manifest["success"] is True and manifest["critical_failures"] == 0

    results = results_json(lake, "labeled", GOOD)
    assert results["success"] is True
    assert results["links"]["profile_html"] == "profile.html"
    assert results["links"]["data_docs"] == "data_docs/index.html"
    by_type = {(e["expectation_type"], e["column"]): e for e in results["expectations"]}
    unique = by_type[("expect_column_values_to_be_unique", "doc_id")]
    assert unique["severity"] == "critical" and unique["success"] and unique["suite"] == "labeled_critical"
    classes = by_type[("expect_column_unique_value_count_to_be_between", "label")]
    assert classes["observed_value"] == 3
    median = by_type[("expect_column_median_to_be_between", "text_words")]
    assert median["severity"] == "warning" and median["observed_value"] > 0
    assert all(e["success"] for e in results["expectations"])

    assert report.results_uri == Lake(lake).uri_of(f"{key}/results.json")
    assert report.docs_uri.endswith(f"{key}/data_docs/index.html")
    assert "Great Expectations" in (Path(lake) / key / "data_docs/index.html").read_text()
    profile_json = Lake(lake).read_json(f"{key}/profile.json")
    assert profile_json == report.profile
    assert profile_json["rows"] == 36 and profile_json["class_counts"] == {"billing": 12, "shipping": 12, "login": 12}
    summary = report.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["success"] is True and summary["rows"] == 36 and summary["data_docs"] == report.docs_uri


def test_good_unlabeled_partition_passes(lake: str) -> None:
    report = validate(Lake(lake), ValidationConfig(kind="unlabeled", date=GOOD))
    assert report.success and report.failures == []
    assert "class_counts" not in report.profile
    results = results_json(lake, "unlabeled", GOOD)
    assert results["success"] is True
    assert not any(e["column"] == "label" for e in results["expectations"])


def test_validation_quiets_gx_while_it_runs_and_leaves_the_process_as_it_was(
        lake: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("GX_ANALYTICS_ENABLED", raising=False)
    gx_log = logging.getLogger("great_expectations")
    monkeypatch.setattr(gx_log, "level", logging.NOTSET)
    caplog.set_level(logging.INFO)

    assert validate(Lake(lake), ValidationConfig(kind="unlabeled", date=GOOD)).success
    assert not [r for r in caplog.records if r.name.startswith("great_expectations") and r.levelno < logging.WARNING]
    assert gx_log.level == logging.NOTSET and "GX_ANALYTICS_ENABLED" not in os.environ


def test_duplicate_ids_fail_naming_doc_id_and_the_id(lake: str) -> None:
    outcome = run(lake, "labeled", DUPLICATES)
    assert isinstance(outcome, ValidationFailedError)
    message = str(outcome)
    assert "validation of labeled 2026-03-06 failed" in message
    assert "expect_column_values_to_be_unique(doc_id): 3 rows share a duplicated value, e.g. ['0']" in message
    assert outcome.docs_uri and outcome.docs_uri.endswith("data_docs/index.html")
    # The results and docs are in the lake for people to read, and say the same.
    results = results_json(lake, "labeled", DUPLICATES)
    assert results["success"] is False and results["failures"] == outcome.failures
    assert Lake(lake).exists(f"{validation_key('labeled', DUPLICATES)}/data_docs/index.html")


def test_class_below_minimum_fails_naming_class_and_count(lake: str) -> None:
    outcome = run(lake, "labeled", BELOW_MIN)
    assert isinstance(outcome, ValidationFailedError)
    assert outcome.failures == ["min examples per class (10): 'refund' has 3"]


def test_labels_outside_allowed_labels_fail_naming_them(lake: str) -> None:
    outcome = run(lake, "labeled", NOT_ALLOWED, allowed_labels=("billing", "shipping", "login"))
    assert isinstance(outcome, ValidationFailedError)
    assert outcome.failures == ["labels outside allowed_labels: 'spam' has 11, '<b>x</b>' has 10"]
    # The profile page escapes label text.
    page = (Path(lake) / validation_key("labeled", NOT_ALLOWED) / "profile.html").read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page


def test_imbalanced_but_valid_set_passes_with_a_logged_warning(lake: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="textclf.validate.stage"):
        report = validate(Lake(lake), ValidationConfig(kind="labeled", date=IMBALANCED))
    assert report.success and report.failures == []
    assert report.warnings == ["class imbalance (largest/smallest max 10): 'billing' has 130, 13.0x the "
                               "smallest class (10)"]
    assert report.warnings[0] in caplog.text
    results = results_json(lake, "labeled", IMBALANCED)
    assert results["success"] is True and results["warnings"] == report.warnings


def test_too_long_texts_fail_naming_the_document(lake: str) -> None:
    outcome = run(lake, "labeled", TOO_LONG, max_text_chars=200)
    assert isinstance(outcome, ValidationFailedError)
    assert len(outcome.failures) == 1
    assert outcome.failures[0].startswith(
        "expect_column_values_to_be_between(text_chars): 1 values not between 1 and 200, e.g. doc 'long-1' has ")


def test_string_columns_of_another_type_fail_as_critical(lake: str) -> None:
    outcome = run(lake, "labeled", NULL_LABELS)
    assert isinstance(outcome, ValidationFailedError)
    assert any(f.startswith("expect_column_values_to_be_of_type(label): expected string, found null in part-00000-")
               for f in outcome.failures), outcome.failures
    assert "expect_column_values_to_not_be_null(label): 36 null values in 36 rows" in outcome.failures


def test_missing_partition_raises_partition_not_found(lake: str) -> None:
    with pytest.raises(PartitionNotFoundError, match="datasets/labeled/ingest_date=1999-01-01"):
        validate(Lake(lake), ValidationConfig(kind="labeled", date="1999-01-01"))
    assert not Lake(lake).exists(validation_key("labeled", "1999-01-01"))


def test_rerun_replaces_the_partition_whole(lake: str, tmp_path: Path) -> None:
    ingest_rows(lake, tmp_path, "labeled", RERUN, labeled_rows({"billing": 12, "shipping": 2}))
    first = run(lake, "labeled", RERUN)
    assert isinstance(first, ValidationFailedError)
    key = validation_key("labeled", RERUN)
    Lake(lake).write_bytes(f"{key}/stale.txt", b"left over")
    ingest_rows(lake, tmp_path, "labeled", RERUN, labeled_rows({"billing": 12, "shipping": 12}))
    second = validate(Lake(lake), ValidationConfig(kind="labeled", date=RERUN))
    assert second.success
    files = set(Lake(lake).list_files(key))
    manifest = Lake(lake).verify(key)
    assert files == {f"{key}/{f['path']}" for f in manifest["files"]} | {f"{key}/{MANIFEST}"}
    assert f"{key}/stale.txt" not in files
    runs = [f for f in files if "/data_docs/validations/labeled_critical/" in f]
    assert len(runs) == 1  # only this run's Data Docs page, not the first run's
    assert results_json(lake, "labeled", RERUN)["success"] is True


def test_row_accounting_is_checked_against_the_quarantine(lake: str, tmp_path: Path) -> None:
    date = "2026-03-09"
    ingest_rows(lake, tmp_path, "unlabeled", date, [(f"a{i}", text(i)) for i in range(30)] + [("x", "")])
    store, qkey = Lake(lake), f"quarantine/unlabeled/ingest_date={date}"
    assert validate(Lake(lake), ValidationConfig(kind="unlabeled", date=date)).success
    entry = results_json(lake, "unlabeled", date)["expectations"][0]
    assert (entry["expectation_type"], entry["success"]) == ("expect_partition_rows_to_add_up", True)

    quarantine = quarantine_table(store, "unlabeled").require_summary(date)
    assert quarantine["rows"] == 1
    stored = store.read_json(quarantine["summary_key"])
    store.write_bytes(quarantine["summary_key"], json.dumps({**stored, "rows": 0}).encode())
    outcome = run(lake, "unlabeled", date)
    assert isinstance(outcome, ValidationFailedError)
    assert outcome.failures == [
        f"expect_partition_rows_to_add_up: {store.uri_of(qkey)} holds 0 rows, the dataset summary says 1 were "
        f"quarantined; rerun ingest for unlabeled {date}"]
    store.write_bytes(quarantine["summary_key"], json.dumps(stored).encode())
    # A quarantine date that is gone (deleted by another Delta writer) is named too.
    from deltalake import DeltaTable

    DeltaTable(quarantine_table(store, "unlabeled").uri).delete(f"ingest_date = '{date}'")  # the date is gone
    outcome = run(lake, "unlabeled", date)
    assert isinstance(outcome, ValidationFailedError)
    assert outcome.failures == [f"expect_partition_rows_to_add_up: {store.uri_of(qkey)} is not in the quarantine "
                                f"table; rerun ingest for unlabeled {date}"]


def test_progress_counts_rows(lake: str) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def start(self, total: int | None, desc: str, unit: str = "B") -> None:
            self.calls.append(("start", total, desc, unit))

        def update(self, done: int) -> None:
            self.calls.append(("update", done))

        def close(self) -> None:
            self.calls.append(("close",))

    recorder = Recorder()
    validate(Lake(lake), ValidationConfig(kind="unlabeled", date=GOOD), progress=recorder)
    assert recorder.calls[0] == ("start", 36, "validate unlabeled", "rows")
    assert recorder.calls[-2:] == [("update", 36), ("close",)]


@pytest.mark.s3
def test_validate_on_real_s3(tmp_path: Path, s3_lake: str) -> None:
    ingest_rows(s3_lake, tmp_path, "labeled", GOOD, labeled_rows({"billing": 12, "shipping": 12}))
    report = validate(Lake(s3_lake), ValidationConfig(kind="labeled", date=GOOD))
    assert report.success and report.docs_uri.startswith("s3://")
    key = validation_key("labeled", GOOD)
    Lake(s3_lake).verify(key)
    assert Lake(s3_lake).exists(f"{key}/data_docs/index.html")


# -- pure helpers --------------------------------------------------------------------------------------


def test_text_stats_counts_chars_and_words_and_drops_the_text() -> None:
    table = pa.table({"doc_id": ["a", "b", "c"], "text": ["one two three", "", None], "label": ["x", "y", None],
                      "source_row": [1, 2, 3]})
    stats = text_stats(table, "labeled").to_pylist()
    assert stats == [
        {"doc_id": "a", "text_chars": 13, "text_words": 3, "label": "x"},
        {"doc_id": "b", "text_chars": 0, "text_words": 0, "label": "y"},
        {"doc_id": "c", "text_chars": None, "text_words": None, "label": None},
    ]
    assert text_stats(table, "unlabeled").column_names == ["doc_id", "text_chars", "text_words"]


def test_profile_bins_add_up_to_the_row_count() -> None:
    stats = pd.DataFrame({"doc_id": ["a", "b", "c"], "text_chars": [5, 600, 5000], "text_words": [1, 100, 801],
                          "label": ["x", "x", "y"]})
    prof = profile(stats, "labeled")
    assert prof["word_bins"] == {"0-100": 2, "100-300": 0, "300-500": 0, "500-800": 0, ">800": 1}
    assert sum(prof["word_bins"].values()) == prof["rows"] == 3
    assert prof["words"] == {"min": 1, "p5": 10.9, "p50": 100.0, "p95": 730.9, "max": 801, "mean": 300.67}
    assert prof["class_counts"] == {"x": 2, "y": 1}
    assert prof["class_shares"] == {"x": 0.6667, "y": 0.3333}
    empty = profile(stats.iloc[:0], "unlabeled")
    assert empty["rows"] == 0 and sum(empty["word_bins"].values()) == 0 and empty["chars"]["p50"] is None


def test_profile_bins_add_up_on_a_real_partition(good_labeled: ValidationResult) -> None:
    assert sum(good_labeled.profile["word_bins"].values()) == good_labeled.profile["rows"] == 36


def test_profile_html_escapes_labels() -> None:
    stats = pd.DataFrame({"doc_id": ["a"], "text_chars": [3], "text_words": [1], "label": ["<script>"]})
    page = render_profile_html(profile(stats, "labeled"), "t <x>")
    assert "&lt;script&gt;" in page and "<script>" not in page and "t &lt;x&gt;" in page


def test_check_schema_names_the_file_and_type() -> None:
    good = pa.schema([("doc_id", pa.string()), ("text", pa.large_string()), ("label", pa.string())])
    bad = pa.schema([("doc_id", pa.int64()), ("text", pa.string())])
    entries = check_schema({"part-00000.parquet": good, "part-00001.parquet": bad}, "labeled")
    assert [(e["column"], e["success"]) for e in entries] == [("doc_id", False), ("text", True), ("label", False)]
    assert describe(entries[0]) == ("expect_column_values_to_be_of_type(doc_id): expected string, "
                                    "found int64 in part-00001.parquet")
    assert describe(entries[2]) == ("expect_column_values_to_be_of_type(label): expected string, "
                                    "found missing in part-00001.parquet")
    assert check_schema({"p": dataset_schema(False)}, "unlabeled")[0]["success"]


def test_expectation_specs_follow_the_config() -> None:
    specs = expectation_specs("labeled", ValidationConfig(kind="labeled", date=GOOD))
    assert not any(s.gx_class == "ExpectColumnValuesToBeInSet" for s in specs)
    allowed = expectation_specs("labeled", ValidationConfig(kind="labeled", date=GOOD, allowed_labels=("b", "a"),
                                                                   max_text_chars=50))
    in_set = next(s for s in allowed if s.gx_class == "ExpectColumnValuesToBeInSet")
    assert in_set.kwargs["value_set"] == ["a", "b"] and in_set.severity == "critical"
    between = next(s for s in allowed if s.kwargs.get("column") == "text_chars" and "max_value" in s.kwargs)
    assert between.kwargs["max_value"] == 50
    unlabeled = expectation_specs("unlabeled", ValidationConfig(kind="unlabeled", date=GOOD))
    assert {s.severity for s in unlabeled} == {"critical", "warning"}
    assert not any("label" in (s.kwargs.get("column"), s.frame) or s.frame != "stats" for s in unlabeled)


def test_describe_words_failures_for_people() -> None:
    base = {"suite": "labeled_critical", "severity": "critical", "success": False, "description": None,
            "error": None}
    columns = {**base, "expectation_type": "expect_table_columns_to_match_set", "column": None,
               "kwargs": {"column_set": ["doc_id", "text_chars", "text_words", "label"]},
               "observed_value": ["doc_id", "text_chars", "text_words"]}
    assert describe(columns) == "expect_table_columns_to_match_set: the partition has no column(s) ['label']"
    rows = {**base, "expectation_type": "expect_table_row_count_to_be_between", "column": None,
            "kwargs": {"min_value": 1}, "observed_value": 0}
    assert describe(rows) == "expect_table_row_count_to_be_between: observed 0, expected >= 1"
    short = {**base, "severity": "warning", "expectation_type": "expect_column_values_to_be_between",
             "column": "text_words", "description": "share of texts under 3 words (max 10%)",
             "kwargs": {"column": "text_words", "min_value": 3, "mostly": 0.9},
             "observed_value": {"element_count": 40, "unexpected_count": 10, "unexpected_percent": 25.0,
                                "value_counts": [], "rows": []}}
    assert describe(short) == "share of texts under 3 words (max 10%): 25.0% (10 of 40 rows)"


@pytest.mark.integration
def test_importing_validation_loads_no_heavy_library() -> None:
    code = ("import sys, textclf.validate.stage; "
            "print([m for m in ('great_expectations', 'pandas', 'pyarrow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_profile_length_table_headers_line_up_with_their_values() -> None:
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        """(tag, class, text) of every header and data cell, row by row."""

        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[tuple[str, str, str]]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "tr":
                self.rows.append([])
            elif tag in ("th", "td"):
                self.rows[-1].append((tag, dict(attrs).get("class") or "", ""))

        def handle_data(self, data: str) -> None:
            if self.rows and self.rows[-1]:
                tag, css, text = self.rows[-1][-1]
                self.rows[-1][-1] = (tag, css, text + data)

    stats = pd.DataFrame({"doc_id": ["a", "b", "c"], "text_chars": [5, 600, 5000], "text_words": [1, 100, 801],
                          "label": ["x", "x", "y"]})
    page = render_profile_html(profile(stats, "labeled"), "t")
    section = page[page.index('<section id="length-percentiles">'):]
    parser = Cells()
    parser.feed(section[: section.index("</table>")])
    header, *rows = parser.rows

    header = [(tag, css, text.strip()) for tag, css, text in header]
    rows = [[(tag, css, text.strip()) for tag, css, text in row] for row in rows]
    assert [text for _, _, text in header] == ["", "min", "p5", "p50", "p95", "max", "mean"]
    words = next(r for r in rows if r[0][2] == "words")
    assert len(words) == len(header)
    assert words[header.index(next(h for h in header if h[2] == "mean"))][2] == "300.67"
    # Each column is aligned as its header: numbers and their headers both right-aligned.
    assert [css for _, css, _ in header[1:]] == [css for _, css, _ in words[1:]] == ["n"] * 6
