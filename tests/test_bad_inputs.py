"""The bad-input catalogue: every case goes through the real ingest and ends in a clear error or a counted quarantine.

``CASES`` is the catalogue. Each case names a file under ``tests/fixtures/bad_inputs/`` (or one built in
``tmp_path`` when it is too large to commit), the dataset kind, and what a user must get:

- ``error``: ``InputFileError`` with one line naming the file and the problem, and no partition committed;
- ``quarantine``: the bad rows in ``quarantine/{kind}/ingest_date=D/rejects.parquet`` with their reason,
  the good rows in the dataset, and ``rows + quarantined_rows + duplicates_removed == input_rows``;
- ``ingested``: every row kept (exact duplicates removed), nothing quarantined.

``docs/bad_inputs.md`` holds the same table (``render_table``); a test keeps the two in step.
"""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from textclf.config import IngestConfig
from textclf.errors import InputFileError
from textclf.ingest.stage import ingest
from textclf.lake import Lake
from textclf.lake.tables import dataset_table, quarantine_table

pytestmark = pytest.mark.data

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bad_inputs"
DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
TEXTCLF = str(Path(sys.executable).with_name("textclf"))
DATE = "2026-11-21"
LIMIT = IngestConfig(kind="labeled", date=DATE).max_text_chars  # the default --max-text-chars
HUGE_BYTES = 50 * 1024 * 1024

ERROR, QUARANTINE, INGESTED = "error", "quarantine", "ingested"


@dataclass(frozen=True)
class Case:
    name: str
    file: str  # a fixture in tests/fixtures/bad_inputs/, or "(generated) ..." for one built at test time
    kind: str
    outcome: str  # ERROR, QUARANTINE or INGESTED
    gets: str  # what the user gets, in words (the docs table)
    error: str = ""  # ERROR: a fragment the one-line message must hold, besides the file name
    rows: int = 0  # rows kept in the dataset
    reasons: dict[str, int] = field(default_factory=dict)  # quarantine reasons and their counts
    duplicates: int = 0  # exact duplicates removed


CASES = [
    Case("empty_csv", "empty.csv", "labeled", ERROR,
         "a 0-byte CSV is refused: `cannot read as csv: Empty CSV file`",
         error="cannot read as csv: Empty CSV file"),
    Case("empty_jsonl", "empty.jsonl", "labeled", ERROR,
         "a 0-byte JSON Lines file is refused: `file holds no JSON objects`", error="file holds no JSON objects"),
    Case("header_only", "header_only.csv", "labeled", INGESTED,
         "an empty partition is committed (0 rows, every count 0): a valid file with no records"),
    Case("wrong_delimiter_semicolon", "semicolon_delimited.csv", "labeled", ERROR,
         "refused: no text column; the message says the header is one column holding `';'` and asks whether "
         "the file is `';'`-separated", error="is the file ';'-separated?"),
    Case("wrong_delimiter_tsv_with_commas", "comma_separated.tsv", "labeled", ERROR,
         "refused the same way: `is the file ','-separated?`", error="is the file ','-separated?"),
    Case("quoted_newlines", "quoted_newlines.csv", "labeled", INGESTED,
         "valid CSV: quoted fields spanning lines (LF, CRLF, a blank line) are one record each; every newline "
         "becomes one space; doubled quotes and commas inside quotes are kept", rows=3),
    Case("utf8_bom_csv", "utf8_bom.csv", "labeled", INGESTED,
         "the BOM is skipped; the header and the first id are read without it", rows=2),
    Case("utf8_bom_jsonl", "utf8_bom.jsonl", "labeled", INGESTED,
         "the BOM before the first object is skipped (it used to refuse the whole file)", rows=2),
    Case("windows_1252", "windows_1252.csv", "labeled", INGESTED,
         "Windows-1252 text (é, curly quotes, en dash, €) is repaired to the right characters", rows=2),
    Case("mixed_encodings", "mixed_encodings.csv", "labeled", QUARANTINE,
         "UTF-8 and Windows-1252 rows are kept (and read the same); bytes undefined in Windows-1252 or decoding "
         "to control characters are `invalid_encoding`, with the original bytes in `raw_bytes`",
         rows=3, reasons={"invalid_encoding": 2}),
    Case("invalid_utf8_in_id_and_label", "bad_label_encoding.csv", "labeled", QUARANTINE,
         "ids and labels are decoded like the text: a Windows-1252 label is repaired, undecodable ones are "
         "`invalid_encoding` naming the column (this used to crash with ArrowInvalid)",
         rows=2, reasons={"invalid_encoding": 2}),
    Case("malformed_row_not_utf8", "malformed_row_not_utf8.csv", "labeled", ERROR,
         "refused: a row with the wrong number of fields that is also not UTF-8 cannot be quarantined (the CSV "
         "parser cannot hand it over); the message says so and shows the row (it used to print a traceback)",
         error="has the wrong number of fields and is not valid UTF-8"),
    Case("binary_file_named_csv", "binary_garbage.csv", "labeled", ERROR,
         "a binary file (PNG header, random bytes) named .csv is refused with `cannot read as csv: ...`",
         error="cannot read as csv"),
    Case("nul_bytes_csv", "nul_bytes.csv", "labeled", QUARANTINE,
         "NUL bytes are removed from the text (rule 4); a text of NULs only is `empty_text`",
         rows=2, reasons={"empty_text": 1}),
    Case("nul_bytes_jsonl", "nul_bytes.jsonl", "labeled", QUARANTINE,
         "an escaped `\\u0000` is removed; a raw NUL inside a JSON string is not valid JSON: `malformed_row`",
         rows=1, reasons={"malformed_row": 1, "empty_text": 1}),
    Case("ragged_rows", "ragged_rows.csv", "labeled", QUARANTINE,
         "rows with too many or too few fields are `malformed_row` with the raw line; the others are kept",
         rows=2, reasons={"malformed_row": 2}),
    Case("unterminated_quote", "unterminated_quote.csv", "labeled", QUARANTINE,
         "a quote never closed swallows the rest of the file into one `malformed_row`", rows=1,
         reasons={"malformed_row": 1}),
    Case("huge_document_jsonl", "(generated) 50 MB single document, JSON Lines", "labeled", QUARANTINE,
         f"the 50 MB document is `text_too_long` (limit {LIMIT:,} characters, its length in `detail`); the "
         "other document is kept", rows=1, reasons={"text_too_long": 1}),
    Case("huge_document_csv", "(generated) 50 MB single document, CSV", "labeled", ERROR,
         "refused: a CSV record over the reader's 8 MiB block cannot be parsed; the message says so and "
         "suggests JSON Lines, where it would be `text_too_long`", error="is longer than 8 MiB"),
    Case("long_lines_at_limit", "(generated) lines of 100,000 and 100,001 characters", "labeled", QUARANTINE,
         f"a text of exactly {LIMIT:,} characters is kept whole; one character more is `text_too_long`",
         rows=1, reasons={"text_too_long": 1}),
    Case("missing_text_column", "missing_text_column.csv", "labeled", ERROR,
         "refused: `no text column 'text' (columns: id, body, label); pass --text-col`",
         error="no text column 'text' (columns: id, body, label); pass --text-col"),
    Case("missing_label_column", "missing_label_column.csv", "labeled", ERROR,
         "labeled data without a label column is refused: `no label column 'label'`",
         error="no label column 'label'"),
    Case("extra_columns", "extra_columns.csv", "labeled", INGESTED,
         "extra columns are ignored (never parsed, even with odd bytes); the dataset has the standard columns",
         rows=2),
    Case("numeric_labels_csv", "numeric_labels.csv", "labeled", INGESTED,
         "CSV labels are strings exactly as written (trimmed): `01` and `2.0` stay distinct from `1` and `2`",
         rows=5),
    Case("numeric_labels_jsonl", "numeric_labels.jsonl", "labeled", INGESTED,
         "JSON numbers and booleans become strings: `1` and `\"1\"` are one class, `2.0` is `2`, `true` is "
         "`true` (it used to be Python's `True`)", rows=5),
    Case("numeric_labels_parquet", "(generated) Parquet with int64 ids and labels", "labeled", INGESTED,
         "int64 labels (and ids) become strings: `1`, `10`", rows=3),
    Case("label_whitespace_and_case", "label_variants.csv", "labeled", INGESTED,
         "labels are trimmed (` sports`, `sports ` are `sports`, so a repeat differing only there is an exact "
         "duplicate) but case is kept: `Sports` and `SPORTS` are separate classes", rows=6, duplicates=1),
    Case("unseen_label_at_scoring", "unseen_label_unlabeled.csv", "unlabeled", INGESTED,
         "unlabeled data never reads the label column: a class the model never saw (or an empty label) changes "
         "nothing; the partition has no `label` column, so scoring cannot see it", rows=2),
    Case("duplicate_ids_same_text", "duplicate_ids_same_text.csv", "labeled", INGESTED,
         "exact repeats (same id, label and normalised text, markup and spacing included) are "
         "`duplicates_removed`, not quarantined", rows=3, duplicates=2),
    Case("duplicate_ids_different_text", "duplicate_ids_different_text.csv", "labeled", QUARANTINE,
         "same id and label, other text: later rows are `duplicate_id`; same id, other label: every row of that "
         "id is `conflicting_label`", rows=2, reasons={"duplicate_id": 1, "conflicting_label": 4}),
    Case("missing_ids_csv", "missing_ids.csv", "labeled", QUARANTINE,
         "an empty, blank or quoted-empty id is `missing_id`", rows=1, reasons={"missing_id": 3}),
    Case("missing_ids_jsonl", "missing_ids.jsonl", "labeled", QUARANTINE,
         "`null`, an absent `id` key and `\"\"` are `missing_id`", rows=1, reasons={"missing_id": 3}),
    Case("jsonl_broken_lines", "broken_line.jsonl", "labeled", QUARANTINE,
         "a cut-off line, a JSON array and a numeric text are `malformed_row` with their line numbers; the blank "
         "line is skipped, not counted", rows=2, reasons={"malformed_row": 3}),
    Case("jsonl_broken_first_line", "broken_first_line.jsonl", "labeled", ERROR,
         "a first line that is not JSON means the file is not JSON Lines: refused, `line 1 is not valid JSON`",
         error="line 1 is not valid JSON"),
    Case("truncated_parquet", "(generated) the first 60% of a Parquet file", "labeled", ERROR,
         "refused: `not a readable Parquet file (truncated or another format)`",
         error="not a readable Parquet file (truncated or another format)"),
    Case("parquet_text_int64", "(generated) Parquet whose text column is int64", "labeled", ERROR,
         "refused: `text column 'text' holds int64, not text; pass --text-col` (it used to cast 42 to \"42\")",
         error="text column 'text' holds int64, not text"),
    Case("parquet_text_binary", "(generated) Parquet whose text column is binary", "labeled", QUARANTINE,
         "a binary text column is decoded like CSV bytes: UTF-8 and Windows-1252 kept, the rest "
         "`invalid_encoding`", rows=2, reasons={"invalid_encoding": 1}),
    Case("gz_not_gzip", "not_gzip.csv.gz", "labeled", ERROR,
         "refused: `cannot read as csv: zlib inflate failed: incorrect header check`",
         error="cannot read as csv: zlib inflate failed"),
    Case("gz_truncated", "truncated.csv.gz", "labeled", ERROR,
         "refused after reading part of it (`Truncated compressed stream`); the rows read before are not "
         "committed", error="Truncated compressed stream"),
    Case("directory_not_file", "(generated) a directory named like a CSV file", "labeled", ERROR,
         "refused: `is not a file`", error="is not a file"),
    Case("emoji_only", "emoji_only.jsonl", "labeled", INGESTED,
         "emoji are text: kept, with skin tones, flags, variation selectors and the zero-width joiners "
         "that make a family one emoji", rows=2),
    Case("html_only", "html_only.csv", "labeled", QUARANTINE,
         "tags are stripped, so markup-only, comment-only and `&nbsp;`-only texts are `empty_text`; escaped "
         "markup (`&lt;script&gt;`) survives as literal text", rows=2, reasons={"empty_text": 3}),
    Case("rtl_and_mixed_scripts", "rtl_mixed_scripts.jsonl", "labeled", INGESTED,
         "Hebrew, Arabic with vowel marks, Persian with its zero-width non-joiner, Greek, Devanagari, CJK "
         "and Hangul are kept as written, in NFC (a decomposed `é` is composed)", rows=5),
    Case("windows_line_endings", "windows_line_endings.csv", "labeled", INGESTED,
         "CRLF line ends: no `\\r` left in ids, texts or labels", rows=2),
    Case("old_mac_line_endings", "old_mac_line_endings.csv", "labeled", INGESTED,
         "CR-only line ends are record ends too", rows=2),
]
BY_NAME = {case.name: case for case in CASES}


# -- sources built at test time -----------------------------------------------------------------------
def _huge_document(path: Path, head: bytes, tail: bytes) -> int:
    """Write head + a 50 MB text + tail in 1 MB pieces (never held whole); the text's length in characters."""
    piece = b"lorem ipsum dolor sit amet " * 38_836  # about 1 MB, ASCII
    written = 0
    with open(path, "wb") as fh:
        fh.write(head)
        while written < HUGE_BYTES:
            fh.write(piece)
            written += len(piece)
        fh.write(tail)
    return written


def _huge_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "huge_document.jsonl"
    _huge_document(path, b'{"id": "huge", "label": "a", "text": "',
                   b'"}\n{"id": "small", "text": "a normal document", "label": "b"}\n')
    return path


def _huge_csv(tmp_path: Path) -> Path:
    path = tmp_path / "huge_document.csv"
    _huge_document(path, b"id,text,label\nhuge,", b",a\nsmall,a normal document,b\n")
    return path


def _long_lines(tmp_path: Path) -> Path:
    path = tmp_path / "long_lines.csv"
    path.write_text(f"id,text,label\nat_limit,{'x' * LIMIT},a\nover_limit,{'y' * (LIMIT + 1)},a\n")
    return path


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "looks_like_a_file.csv"
    path.mkdir()
    return path


def _parquet(tmp_path: Path, name: str, table: pa.Table) -> Path:
    # Parquet fixtures are built here rather than committed: no binary data files in the repository.
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def _numeric_labels_parquet(tmp_path: Path) -> Path:
    return _parquet(tmp_path, "numeric_labels.parquet",
                    pa.table({"id": [1, 2, 3], "text": ["alpha", "beta", "gamma"], "label": [1, 10, 1]}))


def _text_int64_parquet(tmp_path: Path) -> Path:
    return _parquet(tmp_path, "text_int64.parquet",
                    pa.table({"id": ["t1", "t2"], "text": [42, 7], "label": ["a", "b"]}))


def _text_binary_parquet(tmp_path: Path) -> Path:
    texts = pa.array([b"binary utf-8 caf\xc3\xa9", b"caf\xe9 cp1252", b"\x81\x8d bad"], pa.binary())
    return _parquet(tmp_path, "text_binary.parquet", pa.table({"id": ["t1", "t2", "t3"], "text": texts,
                                                               "label": ["a", "b", "a"]}))


def _truncated_parquet(tmp_path: Path) -> Path:
    path = _parquet(tmp_path, "truncated.parquet",
                    pa.table({"id": [f"p{i}" for i in range(50)], "text": [f"document {i}" for i in range(50)],
                              "label": ["a", "b"] * 25}))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


GENERATED: dict[str, Callable[[Path], Path]] = {
    "numeric_labels_parquet": _numeric_labels_parquet,
    "truncated_parquet": _truncated_parquet,
    "parquet_text_int64": _text_int64_parquet,
    "parquet_text_binary": _text_binary_parquet,
    "huge_document_jsonl": _huge_jsonl,
    "huge_document_csv": _huge_csv,
    "long_lines_at_limit": _long_lines,
    "directory_not_file": _directory,
}


def source_of(case: Case, tmp_path: Path) -> Path:
    return GENERATED[case.name](tmp_path) if case.name in GENERATED else FIXTURES / case.file


# -- what a user checks after an ingest -----------------------------------------------------------------
@dataclass
class Outcome:
    source: Path
    manifest: dict
    data: list[dict]
    rejects: list[dict]

    def texts(self) -> dict[str, str]:
        return {r["doc_id"]: r["text"] for r in self.data}

    def labels(self) -> dict[str, str]:
        return {r["doc_id"]: r["label"] for r in self.data}

    def rejected(self, reason: str) -> list[dict]:
        return [r for r in self.rejects if r["reason"] == reason]


def assert_nothing_committed(lake_dir: Path, kind: str) -> None:
    lake = Lake(str(lake_dir))
    assert dataset_table(lake, kind).snapshot() is None and quarantine_table(lake, kind).snapshot() is None
    assert not [p for p in lake_dir.rglob("*") if p.is_file()]  # the refused run's files were removed
    assert not list(lake_dir.rglob("*.parquet"))  # not even staged files are left behind


def assert_clean_text(text: str) -> None:
    """What the normalisation rules promise for every kept text."""
    assert text and text == text.strip(" ")
    assert unicodedata.is_normalized("NFC", text)
    assert not any(unicodedata.category(c) == "Cc" for c in text)
    assert not any(c in text for c in "\u200b\u2060\ufeff\u00ad")
    assert "  " not in text


CHECKS: dict[str, Callable[[Outcome], None]] = {}


def check(name: str) -> Callable[[Callable[[Outcome], None]], Callable[[Outcome], None]]:
    assert name in BY_NAME, name

    def register(fn: Callable[[Outcome], None]) -> Callable[[Outcome], None]:
        CHECKS[name] = fn
        return fn

    return register


@check("header_only")
def _(o: Outcome) -> None:
    assert o.data == [] and o.rejects == [] and o.manifest["input_rows"] == 0
    assert o.manifest["sources"][0]["input_rows"] == 0


@check("quoted_newlines")
def _(o: Outcome) -> None:
    assert o.texts() == {"q1": "First line second line",
                         "q2": 'Windows line ending, a "quoted" word and a comma',
                         "q3": "Blank line below and text after it"}
    assert [r["source_row"] for r in o.data] == [1, 2, 3]
    assert o.labels() == {"q1": "billing", "q2": "shipping", "q3": "billing"}


@check("utf8_bom_csv")
def _(o: Outcome) -> None:
    assert o.texts() == {"b1": "Grüße aus Köln", "b2": "plain ascii row"}


@check("utf8_bom_jsonl")
def _(o: Outcome) -> None:
    assert o.texts() == {"j1": "Grüße aus Köln", "j2": "second line"}


@check("windows_1252")
def _(o: Outcome) -> None:
    assert o.texts() == {"w1": "Café \u201ccrème\u201d \u2013 5 \u20ac", "w2": "naïve façade"}


@check("mixed_encodings")
def _(o: Outcome) -> None:
    assert o.texts() == {"m1": "naïve façade in UTF-8", "m2": "naïve façade in Windows-1252",
                         "m5": "ordinary text"}
    raw = {r["id"]: r["raw_bytes"] for r in o.rejected("invalid_encoding")}
    assert raw == {"m3": b"\x81\x8d\xfe\xff random bytes", "m4": b"\xe9\x01\x02 latin-1 with controls"}
    assert all(line.split(b",")[1] in raw.values() for line in o.source.read_bytes().splitlines()
               if line.startswith((b"m3,", b"m4,")))  # the bytes are the file's own


@check("invalid_utf8_in_id_and_label")
def _(o: Outcome) -> None:
    assert o.labels() == {"l2": "résumé", "l4": "a"}
    by_text = {r["text"]: r for r in o.rejected("invalid_encoding")}
    assert by_text["fine text"]["label"] == "\\x81\\x8dlabel" and "column 'label'" in by_text["fine text"]["detail"]
    assert by_text["third text"]["id"] == "l\\x8f3" and "column 'id'" in by_text["third text"]["detail"]


@check("nul_bytes_csv")
def _(o: Outcome) -> None:
    assert o.texts() == {"n1": "hello world", "n3": "trailing nul"}
    assert [r["id"] for r in o.rejected("empty_text")] == ["n2"]


@check("nul_bytes_jsonl")
def _(o: Outcome) -> None:
    assert o.texts() == {"n1": "escaped nul"}
    bad = o.rejected("malformed_row")[0]
    assert bad["source_row"] == 2 and "Invalid control character" in bad["detail"] and "raw \x00 nul" in bad["text"]
    assert [r["id"] for r in o.rejected("empty_text")] == ["n3"]


@check("ragged_rows")
def _(o: Outcome) -> None:
    assert o.texts() == {"g1": "fine", "g4": "also fine"}
    assert sorted((r["text"], r["detail"]) for r in o.rejected("malformed_row")) == [
        ("g2,too,many,fields,a", "expected 3 fields, found 5"), ("g3,too few", "expected 3 fields, found 2")]


@check("unterminated_quote")
def _(o: Outcome) -> None:
    assert o.texts() == {"u1": "fine"}
    assert "this quote is never closed" in o.rejected("malformed_row")[0]["text"]


@check("huge_document_jsonl")
def _(o: Outcome) -> None:
    assert o.texts() == {"small": "a normal document"}
    (huge,) = o.rejected("text_too_long")
    chars = len(huge["text"])  # the original text is kept whole in the quarantine
    assert chars >= HUGE_BYTES and huge["id"] == "huge"
    assert huge["detail"] == f"{chars} characters > limit {LIMIT}"


@check("long_lines_at_limit")
def _(o: Outcome) -> None:
    assert o.texts() == {"at_limit": "x" * LIMIT}
    (over,) = o.rejected("text_too_long")
    assert over["id"] == "over_limit" and over["detail"] == f"{LIMIT + 1} characters > limit {LIMIT}"


@check("extra_columns")
def _(o: Outcome) -> None:
    assert list(o.data[0]) == ["doc_id", "text", "label", "source_file", "source_row"]
    assert o.texts() == {"x1": "the body text", "x2": "second body"}
    assert o.labels() == {"x1": "news", "x2": "sport"}


@check("numeric_labels_csv")
def _(o: Outcome) -> None:
    assert o.labels() == {"1": "1", "2": "2", "3": "01", "4": "2.0", "5": "3"}


@check("numeric_labels_jsonl")
def _(o: Outcome) -> None:
    assert o.labels() == {"1": "1", "2": "2", "3": "2.5", "4": "true", "5": "1"}


@check("numeric_labels_parquet")
def _(o: Outcome) -> None:
    assert o.labels() == {"1": "1", "2": "10", "3": "1"}


@check("label_whitespace_and_case")
def _(o: Outcome) -> None:
    assert o.labels() == {"v1": "sports", "v2": "sports", "v3": "sports", "v4": "Sports", "v5": "SPORTS",
                          "v6": "sports"}
    assert set(o.labels().values()) == {"sports", "Sports", "SPORTS"}


@check("unseen_label_at_scoring")
def _(o: Outcome) -> None:
    assert all("label" not in r for r in o.data)
    assert o.texts() == {"s1": "a document to score", "s2": "another one"}


@check("duplicate_ids_same_text")
def _(o: Outcome) -> None:
    assert o.texts() == {"d1": "exact copy", "d2": "Hello world", "d3": "unique"}


@check("duplicate_ids_different_text")
def _(o: Outcome) -> None:
    assert o.texts() == {"c1": "first text", "c4": "unrelated"}
    assert [(r["id"], r["text"]) for r in o.rejected("duplicate_id")] == [("c1", "second text")]
    assert sorted((r["id"], r["label"]) for r in o.rejected("conflicting_label")) == [
        ("c2", "a"), ("c2", "b"), ("c3", "a"), ("c3", "b")]


@check("missing_ids_csv")
def _(o: Outcome) -> None:
    assert o.texts() == {"k4": "has an id"}
    assert sorted(r["text"] for r in o.rejected("missing_id")) == ["blank id", "no id at all", "quoted empty id"]


@check("missing_ids_jsonl")
def _(o: Outcome) -> None:
    assert o.texts() == {"k4": "has an id"}
    assert sorted(r["text"] for r in o.rejected("missing_id")) == ["empty id", "no id key", "null id"]


@check("jsonl_broken_lines")
def _(o: Outcome) -> None:
    assert [(r["doc_id"], r["source_row"]) for r in o.data] == [("1", 1), ("5", 6)]
    assert sorted(r["source_row"] for r in o.rejected("malformed_row")) == [2, 3, 5]


@check("parquet_text_binary")
def _(o: Outcome) -> None:
    assert o.texts() == {"t1": "binary utf-8 café", "t2": "café cp1252"}
    assert o.rejected("invalid_encoding")[0]["raw_bytes"] == b"\x81\x8d bad"


@check("emoji_only")
def _(o: Outcome) -> None:
    written = {r["id"]: r["text"] for r in map(json.loads, o.source.read_text(encoding="utf-8").splitlines())}
    assert o.texts()["e1"] == written["e1"]
    assert o.texts()["e2"] == written["e2"] == "\U0001f468\u200d\U0001f469\u200d\U0001f467"


@check("html_only")
def _(o: Outcome) -> None:
    assert o.texts() == {"h4": "Only this survives", "h5": "<script> shown as text"}
    assert sorted(r["id"] for r in o.rejected("empty_text")) == ["h1", "h2", "h3"]


@check("rtl_and_mixed_scripts")
def _(o: Outcome) -> None:
    written = {r["id"]: r["text"] for r in map(json.loads, o.source.read_text(encoding="utf-8").splitlines())}
    assert o.texts() == {k: unicodedata.normalize("NFC", v) for k, v in written.items()}
    assert "Café" in o.texts()["r4"] and "e\u0301" in written["r4"]
    assert "\u200c" in o.texts()["r5"]  # Persian "mikhaham" keeps its non-joiner


@check("windows_line_endings")
def _(o: Outcome) -> None:
    assert o.texts() == {"c1": "crlf row", "c2": "another crlf row"} and o.labels() == {"c1": "a", "c2": "b"}


@check("old_mac_line_endings")
def _(o: Outcome) -> None:
    assert o.texts() == {"m1": "cr only row", "m2": "another cr row"} and o.labels() == {"m1": "a", "m2": "b"}


# -- the tests ----------------------------------------------------------------------------------------
def test_catalogue_is_consistent() -> None:
    assert len(CASES) >= 25 and len(BY_NAME) == len(CASES)
    for case in CASES:
        generated = case.file.startswith("(generated)")
        assert generated == (case.name in GENERATED), case.name
        if not generated:
            assert (FIXTURES / case.file).is_file(), case.file
        assert (case.outcome == ERROR) == bool(case.error), case.name
        assert (case.outcome == QUARANTINE) == bool(case.reasons), case.name
        assert case.outcome == ERROR or case.name in CHECKS, f"{case.name} has no content check"
    committed = {p.name for p in FIXTURES.iterdir()}
    assert committed == {c.file for c in CASES if c.name not in GENERATED}  # no orphan fixtures
    assert max(p.stat().st_size for p in FIXTURES.iterdir()) < 50_000


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    source = source_of(case, tmp_path)
    lake_dir = tmp_path / "lake"
    config = IngestConfig(kind=case.kind, date=DATE)
    if case.outcome == ERROR:
        with pytest.raises(InputFileError) as info:
            ingest(Lake(str(lake_dir)), config.replaced(sources=(str(source),)))
        message = str(info.value)
        assert message.startswith(f"{source}: ") and case.error in message
        assert "\n" not in message and "Traceback" not in message
        assert_nothing_committed(lake_dir, case.kind)
        return

    result = ingest(Lake(str(lake_dir)), config.replaced(sources=(str(source),)))
    m = result.manifest
    assert m["rows"] + m["quarantined_rows"] + m["duplicates_removed"] == m["input_rows"]
    assert (m["rows"], m["quarantine_reasons"], m["duplicates_removed"]) == (case.rows, case.reasons, case.duplicates)
    lake = Lake(str(lake_dir))
    dataset_table(lake, case.kind).verify(DATE)
    data = dataset_table(lake, case.kind).read(DATE).to_pylist()
    rejects = quarantine_table(lake, case.kind).read(DATE).to_pylist()
    assert len(data) == m["rows"] and len(rejects) == m["quarantined_rows"]
    assert quarantine_table(lake, case.kind).verify(DATE)["rows"] == m["quarantined_rows"]
    assert Counter(r["reason"] for r in rejects) == Counter(case.reasons)
    assert all(r["source_file"] == str(source) and r["detail"] for r in rejects)
    assert all(r["doc_id"] and r["source_file"] == str(source) for r in data)
    for row in data:
        assert_clean_text(row["text"])
    CHECKS[case.name](Outcome(source, m, data, rejects))


@pytest.mark.parametrize("name", ["gz_truncated", "malformed_row_not_utf8"])
def test_refusal_mid_file_keeps_the_previous_partition(name: str, tmp_path: Path) -> None:
    """Rows read before the problem showed up are not committed; the date's earlier partition stays whole."""
    lake = Lake(str(tmp_path / "lake"))
    config = IngestConfig(kind="labeled", date=DATE)
    before = ingest(lake, config.replaced(sources=(str(FIXTURES / "quoted_newlines.csv"),))).manifest
    with pytest.raises(InputFileError):
        ingest(lake, config.replaced(sources=(str(source_of(BY_NAME[name], tmp_path)),)))
    assert dataset_table(lake, "labeled").verify(DATE) == before  # the same snapshot
    assert len(dataset_table(lake, "labeled").read(DATE)) == before["rows"] == 3


@pytest.mark.s3
def test_missing_s3_key_is_a_clear_error(s3_lake: str) -> None:
    """An S3 source key that does not exist: refused, the message names the URI, nothing committed."""
    uri = f"{s3_lake}/landing/labeled/never_uploaded.csv"
    lake = Lake(s3_lake)
    lake.write_bytes("landing/labeled/present.csv", (FIXTURES / "quoted_newlines.csv").read_bytes())
    with pytest.raises(InputFileError) as info:
        ingest(lake, IngestConfig(kind="labeled", date=DATE, sources=(f"{s3_lake}/landing/labeled/present.csv", uri)))
    message = str(info.value)
    assert message.startswith(f"{uri}: ") and "does not exist" in message and "\n" not in message
    assert lake.list_partitions("datasets/labeled") == [] and lake.list_partitions("quarantine/labeled") == []


# The CLI as a user runs it: exit code 3 and one line on stderr for refusals, JSON on stdout otherwise.
CLI_CASES = ["empty_csv", "wrong_delimiter_semicolon", "malformed_row_not_utf8", "parquet_text_int64",
             "invalid_utf8_in_id_and_label"]


@pytest.mark.integration
@pytest.mark.parametrize("name", CLI_CASES)
def test_cli(name: str, tmp_path: Path) -> None:
    case = BY_NAME[name]
    source = source_of(case, tmp_path)
    proc = subprocess.run([TEXTCLF, "ingest", "--lake", str(tmp_path / "lake"), "--kind", case.kind, "--date", DATE,
                           "-q", str(source)], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    if case.outcome == ERROR:
        assert proc.returncode == 3 and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"textclf ingest: error: {source}: ") and case.error in lines[0]
        assert_nothing_committed(tmp_path / "lake", case.kind)
    else:
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert (summary["rows"], summary["quarantine_reasons"]) == (case.rows, case.reasons)


# -- the docs table -----------------------------------------------------------------------------------
def render_table() -> str:
    """The catalogue as the markdown table of docs/bad_inputs.md."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| case | file | kind | outcome | what the user gets |", "|---|---|---|---|---|"]
    for c in CASES:
        file = c.file if c.file.startswith("(generated)") else f"`{c.file}`"
        outcome = c.outcome
        if c.reasons:
            outcome += ": " + ", ".join(f"`{r}` x{n}" for r, n in c.reasons.items())
        if c.duplicates:
            outcome += f" ({c.duplicates} duplicate{'s' if c.duplicates > 1 else ''} removed)"
        lines.append(f"| `{c.name}` | {file} | {c.kind} | {outcome} | {cell(c.gets)} |")
    return "\n".join(lines) + "\n"


def test_docs_table_matches_the_catalogue() -> None:
    assert render_table() in DOC.read_text(encoding="utf-8"), (
        "docs/bad_inputs.md is out of date; paste the output of render_table() into it")


def test_fixtures_are_what_they_claim() -> None:
    """Guard against a fixture silently losing its defect (an editor re-saving it as clean UTF-8, say)."""
    raw = {p.name: p.read_bytes() for p in FIXTURES.iterdir()}
    assert raw["empty.csv"] == b"" and raw["empty.jsonl"] == b""
    assert raw["utf8_bom.csv"].startswith(b"\xef\xbb\xbf") and raw["utf8_bom.jsonl"].startswith(b"\xef\xbb\xbf")
    assert b"\x00" in raw["nul_bytes.csv"] and b"\x00" in raw["nul_bytes.jsonl"]
    assert b"\r\n" in raw["windows_line_endings.csv"] and b"\n" not in raw["old_mac_line_endings.csv"]
    for name in ("windows_1252.csv", "mixed_encodings.csv", "bad_label_encoding.csv", "malformed_row_not_utf8.csv",
                 "binary_garbage.csv"):
        with pytest.raises(UnicodeDecodeError):
            raw[name].decode("utf-8")
    assert b'\r\n' in raw["quoted_newlines.csv"]
    assert raw["truncated.csv.gz"][:2] == b"\x1f\x8b" and raw["not_gzip.csv.gz"][:2] != b"\x1f\x8b"
    assert not any(name.endswith(".parquet") for name in raw)  # built at test time instead
