"""Streaming readers for source files: CSV, TSV, JSON Lines and Parquet, plain or .gz/.zst.

A reader yields ``SourceBatch`` objects of bounded size. Rows the parser cannot
split into fields come back as ``MalformedRow`` so they can be quarantined; a file
that cannot be read at all raises ``InputFileError`` naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textclf.common import first_line
from textclf.errors import InputFileError, StorageError
from textclf.lake import S3Options
from textclf.lake.store import open_source

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
CODECS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
CSV_BLOCK_BYTES = 8 << 20


@dataclass(frozen=True)
class ColumnNames:
    """Which source columns hold the id, the text and the label."""

    id: str = "id"
    text: str = "text"
    label: str = "label"
    id_required: bool = False  # an id column named explicitly must exist


@dataclass
class MalformedRow:
    """A source row that could not be parsed into fields."""

    source_row: int | None
    raw: str
    detail: str


@dataclass
class SourceBatch:
    """Columns of consecutive source rows; ``ids``/``labels`` are None when the file has none."""

    texts: pa.Array
    ids: pa.Array | None
    labels: pa.Array | None
    source_rows: pa.Array
    malformed: list[MalformedRow] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return len(self.texts)


def detect_format(uri: str) -> tuple[str, str | None]:
    """(format, codec) from a file name such as ``x.csv.gz``; raises for unknown extensions."""
    name = posixpath.basename(uri.split("?", 1)[0]).lower()
    stem, ext = posixpath.splitext(name)
    codec = CODECS.get(ext)
    if codec:
        stem, ext = posixpath.splitext(stem)
    fmt = FORMATS.get(ext)
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise InputFileError(
            uri, f"unknown file type {ext or '(none)'!r}; expected one of {known} (optionally .gz or .zst)")
    if fmt == "parquet" and codec:
        raise InputFileError(uri, "compressed Parquet is not supported; Parquet compresses its pages itself")
    return fmt, codec


class SourceReader:
    """Opens one source file and streams it as ``SourceBatch`` objects."""

    def __init__(
        self,
        uri: str,
        columns: ColumnNames,
        want_labels: bool,
        batch_rows: int = 65_536,
        s3: S3Options | None = None,
    ) -> None:
        self.uri = uri
        self.columns = columns
        self.want_labels = want_labels
        self.batch_rows = batch_rows
        self.format, self.codec = detect_format(uri)
        try:
            self.fs, self.path = open_source(uri, s3)
            self.size = self.fs.get_file_info(self.path).size or 0
        except StorageError as exc:
            raise InputFileError(uri, str(exc).removeprefix(f"{uri} ")) from exc
        self._raw: pa.NativeFile | None = None

    @property
    def bytes_read(self) -> int:
        """Bytes of the (compressed) file consumed so far, for progress."""
        if self._raw is None or self._raw.closed:
            return self.size
        try:
            return min(self._raw.tell(), self.size)
        except OSError:
            return 0

    def _open_stream(self) -> pa.NativeFile:
        import pyarrow as pa

        self._raw = self.fs.open_input_stream(self.path, compression=None)
        if self.codec:
            return pa.CompressedInputStream(self._raw, self.codec)
        return self._raw

    def _check_columns(self, present: list[str]) -> dict[str, str | None]:
        """Map roles to present column names, raising for missing required ones."""
        cols = self.columns
        found = ", ".join(present[:12]) + (" ..." if len(present) > 12 else "")
        if cols.text not in present:
            raise InputFileError(
                self.uri, f"no text column {cols.text!r} (columns: {found}); {self._column_hint(present)}")
        if cols.id_required and cols.id not in present:
            raise InputFileError(self.uri, f"no id column {cols.id!r} (columns: {found}); pass --id-col")
        if self.want_labels and cols.label not in present:
            raise InputFileError(self.uri, f"no label column {cols.label!r} (columns: {found}); pass --label-col")
        return {
            "text": cols.text,
            "id": cols.id if cols.id in present else None,
            "label": cols.label if self.want_labels else None,
        }

    def _column_hint(self, present: list[str]) -> str:
        """What to do about a missing text column; a one-column CSV header usually means another delimiter."""
        own = "\t" if self.format == "tsv" else ","
        if self.format in ("csv", "tsv") and len(present) == 1:
            other = next((d for d in (";", "\t", ",", "|") if d != own and d in present[0]), None)
            if other is not None:
                return (f"the header is one column holding {other!r}: is the file {other!r}-separated? "
                        f".csv files must be comma-separated and .tsv files tab-separated")
        return "pass --text-col"

    def batches(self) -> Iterator[SourceBatch]:
        """Stream the file; any read failure becomes a one-line ``InputFileError``."""
        import pyarrow as pa

        reader = {"csv": self._csv, "tsv": self._csv, "jsonl": self._jsonl, "parquet": self._parquet}[self.format]
        try:
            yield from reader()
        except InputFileError:
            raise
        except (pa.ArrowException, OSError, ValueError, EOFError, UnicodeDecodeError) as exc:
            raise InputFileError(self.uri, f"cannot read as {self.format}: {first_line(exc)}") from exc
        finally:
            if self._raw is not None:
                self._raw.close()

    # -- CSV / TSV --------------------------------------------------------------------
    def _csv_options(self, include: list[str] | None) -> tuple[Any, Any, Any, list[MalformedRow]]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        malformed: list[MalformedRow] = []

        def on_invalid(row: Any) -> str:
            malformed.append(
                MalformedRow(
                    row.number,
                    row.text,
                    f"expected {row.expected_columns} fields, found {row.actual_columns}",
                )
            )
            return "skip"

        read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=True)
        parse = pacsv.ParseOptions(
            delimiter="\t" if self.format == "tsv" else ",",
            newlines_in_values=True,
            invalid_row_handler=on_invalid,
        )
        convert = pacsv.ConvertOptions(
            check_utf8=False,
            strings_can_be_null=False,
            include_columns=include,
            column_types={c: pa.string() for c in include or []},
        )
        return read, parse, convert, malformed

    def _csv(self) -> Iterator[SourceBatch]:
        import pyarrow as pa

        undecodable: list[BaseException] = []
        rows_read = [0]
        try:
            yield from self._csv_batches(rows_read, undecodable)
        except pa.ArrowInvalid as exc:
            after = f" after record {rows_read[0]}" if rows_read[0] else ""
            if undecodable:
                raise InputFileError(self.uri, (
                    f"cannot read as {self.format}: a row{after} has the wrong number of fields and is not valid "
                    f"UTF-8, so it cannot be quarantined; fix its quoting or encoding ({first_line(exc)})")) from exc
            if "straddl" in str(exc):
                raise InputFileError(self.uri, (
                    f"cannot read as {self.format}: a record{after} is longer than {CSV_BLOCK_BYTES >> 20} MiB "
                    "(a huge field, or a quote that is never closed); remove or split it, or export the file as "
                    "JSON Lines, where over-long texts are quarantined as text_too_long")) from exc
            raise

    def _csv_batches(self, rows_read: list[int], undecodable: list[BaseException]) -> Iterator[SourceBatch]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        # Open twice: once for the header alone, because pyarrow fixes the selected columns (all
        # read as strings) at open time; unselected columns are then never parsed or type-inferred.
        read, parse, convert, _ = self._csv_options(None)
        with self._open_stream() as stream, _undecodable_rows_caught(undecodable):
            header = pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)
            present = header.schema.names
        roles = self._check_columns(present)
        include = [c for c in roles.values() if c]
        read, parse, convert, malformed = self._csv_options(include)
        row = 0
        with _undecodable_rows_caught(undecodable):
            reader = pacsv.open_csv(self._open_stream(), read_options=read, parse_options=parse,
                                    convert_options=convert)
        while True:
            with _undecodable_rows_caught(undecodable):  # pyarrow parses (and calls on_invalid) only in here
                batch = next(reader, None)
            if batch is None:
                break
            table = pa.Table.from_batches([batch])
            for start in range(0, batch.num_rows, self.batch_rows):
                chunk = table.slice(start, self.batch_rows)
                yield self._make_batch(chunk, roles, row, malformed)
                malformed.clear()
                row += chunk.num_rows
                rows_read[0] = row
            if malformed:
                yield self._make_batch(table.slice(0, 0), roles, row, malformed)
                malformed.clear()
        # rows the parser skipped after the last batch
        if malformed:
            yield self._make_batch(pa.table({c: pa.array([], pa.string()) for c in include}), roles, row, malformed)

    # -- JSON Lines ------------------------------------------------------------------
    def _jsonl(self) -> Iterator[SourceBatch]:
        import pyarrow as pa

        from textclf.ingest.normalize import repair_bytes

        cols = self.columns
        roles: dict[str, str | None] | None = None
        texts: list[Any] = []
        ids: list[Any] = []
        labels: list[Any] = []
        rows: list[int] = []
        malformed: list[MalformedRow] = []
        line_no = 0

        def flush() -> SourceBatch:
            assert roles is not None
            text_type = pa.binary() if any(isinstance(t, bytes) for t in texts) else pa.string()
            batch = SourceBatch(
                texts=pa.array(texts, text_type),
                ids=pa.array(ids, pa.string()) if roles["id"] else None,
                labels=pa.array(labels, pa.string()) if roles["label"] else None,
                source_rows=pa.array(rows, pa.int64()),
                malformed=list(malformed),
            )
            for buf in (texts, ids, labels, rows, malformed):
                buf.clear()
            return batch

        with self._open_stream() as stream:
            for raw_line in _iter_lines(stream):
                line_no += 1
                if line_no == 1 and raw_line.startswith(b"\xef\xbb\xbf"):
                    raw_line = raw_line[3:]  # UTF-8 byte order mark, as Windows tools write it
                if not raw_line.strip():
                    continue
                decoded = repair_bytes(raw_line)
                if decoded is None:
                    # keep the row: its text field is bad bytes; the ingester quarantines it
                    obj = _salvage_jsonl(raw_line)
                    if obj is None:
                        malformed.append(MalformedRow(line_no, raw_line.decode("utf-8", "backslashreplace"),
                                                      "not valid JSON and not valid UTF-8"))
                        continue
                else:
                    try:
                        obj = json.loads(decoded)
                    except json.JSONDecodeError as exc:
                        obj = None
                        problem = f"not valid JSON: {exc.msg} at column {exc.colno}"
                    else:
                        problem = "not a JSON object"
                    if not isinstance(obj, dict):
                        if roles is None:
                            raise InputFileError(self.uri, f"line {line_no} is {problem}; is this JSON Lines?")
                        malformed.append(MalformedRow(line_no, decoded, problem))
                        continue
                if roles is None:
                    roles = self._check_columns(list(obj))
                text = obj.get(cols.text)
                if text is not None and not isinstance(text, (str, bytes)):
                    malformed.append(MalformedRow(line_no, raw_line.decode("utf-8", "backslashreplace"),
                                                  f"field {cols.text!r} is {type(text).__name__}, not a string"))
                    continue
                texts.append(text)
                ids.append(_scalar_str(obj.get(cols.id)) if roles["id"] else None)
                labels.append(_scalar_str(obj.get(cols.label)) if roles["label"] else None)
                rows.append(line_no)
                if len(texts) >= self.batch_rows:
                    yield flush()
        if roles is None:
            raise InputFileError(self.uri, "file holds no JSON objects")
        if texts or malformed:
            yield flush()

    # -- Parquet ---------------------------------------------------------------------
    def _parquet(self) -> Iterator[SourceBatch]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            self._raw = self.fs.open_input_file(self.path)
            pf = pq.ParquetFile(self._raw)
        except (pa.ArrowException, OSError) as exc:
            raise InputFileError(
                self.uri, f"not a readable Parquet file (truncated or another format): {first_line(exc)}") from exc
        roles = self._check_columns(pf.schema_arrow.names)
        text_type = pf.schema_arrow.field(roles["text"]).type
        value_type = text_type.value_type if pa.types.is_dictionary(text_type) else text_type
        if not any(check(value_type) for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                                     pa.types.is_large_binary, pa.types.is_string_view,
                                                     pa.types.is_binary_view, pa.types.is_null)):
            raise InputFileError(
                self.uri, f"text column {roles['text']!r} holds {text_type}, not text; pass --text-col")
        include = [c for c in roles.values() if c]
        row = 0
        for batch in pf.iter_batches(batch_size=self.batch_rows, columns=include):
            yield self._make_batch(pa.Table.from_batches([batch]), roles, row, [])
            row += batch.num_rows

    # -- shared ----------------------------------------------------------------------
    def _make_batch(
        self, table: pa.Table, roles: dict[str, str | None], first_row: int, malformed: list[MalformedRow]
    ) -> SourceBatch:
        import pyarrow as pa

        def column(name: str | None) -> pa.Array | None:
            if name is None:
                return None
            arr = table.column(name).combine_chunks()
            if not (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type) or pa.types.is_large_string(arr.type)
                    or pa.types.is_large_binary(arr.type)):
                arr = arr.cast(pa.string())
            return arr

        n = table.num_rows
        return SourceBatch(
            texts=column(roles["text"]),
            ids=column(roles["id"]),
            labels=column(roles["label"]),
            source_rows=pa.array(range(first_row + 1, first_row + n + 1), pa.int64()),
            malformed=list(malformed),
        )


@contextlib.contextmanager
def _undecodable_rows_caught(caught: list[BaseException]) -> Iterator[None]:
    """While pyarrow parses CSV: collect, instead of printing, the rows it could not hand to ``on_invalid``.

    pyarrow decodes a malformed row as UTF-8 before calling the handler; when that fails it reports
    the exception through ``sys.unraisablehook`` ("Exception ignored in ...") and stops with a parse
    error. That hook is process-wide, so it is swapped only around pyarrow's own calls (open_csv and
    each next batch) and never while the reader's generator is suspended: measured with pyarrow 26,
    the streaming reader runs the handler only inside those calls, never between them.
    """
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, UnicodeDecodeError) and \
                getattr(unraisable.object, "__name__", None) == "on_invalid":
            caught.append(unraisable.exc_value)
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _iter_lines(stream: pafs.NativeFile, chunk_bytes: int = 4 << 20) -> Iterator[bytes]:
    """Split a byte stream into lines without holding more than one chunk."""
    tail = b""
    while True:
        chunk = stream.read(chunk_bytes)
        if not chunk:
            break
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        yield from lines
    if tail:
        yield tail


def _salvage_jsonl(raw_line: bytes) -> dict[str, Any] | None:
    """Parse a JSON line holding invalid UTF-8 by escaping the bad bytes, keeping them as bytes."""
    decoded = raw_line.decode("utf-8", "surrogateescape")
    try:
        obj = json.loads(decoded)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    return {
        k: v.encode("utf-8", "surrogateescape") if isinstance(v, str) and _has_surrogates(v) else v
        for k, v in obj.items()
    }


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in text)


def _scalar_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
