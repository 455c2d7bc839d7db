"""Ingestion: source files in, one zstd Parquet partition plus its quarantine out.

Every input row ends up in exactly one place, and the manifest proves it:
``input_rows == rows + quarantined_rows + duplicates_removed``.

- ``rows``: written to ``datasets/{kind}/ingest_date=D/part-*.parquet``
- ``quarantined_rows``: written to ``quarantine/{kind}/ingest_date=D/rejects.parquet``
  with the original content and a reason (see ``REASONS``)
- ``duplicates_removed``: exact repeats (same id, text and label) of a kept row
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textclf import __version__
from textclf.config import IngestConfig
from textclf.errors import TextclfError
from textclf.progress import NoProgress, Progress
from textclf.sources import ColumnNames, SourceBatch, SourceReader
from textclf.storage import Lake, PartitionWriter

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

log = logging.getLogger(__name__)

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


def dataset_key(kind: str, date: str) -> str:
    return f"datasets/{kind}/ingest_date={date}"


def quarantine_key(kind: str, date: str) -> str:
    return f"quarantine/{kind}/ingest_date={date}"


def dataset_schema(labeled: bool) -> pa.Schema:
    import pyarrow as pa

    fields = [pa.field("doc_id", pa.string(), nullable=False), pa.field("text", pa.string(), nullable=False)]
    if labeled:
        fields.append(pa.field("label", pa.string(), nullable=False))
    fields += [pa.field("source_file", pa.string()), pa.field("source_row", pa.int64())]
    return pa.schema(fields)


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


@dataclass
class IngestResult:
    """What an ingest wrote: URIs and the manifest's counts."""

    dataset_uri: str
    quarantine_uri: str
    manifest: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        keys = ("kind", "ingest_date", "input_rows", "rows", "quarantined_rows", "duplicates_removed",
                "quarantine_reasons")
        return {"dataset": self.dataset_uri, "quarantine": self.quarantine_uri,
                **{k: self.manifest[k] for k in keys}}


@dataclass
class _Hashes:
    """Per kept row: 64-bit hashes of id, content and label, for duplicate detection."""

    id: list[np.ndarray] = field(default_factory=list)
    content: list[np.ndarray] = field(default_factory=list)
    label: list[np.ndarray] = field(default_factory=list)


def _hash_strings(arr: pa.Array) -> np.ndarray:
    import pandas as pd

    return pd.util.hash_array(arr.to_numpy(zero_copy_only=False).astype(object), categorize=False)


class _Rejects:
    """Collects quarantined rows and writes them in batches."""

    def __init__(self, writer: PartitionWriter) -> None:
        self.part = writer.parquet("rejects.parquet", quarantine_schema())
        self.writer = writer
        self.reasons: Counter[str] = Counter()

    def add(self, reason: str, detail: list[str] | str, source_file: str, rows: pa.Array, ids: Any,
            labels: Any, texts: Any, raw_bytes: Any = None, source_files: Any = None) -> None:
        import pyarrow as pa

        n = len(rows)
        if n == 0:
            return
        details = [detail] * n if isinstance(detail, str) else detail

        def col(values: Any, type_: pa.DataType) -> pa.Array:
            if values is None:
                return pa.nulls(n, type_)
            if isinstance(values, pa.ChunkedArray):
                values = values.combine_chunks()
            return values.cast(type_) if isinstance(values, pa.Array) else pa.array(values, type_)

        self.part.write(
            pa.RecordBatch.from_arrays(
                [pa.array([reason] * n, pa.string()), pa.array(details, pa.string()),
                 col(source_files if source_files is not None else [source_file] * n, pa.string()),
                 col(rows, pa.int64()), col(ids, pa.string()), col(labels, pa.string()), col(texts, pa.string()),
                 col(raw_bytes, pa.binary())],
                schema=quarantine_schema(),
            )
        )
        self.reasons[reason] += n

    def close(self) -> int:
        return self.writer.close_parquet(self.part).rows or 0


class _DataFiles:
    """Rolls kept rows over ``part-NNNNN.parquet`` files of at most ``max_rows`` rows."""

    def __init__(self, writer: PartitionWriter, schema: pa.Schema, max_rows: int) -> None:
        self.writer, self.schema, self.max_rows = writer, schema, max_rows
        self.current = None
        self.entries: list = []
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        offset = 0
        while offset < table.num_rows:
            if self.current is None:
                self.current = self.writer.parquet(f"part-{len(self.entries):05d}.parquet", self.schema)
            room = self.max_rows - self.current.rows
            piece = table.slice(offset, room)
            self.current.write(piece)
            offset += piece.num_rows
            self.rows += piece.num_rows
            if self.current.rows >= self.max_rows:
                self._close_current()

    def _close_current(self) -> None:
        self.entries.append(self.writer.close_parquet(self.current))
        self.current = None

    def close(self) -> None:
        if self.current is not None or not self.entries:
            if self.current is None:  # an empty partition still gets one file with the schema
                self.current = self.writer.parquet("part-00000.parquet", self.schema)
            self._close_current()


def _process_batch(
    batch: SourceBatch, source: str, config: IngestConfig, rejects: _Rejects
) -> pa.Table | None:
    """Decode, normalise and check one batch; quarantine bad rows and return the good ones."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from textclf.normalize import decode_array, normalize_text, text_doc_ids

    labeled = config.kind == "labeled"
    for bad in batch.malformed:
        rejects.add("malformed_row", bad.detail, source, pa.array([bad.source_row], pa.int64()), None, None,
                    [bad.raw])
    if batch.num_rows == 0:
        return None

    texts, undecodable = decode_array(batch.texts)
    ids = pc.utf8_trim_whitespace(batch.ids.cast(pa.string())) if batch.ids is not None else None
    labels = pc.utf8_trim_whitespace(batch.labels.cast(pa.string())) if batch.labels is not None else None
    original = pc.if_else(undecodable, pa.nulls(len(texts), pa.string()), texts)
    lengths = pc.fill_null(pc.utf8_length(original), 0)
    too_long = pc.greater(lengths, config.max_text_chars)
    normalized = normalize_text(pc.if_else(too_long, pa.scalar(None, pa.string()), texts))
    empty = pc.fill_null(pc.equal(pc.utf8_length(normalized), 0), True)
    no_id = pc.fill_null(pc.equal(pc.utf8_length(ids), 0), True) if ids is not None else None
    no_label = pc.fill_null(pc.equal(pc.utf8_length(labels), 0), True) if labeled else None

    # First matching reason wins; `taken` marks rows already quarantined.
    checks: list[tuple[str, pa.Array, Any]] = [
        ("invalid_encoding", undecodable, "text bytes are neither UTF-8 nor unambiguous Windows-1252"),
        ("text_too_long", too_long, lambda sel: [f"{n} characters > limit {config.max_text_chars}"
                                                 for n in pc.filter(lengths, sel).to_pylist()]),
        ("empty_text", empty, "text is empty after normalisation"),
    ]
    if no_id is not None:
        checks.append(("missing_id", no_id, f"column {config.id_col!r} is empty"))
    if no_label is not None:
        checks.append(("missing_label", no_label, f"column {config.label_col!r} is empty"))

    taken = pa.array([False] * len(texts)) if len(texts) else pa.array([], pa.bool_())
    for reason, mask, detail in checks:
        sel = pc.and_(mask, pc.invert(taken))
        if not pc.any(sel).as_py():
            continue
        taken = pc.or_(taken, sel)
        raw_bytes = None
        shown = pc.filter(original, sel)
        if reason == "invalid_encoding":
            raw = pc.filter(batch.texts, sel).cast(pa.binary())
            raw_bytes = raw
            shown = pa.array([b.decode("utf-8", "backslashreplace") for b in raw.to_pylist()], pa.string())
        rejects.add(reason, detail(sel) if callable(detail) else detail, source, pc.filter(batch.source_rows, sel),
                    pc.filter(ids, sel) if ids is not None else None,
                    pc.filter(labels, sel) if labels is not None else None, shown, raw_bytes)

    keep = pc.invert(taken)
    kept_text = pc.filter(normalized, keep)
    if len(kept_text) == 0:
        return None
    kept_ids = pc.filter(ids, keep) if ids is not None else text_doc_ids(kept_text)
    columns = {"doc_id": kept_ids, "text": kept_text}
    if labeled:
        columns["label"] = pc.filter(labels, keep)
    columns["source_file"] = pa.array([source] * len(kept_text), pa.string())
    columns["source_row"] = pc.filter(batch.source_rows, keep)
    return pa.table(columns, schema=dataset_schema(labeled))


def find_duplicates(id_hash: np.ndarray, content_hash: np.ndarray, label_hash: np.ndarray) -> dict[int, str]:
    """Row positions to drop, with the reason: ``duplicate``, ``conflicting_label`` or ``duplicate_id``.

    Within each group of rows sharing an id: if the labels differ, every row is a
    conflict; otherwise the first row is kept, later rows with the same content are
    exact duplicates and later rows with other content are ``duplicate_id``.
    """
    import numpy as np

    n = len(id_hash)
    if n < 2:
        return {}
    order = np.argsort(id_hash, kind="stable")
    sorted_ids = id_hash[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    sizes = np.diff(np.r_[starts, n])
    drop: dict[int, str] = {}
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
        group = order[start : start + size]  # ascending positions: stable sort keeps input order
        if len(set(label_hash[group].tolist())) > 1:
            drop.update({int(p): "conflicting_label" for p in group})
            continue
        first_content = content_hash[group[0]]
        for p in group[1:]:
            drop[int(p)] = "duplicate" if content_hash[p] == first_content else "duplicate_id"
    return drop


def ingest(
    lake: Lake | str, sources: list[str], config: IngestConfig, progress: Progress | None = None
) -> IngestResult:
    """Ingest source files into the dataset partition for ``config.date``, replacing it whole."""
    import numpy as np

    lake = lake if isinstance(lake, Lake) else Lake(lake)
    progress = progress or NoProgress()
    if not sources:
        raise TextclfError("no source files given")
    labeled = config.kind == "labeled"
    columns = ColumnNames(config.id_col, config.text_col, config.label_col, config.id_col_required)
    readers = [SourceReader(uri, columns, labeled, config.batch_rows) for uri in sources]
    total_bytes = sum(r.size for r in readers)
    log.info("ingesting %d file(s), %d bytes, into %s", len(readers), total_bytes,
             lake.uri_of(dataset_key(config.kind, config.date)))

    hashes = _Hashes()
    input_rows = 0
    done_bytes = 0
    with lake.partition(quarantine_key(config.kind, config.date)) as qwriter, \
            lake.partition(dataset_key(config.kind, config.date)) as dwriter:
        rejects = _Rejects(qwriter)
        data = _DataFiles(dwriter, dataset_schema(labeled), config.max_rows_per_file)
        progress.start(total_bytes, f"ingest {config.kind}")
        source_stats = []
        for reader in readers:
            file_rows = 0
            for batch in reader.batches():
                file_rows += batch.num_rows + len(batch.malformed)
                table = _process_batch(batch, reader.uri, config, rejects)
                if table is not None:
                    data.write(table)
                    hashes.id.append(_hash_strings(table.column("doc_id")))
                    hashes.content.append(_hash_strings(table.column("text")))
                    hashes.label.append(_hash_strings(table.column("label")) if labeled
                                        else np.zeros(table.num_rows, np.uint64))
                progress.update(done_bytes + reader.bytes_read)
            done_bytes += reader.size
            input_rows += file_rows
            source_stats.append({"uri": reader.uri, "format": reader.format, "compression": reader.codec,
                                 "bytes": reader.size, "input_rows": file_rows})
        progress.close()
        data.close()

        def cat(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0, np.uint64)

        content = cat(hashes.content) ^ (cat(hashes.label) * np.uint64(0x9E3779B97F4A7C15))
        drop = find_duplicates(cat(hashes.id), content, cat(hashes.label))
        duplicates_removed = _remove_rows(dwriter, data, drop, rejects)
        quarantined = rejects.close()
        rows = data.rows - len(drop)
        if rows + quarantined + duplicates_removed != input_rows:
            raise TextclfError(
                f"internal error: counts do not add up ({rows} rows + {quarantined} quarantined + "
                f"{duplicates_removed} duplicates != {input_rows} input rows); nothing was written"
            )
        common = {"kind": config.kind, "ingest_date": config.date, "input_rows": input_rows,
                  "quarantined_rows": quarantined, "duplicates_removed": duplicates_removed,
                  "quarantine_reasons": dict(sorted(rejects.reasons.items()))}
        qwriter.commit({**common, "rows": quarantined})
        manifest = dwriter.commit(
            {**common, "rows": rows, "sources": source_stats, "textclf_version": __version__,
             "config": {"id_col": config.id_col, "text_col": config.text_col, "label_col": config.label_col,
                        "max_text_chars": config.max_text_chars}}
        )
    result = IngestResult(lake.uri_of(dataset_key(config.kind, config.date)),
                          lake.uri_of(quarantine_key(config.kind, config.date)), manifest)
    log.info("ingest done: %s", result.summary())
    return result


def _remove_rows(dwriter: PartitionWriter, data: _DataFiles, drop: dict[int, str], rejects: _Rejects) -> int:
    """Rewrite the staged files holding rows to drop; quarantine conflicts; return exact duplicates."""
    import numpy as np
    import pyarrow as pa

    if not drop:
        return 0
    positions = np.fromiter(drop, dtype=np.int64)
    reasons = np.array(list(drop.values()))
    offset = 0
    for index, entry in enumerate(list(data.entries)):
        n = entry.rows or 0
        in_file = (positions >= offset) & (positions < offset + n)
        if in_file.any():
            table = dwriter.lake.parquet_file(dwriter.staged_uri(entry)).read()
            local, local_reasons = positions[in_file] - offset, reasons[in_file]
            for reason in ("conflicting_label", "duplicate_id"):
                rows = table.take(pa.array(np.sort(local[local_reasons == reason])))
                detail = ("the same id has different labels in this partition" if reason == "conflicting_label"
                          else "an earlier row has this id with a different text")
                rejects.add(reason, detail, "", rows.column("source_row"), rows.column("doc_id"),
                            rows.column("label") if "label" in table.column_names else None,
                            rows.column("text"), source_files=rows.column("source_file"))
            keep = np.ones(n, dtype=bool)
            keep[local] = False
            if keep.any() or index == 0:  # keep part-00000 even if empty: it carries the schema
                data.entries[index] = dwriter.rewrite_parquet(entry, table.filter(pa.array(keep)))
            else:
                dwriter.drop_file(entry)
        offset += n
    return int((reasons == "duplicate").sum())
