"""The quarantine: rejected rows with their original content and the reason they were rejected."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from textclf.lake.tables import DateWriter

if TYPE_CHECKING:
    import pyarrow as pa



REASONS = {
    "malformed_row": "the parser could not split the row into fields",
    "invalid_encoding": "text is neither UTF-8 nor unambiguous Windows-1252",
    "text_too_long": "text is longer than the configured limit",
    "empty_text": "text is empty or only whitespace/markup after normalisation",
    "missing_id": "the id column is empty for this row",
    "missing_label": "labeled data without a label",
    "conflicting_label": "the same id appears with different labels",
    "duplicate_id": "the id was already used by a different text",
}


def quarantine_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("reason", pa.string()),
            ("detail", pa.string()),
            ("source_file", pa.string()),
            ("source_row", pa.int64()),
            ("id", pa.string()),
            ("label", pa.string()),
            ("text", pa.string()),  # original text; undecodable bytes shown as \xNN
            ("raw_bytes", pa.binary()),  # original bytes, only for invalid_encoding
        ]
    )


def reject_batch(reason: str, detail: list[str] | str, source_files: Any, rows: Any, ids: Any = None,
                 labels: Any = None, texts: Any = None, raw_bytes: Any = None) -> pa.RecordBatch:
    """Quarantine rows in the quarantine schema; scalars (reason, detail, source) are repeated."""
    import pyarrow as pa

    n = len(rows)

    def col(values: Any, type_: pa.DataType) -> pa.Array:
        if values is None:
            return pa.nulls(n, type_)
        if isinstance(values, str):
            return pa.array([values] * n, type_)
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        return values.cast(type_) if isinstance(values, pa.Array) else pa.array(values, type_)

    return pa.RecordBatch.from_arrays(
        [col(reason, pa.string()), col(detail, pa.string()), col(source_files, pa.string()), col(rows, pa.int64()),
         col(ids, pa.string()), col(labels, pa.string()), col(texts, pa.string()), col(raw_bytes, pa.binary())],
        schema=quarantine_schema(),
    )


class QuarantineFile:
    """Collects quarantined rows and writes them in row groups of at least ``flush_rows``."""

    def __init__(self, writer: DateWriter, flush_rows: int = 65_536) -> None:
        self.part = writer.parquet("rejects.parquet", quarantine_schema())
        self.writer = writer
        self.reasons: Counter[str] = Counter()
        self.flush_rows = flush_rows
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._buffer.append(batch)
            self._buffered += batch.num_rows
            self.reasons.update(batch.column("reason").to_pylist())
            if self._buffered >= self.flush_rows:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._buffer:
            self.part.write(pa.Table.from_batches(self._buffer, quarantine_schema()))
            self._buffer, self._buffered = [], 0

    def close(self) -> int:
        self._flush()
        return self.writer.close_parquet(self.part).rows or 0
