"""Ingestion: source files in, one date of the dataset table plus its quarantine out (Delta tables).

Every input row ends up in exactly one place, and the date's summary proves it:
``input_rows == rows + quarantined_rows + duplicates_removed``.

- ``rows``: the date's rows in the ``datasets/{kind}`` table (``ingest_date=D/part-*.parquet``)
- ``quarantined_rows``: the date's rows in the ``quarantine/{kind}`` table, with the original content
  and a reason (see ``REASONS``)
- ``duplicates_removed``: exact repeats (same id, text and label) of a kept row

The quarantine is committed first, then the dataset, each in one Delta commit, and both summaries carry
the same ``ingest_run``. The dataset commit checks, before each attempt, that the quarantine still holds
this run's rejects; if another ingest of the date committed its quarantine meanwhile, this run gives up
and that run's pair stands. A run that dies between the two commits leaves the old dataset beside a newer
quarantine, which ``check_accounting`` (run by validation) reports until ingest is rerun.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textclf import __version__
from textclf.config import IngestConfig
from textclf.errors import TextclfError
from textclf.ingest.dedup import deduplicate
from textclf.ingest.quarantine import QuarantineFile, quarantine_schema, reject_batch
from textclf.ingest.sources import ColumnNames, SourceBatch, SourceReader
from textclf.lake import Lake
from textclf.lake.layout import dataset_key, quarantine_key
from textclf.lake.partition import FileEntry, ParquetPartFile
from textclf.lake.tables import DateWriter, NotCommitted, Snapshot, dataset_table, new_run_id, quarantine_table
from textclf.progress import NoProgress, Progress

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

log = logging.getLogger(__name__)
TRUNCATED_IDS_SHOWN = 100  # doc ids of cut texts listed in a date's summary; truncated_rows counts them all


def dataset_schema(labeled: bool) -> pa.Schema:
    import pyarrow as pa

    fields = [pa.field("doc_id", pa.string(), nullable=False), pa.field("text", pa.string(), nullable=False)]
    if labeled:
        fields.append(pa.field("label", pa.string(), nullable=False))
    fields += [pa.field("source_file", pa.string()), pa.field("source_row", pa.int64())]
    return pa.schema(fields)


@dataclass(frozen=True)
class IngestResult:
    """What an ingest wrote: URIs and the summary's counts (``manifest``: the dataset date's summary)."""

    dataset_uri: str
    quarantine_uri: str
    manifest: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        keys = ("kind", "ingest_date", "input_rows", "rows", "quarantined_rows", "duplicates_removed",
                "quarantine_reasons")
        return {"dataset": self.dataset_uri, "quarantine": self.quarantine_uri,
                **{k: self.manifest[k] for k in keys}, "table": self.manifest.get("table"),
                "table_version": self.manifest.get("table_version")}


def _hash_ids(arr: pa.Array) -> np.ndarray:
    """64-bit hashes of doc ids; equal ids hash equal, so only hash-equal rows need comparing."""
    import pandas as pd

    return pd.util.hash_array(arr.to_numpy(zero_copy_only=False).astype(object), categorize=False)


class DataFiles:
    """Rolls kept rows over ``part-NNNNN.parquet`` files of at most ``max_rows`` rows."""

    def __init__(self, writer: DateWriter, schema: pa.Schema, max_rows: int) -> None:
        self.writer, self.schema, self.max_rows = writer, schema, max_rows
        self.current: ParquetPartFile | None = None
        self.entries: list[FileEntry] = []

    def write(self, table: pa.Table) -> None:
        offset = 0
        while offset < table.num_rows:
            if self.current is None:
                self.current = self.writer.parquet(f"part-{len(self.entries):05d}.parquet", self.schema)
            current = self.current
            piece = table.slice(offset, self.max_rows - current.rows)
            current.write(piece)
            offset += piece.num_rows
            if current.rows >= self.max_rows:
                self._close_current()

    def _close_current(self) -> None:
        if self.current is not None:
            self.entries.append(self.writer.close_parquet(self.current))
            self.current = None

    def close(self) -> None:
        if self.current is not None or not self.entries:
            if self.current is None:  # an empty partition still gets one file with the schema
                self.current = self.writer.parquet("part-00000.parquet", self.schema)
            self._close_current()


def process_batch(batch: SourceBatch, source: str, config: IngestConfig
                  ) -> tuple[pa.Table | None, list[pa.RecordBatch], list[str]]:
    """Decode, normalise and check one batch: (rows to keep, batches of quarantined rows, doc ids of the kept
    rows whose text was cut to ``max_text_chars``). Pure."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from textclf.ingest.normalize import decode_array, normalize_text, text_doc_ids

    labeled = config.kind == "labeled"
    rejected = [reject_batch("malformed_row", [m.detail for m in batch.malformed], source,
                             [m.source_row for m in batch.malformed], texts=[m.raw for m in batch.malformed])
                ] if batch.malformed else []
    if batch.num_rows == 0:
        return None, rejected, []

    texts, undecodable = decode_array(batch.texts)
    # ids and labels get the same UTF-8 / Windows-1252 decoding as the text; undecodable ones quarantine the row
    ids, bad_ids = _decode_field(batch.ids)
    labels, bad_labels = _decode_field(batch.labels)
    bad_fields = [(name, mask) for name, mask in (("text", undecodable), (f"column {config.id_col!r}", bad_ids),
                                                  (f"column {config.label_col!r}", bad_labels)) if mask is not None]
    for _, mask in bad_fields[1:]:
        undecodable = pc.or_(undecodable, mask)

    def encoding_detail(sel: pa.Array) -> list[str]:
        flags = zip(*[pc.filter(mask, sel).to_pylist() for _, mask in bad_fields], strict=True)
        return [" and ".join(name for (name, _), bad in zip(bad_fields, row, strict=True) if bad)
                + " bytes are neither UTF-8 nor unambiguous Windows-1252" for row in flags]

    lengths = pc.fill_null(pc.utf8_length(texts), 0)
    too_long = pc.greater(lengths, config.max_text_chars)
    truncate = not labeled and config.truncate_unlabeled
    if truncate:  # cut, then normalised like any text; the mask stays to report which documents were cut
        normalized = normalize_text(pc.if_else(too_long, pc.utf8_slice_codeunits(texts, 0, config.max_text_chars),
                                               texts))
    else:
        normalized = normalize_text(pc.if_else(too_long, pa.scalar(None, pa.string()), texts))
    empty = pc.fill_null(pc.equal(pc.utf8_length(normalized), 0), True)

    # First matching reason wins; `taken` marks rows already quarantined.
    checks: list[tuple[str, pa.Array, Any]] = [
        ("invalid_encoding", undecodable, encoding_detail),
        ("text_too_long", pa.array(np.zeros(len(texts), dtype=bool)) if truncate else too_long,
         lambda sel: [f"{n} characters > limit {config.max_text_chars}" for n in pc.filter(lengths, sel).to_pylist()]),
        ("empty_text", empty, "text is empty after normalisation"),
    ]
    if ids is not None:
        checks.append(("missing_id", pc.fill_null(pc.equal(pc.utf8_length(ids), 0), True),
                       f"column {config.id_col!r} is empty"))
    if labeled:
        checks.append(("missing_label", pc.fill_null(pc.equal(pc.utf8_length(labels), 0), True),
                       f"column {config.label_col!r} is empty"))

    taken = pa.array(np.zeros(len(texts), dtype=bool))
    for reason, mask, detail in checks:
        sel = pc.and_(mask, pc.invert(taken))
        if not pc.any(sel).as_py():
            continue
        taken = pc.or_(taken, sel)
        shown, raw_bytes = pc.filter(texts, sel), None
        shown_ids = pc.filter(ids, sel) if ids is not None else None
        shown_labels = pc.filter(labels, sel) if labels is not None else None
        if reason == "invalid_encoding":
            raw_bytes = pc.filter(batch.texts, sel).cast(pa.binary())
            shown = _backslashed(raw_bytes)
            shown_ids = _backslashed(pc.filter(batch.ids, sel)) if batch.ids is not None else None
            shown_labels = _backslashed(pc.filter(batch.labels, sel)) if batch.labels is not None else None
        rejected.append(reject_batch(
            reason, detail(sel) if callable(detail) else detail, source, pc.filter(batch.source_rows, sel),
            shown_ids, shown_labels, shown, raw_bytes))

    keep = pc.invert(taken)
    kept_text = pc.filter(normalized, keep)
    if len(kept_text) == 0:
        return None, rejected, []
    columns = {"doc_id": pc.filter(ids, keep) if ids is not None else text_doc_ids(kept_text), "text": kept_text}
    truncated = pc.filter(columns["doc_id"], pc.filter(too_long, keep)).to_pylist() if truncate else []
    if labeled:
        columns["label"] = pc.filter(labels, keep)
    columns["source_file"] = pa.repeat(pa.scalar(source, pa.string()), len(kept_text))
    columns["source_row"] = pc.filter(batch.source_rows, keep)
    return pa.table(columns, schema=dataset_schema(labeled)), rejected, truncated


def _decode_field(arr: pa.Array | None) -> tuple[pa.Array | None, pa.Array | None]:
    """An id or label column as trimmed UTF-8 strings, and the mask of rows that could not be decoded."""
    import pyarrow.compute as pc

    from textclf.ingest.normalize import decode_array

    if arr is None:
        return None, None
    decoded, bad = decode_array(arr)
    return pc.utf8_trim_whitespace(decoded), bad


def _backslashed(arr: pa.Array) -> list[str | None]:
    """Original bytes as text, undecodable bytes shown as \\xNN (for the quarantine)."""
    import pyarrow as pa

    return [None if b is None else b.decode("utf-8", "backslashreplace")
            for b in arr.cast(pa.binary()).to_pylist()]


def _ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int, ahead: int) -> Iterator[Any]:
    """``map`` over a thread pool, results in input order, at most ``ahead`` items in flight."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        pending: deque[Future] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def ingest(lake: Lake, config: IngestConfig, progress: Progress | None = None) -> IngestResult:
    """Ingest ``config.sources`` into the dataset table's date ``config.date``, replacing that date whole."""
    import numpy as np

    progress = progress or NoProgress()
    sources = list(config.sources)
    if not sources:
        raise TextclfError("no source files given")
    labeled = config.kind == "labeled"
    columns = ColumnNames(config.id_col, config.text_col, config.label_col, config.id_col_required)
    readers = [SourceReader(uri, columns, labeled, config.batch_rows, s3=lake.s3) for uri in sources]
    total_bytes = sum(r.size for r in readers)
    workers = config.workers or min(4, os.cpu_count() or 1)
    log.info("ingesting %d file(s), %d bytes, into %s with %d worker thread(s)", len(readers), total_bytes,
             lake.uri_of(dataset_key(config.kind, config.date)), workers)

    def batches() -> Iterator[tuple[int, SourceBatch]]:
        for index, reader in enumerate(readers):
            for batch in reader.batches():
                yield index, batch

    def process(item: tuple[int, SourceBatch]) -> tuple[int, int, pa.Table | None, list[pa.RecordBatch], list[str]]:
        index, batch = item
        kept, rejected, truncated = process_batch(batch, readers[index].uri, config)
        return index, batch.num_rows + len(batch.malformed), kept, rejected, truncated

    input_rows = [0] * len(readers)
    id_hashes: list[np.ndarray] = []
    run = new_run_id()
    qtable = quarantine_table(lake, config.kind, quarantine_schema())
    dtable = dataset_table(lake, config.kind, dataset_schema(labeled))

    def quarantine_still_ours(_: Snapshot) -> None:
        current = qtable.summary(config.date)
        if current is None or current.get("ingest_run") != run:
            raise NotCommitted(
                f"cannot commit {lake.uri_of(dataset_key(config.kind, config.date))}: another run committed "
                f"{config.kind} data for {config.date} meanwhile and its result stands; rerun to replace it")

    with qtable.writer(config.date, run) as qwriter, dtable.writer(config.date, run) as dwriter:
        rejects = QuarantineFile(qwriter)
        data = DataFiles(dwriter, dataset_schema(labeled), config.max_rows_per_file)
        progress.start(total_bytes, f"ingest {config.kind}")
        truncated_ids: list[str] = []
        for index, n_input, kept, rejected, truncated in _ordered_map(process, batches(), workers,
                                                                      ahead=2 * workers):
            input_rows[index] += n_input
            truncated_ids.extend(truncated)
            for batch in rejected:
                rejects.write(batch)
            if kept is not None:
                data.write(kept)
                id_hashes.append(_hash_ids(kept.column("doc_id")))
            progress.update(sum(r.size for r in readers[:index]) + readers[index].bytes_read)
        progress.close()
        data.close()
        duplicates_removed = deduplicate(
            dwriter, data, np.concatenate(id_hashes) if id_hashes else np.zeros(0, np.uint64), rejects)
        quarantined = rejects.close()
        rows = sum(e.rows or 0 for e in dwriter.files)
        total_input = sum(input_rows)
        if rows + quarantined + duplicates_removed != total_input:
            raise TextclfError(
                f"internal error: counts do not add up ({rows} rows + {quarantined} quarantined + "
                f"{duplicates_removed} duplicates != {total_input} input rows); nothing was written"
            )
        common = {"kind": config.kind, "ingest_date": config.date, "ingest_run": run,
                  "input_rows": total_input, "quarantined_rows": quarantined, "duplicates_removed": duplicates_removed,
                  "quarantine_reasons": dict(sorted(rejects.reasons.items()))}
        if not labeled:  # kept and scored, cut to the limit: which ones (the first TRUNCATED_IDS_SHOWN)
            # Once per document: the copies of a document received twice were cut alike, and one copy is kept.
            truncated_ids = list(dict.fromkeys(truncated_ids))
            common.update(truncated_rows=len(truncated_ids), truncated_doc_ids=truncated_ids[:TRUNCATED_IDS_SHOWN])
            if truncated_ids:
                log.warning("%d unlabeled text(s) longer than %d characters were cut to the limit and kept, "
                            "e.g. %s", len(truncated_ids), config.max_text_chars, ", ".join(truncated_ids[:5]))
        sources_info = [{"uri": r.uri, "format": r.format, "compression": r.codec, "bytes": r.size,
                         "input_rows": n} for r, n in zip(readers, input_rows, strict=True)]
        qwriter.commit({**common, "rows": quarantined})
        # Two runs of one date end with one run's pair: the dataset commits only while the quarantine is ours.
        manifest = dwriter.commit(
            {**common, "rows": rows, "sources": sources_info, "textclf_version": __version__,
             "config": {"id_col": config.id_col, "text_col": config.text_col, "label_col": config.label_col,
                        "max_text_chars": config.max_text_chars}},
            check=quarantine_still_ours)
    result = IngestResult(lake.uri_of(dataset_key(config.kind, config.date)),
                          lake.uri_of(quarantine_key(config.kind, config.date)), manifest)
    log.info("ingest done: %s", result.summary())
    return result
