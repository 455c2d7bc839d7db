"""Ingestion: every malformed case is quarantined with its reason and the counts add up."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import write_csv
from textclf.config import IngestConfig
from textclf.errors import InputFileError
from textclf.ingest.dedup import duplicate_id_positions, resolve_duplicates
from textclf.ingest.stage import ingest
from textclf.lake import Lake
from textclf.lake.tables import dataset_table, quarantine_table

pytestmark = pytest.mark.data

DATE = "2026-11-21"


def labeled(**kw) -> IngestConfig:
    return IngestConfig(kind="labeled", date=DATE, **kw)


def unlabeled(**kw) -> IngestConfig:
    return IngestConfig(kind="unlabeled", date=DATE, **kw)


def read(lake: str | Lake, kind: str = "labeled") -> tuple[list[dict], list[dict]]:
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    data = dataset_table(lake, kind).read(DATE).to_pylist()
    rejects = quarantine_table(lake, kind).read(DATE).to_pylist()
    return data, rejects


def assert_counts_add_up(manifest: dict) -> None:
    assert manifest["rows"] + manifest["quarantined_rows"] + manifest["duplicates_removed"] == manifest["input_rows"]
    assert sum(manifest["quarantine_reasons"].values()) == manifest["quarantined_rows"]


DIRTY_CSV = (
    b"id,text,label\n"
    b"1,hello world,a\n"
    b'2,"  <b>Caf\xc3\xa9</b> &amp; more",b\n'
    b"3,,a\n"
    b'4,"   \t ",a\n'
    b"5,<br />,a\n"
    b",no id,a\n"
    b"6,no label,\n"
    b"7,dup,a\n"
    b"7,dup,a\n"
    b"8,conflict,a\n"
    b"8,conflict,b\n"
    b"9,too,many,fields\n"
    b"10,caf\xe9 cr\xe8me,a\n"
    b"11,bad\x81\x8d bytes,a\n"
    b"12,first text,a\n"
    b"12,second text,a\n"
    b"13," + b"x" * 60 + b",a\n"
)


def test_every_malformed_case_goes_to_quarantine_with_its_reason(tmp_path: Path) -> None:
    src = tmp_path / "dirty.csv"
    src.write_bytes(DIRTY_CSV)
    result = ingest(Lake(str(tmp_path / "lake")), labeled(max_text_chars=50, sources=(str(src),)))
    m = result.manifest
    assert_counts_add_up(m)
    assert (m["input_rows"], m["rows"], m["duplicates_removed"]) == (17, 5, 1)
    assert m["quarantine_reasons"] == {
        "conflicting_label": 2, "duplicate_id": 1, "empty_text": 3, "invalid_encoding": 1,
        "malformed_row": 1, "missing_id": 1, "missing_label": 1, "text_too_long": 1,
    }
    data, rejects = read(str(tmp_path / "lake"))
    assert {r["doc_id"]: (r["text"], r["label"]) for r in data} == {
        "1": ("hello world", "a"), "2": ("Café & more", "b"), "7": ("dup", "a"), "10": ("café crème", "a"),
        "12": ("first text", "a"),
    }
    by_reason = {}
    for r in rejects:
        by_reason.setdefault(r["reason"], []).append(r)
    # the original content is kept, with where it came from
    enc = by_reason["invalid_encoding"][0]
    # CSV source_row counts the records the parser could split (the malformed one is not counted)
    assert enc["raw_bytes"] == b"bad\x81\x8d bytes" and enc["source_row"] == 13 and enc["id"] == "11"
    assert "too,many,fields" in by_reason["malformed_row"][0]["text"]
    assert {r["label"] for r in by_reason["conflicting_label"]} == {"a", "b"}
    assert by_reason["duplicate_id"][0]["text"] == "second text"
    assert by_reason["text_too_long"][0]["detail"] == "60 characters > limit 50"
    assert all(r["source_file"] == str(src) for r in rejects)


def test_an_over_long_unlabeled_text_is_cut_and_counted_not_dropped(tmp_path: Path) -> None:
    src = tmp_path / "long.csv"
    src.write_text("id,text\nshort,a short text\nlong," + "word " * 30 + "\n", encoding="utf-8")
    m = ingest(Lake(str(tmp_path / "lake")), unlabeled(max_text_chars=50, sources=(str(src),))).manifest
    assert_counts_add_up(m)
    assert (m["rows"], m["quarantined_rows"], m["truncated_rows"], m["truncated_doc_ids"]) == (2, 0, 1, ["long"])
    data, _ = read(str(tmp_path / "lake"), "unlabeled")
    texts = {r["doc_id"]: r["text"] for r in data}
    assert texts["short"] == "a short text" and texts["long"] == ("word " * 10).strip()  # its first 50 characters
    # the same limit quarantines it when asked to, as it always does for labeled data
    strict = ingest(Lake(str(tmp_path / "strict")), unlabeled(max_text_chars=50, truncate_unlabeled=False,
                                                              sources=(str(src),))).manifest
    assert (strict["rows"], strict["quarantine_reasons"], strict["truncated_rows"]) == (1, {"text_too_long": 1}, 0)
    # a long document received twice is one document kept, cut once, and counted once
    twice = tmp_path / "twice.csv"
    twice.write_text(src.read_text(encoding="utf-8") + "long," + "word " * 30 + "\n", encoding="utf-8")
    again = ingest(Lake(str(tmp_path / "twice")), unlabeled(max_text_chars=50, sources=(str(twice),))).manifest
    assert_counts_add_up(again)
    assert (again["rows"], again["duplicates_removed"], again["truncated_rows"], again["truncated_doc_ids"]) == (
        2, 1, 1, ["long"])


def write_formats(tmp_path: Path, rows: list[dict]) -> dict[str, Path]:
    """The same rows as CSV, TSV, JSON Lines and Parquet, plain, gzip and zstd."""
    import pyarrow.csv as pacsv

    table = pa.Table.from_pylist(rows)
    out = {}
    out["csv"] = tmp_path / "d.csv"
    pacsv.write_csv(table, out["csv"])
    out["tsv"] = tmp_path / "d.tsv"
    pacsv.write_csv(table, out["tsv"], pacsv.WriteOptions(delimiter="\t"))
    out["jsonl"] = tmp_path / "d.jsonl"
    out["jsonl"].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out["parquet"] = tmp_path / "d.parquet"
    pq.write_table(table, out["parquet"])
    out["csv.gz"] = tmp_path / "d.csv.gz"
    out["csv.gz"].write_bytes(gzip.compress(out["csv"].read_bytes()))
    out["jsonl.zst"] = tmp_path / "d.jsonl.zst"
    with pa.CompressedOutputStream(str(out["jsonl.zst"]), "zstd") as sink:
        sink.write(out["jsonl"].read_bytes())
    out["tsv.zst"] = tmp_path / "d.tsv.zst"
    with pa.CompressedOutputStream(str(out["tsv.zst"]), "zstd") as sink:
        sink.write(out["tsv"].read_bytes())
    return out


ROWS = [{"id": f"d{i}", "text": f"text number {i}, with \"quotes\" and a comma; café", "label": "ab"[i % 2]}
        for i in range(50)]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "csv.gz", "jsonl.zst", "tsv.zst"])
def test_every_format_gives_the_same_partition(tmp_path: Path, fmt: str) -> None:
    path = write_formats(tmp_path, ROWS)[fmt]
    result = ingest(Lake(str(tmp_path / "lake")), labeled(sources=(str(path),)))
    assert result.manifest["rows"] == 50 and result.manifest["quarantined_rows"] == 0
    data, _ = read(str(tmp_path / "lake"))
    assert [(r["doc_id"], r["text"], r["label"]) for r in data] == [(r["id"], r["text"], r["label"]) for r in ROWS]
    first = Path(result.manifest["table"]) / result.manifest["files"][0]["path"]
    assert first.name.startswith("part-00000-") and pq.ParquetFile(first).metadata.row_group(0).column(
        0).compression == "ZSTD"


def test_configurable_columns_and_integer_ids(tmp_path: Path) -> None:
    table = pa.table({"key": [1, 2], "body": ["one", "two"], "y": ["x", "z"]})
    pq.write_table(table, tmp_path / "in.parquet")
    ingest(Lake(str(tmp_path / "lake")), labeled(id_col="key", text_col="body", label_col="y", id_col_required=True,
                                                      sources=(str(tmp_path / "in.parquet"),)))
    data, _ = read(str(tmp_path / "lake"))
    assert [(r["doc_id"], r["text"], r["label"]) for r in data] == [("1", "one", "x"), ("2", "two", "z")]


def test_without_id_column_ids_are_stable_text_hashes(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [("same text",), ("other text",), ("same   text",)], header=("text",))
    result = ingest(Lake(str(tmp_path / "lake")), unlabeled(sources=(str(tmp_path / "a.csv"),)))
    data, _ = read(str(tmp_path / "lake"), "unlabeled")
    ids = [r["doc_id"] for r in data]
    assert len(ids) == 2 and all(i.startswith("h") for i in ids)
    assert result.manifest["duplicates_removed"] == 1  # "same   text" normalises to "same text"
    ingest(Lake(str(tmp_path / "lake2")), unlabeled(sources=(str(tmp_path / "a.csv"),)))
    assert [r["doc_id"] for r in read(str(tmp_path / "lake2"), "unlabeled")[0]] == ids


def test_duplicates_across_files_batches_and_part_files(tmp_path: Path) -> None:
    rows = [(f"id{i % 40}", f"text {i % 40}", "ab"[i % 2 if i < 40 else (i % 40) % 2]) for i in range(100)]
    write_csv(tmp_path / "a.csv", rows[:60])
    write_csv(tmp_path / "b.csv", rows[60:])
    result = ingest(Lake(str(tmp_path / "lake")), labeled(batch_rows=7, max_rows_per_file=15,
                                                          sources=(str(tmp_path / "a.csv"), str(tmp_path / "b.csv"))))
    m = result.manifest
    assert_counts_add_up(m)
    assert (m["rows"], m["duplicates_removed"], m["quarantined_rows"]) == (40, 60, 0)
    parts = [f for f in m["files"] if f["path"].split("/")[-1].startswith("part-")]
    assert len(parts) == 3 and all(f["rows"] > 0 for f in parts)  # files emptied by dedup are dropped
    data, _ = read(str(tmp_path / "lake"))
    assert sorted(r["doc_id"] for r in data) == sorted(f"id{i}" for i in range(40))
    dataset_table(Lake(str(tmp_path / "lake")), "labeled").verify(DATE)


def test_resolve_duplicates_rules() -> None:
    rows = [(0, "1", "a", "x"), (1, "2", "b", "x"), (2, "1", "a", "x"), (3, "3", "c", "x"), (4, "3", "c", "y"),
            (5, "4", "d", "x"), (6, "4", "d", "x"), (7, "4", "other", "x")]
    assert resolve_duplicates(rows) == {
        2: "duplicate", 3: "conflicting_label", 4: "conflicting_label", 6: "duplicate", 7: "duplicate_id"}


def test_duplicate_id_positions() -> None:
    import numpy as np

    assert duplicate_id_positions(np.array([5, 1, 5, 2, 1, 9], np.uint64)).tolist() == [0, 1, 2, 4]


def test_single_worker_gives_the_same_partition(tmp_path: Path) -> None:
    src = tmp_path / "dirty.csv"
    src.write_bytes(DIRTY_CSV * 3)
    one = ingest(Lake(str(tmp_path / "one")), labeled(workers=1, batch_rows=4, sources=(str(src),))).manifest
    two = ingest(Lake(str(tmp_path / "two")), labeled(workers=3, batch_rows=4, sources=(str(src),))).manifest
    for key in ("input_rows", "rows", "quarantined_rows", "duplicates_removed", "quarantine_reasons"):
        assert one[key] == two[key]
    assert read(str(tmp_path / "one")) == read(str(tmp_path / "two"))


def test_unlabeled_ignores_label_column(tmp_path: Path) -> None:
    write_csv(tmp_path / "u.csv", [("1", "some text", "")])
    ingest(Lake(str(tmp_path / "lake")), unlabeled(sources=(str(tmp_path / "u.csv"),)))
    data, rejects = read(str(tmp_path / "lake"), "unlabeled")
    assert data == [{"doc_id": "1", "text": "some text", "source_file": str(tmp_path / "u.csv"), "source_row": 1}]
    assert rejects == []


def test_jsonl_bad_lines_are_quarantined(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_bytes(b'{"id": "1", "text": "fine", "label": "a"}\n{"id": "2", "text": \n[1, 2]\n'
                    b'{"id": 3, "text": 42, "label": "a"}\n{"id": "4", "text": "bad \x81\x8d", "label": "a"}\n\n'
                    b'{"id": "5", "text": "caf\xe9 cr\xe8me", "label": "a"}\n')
    m = ingest(Lake(str(tmp_path / "lake")), labeled(sources=(str(src),))).manifest
    assert_counts_add_up(m)
    assert [(r["doc_id"], r["text"]) for r in read(str(tmp_path / "lake"))[0]] == [("1", "fine"), ("5", "café crème")]
    assert m["quarantine_reasons"] == {"invalid_encoding": 1, "malformed_row": 3}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.csv", b"id,body\n1,hello\n", "no text column 'text'"),
        ("x.parquet", b"PAR1 this is not really parquet", "not a readable Parquet file"),
        ("x.jsonl", b"id,text\n1,hello\n", "line 1 is not valid JSON"),
        ("x.csv.gz", b"not gzip at all", "cannot read as csv"),
        ("x.xlsx", b"whatever", "unknown file type '.xlsx'"),
        ("x.csv", b"", "cannot read as csv"),
    ],
)
def test_unreadable_file_fails_with_one_line_and_writes_nothing(tmp_path: Path, name: str, content: bytes,
                                                                message: str) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    with pytest.raises(InputFileError) as info:
        ingest(Lake(str(tmp_path / "lake")), labeled(sources=(str(src),)))
    assert str(src) in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "lake").exists() or not any(p.is_file() for p in (tmp_path / "lake").rglob("*"))


def test_truncated_parquet_fails_and_keeps_previous_partition(tmp_path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "good.parquet")
    lake = Lake(str(tmp_path / "lake"))
    ingest(lake, labeled(sources=(str(tmp_path / "good.parquet"),)))
    data = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="cut.parquet"):
        ingest(lake, labeled(sources=(str(tmp_path / "cut.parquet"),)))
    assert len(read(lake)[0]) == 50


def test_failure_in_second_file_writes_nothing(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [("1", "ok", "a")])
    (tmp_path / "b.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    with pytest.raises(InputFileError, match="b.parquet"):
        ingest(Lake(str(tmp_path / "lake")), labeled(sources=(str(tmp_path / "a.csv"), str(tmp_path / "b.parquet"))))
    assert Lake(str(tmp_path / "lake")).list_partitions("datasets/labeled") == []


def test_unterminated_quote_is_a_malformed_row(tmp_path: Path) -> None:
    (tmp_path / "q.csv").write_bytes(b'id,text,label\n1,fine,a\n2,"unterminated quote,a\n')
    m = ingest(Lake(str(tmp_path / "lake")), labeled(sources=(str(tmp_path / "q.csv"),))).manifest
    assert (m["rows"], m["quarantine_reasons"]) == (1, {"malformed_row": 1})


def test_csv_reading_leaves_the_unraisable_hook_alone_between_batches(tmp_path: Path) -> None:
    # The hook that turns pyarrow's undecodable malformed rows into a clear error is swapped only
    # while pyarrow parses: the consumer of a batch, and the process after the read, see their own.
    import sys

    from textclf.ingest.sources import ColumnNames, SourceReader

    write_csv(tmp_path / "a.csv", [(str(i), f"text {i}", "a") for i in range(50)])
    (tmp_path / "bad.csv").write_bytes(b"id,text,label\n1,ok,a\n2,bad \xff,a,extra\n")
    own = sys.unraisablehook
    reader = SourceReader(str(tmp_path / "a.csv"), ColumnNames(), want_labels=True, batch_rows=10)
    for batch in reader.batches():
        assert sys.unraisablehook is own and batch.num_rows == 10
    with pytest.raises(InputFileError, match="has the wrong number of fields and is not valid UTF-8"):
        list(SourceReader(str(tmp_path / "bad.csv"), ColumnNames(), want_labels=True).batches())
    assert sys.unraisablehook is own


def test_explicit_id_column_must_exist(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [("1", "ok", "a")])
    with pytest.raises(InputFileError, match="no id column 'doc'"):
        ingest(Lake(str(tmp_path / "lake")),
               labeled(id_col="doc", id_col_required=True, sources=(str(tmp_path / "a.csv"),)))


def test_missing_source_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        ingest(Lake(str(tmp_path / "lake")), labeled(sources=(str(tmp_path / "nope.csv"),)))


def test_rerun_replaces_partition_and_quarantine(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    src = tmp_path / "dirty.csv"
    src.write_bytes(DIRTY_CSV)
    ingest(lake, labeled(sources=(str(src),)))
    write_csv(tmp_path / "clean.csv", [("x", "only row", "a")])
    m = ingest(lake, labeled(sources=(str(tmp_path / "clean.csv"),))).manifest
    data, rejects = read(lake)
    assert [r["doc_id"] for r in data] == ["x"] and rejects == [] and m["input_rows"] == 1


@pytest.mark.s3
def test_ingest_from_and_to_real_s3(tmp_path: Path, s3_lake: str) -> None:
    src = tmp_path / "dirty.csv"
    src.write_bytes(DIRTY_CSV)
    lake = Lake(s3_lake)
    lake.write_bytes("landing/dirty.csv", src.read_bytes())
    result = ingest(lake, labeled(max_text_chars=50, sources=(f"{s3_lake}/landing/dirty.csv",)))
    assert result.dataset_uri.startswith("s3://")
    assert_counts_add_up(result.manifest)
    assert result.manifest["rows"] == 5
    data, rejects = read(lake)
    assert len(data) == 5 and len(rejects) == result.manifest["quarantined_rows"]
    dataset_table(lake, "labeled").verify(DATE)
