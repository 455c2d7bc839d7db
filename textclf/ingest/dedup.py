"""Duplicates within one ingest: exact repeats dropped and counted, conflicting ids quarantined."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from textclf.ingest.quarantine import QuarantineFile, reject_batch
from textclf.lake.partition import FileEntry
from textclf.lake.tables import DateWriter

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from textclf.ingest.stage import DataFiles



def duplicate_id_positions(id_hash: np.ndarray) -> np.ndarray:
    """Sorted positions of rows whose id hash occurs more than once."""
    import numpy as np

    if len(id_hash) < 2:
        return np.zeros(0, np.int64)
    order = np.argsort(id_hash, kind="stable")
    sorted_ids = id_hash[order]
    repeated = np.r_[sorted_ids[1:] == sorted_ids[:-1], False] | np.r_[False, sorted_ids[1:] == sorted_ids[:-1]]
    return np.sort(order[repeated])


def resolve_duplicates(rows: list[tuple[int, str, str, str | None]]) -> dict[int, str]:
    """Rows to drop among ``(position, doc_id, text, label)``, with the reason. Pure.

    Within each group of rows sharing an id: if the labels differ, every row is a
    ``conflicting_label``; otherwise the first row is kept, later rows with the same text
    are exact duplicates (``duplicate``) and later rows with another text ``duplicate_id``.
    """
    groups: dict[str, list[tuple[int, str, str | None]]] = {}
    for pos, doc_id, text, label in sorted(rows):
        groups.setdefault(doc_id, []).append((pos, text, label))
    drop: dict[int, str] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        if len({label for _, _, label in members}) > 1:
            drop.update({pos: "conflicting_label" for pos, _, _ in members})
            continue
        first_text = members[0][1]
        for pos, text, _ in members[1:]:
            drop[pos] = "duplicate" if text == first_text else "duplicate_id"
    return drop


def _within(positions: np.ndarray, start: int, n: int) -> np.ndarray:
    """The sorted positions in ``[start, start + n)``, shifted to start at 0."""
    return positions[(positions >= start) & (positions < start + n)] - start


def _file_ranges(entries: list[FileEntry]) -> Iterator[tuple[int, FileEntry, int]]:
    offset = 0
    for index, entry in enumerate(list(entries)):
        yield index, entry, offset
        offset += entry.rows or 0


def deduplicate(dwriter: DateWriter, data: DataFiles, id_hash: np.ndarray, rejects: QuarantineFile) -> int:
    """Drop repeated rows from the staged files; quarantine conflicts; return exact duplicates removed.

    Only rows whose id hash repeats are read back and compared by value, so clean data
    costs nothing here and a hash collision cannot merge two different ids.
    """
    import numpy as np
    import pyarrow as pa

    candidates = duplicate_id_positions(id_hash)
    if not len(candidates):
        return 0
    columns = ["doc_id", "text"] + (["label"] if "label" in data.schema.names else [])
    rows: list[tuple[int, str, str, str | None]] = []
    for _, entry, offset in _file_ranges(data.entries):
        wanted = _within(candidates, offset, entry.rows or 0)
        for start, batch in _staged_batches(dwriter, entry, columns, wanted):
            here = _within(wanted, start, batch.num_rows)
            picked = batch.take(pa.array(here))
            labels = picked.column("label").to_pylist() if "label" in columns else [None] * len(here)
            rows += zip((here + start + offset).tolist(), picked.column("doc_id").to_pylist(),
                        picked.column("text").to_pylist(), labels, strict=True)
    drop = resolve_duplicates(rows)
    if not drop:
        return 0
    positions = np.sort(np.fromiter(drop, dtype=np.int64))
    duplicates = 0
    for index, entry, offset in _file_ranges(data.entries):
        local = _within(positions, offset, entry.rows or 0)
        if not len(local):
            continue

        def kept_batches(entry: FileEntry = entry, offset: int = offset, local: np.ndarray = local
                         ) -> Iterator[pa.RecordBatch]:
            for start, batch in _staged_batches(dwriter, entry, None, local):
                here = _within(local, start, batch.num_rows)
                if len(here):
                    _quarantine_dropped(batch.take(pa.array(here)), here + start + offset, drop, rejects)
                    keep = np.ones(batch.num_rows, dtype=bool)
                    keep[here] = False
                    batch = batch.filter(pa.array(keep))
                yield batch

        duplicates += sum(drop[int(p) + offset] == "duplicate" for p in local)
        if index > 0 and len(local) == entry.rows:  # nothing left; part-00000 stays for the schema
            for _ in kept_batches():  # still quarantines the conflicting rows
                pass
            dwriter.drop_file(entry)
        else:
            data.entries[index] = dwriter.rewrite_parquet(entry, data.schema, kept_batches())
    return duplicates


def _staged_batches(dwriter: DateWriter, entry: FileEntry, columns: list[str] | None,
                    wanted: np.ndarray) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(first row, batch) over a staged file's row groups.

    With ``columns`` (a lookup) only row groups holding a wanted position are read; without
    (a rewrite) every row group is, since all of them must be copied.
    """
    pf = dwriter.lake.parquet_file(dwriter.staged_uri(entry))
    start = 0
    for group in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(group).num_rows
        if n and (columns is None or len(_within(wanted, start, n))):
            yield start, pf.read_row_group(group, columns=columns).combine_chunks().to_batches()[0]
        start += n


def _quarantine_dropped(rows: pa.RecordBatch, positions: np.ndarray, drop: dict[int, str],
                        rejects: QuarantineFile) -> None:
    reasons = [drop[int(p)] for p in positions]
    details = {"conflicting_label": "the same id has different labels in this partition",
               "duplicate_id": "an earlier row has this id with a different text"}
    for reason, detail in details.items():
        mask = [r == reason for r in reasons]
        if any(mask):
            picked = rows.filter(mask)
            rejects.write(reject_batch(
                reason, detail, picked.column("source_file"), picked.column("source_row"), picked.column("doc_id"),
                picked.column("label") if "label" in rows.schema.names else None, picked.column("text")))
